//! The audit: canaries → training with the user's configuration → scores → ε lower bound,
//! written to `audit.json` ([`AuditReport`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use dpsynth_lm::{LlamaWeights, Tokenizer};
use dpsynth_train::{Progress, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::bound::{bound_from_scores, AuditResult};
use crate::canary::{contains_secret, generate_canaries, Canary, CanaryKind};
use crate::score::{self, ExampleLoss};
use crate::{AuditError, Result};

/// Version of the `audit.json` schema.
pub const AUDIT_SCHEMA_VERSION: u32 = 2;
/// Default number of canaries: enough for a ceiling of ≈ 5 (see [`dpsynth_privacy::audit::audit_ceiling`]).
pub const DEFAULT_CANARIES: usize = 1024;
/// Default expected number of times each inserted canary is sampled (see [`crate::plan`]).
pub const DEFAULT_MIN_EXPECTED_SAMPLES: f64 = 4.0;
/// Default number of canaries whose exposure is estimated.
pub const DEFAULT_EXPOSURE_CANARIES: usize = 128;
/// File names inside the audit directory.
pub const AUDIT_JSON: &str = "audit.json";
pub const CANARIES_JSONL: &str = "canaries.jsonl";
pub const TRAIN_JSONL: &str = "train.jsonl";
pub const TRAIN_DIR: &str = "train";

/// A deliberately broken trainer, to check that the audit catches one. Never for real runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Train without clipping and noise (`no_dp`) but claim the guarantee `epsilon`, as a
    /// trainer whose noise was silently disabled would.
    NoNoiseClaiming { epsilon: f64 },
}

/// What to audit and how.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The user's training configuration, used unchanged except `data` (the user's data
    /// plus the inserted canaries) and `out` (`<out>/train`).
    pub train: TrainConfig,
    /// The audit directory (`audit.json`, `canaries.jsonl`, `train.jsonl`, `train/`).
    pub out: PathBuf,
    /// Number of canaries m (each inserted with probability 1/2).
    pub canaries: usize,
    /// Train on a random subset of the user's units so that each inserted canary is sampled
    /// at least this many times in expectation (0 = all units, the user's q). See [`crate::plan`].
    pub min_expected_samples: f64,
    pub kind: CanaryKind,
    /// Confidence of the lower bound (default 0.95).
    pub confidence: f64,
    /// Random alternative secrets per canary for the exposure estimate (0 = skip).
    pub exposure_samples: usize,
    /// Exposure is estimated for the first this many canaries only (it costs
    /// `exposure_samples` forward passes per canary).
    pub exposure_canaries: usize,
    /// A synthetic dataset (JSONL records) to search for canary secrets.
    pub synthetic: Option<PathBuf>,
    /// Seed of the canaries and their coins (`None`: OS entropy). Independent of training's.
    pub seed: Option<u64>,
    /// Sequences per forward pass when scoring.
    pub score_batch: usize,
    /// Test hook: a broken trainer (see [`Fault`]).
    pub fault: Option<Fault>,
}

impl AuditConfig {
    pub fn new(train: TrainConfig, out: PathBuf) -> Self {
        Self {
            train,
            out,
            canaries: DEFAULT_CANARIES,
            min_expected_samples: DEFAULT_MIN_EXPECTED_SAMPLES,
            kind: CanaryKind::default(),
            confidence: 0.95,
            exposure_samples: 16,
            exposure_canaries: DEFAULT_EXPOSURE_CANARIES,
            synthetic: None,
            seed: None,
            score_batch: 16,
            fault: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(AuditError::Config(m));
        if self.canaries < 2 {
            return bad(format!(
                "--canaries must be at least 2 (got {}); 100 or more give useful bounds",
                self.canaries
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return bad(format!(
                "--confidence must be in (0, 1), got {}",
                self.confidence
            ));
        }
        if !(self.min_expected_samples >= 0.0 && self.min_expected_samples.is_finite()) {
            return bad(format!(
                "--min-expected-samples must be ≥ 0 and finite, got {}",
                self.min_expected_samples
            ));
        }
        if let Some(Fault::NoNoiseClaiming { epsilon }) = self.fault {
            if !(epsilon > 0.0 && epsilon.is_finite()) {
                return bad(format!(
                    "fault ε must be positive and finite, got {epsilon}"
                ));
            }
        }
        Ok(())
    }
}

/// The audit's conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The empirical lower bound does not exceed the claimed ε (no evidence of a bug; this
    /// does not prove the claim).
    Consistent,
    /// The lower bound exceeds the claimed ε: with the stated confidence the training is
    /// NOT (claimed ε, δ)-DP — a bug in clipping, noise, sampling or accounting.
    Violation,
    /// No guarantee was claimed (`--no-dp`); the bound shows how much leaks.
    NoGuarantee,
    /// The audit's ceiling (its bound if every guess were right) is at or below the claimed
    /// ε: this audit could not have detected a violation. Use more canaries.
    Inconclusive,
}

/// One canary's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryResult {
    pub id: String,
    pub label: String,
    pub inserted: bool,
    /// Mean NLL per target token under the base model.
    pub base_loss: f64,
    /// Mean NLL per target token under the fine-tuned model.
    pub trained_loss: f64,
    /// `base_loss − trained_loss`.
    pub score: f64,
    /// Exposure in bits (None when `exposure_samples` is 0).
    pub exposure: Option<f64>,
    /// Its secret appears in the synthetic data (None without a synthetic file).
    pub in_synthetic: Option<bool>,
}

/// Summary of the scores by group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    /// ROC AUC of the score for inserted vs held out (0.5 = no signal).
    pub auc: Option<f64>,
    pub mean_inserted: Option<f64>,
    pub mean_held_out: Option<f64>,
}

/// Exposure by group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExposureSummary {
    pub samples: usize,
    /// The estimate's ceiling, `log2(samples + 1)` bits.
    pub max_bits: f64,
    /// `log2 |R|`: the exposure a perfectly memorized secret would have.
    pub log2_space: f64,
    pub mean_inserted: Option<f64>,
    pub mean_held_out: Option<f64>,
    /// Inserted canaries at the ceiling (ranked first among all samples).
    pub inserted_at_max: usize,
    /// Canaries whose exposure was estimated (the first ones).
    #[serde(default)]
    pub canaries: usize,
}

/// Secrets found in the synthetic data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSummary {
    pub path: PathBuf,
    pub records: usize,
    pub inserted_found: usize,
    pub held_out_found: usize,
}

/// The training run the audit made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub run_dir: PathBuf,
    pub method: String,
    pub records: usize,
    pub steps: u64,
    pub noise_multiplier: Option<f64>,
    pub sampling_probability: f64,
    pub no_dp: bool,
    /// ε of the audit run by its ledger (PLD), None for `--no-dp`.
    pub ledger_epsilon: Option<f64>,
    pub final_loss: Option<f64>,
    pub seconds: f64,
    /// Units (records or users) of the user's data, and how many the audit trained on
    /// (a random subset so that canaries are sampled often enough, see [`crate::plan`]).
    #[serde(default)]
    pub user_units: usize,
    #[serde(default)]
    pub user_units_kept: usize,
}

/// `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub version: u32,
    pub verdict: Verdict,
    /// The ε the training claims (its ledger's; or the fault's), None = no claim (∞).
    pub claimed_epsilon: Option<f64>,
    pub delta: f64,
    /// With probability ≥ `confidence`, the training is not (ε, δ)-DP for any ε below this.
    pub epsilon_lower_bound: f64,
    /// The audit's ceiling: the bound if every guess were right. A claimed ε at or above it
    /// cannot be refuted (verdict `inconclusive`).
    #[serde(default)]
    pub ceiling_epsilon: f64,
    /// q·T: expected number of times each inserted canary was sampled by training.
    #[serde(default)]
    pub expected_samples_per_canary: f64,
    /// (1 − q)^T: probability that an inserted canary was never sampled.
    #[serde(default)]
    pub p_never_sampled: f64,
    pub confidence: f64,
    pub canary_kind: CanaryKind,
    pub canaries: usize,
    pub inserted: usize,
    /// The best (k₊, k₋) guess and its bound (`dpsynth_privacy::audit::AuditResult`).
    pub bound: AuditResult,
    pub scores: ScoreSummary,
    pub exposure: Option<ExposureSummary>,
    pub synthetic: Option<SyntheticSummary>,
    pub training: TrainingSummary,
    /// Set when the trainer was deliberately broken (test hook).
    pub fault: Option<Fault>,
    pub per_canary: Vec<CanaryResult>,
    pub seconds: f64,
}

impl AuditReport {
    /// Read `audit.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| AuditError::file(path, e))?;
        serde_json::from_str(&s).map_err(|e| AuditError::file(path, e))
    }

    /// A few lines for the terminal (and the run report).
    pub fn summary(&self) -> String {
        let claimed = match self.claimed_epsilon {
            Some(e) => format!("{e:.3}"),
            None => "∞ (no DP)".into(),
        };
        let verdict = match self.verdict {
            Verdict::Consistent => "CONSISTENT — the lower bound does not exceed the claimed ε (no evidence of a bug; not a proof)",
            Verdict::Violation => "VIOLATION — the training leaks more than its claimed ε allows: clipping, noise, sampling or accounting is broken",
            Verdict::NoGuarantee => "NO GUARANTEE — trained without DP; the bound shows the leak",
            Verdict::Inconclusive => "INCONCLUSIVE — the audit's ceiling is at or below the claimed ε, so it could not detect a violation; use more canaries",
        };
        let b = &self.bound;
        let mut s = format!(
            "privacy audit ({} canaries, {} inserted, one run)\n  claimed ε:            {claimed} (δ = {:.2e})\n  empirical ε ≥         {:.3} at {:.0}% confidence ({} of {} guesses right)\n  audit ceiling:        {:.3} (the bound if every guess were right)\n  canary sampled:       {:.2} times in expectation ({:.1}% never; {} of {} user units trained on)\n  verdict:              {verdict}\n",
            self.canaries,
            self.inserted,
            self.delta,
            self.epsilon_lower_bound,
            self.confidence * 100.0,
            b.v,
            b.r,
            self.ceiling_epsilon,
            self.expected_samples_per_canary,
            self.p_never_sampled * 100.0,
            self.training.user_units_kept,
            self.training.user_units,
        );
        let f = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "  loss-drop score:      inserted {} vs held out {} (AUC {})\n",
            f(self.scores.mean_inserted),
            f(self.scores.mean_held_out),
            f(self.scores.auc)
        ));
        if let Some(e) = &self.exposure {
            s.push_str(&format!(
                "  exposure (bits):      inserted {} vs held out {} (max {:.2} from {} samples; {}/{} inserted at max)\n",
                f(e.mean_inserted),
                f(e.mean_held_out),
                e.max_bits,
                e.samples,
                e.inserted_at_max,
                self.inserted
            ));
        }
        if let Some(sy) = &self.synthetic {
            s.push_str(&format!(
                "  in synthetic data:    {} inserted and {} held-out secrets found in {} records\n",
                sy.inserted_found, sy.held_out_found, sy.records
            ));
        }
        if let Some(Fault::NoNoiseClaiming { epsilon }) = self.fault {
            s.push_str(&format!(
                "  (test fault injected: trained without noise while claiming ε = {epsilon})\n"
            ));
        }
        s
    }
}

/// The verdict from the claim, the bound and the audit's ceiling.
pub fn verdict(claimed: Option<f64>, lower: f64, ceiling: f64) -> Verdict {
    match claimed {
        None => Verdict::NoGuarantee,
        Some(c) if lower > c => Verdict::Violation,
        Some(c) if ceiling <= c => Verdict::Inconclusive,
        Some(_) => Verdict::Consistent,
    }
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Run the audit: load the model named by `cfg.train.model`, then [`run_audit_with`].
pub fn run_audit(cfg: &AuditConfig, progress: &mut dyn Progress) -> Result<AuditReport> {
    cfg.validate()?;
    progress.message("loading model");
    let (weights, tok) = dpsynth_lm::load_model(&cfg.train.model, &candle_core::Device::Cpu)?;
    run_audit_with(cfg, &weights, &tok, progress)
}

/// Run the audit with an already loaded base model (tests pass tiny random models).
pub fn run_audit_with(
    cfg: &AuditConfig,
    weights: &LlamaWeights,
    tok: &Tokenizer,
    progress: &mut dyn Progress,
) -> Result<AuditReport> {
    cfg.validate()?;
    let t0 = Instant::now();
    let out = &cfg.out;
    if out.join(AUDIT_JSON).exists() || out.join(TRAIN_DIR).join("privacy.json").exists() {
        return Err(AuditError::Config(format!(
            "{} already holds an audit; choose a new --out (an audit's canaries must be fresh)",
            out.display()
        )));
    }
    let records =
        dpsynth_data::read_jsonl(&cfg.train.data).map_err(|e| AuditError::Data(e.to_string()))?;
    if records.is_empty() {
        return Err(AuditError::Data(format!(
            "{}: the dataset is empty",
            cfg.train.data.display()
        )));
    }
    let labels: Vec<String> = records
        .iter()
        .map(|r| r.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rng = match cfg.seed {
        Some(s) => dpsynth_privacy::SecureRng::seeded(s),
        None => dpsynth_privacy::SecureRng::from_os(),
    };
    let canaries = generate_canaries(cfg.kind, cfg.canaries, &labels, &mut rng)?;
    std::fs::create_dir_all(out).map_err(|e| AuditError::file(out, e))?;
    write_canaries(&out.join(CANARIES_JSONL), &canaries)?;

    // How often training will see each canary; keep a random subset of the user's units if
    // needed so that inserted canaries are sampled often enough to be detectable.
    let units = user_units(&records, cfg.train.user_level)?;
    let n_inserted = canaries.iter().filter(|c| c.inserted).count();
    let steps = crate::plan::user_steps(
        units.len(),
        cfg.train.expected_batch,
        cfg.train.steps,
        cfg.train.epochs,
    );
    let plan = crate::plan::audit_plan(
        units.len(),
        n_inserted,
        cfg.train.expected_batch,
        steps,
        cfg.min_expected_samples,
    );
    let user_delta = 1.0 / (units.len() as f64).powf(1.1);
    let records = keep_units(records, units, plan.kept_units, &mut rng);

    // The audit's training data: the (kept) user records plus the inserted canaries.
    let mut all = records;
    all.extend(canaries.iter().filter(|c| c.inserted).map(Canary::record));
    let data_path = out.join(TRAIN_JSONL);
    dpsynth_data::write_jsonl(&data_path, all.iter())
        .map_err(|e| AuditError::file(&data_path, e))?;
    let mut tcfg = cfg.train.clone();
    tcfg.data = data_path;
    tcfg.out = out.join(TRAIN_DIR);
    tcfg.resume = false;
    // The user's run's steps and δ (δ = 1/n^1.1 of the user's data, not of the subset).
    tcfg.steps = Some(steps);
    tcfg.epochs = None;
    tcfg.delta = Some(cfg.train.delta.unwrap_or(user_delta));
    if let Some(Fault::NoNoiseClaiming { .. }) = cfg.fault {
        tcfg.no_dp = true;
        tcfg.clip_norm = f64::INFINITY;
        if tcfg.label_distribution == dpsynth_train::LabelDistribution::Dp {
            tcfg.label_distribution = dpsynth_train::LabelDistribution::Uniform;
        }
    }
    progress.message(&format!(
        "training with {} canaries inserted of {} and {} of {} user units: each canary sampled {:.2} times in expectation ({:.1}% never)",
        n_inserted,
        canaries.len(),
        plan.kept_units,
        plan.user_units,
        plan.expected_samples,
        plan.p_never_sampled * 100.0
    ));
    let prepared = dpsynth_train::train::prepare_data(&all, tok, &tcfg)?;
    let summary = dpsynth_train::train::train_prepared(&tcfg, weights, &prepared, progress)?;
    let claimed = match cfg.fault {
        Some(Fault::NoNoiseClaiming { epsilon }) => Some(epsilon),
        None if tcfg.no_dp => None,
        None => Some(summary.epsilon_pld.ok_or_else(|| {
            AuditError::Data("the training ledger reports no ε for a DP run".into())
        })?),
    };
    // With no claim (--no-dp) the run's default δ = 1/n^1.1 is large for small n and its
    // 2mδ term can hide a clear leak; report the bound at the user's δ or a conventional 1e-5.
    let delta = match claimed {
        Some(_) => summary.delta,
        None => cfg.train.delta.unwrap_or(1e-5),
    };

    // Scores.
    progress.message("scoring canaries");
    let eos = tok
        .eos_id()
        .ok_or_else(|| AuditError::Config("the tokenizer has no end-of-sequence token".into()))?;
    let example = |label: &str, text: &str| {
        dpsynth_train::format::make_example(tok, &tcfg.template, label, text, tcfg.max_tokens, eos)
    };
    let examples = canaries
        .iter()
        .map(|c| example(&c.label, &c.text))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let adapter = score::load_trained_adapter(&tcfg.out, weights)?;
    let base = score::example_losses(weights, None, &examples, cfg.score_batch)?;
    let trained = score::example_losses(weights, Some(&adapter), &examples, cfg.score_batch)?;
    let scores: Vec<f64> = base
        .iter()
        .zip(&trained)
        .map(|(b, t)| score::loss_score(*b, *t))
        .collect();
    let inserted: Vec<bool> = canaries.iter().map(|c| c.inserted).collect();
    let bound = bound_from_scores(&scores, &inserted, delta, cfg.confidence)?;

    // Exposure: rank of the true secret among random alternatives under the trained model.
    let exposures: Option<Vec<f64>> = if cfg.exposure_samples > 0 {
        progress.message(&format!(
            "exposure: {} alternatives per canary for {} canaries",
            cfg.exposure_samples,
            cfg.exposure_canaries.min(canaries.len())
        ));
        let mut v = Vec::with_capacity(canaries.len());
        for (c, t) in canaries.iter().zip(&trained).take(cfg.exposure_canaries) {
            let mut alts = Vec::with_capacity(cfg.exposure_samples);
            while alts.len() < cfg.exposure_samples {
                let s = cfg.kind.random_secret(&mut rng);
                if s != c.secret {
                    alts.push(example(&c.label, &cfg.kind.text(&s))?);
                }
            }
            let l: Vec<ExampleLoss> =
                score::example_losses(weights, Some(&adapter), &alts, cfg.score_batch)?;
            let nll: Vec<f64> = l.iter().map(|x| x.sum).collect();
            v.push(score::exposure(t.sum, &nll));
        }
        Some(v)
    } else {
        None
    };

    // Secrets in the synthetic data.
    let (synthetic, found) = match &cfg.synthetic {
        Some(p) => {
            let recs = dpsynth_data::read_jsonl(p).map_err(|e| AuditError::Data(e.to_string()))?;
            let found: Vec<bool> = canaries
                .iter()
                .map(|c| recs.iter().any(|r| contains_secret(&r.text, &c.secret)))
                .collect();
            let s = SyntheticSummary {
                path: p.clone(),
                records: recs.len(),
                inserted_found: found
                    .iter()
                    .zip(&inserted)
                    .filter(|(f, i)| **f && **i)
                    .count(),
                held_out_found: found
                    .iter()
                    .zip(&inserted)
                    .filter(|(f, i)| **f && !**i)
                    .count(),
            };
            (Some(s), Some(found))
        }
        None => (None, None),
    };

    let per_canary: Vec<CanaryResult> = canaries
        .iter()
        .enumerate()
        .map(|(i, c)| CanaryResult {
            id: c.id.clone(),
            label: c.label.clone(),
            inserted: c.inserted,
            base_loss: base[i].mean(),
            trained_loss: trained[i].mean(),
            score: scores[i],
            exposure: exposures.as_ref().and_then(|e| e.get(i).copied()),
            in_synthetic: found.as_ref().map(|f| f[i]),
        })
        .collect();
    let group = |ins: bool, f: &dyn Fn(&CanaryResult) -> Option<f64>| {
        mean(
            per_canary
                .iter()
                .filter(|c| c.inserted == ins)
                .filter_map(f),
        )
    };
    let exposure = exposures.as_ref().map(|e| {
        let max_bits = ((cfg.exposure_samples + 1) as f64).log2();
        ExposureSummary {
            samples: cfg.exposure_samples,
            max_bits,
            log2_space: cfg.kind.log2_space(),
            mean_inserted: group(true, &|c| c.exposure),
            mean_held_out: group(false, &|c| c.exposure),
            inserted_at_max: e
                .iter()
                .zip(&inserted)
                .filter(|(x, i)| **i && **x >= max_bits - 1e-9)
                .count(),
            canaries: e.len(),
        }
    });
    let report = AuditReport {
        version: AUDIT_SCHEMA_VERSION,
        verdict: verdict(claimed, bound.epsilon_lower_bound, bound.ceiling),
        claimed_epsilon: claimed,
        delta,
        epsilon_lower_bound: bound.epsilon_lower_bound,
        ceiling_epsilon: bound.ceiling,
        expected_samples_per_canary: summary.sampling_probability * summary.steps_done as f64,
        p_never_sampled: (1.0 - summary.sampling_probability).powf(summary.steps_done as f64),
        confidence: cfg.confidence,
        canary_kind: cfg.kind,
        canaries: canaries.len(),
        inserted: inserted.iter().filter(|&&b| b).count(),
        scores: ScoreSummary {
            auc: score::auc(&scores, &inserted),
            mean_inserted: group(true, &|c| Some(c.score)),
            mean_held_out: group(false, &|c| Some(c.score)),
        },
        bound,
        exposure,
        synthetic,
        training: TrainingSummary {
            run_dir: summary.run_dir.clone(),
            method: summary.method.clone(),
            records: summary.records,
            steps: summary.steps_done,
            noise_multiplier: summary.noise_multiplier,
            sampling_probability: summary.sampling_probability,
            no_dp: tcfg.no_dp,
            ledger_epsilon: summary.epsilon_pld,
            final_loss: summary.final_loss,
            seconds: summary.seconds,
            user_units: plan.user_units,
            user_units_kept: plan.kept_units,
        },
        fault: cfg.fault,
        per_canary,
        seconds: t0.elapsed().as_secs_f64(),
    };
    let p = out.join(AUDIT_JSON);
    std::fs::write(&p, serde_json::to_string_pretty(&report)?)
        .map_err(|e| AuditError::file(&p, e))?;
    Ok(report)
}

/// The user's units: one per record, or one per user with user-level DP (record indices).
fn user_units(records: &[dpsynth_data::Record], user_level: bool) -> Result<Vec<Vec<usize>>> {
    if !user_level {
        return Ok((0..records.len()).map(|i| vec![i]).collect());
    }
    let mut by_user: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, r) in records.iter().enumerate() {
        let u = r.user.as_deref().ok_or_else(|| {
            AuditError::Data(format!(
                "user-level DP needs a `user` in every record; record `{}` has none",
                r.id
            ))
        })?;
        by_user.entry(u).or_default().push(i);
    }
    Ok(by_user.into_values().collect())
}

/// A uniformly random subset of `keep` units (partial Fisher–Yates), records in input order.
fn keep_units(
    records: Vec<dpsynth_data::Record>,
    mut units: Vec<Vec<usize>>,
    keep: usize,
    rng: &mut dpsynth_privacy::SecureRng,
) -> Vec<dpsynth_data::Record> {
    if keep >= units.len() {
        return records;
    }
    for i in 0..keep {
        let j = i + rng.below((units.len() - i) as u64) as usize;
        units.swap(i, j);
    }
    let mut take = vec![false; records.len()];
    for u in &units[..keep] {
        for &i in u {
            take[i] = true;
        }
    }
    records
        .into_iter()
        .zip(take)
        .filter_map(|(r, t)| t.then_some(r))
        .collect()
}

fn write_canaries(path: &Path, canaries: &[Canary]) -> Result<()> {
    let mut s = String::new();
    for c in canaries {
        s.push_str(&serde_json::to_string(c)?);
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| AuditError::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(None, 5.0, 9.0), Verdict::NoGuarantee);
        assert_eq!(verdict(Some(1.0), 2.0, 9.0), Verdict::Violation);
        assert_eq!(verdict(Some(1.0), 1.0, 9.0), Verdict::Consistent);
        assert_eq!(verdict(Some(8.0), 0.0, 9.0), Verdict::Consistent);
        // An audit that cannot reach the claim is not evidence of consistency.
        assert_eq!(verdict(Some(3.0), 1.0, 3.0), Verdict::Inconclusive);
        assert_eq!(verdict(Some(8.0), 0.0, 5.0), Verdict::Inconclusive);
        assert_eq!(verdict(Some(3.0), 3.5, 5.0), Verdict::Violation);
    }
}
