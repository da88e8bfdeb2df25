//! The DP-SGD training loop and the library entry point [`train`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use dpsynth_lm::LlamaWeights;
use dpsynth_privacy::{DpEvent, Neighboring};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint};
use crate::dp::{ClippedSum, PerExampleGrads, UnclippedSum};
use crate::frozen::{FrozenPrecision, PackedBase};
use crate::labels::{dp_label_histogram, LabelDistribution};
use crate::ledger::{epsilon_or_inf, DpSgdEntry, Ledger};
use crate::model::{
    per_example_grads, summed_grads, Example, FullVars, Method, Params, TrainModel,
};
use crate::optim::{AdamW, AdamWConfig, LrSchedule};
use crate::rng::{DpRng, SeedPolicy};
use crate::{Result, TrainError};

/// Everything a training run needs (serialised as the run's `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Prepared JSONL (`{"id","text","label"[,"user"]}` per line).
    pub data: PathBuf,
    /// GGUF file or Hugging Face directory of the base model.
    pub model: PathBuf,
    pub method: Method,
    /// Prefix template containing `{label}`.
    pub template: String,
    /// Text tokens kept per record (prefix and EOS not counted).
    pub max_tokens: usize,
    /// Target ε (the budget). With no noise multiplier, σ is calibrated to it.
    pub epsilon: Option<f64>,
    /// δ; default `1 / n^1.1` for n records (or users).
    pub delta: Option<f64>,
    /// σ given directly (ε is then reported, and checked against `epsilon` if given).
    pub noise_multiplier: Option<f64>,
    /// Train without clipping and noise (no privacy).
    pub no_dp: bool,
    /// Per-example (per-user) L2 clip norm C. `f64::INFINITY` only with `no_dp`.
    pub clip_norm: f64,
    pub epochs: Option<f64>,
    pub steps: Option<u64>,
    /// Expected logical batch size (records or users): q = expected_batch / n.
    pub expected_batch: usize,
    /// Physical micro-batch size: a forward/backward pass holds at most this many examples
    /// of the dataset's longest length, i.e. `physical_batch × longest` padded tokens, and
    /// correspondingly more shorter ones (at most 4×; see [`plan_microbatches`]). Its
    /// examples are split across the rayon threads.
    pub physical_batch: usize,
    /// Precision of the frozen base weights in LoRA and prompt tuning (ignored by full
    /// fine-tuning, which trains every weight in f32). Does not affect the guarantee (see
    /// [`FrozenPrecision`]). Configs written before this option existed used f32.
    #[serde(default = "legacy_precision")]
    pub base_precision: FrozenPrecision,
    pub lr: f64,
    /// Fraction of the steps used for linear warm-up.
    pub warmup: f64,
    /// Decay after the warm-up (configs written before this option existed used `linear`).
    #[serde(default, skip_serializing_if = "LrSchedule::is_linear")]
    pub lr_schedule: LrSchedule,
    pub weight_decay: f64,
    /// `None`: OS entropy (secure). `Some(seed)`: reproducible, not secure.
    pub seed: Option<u64>,
    /// User-level DP: sample users, clip each user's summed gradient.
    pub user_level: bool,
    /// Records used per user (user-level only; the first ones in file order).
    pub max_records_per_user: usize,
    pub label_distribution: LabelDistribution,
    /// σ of the label histogram (default: calibrated to `label_budget_share` of ε).
    pub label_noise_multiplier: Option<f64>,
    pub label_budget_share: f64,
    /// Save a checkpoint (ledger first) every N logical steps (0 = only at the end).
    pub checkpoint_every: u64,
    pub out: PathBuf,
    /// Continue the run in `out`: from its ledger (the label histogram it released is reused)
    /// and its last checkpoint when there is one. The configuration and the plan recomputed
    /// from the data must equal the recorded ones.
    pub resume: bool,
}

impl TrainConfig {
    /// Defaults for everything but data, model and output.
    pub fn new(data: PathBuf, model: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            model,
            method: Method::Lora(dpsynth_lm::LoraConfig {
                rank: 8,
                alpha: 16.0,
                targets: vec!["q_proj".into(), "v_proj".into()],
            }),
            template: crate::format::DEFAULT_TEMPLATE.into(),
            max_tokens: 128,
            epsilon: Some(8.0),
            delta: None,
            noise_multiplier: None,
            no_dp: false,
            clip_norm: 1.0,
            epochs: Some(1.0),
            steps: None,
            expected_batch: 64,
            physical_batch: 8,
            base_precision: FrozenPrecision::machine_default(),
            lr: 1e-3,
            warmup: 0.05,
            lr_schedule: LrSchedule::Linear,
            weight_decay: 0.0,
            seed: None,
            user_level: false,
            max_records_per_user: 4,
            label_distribution: LabelDistribution::Dp,
            label_noise_multiplier: None,
            label_budget_share: 0.05,
            checkpoint_every: 50,
            out,
            resume: false,
        }
    }

    pub fn seed_policy(&self) -> SeedPolicy {
        match self.seed {
            Some(seed) => SeedPolicy::Seeded { seed },
            None => SeedPolicy::Os,
        }
    }

    /// The fields a resumed run must share with its checkpoint.
    fn identity(&self) -> serde_json::Value {
        let mut c = self.clone();
        c.resume = false;
        serde_json::to_value(c).unwrap_or_default()
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        crate::format::validate_template(&self.template)?;
        if self.max_tokens == 0 {
            return bad("--max-tokens must be at least 1".into());
        }
        if self.expected_batch == 0 || self.physical_batch == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if !(self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad("warm-up fraction must be in [0, 1)".into());
        }
        if !self.no_dp {
            if !(self.clip_norm > 0.0 && self.clip_norm.is_finite()) {
                return bad(format!(
                    "clip norm must be positive and finite for DP training, got {}",
                    self.clip_norm
                ));
            }
            if self.epsilon.is_none() && self.noise_multiplier.is_none() {
                return bad("give --epsilon (σ is calibrated) or --noise-multiplier".into());
            }
            if let Some(e) = self.epsilon {
                if !(e > 0.0 && e.is_finite()) {
                    return bad(format!("ε must be positive and finite, got {e}"));
                }
            }
        } else if self.label_distribution == LabelDistribution::Dp {
            // fine: histogram released without noise? No: refuse, it would be mislabeled.
        }
        if let Some(d) = self.delta {
            if !(d > 0.0 && d < 1.0) {
                return bad(format!("δ must be in (0, 1), got {d}"));
            }
        }
        if self.user_level && self.max_records_per_user == 0 {
            return bad("--max-records-per-user must be at least 1".into());
        }
        if self.user_level && self.max_records_per_user > self.physical_batch {
            return bad(format!(
                "--max-records-per-user ({}) must not exceed the physical batch ({}): a user's records are processed together",
                self.max_records_per_user, self.physical_batch
            ));
        }
        if !(0.0..1.0).contains(&self.label_budget_share) {
            return bad("label budget share must be in [0, 1)".into());
        }
        if self.steps.is_none() && self.epochs.is_none() {
            return bad("give --epochs or --steps".into());
        }
        Ok(())
    }
}

/// One logical step, as reported to the progress callback and loss.csv.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepInfo {
    pub step: u64,
    pub total: u64,
    /// Sampled units (records or users) in the logical batch.
    pub batch: usize,
    /// Mean training loss over the batch's examples (NaN for an empty batch).
    pub loss: f64,
    /// ε spent so far (RDP upper bound; the ledger holds the PLD value), if known.
    pub epsilon: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    /// Sampled units whose gradient had a NaN or infinite coordinate and were left out of the
    /// clipped sum (see `dp::PerExampleGrads::clip_and_sum`). Like `loss`, a statistic of the
    /// private batch: NOT covered by the guarantee.
    #[serde(default)]
    pub dropped_nonfinite: usize,
}

/// Progress reporting for long runs (the CLI draws an indicatif bar).
pub trait Progress {
    fn start(&mut self, _total_steps: u64, _done: u64) {}
    fn step(&mut self, _info: &StepInfo) {}
    fn message(&mut self, _msg: &str) {}
    fn finish(&mut self) {}
    /// Polled after every step: `true` stops the run cleanly (ledger, checkpoint and
    /// adapter are written; `--resume` continues it).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// No progress output.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a finished (or budget-stopped) run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub method: String,
    pub trainable_parameters: usize,
    pub records: usize,
    pub units: usize,
    pub steps_done: u64,
    pub steps_planned: u64,
    pub noise_multiplier: Option<f64>,
    pub sampling_probability: f64,
    pub delta: f64,
    pub epsilon_pld: Option<f64>,
    pub epsilon_rdp: Option<f64>,
    /// Mean loss of the last logged steps: computed on private batches without noise, so
    /// NOT covered by the guarantee (for the data holder; kept out of shared ledgers).
    pub final_loss: Option<f64>,
    /// Units dropped over the whole run for a non-finite gradient (private, like `final_loss`).
    #[serde(default)]
    pub dropped_nonfinite: u64,
    pub stopped_early: Option<String>,
    pub seconds: f64,
}

/// Files of a run directory.
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn ledger(&self) -> PathBuf {
        self.dir.join("privacy.json")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn adapter(&self) -> PathBuf {
        self.dir.join("adapter")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }
    pub fn loss_log(&self) -> PathBuf {
        self.dir.join("loss.csv")
    }
    pub fn run_info(&self) -> PathBuf {
        self.dir.join("run.json")
    }
}

/// Facts a run's later stages need (`run.json`): labels and the prefix template.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub labels: Vec<String>,
    pub template: String,
    pub model: PathBuf,
    pub method: Method,
    pub label_distribution: LabelDistribution,
    pub max_tokens: usize,
}

/// Training data after tokenization, grouped into privacy units.
pub struct PreparedData {
    pub examples: Vec<Example>,
    /// For each unit (record or user), the indices of its examples.
    pub units: Vec<Vec<usize>>,
    pub labels: Vec<String>,
    /// Labels of each unit's examples (for the label histogram).
    pub unit_labels: Vec<Vec<String>>,
    pub records: usize,
}

/// Group records into units and tokenize them.
pub fn prepare_data(
    records: &[dpsynth_data::Record],
    tok: &dpsynth_lm::Tokenizer,
    cfg: &TrainConfig,
) -> Result<PreparedData> {
    if records.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: the dataset is empty; nothing to train on (no budget spent)",
            cfg.data.display()
        )));
    }
    let eos = tok
        .eos_id()
        .ok_or_else(|| TrainError::Config("the tokenizer has no end-of-sequence token".into()))?;
    let labels: Vec<String> = records
        .iter()
        .map(|r| r.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    if cfg.user_level {
        let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let u = r.user.as_deref().ok_or_else(|| {
                TrainError::Data(format!(
                    "user-level DP needs a `user` in every record; record `{}` has none",
                    r.id
                ))
            })?;
            by_user.entry(u).or_default().push(i);
        }
        for (_, mut v) in by_user {
            v.truncate(cfg.max_records_per_user);
            groups.push(v);
        }
    } else {
        groups = (0..records.len()).map(|i| vec![i]).collect();
    }
    let mut examples = Vec::new();
    let mut units = Vec::new();
    let mut unit_labels = Vec::new();
    for g in groups {
        let mut u = Vec::new();
        let mut ul = Vec::new();
        for i in g {
            let r = &records[i];
            examples.push(crate::format::make_example(
                tok,
                &cfg.template,
                &r.label,
                &r.text,
                cfg.max_tokens,
                eos,
            )?);
            u.push(examples.len() - 1);
            ul.push(r.label.clone());
        }
        units.push(u);
        unit_labels.push(ul);
    }
    Ok(PreparedData {
        examples,
        units,
        labels,
        unit_labels,
        records: records.len(),
    })
}

/// The noise multipliers and plan of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub q: f64,
    pub steps: u64,
    pub delta: f64,
    pub sigma: Option<f64>,
    pub label_sigma: Option<f64>,
    /// ε (PLD) of the whole planned run (or of the steps that fit the budget).
    pub planned_epsilon: Option<f64>,
    /// Steps that fit the budget (= `steps` unless σ was given and the budget is smaller).
    pub budget_steps: u64,
}

/// Decide q, steps, δ and the noise multipliers.
///
/// # Privacy
/// σ is the smallest value for which the PLD ε of the composed run
/// ([`DpEvent::dpsynth_run`]: label histogram + `steps` of Poisson-subsampled Gaussian, Mironov
/// et al. 2019) is ≤ the target, found by the privacy crate's one calibration
/// ([`dpsynth_privacy::calibrate_noise_multiplier_for`], which keeps the conservative end and
/// checks its result with the default PLD), the same one `dpsynth account` uses; the label
/// histogram's σ comes from the same function at its share of ε. q uses the dataset size n,
/// treated as public (as in Abadi et al. 2016).
pub fn plan(cfg: &TrainConfig, n_units: usize) -> Result<Plan> {
    if n_units == 0 {
        return Err(TrainError::Data("no training units".into()));
    }
    let q = (cfg.expected_batch as f64 / n_units as f64).min(1.0);
    let steps = match cfg.steps {
        Some(s) => s,
        None => (cfg.epochs.unwrap_or(1.0) / q).ceil().max(1.0) as u64,
    };
    if steps == 0 {
        return Err(TrainError::Config("zero steps requested".into()));
    }
    let delta = cfg
        .delta
        .unwrap_or_else(|| 1.0 / (n_units as f64).powf(1.1));
    if cfg.no_dp {
        return Ok(Plan {
            q,
            steps,
            delta,
            sigma: None,
            label_sigma: None,
            planned_epsilon: None,
            budget_steps: steps,
        });
    }
    let target = cfg.epsilon;
    let label_sigma = if cfg.label_distribution == LabelDistribution::Dp {
        Some(match cfg.label_noise_multiplier {
            Some(s) => s,
            None => {
                let t = target.ok_or_else(|| {
                    TrainError::Config(
                        "with --noise-multiplier and no --epsilon, give --label-noise-multiplier for the DP label histogram".into(),
                    )
                })?;
                let share = t * cfg.label_budget_share;
                dpsynth_privacy::calibrate_noise_multiplier_for(share, delta, DpEvent::gaussian)
                    .map_err(|e| {
                        TrainError::Budget(format!(
                            "ε = {t} is too small: the DP label histogram's share ({share:.2e}) \
                         cannot be met ({e}); use a larger ε, a larger --label-budget-share or \
                         --label-distribution uniform (no budget spent)"
                        ))
                    })?
            }
        })
    } else {
        None
    };
    let sigma = match (cfg.noise_multiplier, target) {
        (Some(s), _) => s,
        (None, Some(t)) => {
            match dpsynth_privacy::calibrate_noise_multiplier_for(t, delta, |s| {
                DpEvent::dpsynth_run(label_sigma, q, s, steps)
            }) {
                Ok(s) => s,
                Err(e) => {
                    return Err(TrainError::Budget(format!(
                        "ε = {t} is too small for {steps} steps at q = {q:.4} ({e}); ask for a \
                         larger ε, fewer steps/epochs or a smaller expected batch (no budget spent)"
                    )));
                }
            }
        }
        (None, None) => unreachable!("validated"),
    };
    let planned = epsilon_or_inf(&DpEvent::dpsynth_run(label_sigma, q, sigma, steps), delta);
    let mut budget_steps = steps;
    if let Some(t) = target {
        if planned > t {
            // Only reachable with a user-given σ: find how many steps fit.
            let fits = |k: u64| {
                epsilon_or_inf(&DpEvent::dpsynth_run(label_sigma, q, sigma, k), delta) <= t
            };
            let (mut lo, mut hi) = (0u64, steps);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if fits(mid) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            if lo == 0 {
                let one = epsilon_or_inf(&DpEvent::dpsynth_run(label_sigma, q, sigma, 1), delta);
                return Err(TrainError::Budget(format!(
                    "ε = {t} is too small: with σ = {sigma} at q = {q:.4} a single step already spends ε = {one:.3} and {steps} steps would spend ε = {planned:.3}; raise ε or σ (no budget spent)"
                )));
            }
            budget_steps = lo;
        }
    }
    let planned_epsilon = Some(epsilon_or_inf(
        &DpEvent::dpsynth_run(label_sigma, q, sigma, budget_steps),
        delta,
    ));
    Ok(Plan {
        q,
        steps,
        delta,
        sigma: Some(sigma),
        label_sigma,
        planned_epsilon,
        budget_steps,
    })
}

fn legacy_precision() -> FrozenPrecision {
    FrozenPrecision::F32
}

/// Train: the library entry point (`dpsynth train` and `dpsynth run` call this).
pub fn train(cfg: &TrainConfig, progress: &mut dyn Progress) -> Result<TrainSummary> {
    cfg.validate()?;
    let device = Device::Cpu;
    let records =
        dpsynth_data::read_jsonl(&cfg.data).map_err(|e| TrainError::Data(e.to_string()))?;
    if records.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: the dataset is empty; nothing to train on (no budget spent)",
            cfg.data.display()
        )));
    }
    if let Some(w) = user_ids_warning(&records, cfg) {
        tracing::warn!("{w}");
        progress.message(&w);
    }
    progress.message("loading model");
    let (weights, tok) = dpsynth_lm::load_model(&cfg.model, &device)?;
    let data = prepare_data(&records, &tok, cfg)?;
    drop((records, tok));
    let packed = pack_base(cfg, &weights, progress)?;
    // With a bf16 copy, the f32 copies of the frozen linears are never read again: free them.
    let weights = match &packed {
        Some(_) => crate::frozen::release_frozen_f32(&weights)?,
        None => weights,
    };
    train_with(cfg, &weights, packed.as_ref(), &data, progress)
}

/// The warning for data whose records carry user ids while training is record-level.
///
/// # Privacy
/// Record-level DP protects one record; a user with k records gets only group privacy
/// (kε, k·e^{(k−1)ε}·δ; Dwork & Roth 2014, Thm. 2.2). Whether a `user` field exists is schema,
/// not a statistic of the records, so the warning itself releases nothing.
pub fn user_ids_warning(records: &[dpsynth_data::Record], cfg: &TrainConfig) -> Option<String> {
    (!cfg.user_level && records.iter().any(|r| r.user.is_some())).then(|| {
        format!(
            "{}: the records carry user ids but training is record-level: the guarantee protects \
             single records, and a user with k records is protected only by group privacy (kε); \
             train with user-level DP to protect users",
            cfg.data.display()
        )
    })
}

/// The bf16 copy of the frozen base when `cfg` asks for it (LoRA and prompt tuning).
fn pack_base(
    cfg: &TrainConfig,
    weights: &LlamaWeights,
    progress: &mut dyn Progress,
) -> Result<Option<PackedBase>> {
    Ok(match (&cfg.method, cfg.base_precision) {
        (Method::Lora(_) | Method::Prompt { .. }, FrozenPrecision::Bf16) => {
            if !dpsynth_lm::kernels::bf16_kernel_available() {
                tracing::warn!(
                    "--base-precision bf16 without AVX-512 BF16 on this CPU: the portable kernel is slower than f32"
                );
            }
            progress.message("packing the frozen base weights as bf16");
            Some(PackedBase::new(weights)?)
        }
        _ => None,
    })
}

/// Train on already tokenized data (tests use tiny random models here).
pub fn train_prepared(
    cfg: &TrainConfig,
    weights: &LlamaWeights,
    data: &PreparedData,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    cfg.validate()?;
    let packed = pack_base(cfg, weights, progress)?;
    train_with(cfg, weights, packed.as_ref(), data, progress)
}

fn train_with(
    cfg: &TrainConfig,
    weights: &LlamaWeights,
    packed: Option<&PackedBase>,
    data: &PreparedData,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    cfg.validate()?;
    let t0 = Instant::now();
    let paths = RunPaths {
        dir: cfg.out.clone(),
    };
    let n_units = data.units.len();
    if n_units == 0 {
        return Err(TrainError::Data(
            "the dataset is empty (no budget spent)".into(),
        ));
    }
    if cfg.no_dp && cfg.label_distribution == LabelDistribution::Dp {
        return Err(TrainError::Config(
            "--no-dp with --label-distribution dp: use `uniform` or a file".into(),
        ));
    }
    if let LabelDistribution::File(f) = &cfg.label_distribution {
        crate::synth::read_label_file(f, &data.labels)?;
    }
    let plan = plan(cfg, n_units)?;
    let policy = cfg.seed_policy();
    if let SeedPolicy::Seeded { .. } = policy {
        tracing::warn!("a seed was given: noise and sampling are reproducible, NOT secure");
    }
    std::fs::create_dir_all(&paths.dir).map_err(|e| TrainError::file(&paths.dir, e))?;
    let neighboring = if cfg.user_level {
        Neighboring::AddRemoveUser
    } else {
        Neighboring::AddRemoveRecord
    };

    // Resume or start.
    let mut params = Params::init(&cfg.method, weights, cfg.seed.unwrap_or(0))?;
    let warmup_steps = (cfg.warmup * plan.steps as f64).round() as usize;
    let ocfg = AdamWConfig {
        lr: cfg.lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: cfg.weight_decay,
        warmup_steps,
        total_steps: plan.steps as usize,
        schedule: cfg.lr_schedule,
    };
    let mut opt = AdamW::new(ocfg, &params)?;
    let mut start_step = 0u64;
    let mut loss_rows: Vec<StepInfo> = Vec::new();
    // The ledger a new run writes (before its label histogram is drawn).
    let mut fresh = Ledger::new(cfg.no_dp, neighboring, plan.delta, cfg.epsilon, policy);
    if !cfg.no_dp {
        fresh.dp_sgd = Some(DpSgdEntry {
            sampling_probability: plan.q,
            noise_multiplier: plan.sigma.expect("dp"),
            clip_norm: cfg.clip_norm,
            expected_batch: cfg.expected_batch as f64,
            units: n_units,
            steps_planned: plan.steps,
            steps_spent: 0,
        });
    }
    let mut ledger = if cfg.resume {
        let ledger = resume_ledger(cfg, &paths, &fresh, &plan, data)?;
        if Checkpoint::exists(&paths.checkpoint()) {
            let ck = Checkpoint::load(&paths.checkpoint(), weights.device(), &params)?;
            check_identity(&ck.config, cfg, &paths.checkpoint())?;
            params = ck.params;
            opt.m = ck.m;
            opt.v = ck.v;
            opt.step = ck.step as usize;
            start_step = ck.step;
            loss_rows = ck.losses;
        } else {
            progress.message(
                "no checkpoint yet: starting from the initial parameters, with the label \
                 histogram already released in the ledger (it is reused, never drawn again)",
            );
        }
        let spent = ledger.dp_sgd.as_ref().map(|s| s.steps_spent).unwrap_or(0);
        if spent > start_step {
            // Steps after the checkpoint were counted but lost: keep counting them.
            start_step = spent;
            opt.step = spent as usize;
        }
        progress.message(&format!("resuming at step {start_step}"));
        ledger
    } else {
        if paths.checkpoint().exists() || paths.ledger().exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run (privacy.json / checkpoint); use --resume to continue it \
                 or choose a new --out",
                paths.dir.display()
            )));
        }
        let mut ledger = fresh;
        if let Some(ls) = plan.label_sigma {
            // The histogram is computed, then the ledger recording it is written before
            // it is used or stored anywhere else.
            let units: Vec<Vec<&str>> = data
                .unit_labels
                .iter()
                .map(|v| v.iter().map(|s| s.as_str()).collect())
                .collect();
            let mut rng = DpRng::new(policy, "labels", 0);
            let h = dp_label_histogram(&data.labels, &units, ls, &mut rng)?;
            ledger.label_histogram = Some(h);
        }
        ledger.refresh()?;
        ledger.write(&paths.ledger())?;
        ledger
    };
    crate::ledger::kill_point("train:histogram-released");
    let info = RunInfo {
        labels: data.labels.clone(),
        template: cfg.template.clone(),
        model: cfg.model.clone(),
        method: cfg.method.clone(),
        label_distribution: cfg.label_distribution.clone(),
        max_tokens: cfg.max_tokens,
    };
    std::fs::write(paths.config(), serde_json::to_string_pretty(cfg)?)
        .map_err(|e| TrainError::file(paths.config(), e))?;
    std::fs::write(paths.run_info(), serde_json::to_string_pretty(&info)?)
        .map_err(|e| TrainError::file(paths.run_info(), e))?;

    let model = match packed {
        Some(p) => TrainModel::with_packed(weights, p),
        None => TrainModel::new(weights),
    };
    progress.start(plan.steps, start_step);
    let mut eps_now = ledger.epsilon_pld;
    let mut stopped = None;
    let mut step = start_step;
    // The PLD ε of the steps so far (tens of ms each): every step for short runs, about 200
    // times over a long one.
    let eps_every = (plan.steps / 200).max(1);
    while step < plan.steps {
        // Budget guard: never start a step that would exceed the target.
        if step >= plan.budget_steps {
            stopped = Some(format!(
                "stopped after {step} steps: the next step would exceed the budget ε = {}",
                cfg.epsilon.unwrap_or(f64::INFINITY)
            ));
            progress.message(stopped.as_deref().unwrap_or_default());
            break;
        }
        let ts = Instant::now();
        let mut srng = DpRng::new(policy, "sampling", step);
        let sampled = srng.poisson_sample(n_units, plan.q);
        let mut nrng = DpRng::new(policy, "noise", step);
        let (sum_loss, n_ex, dropped) = logical_step(
            &model,
            cfg,
            plan.sigma,
            &mut params,
            &mut opt,
            data,
            &sampled,
            &mut nrng,
        )?;
        if dropped > 0 {
            tracing::warn!(
                "step {}: {dropped} sampled unit(s) had a NaN or infinite gradient and were left out of the sum (counted in loss.csv)",
                step + 1
            );
        }
        step += 1;
        if let Some(s) = ledger.dp_sgd.as_mut() {
            s.steps_spent = step;
        }
        if !cfg.no_dp && (step.is_multiple_of(eps_every) || step == plan.steps) {
            // Progress display (and loss.csv): the PLD ε spent so far, the same accountant as
            // the ledger (RDP would show a looser bound, above the target early in a run).
            eps_now = Some(epsilon_or_inf(
                &DpEvent::dpsynth_run(plan.label_sigma, plan.q, plan.sigma.unwrap(), step),
                plan.delta,
            ));
        }
        let row = StepInfo {
            step,
            total: plan.steps,
            batch: sampled.len(),
            loss: if n_ex > 0 {
                sum_loss / n_ex as f64
            } else {
                f64::NAN
            },
            epsilon: eps_now,
            lr: opt.config.lr_at(step as usize - 1),
            seconds: ts.elapsed().as_secs_f64(),
            dropped_nonfinite: dropped,
        };
        progress.step(&row);
        loss_rows.push(row);
        if step < plan.steps && progress.should_stop() {
            stopped = Some(format!(
                "interrupted after {step} steps; continue with --resume"
            ));
            break;
        }
        if cfg.checkpoint_every > 0
            && step.is_multiple_of(cfg.checkpoint_every)
            && step < plan.steps
        {
            ledger.refresh()?;
            ledger.write(&paths.ledger())?;
            Checkpoint {
                step,
                config: cfg.identity(),
                params: params.clone(),
                m: opt.m.clone(),
                v: opt.v.clone(),
                losses: loss_rows.clone(),
                seed_policy: policy,
            }
            .save(&paths.checkpoint())?;
            crate::ledger::kill_point("train:checkpoint");
        }
    }
    // Final: ledger first, then the adapter, the checkpoint and the loss log.
    ledger.refresh()?;
    ledger.write(&paths.ledger())?;
    crate::ledger::kill_point("train:final-ledger");
    crate::adapter_io::save_params(&paths.adapter(), &cfg.method, &params, weights)?;
    Checkpoint {
        step,
        config: cfg.identity(),
        params: params.clone(),
        m: opt.m.clone(),
        v: opt.v.clone(),
        losses: loss_rows.clone(),
        seed_policy: policy,
    }
    .save(&paths.checkpoint())?;
    write_loss_csv(&paths.loss_log(), &loss_rows)?;
    progress.finish();
    let final_loss = loss_rows
        .iter()
        .rev()
        .take(10)
        .filter(|r| r.loss.is_finite())
        .map(|r| r.loss)
        .fold((0.0, 0usize), |(s, n), l| (s + l, n + 1));
    Ok(TrainSummary {
        run_dir: paths.dir.clone(),
        method: cfg.method.name().into(),
        trainable_parameters: params.numel(),
        records: data.records,
        units: n_units,
        steps_done: step,
        steps_planned: plan.steps,
        noise_multiplier: plan.sigma,
        sampling_probability: plan.q,
        delta: plan.delta,
        epsilon_pld: ledger.epsilon_pld,
        epsilon_rdp: ledger.epsilon_rdp,
        final_loss: (final_loss.1 > 0).then(|| final_loss.0 / final_loss.1 as f64),
        dropped_nonfinite: loss_rows.iter().map(|r| r.dropped_nonfinite as u64).sum(),
        stopped_early: stopped,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// One logical step on the sampled units: per-unit gradients in physical micro-batches →
/// clip → sum → noise → AdamW (`--no-dp`: the summed gradient of shared parameters, no
/// clipping or noise). Returns (sum of example losses, number of examples, units dropped for
/// a non-finite gradient). `dpsynth train`
/// and the step benchmark both run this function.
///
/// # Privacy
/// The sampled set is the Poisson sample the accountant assumes; how it is split into
/// physical micro-batches ([`plan_microbatches`]) and threads changes neither the clipped
/// sum (each unit is clipped on its own, see [`PerExampleGrads::clip_and_sum`]) nor the
/// noise (added once per logical step, [`ClippedSum::add_noise`]; Abadi et al. 2016,
/// Alg. 1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn logical_step(
    model: &TrainModel,
    cfg: &TrainConfig,
    sigma: Option<f64>,
    params: &mut Params,
    opt: &mut AdamW,
    data: &PreparedData,
    sampled: &[usize],
    noise: &mut DpRng,
) -> Result<(f64, usize, usize)> {
    let shapes: Vec<Vec<usize>> = params.tensors.iter().map(|t| t.dims().to_vec()).collect();
    let eb = cfg.expected_batch as f64;
    let dev = model.base.device();
    if cfg.no_dp {
        let mut acc = UnclippedSum::zeros(&shapes, dev)?;
        let (l, n) = for_each_microbatch(model, cfg, params, data, sampled, true, |g| {
            acc.accumulate(g.sum_without_privacy()?)
        })?;
        opt.step(params, acc.into_gradient(eb)?)?;
        return Ok((l, n, 0));
    }
    let sigma = sigma.ok_or_else(|| TrainError::Other("DP step without σ".into()))?;
    let mut acc = ClippedSum::zeros(&shapes, cfg.clip_norm, dev)?;
    let (l, n) = for_each_microbatch(model, cfg, params, data, sampled, false, |g| {
        let (c, _) = g.clip_and_sum(cfg.clip_norm)?;
        acc.accumulate(c)
    })?;
    let dropped = acc.dropped_nonfinite();
    let noisy = acc.add_noise(sigma, eb, noise)?;
    opt.step(params, noisy)?;
    Ok((l, n, dropped))
}

/// Physical micro-batches of one logical batch, as lists of units. Units are sorted by
/// their longest example and packed greedily while a micro-batch's padded size (examples ×
/// its longest example, virtual tokens included) stays within the budget of
/// `physical_batch` examples of the dataset's longest length, and it holds at most
/// `4 × physical_batch` examples. A step's cost then follows the real token count: short
/// records share a micro-batch (Rotten Tomatoes reviews: ~30 tokens against a 48-token
/// cap), long ones get few companions, and sorting keeps the padding small. A unit's
/// examples always share a micro-batch (user-level clipping needs their sum).
pub fn plan_microbatches(
    data: &PreparedData,
    sampled: &[usize],
    physical_batch: usize,
    n_virtual: usize,
) -> Vec<Vec<usize>> {
    let unit_len = |u: usize| {
        data.units[u]
            .iter()
            .map(|&i| data.examples[i].ids.len())
            .max()
            .unwrap_or(0)
            + n_virtual
    };
    let longest = data.examples.iter().map(|e| e.ids.len()).max().unwrap_or(0) + n_virtual;
    let budget = physical_batch.max(1) * longest.max(1);
    let max_examples = 4 * physical_batch.max(1);
    let mut units: Vec<usize> = sampled.to_vec();
    units.sort_by_key(|&u| unit_len(u));
    let mut out: Vec<Vec<usize>> = Vec::new();
    let (mut cur, mut count, mut cur_len) = (Vec::new(), 0usize, 0usize);
    for u in units {
        let n = data.units[u].len();
        let len = unit_len(u).max(cur_len);
        if !cur.is_empty() && ((count + n) * len > budget || count + n > max_examples) {
            out.push(std::mem::take(&mut cur));
            count = 0;
        }
        cur_len = if cur.is_empty() { unit_len(u) } else { len };
        cur.push(u);
        count += n;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The ledger of the run being resumed, checked against the plan recomputed now.
///
/// # Privacy
/// Resuming reuses everything the ledger already records as released, above all the label
/// histogram: a run killed before its first checkpoint continues with the histogram in its
/// ledger instead of drawing a second one (a second independent draw would be a second
/// Gaussian release the ledger does not count). The recomputed plan must equal the recorded
/// one ([`Ledger::plan_mismatches`]), and the configuration must equal the one the run wrote.
fn resume_ledger(
    cfg: &TrainConfig,
    paths: &RunPaths,
    fresh: &Ledger,
    plan: &Plan,
    data: &PreparedData,
) -> Result<Ledger> {
    if !paths.ledger().exists() {
        return Err(TrainError::Checkpoint {
            path: paths.dir.clone(),
            msg: "--resume: no privacy.json here, so nothing was released and there is nothing \
                  to resume; start without --resume (no budget spent)"
                .into(),
        });
    }
    // config.json is written right after the first ledger: compare when it exists.
    if let Ok(text) = std::fs::read_to_string(paths.config()) {
        let old: TrainConfig = serde_json::from_str(&text)
            .map_err(|e| TrainError::file(paths.config(), format!("not a training config: {e}")))?;
        check_identity(&old.identity(), cfg, &paths.config())?;
    }
    let ledger = Ledger::read(&paths.ledger())?;
    let bad = ledger.plan_mismatches(fresh, plan.label_sigma, &data.labels);
    if !bad.is_empty() {
        return Err(TrainError::Checkpoint {
            path: paths.ledger(),
            msg: format!(
                "--resume refused: the plan recomputed from the data and configuration differs \
                 from the one this ledger accounts ({}); a resumed run must train with exactly \
                 the accounted parameters. Restore the original data/config/version, or start a \
                 new --out directory (this one's spend stays recorded in its ledger)",
                bad.join("; ")
            ),
        });
    }
    Ok(ledger)
}

/// The resumed run's configuration must equal the one recorded at `path`.
fn check_identity(recorded: &serde_json::Value, cfg: &TrainConfig, path: &Path) -> Result<()> {
    if *recorded == cfg.identity() {
        return Ok(());
    }
    let diff = checkpoint::diff_fields(recorded, &cfg.identity());
    Err(TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!(
            "it was written by a run with a different configuration (differs in: {}); \
             resume with the same settings or start a new --out directory (no budget spent)",
            diff.join(", ")
        ),
    })
}

/// Run the sampled units' gradients in physical micro-batches ([`plan_microbatches`]) and
/// hand each micro-batch's [`PerExampleGrads`] (one row per unit; with `summed`, one row:
/// the non-private summed gradient of shared parameters) to `sink`. Returns (sum of example
/// losses, number of examples).
fn for_each_microbatch(
    model: &TrainModel,
    cfg: &TrainConfig,
    params: &Params,
    data: &PreparedData,
    sampled: &[usize],
    summed: bool,
    mut sink: impl FnMut(PerExampleGrads) -> Result<()>,
) -> Result<(f64, usize)> {
    let mut sum_loss = 0f64;
    let mut n_ex = 0usize;
    if sampled.is_empty() {
        return Ok((0.0, 0));
    }
    if matches!(cfg.method, Method::Full) {
        let fv = FullVars::new(model.base, params)?;
        for &u in sampled {
            let ex: Vec<&Example> = data.units[u].iter().map(|&i| &data.examples[i]).collect();
            let (g, losses) = fv.unit_grad(&ex)?;
            sum_loss += losses.iter().map(|&l| l as f64).sum::<f64>();
            n_ex += losses.len();
            sink(PerExampleGrads::single(g)?)?;
        }
        return Ok((sum_loss, n_ex));
    }
    let nv = cfg.method.virtual_tokens();
    for mb in plan_microbatches(data, sampled, cfg.physical_batch, nv) {
        let mut ex: Vec<&Example> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (k, &u) in mb.iter().enumerate() {
            for &e in &data.units[u] {
                ex.push(&data.examples[e]);
                owner.push(k);
            }
        }
        if summed {
            let (g, losses) = summed_grads(model, &cfg.method, params, &ex)?;
            sum_loss += losses.iter().map(|&l| l as f64).sum::<f64>();
            n_ex += losses.len();
            sink(PerExampleGrads::single(g)?)?;
            continue;
        }
        let (g, losses) = per_example_grads(model, &cfg.method, params, &ex)?;
        sum_loss += losses.iter().map(|&l| l as f64).sum::<f64>();
        n_ex += losses.len();
        let mut peg = PerExampleGrads::new(g)?;
        if cfg.user_level {
            peg = peg.group_sum(&owner, mb.len())?;
        }
        sink(peg)?;
    }
    Ok((sum_loss, n_ex))
}

fn write_loss_csv(path: &Path, rows: &[StepInfo]) -> Result<()> {
    let mut s = String::from("step,batch,loss,epsilon,lr,seconds,dropped_nonfinite\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{:.3},{}\n",
            r.step,
            r.batch,
            r.loss,
            r.epsilon.map(|e| e.to_string()).unwrap_or_default(),
            r.lr,
            r.seconds,
            r.dropped_nonfinite
        ));
    }
    std::fs::write(path, s).map_err(|e| TrainError::file(path, e))
}

#[allow(dead_code)]
fn _assert_send(_: &Tensor) {}

#[cfg(test)]
mod plan_tests {
    use super::*;

    /// `dpsynth train` and `dpsynth account --label-histogram-epsilon` must print the same σ for
    /// the same plan: both go through the privacy crate's one calibration.
    #[test]
    fn train_plan_equals_the_privacy_crates_run_calibration() {
        let mut cfg = TrainConfig::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
        cfg.epsilon = Some(3.0);
        cfg.delta = Some(1e-5);
        cfg.steps = Some(160);
        cfg.expected_batch = 32;
        cfg.label_distribution = LabelDistribution::Dp;
        cfg.label_budget_share = 0.1 / 3.0;
        let p = plan(&cfg, 8192).unwrap();
        let run =
            dpsynth_privacy::calibrate_run(3.0, 1e-5, 32.0 / 8192.0, 160, Some(0.1 / 3.0)).unwrap();
        assert_eq!(p.label_sigma, run.label_sigma);
        assert_eq!(p.sigma, Some(run.sigma));
        assert!((p.planned_epsilon.unwrap() - run.epsilon).abs() < 1e-12);
        assert!(p.planned_epsilon.unwrap() <= 3.0);
        // Without a histogram: plain DP-SGD calibration.
        cfg.label_distribution = LabelDistribution::Uniform;
        let p = plan(&cfg, 8192).unwrap();
        let s = dpsynth_privacy::calibrate_noise_multiplier(3.0, 1e-5, 32.0 / 8192.0, 160).unwrap();
        assert!((p.sigma.unwrap() / s - 1.0).abs() < 1e-6);
        assert_eq!(p.label_sigma, None);
    }
}
