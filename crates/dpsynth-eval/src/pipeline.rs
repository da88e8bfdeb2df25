//! The whole evaluation: classifiers trained on synthetic / real / DP-SGD-real data and tested
//! on real test data, MAUVE, text statistics and the memorization check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use dpsynth_data::Record;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cnn::{CnnConfig, CnnTrainInfo, PublicEmbedding, WordCnn};
use crate::dpsgd::{DpPlan, DpSgdConfig};
use crate::embed::{require_minilm_dir, Embeddings, MiniLm};
use crate::logreg::{LogReg, LogRegConfig};
use crate::mauve::{mauve, MauveConfig, MauveResult};
use crate::metrics::ClassMetrics;
use crate::textstats::{memorization, text_stats, MemorizationSummary, TextStats};
use crate::{io_err, EvalError, Progress, Result};

/// The classifier families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierKind {
    /// Multinomial logistic regression on frozen MiniLM embeddings ("BERT-based").
    Logreg,
    /// Word-level CNN (Kim 2014) trained from scratch.
    Cnn,
}

impl std::str::FromStr for ClassifierKind {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "logreg" | "bert" | "minilm" => Ok(Self::Logreg),
            "cnn" => Ok(Self::Cnn),
            o => Err(EvalError::Invalid(format!(
                "unknown classifier `{o}` (expected logreg or cnn)"
            ))),
        }
    }
}

impl std::fmt::Display for ClassifierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Logreg => "MiniLM+logreg",
            Self::Cnn => "word CNN",
        })
    }
}

/// Settings of one evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalConfig {
    pub synthetic: PathBuf,
    pub train: PathBuf,
    pub test: PathBuf,
    /// Where metrics.json and memorization_private.json go (none: nothing written).
    pub out_dir: Option<PathBuf>,
    pub classifiers: Vec<ClassifierKind>,
    pub minilm_dir: Option<PathBuf>,
    /// A shared embedding cache, used only when set (on request: `--cache-dir`, or
    /// [`shared_cache_dir`]). By default embeddings are cached privately in the output
    /// directory ([`EvalConfig::effective_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Cache embeddings at all (`false`: recompute every time, write nothing).
    #[serde(default = "yes")]
    pub cache_embeddings: bool,
    /// Run the DP-SGD baseline at this (ε, δ) when set.
    pub epsilon: Option<f64>,
    pub delta: f64,
    /// Also train on the real training set without privacy (the ceiling).
    pub real_baseline: bool,
    pub logreg: LogRegConfig,
    pub cnn: CnnConfig,
    pub dp_logreg: DpSgdConfig,
    pub dp_cnn: DpSgdConfig,
    pub mauve: MauveConfig,
    /// At most this many texts per side enter MAUVE (random subset, fixed seed).
    pub mauve_max_texts: usize,
    /// Seed for DP noise: reproducible, NOT secure. None = OS entropy.
    pub dp_seed: Option<u64>,
    pub worst_examples: usize,
}

impl EvalConfig {
    pub fn new(synthetic: PathBuf, train: PathBuf, test: PathBuf) -> Self {
        Self {
            synthetic,
            train,
            test,
            out_dir: None,
            classifiers: vec![ClassifierKind::Logreg, ClassifierKind::Cnn],
            minilm_dir: None,
            cache_dir: None,
            cache_embeddings: true,
            epsilon: None,
            delta: 1e-5,
            real_baseline: true,
            logreg: LogRegConfig::default(),
            cnn: CnnConfig::default(),
            dp_logreg: DpSgdConfig {
                epsilon: 0.0,
                delta: 1e-5,
                clip: 1.0,
                expected_batch_size: 512,
                epochs: 30,
                learning_rate: 1.0,
                seed: None,
            },
            // CNN-static on public embeddings (see `WordCnn::fit_dp`), Adam without dropout;
            // measured on rotten-tomatoes at ε = 8 (crates/dpsynth-eval/README.md).
            dp_cnn: DpSgdConfig {
                epsilon: 0.0,
                delta: 1e-5,
                clip: 1.0,
                expected_batch_size: 512,
                epochs: 10,
                learning_rate: 1e-2,
                seed: None,
            },
            mauve: MauveConfig::default(),
            mauve_max_texts: 1000,
            dp_seed: None,
            worst_examples: 20,
        }
    }
}

fn yes() -> bool {
    true
}

/// Folder, inside the output directory, of the default (private) embedding cache.
pub const PRIVATE_CACHE_DIR: &str = "embeddings_private";

impl EvalConfig {
    /// Where embeddings are cached: the shared `cache_dir` when one was requested, else
    /// `<out_dir>/embeddings_private` (none without an output directory or with
    /// `cache_embeddings = false`).
    ///
    /// # Privacy
    /// The cache holds MiniLM embeddings of the private training and test texts: a non-private
    /// function of each record. By default it stays with the run's other private files (the
    /// output directory), under a name that says so; a cache outside the run directory (e.g.
    /// in the user's home, shared between runs) is used only on explicit request.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        if !self.cache_embeddings {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(|| self.out_dir.as_ref().map(|d| d.join(PRIVATE_CACHE_DIR)))
    }
}

/// The shared cache location when the user asked for one through the environment
/// (`$DPSYNTH_CACHE/embeddings`); `None` otherwise. The default is the private per-run cache.
pub fn shared_cache_dir() -> Option<PathBuf> {
    std::env::var("DPSYNTH_CACHE")
        .ok()
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("embeddings"))
}

/// A conventional shared cache location (`$DPSYNTH_CACHE/embeddings`, else
/// `$XDG_CACHE_HOME/dpsynth/embeddings`, else `~/.cache/dpsynth/embeddings`), for callers that
/// explicitly want one (examples, `dpsynth evaluate --shared-cache`). Not a default: it holds
/// embeddings of private texts outside the run directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("DPSYNTH_CACHE") {
        return Some(PathBuf::from(d).join("embeddings"));
    }
    if let Ok(d) = std::env::var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("dpsynth").join("embeddings"));
    }
    std::env::var("HOME").ok().map(|h| {
        PathBuf::from(h)
            .join(".cache")
            .join("dpsynth")
            .join("embeddings")
    })
}

/// Which data a row's classifier was trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TrainingSet {
    Synthetic,
    RealNonPrivate,
    RealDpSgd { epsilon: f64, delta: f64 },
}

impl std::fmt::Display for TrainingSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Synthetic => write!(f, "synthetic → real test"),
            Self::RealNonPrivate => write!(f, "real train → real test (non-private ceiling)"),
            Self::RealDpSgd { epsilon, delta } => {
                write!(f, "real train, DP-SGD ε={epsilon} δ={delta:e} → real test")
            }
        }
    }
}

/// One row of the comparison table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub classifier: ClassifierKind,
    pub training: TrainingSet,
    pub train_examples: usize,
    pub metrics: ClassMetrics,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnn: Option<CnnTrainInfo>,
}

/// Label agreement between the synthetic, training and test sets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelCheck {
    /// All labels, in class-index order.
    pub labels: Vec<String>,
    pub missing_in_synthetic: Vec<String>,
    pub only_in_synthetic: Vec<String>,
    pub missing_in_test: Vec<String>,
    pub synthetic_single_class: bool,
    pub warnings: Vec<String>,
}

/// Everything an evaluation measured: `metrics_private.json` (no quoted text, but exact,
/// non-private statistics of the training and test sets). [`EvalReport::public_part`] is the
/// part the DP guarantee covers (`metrics.json`).
///
/// A new field lands in the private file only; to publish it, add it to [`PublicMetrics`]
/// (and say there why the guarantee covers it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub synthetic: String,
    pub train: String,
    pub test: String,
    pub labels: LabelCheck,
    pub rows: Vec<ComparisonRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mauve: Option<MauveResult>,
    pub stats: BTreeMap<String, TextStats>,
    pub memorization: MemorizationSummary,
    pub warnings: Vec<String>,
    pub embedding_cache_hits: usize,
    pub seconds: f64,
}

/// Names of the evaluation's output files.
pub mod files {
    /// Results covered by the DP guarantee ([`super::PublicMetrics`]).
    pub const METRICS: &str = "metrics.json";
    /// Everything measured, including non-private statistics of the private data.
    pub const METRICS_PRIVATE: &str = "metrics_private.json";
    /// Quotes of training records (the memorization check's worst cases).
    pub const MEMORIZATION_PRIVATE: &str = "memorization_private.json";
}

impl TrainingSet {
    /// Whether a row trained on this set is covered by a DP guarantee for the training records:
    /// the synthetic data (post-processing of the DP fine-tuning) and the DP-SGD baseline (its
    /// own (ε, δ)). The non-private ceiling reads the training records without protection.
    pub fn covered_by_guarantee(&self) -> bool {
        match self {
            Self::Synthetic | Self::RealDpSgd { .. } => true,
            Self::RealNonPrivate => false,
        }
    }
}

/// `metrics.json`: the results the DP guarantee covers, for sharing (`dpsynth report --public`
/// reads only this file, and only when `covered_by_guarantee` is true).
///
/// # Privacy
/// Each field is a function of the synthetic data (DP post-processing), of a DP-SGD baseline
/// model (its own (ε, δ) release on the training records; the run ledger counts it), of the
/// public MiniLM model, and of the held-out test records. It holds no statistic of the
/// training records computed without noise. The guarantee is about the training records: the
/// test records enter these numbers unprotected (one accuracy per classifier, MAUVE's
/// histograms), as in any published benchmark score.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublicMetrics {
    /// `true`: written by this split (the file is covered by the guarantee).
    pub covered_by_guarantee: bool,
    pub note: String,
    /// The label set (public schema).
    pub labels: Vec<String>,
    /// Classifiers trained on the synthetic data and the DP-SGD baselines, on the real test set.
    pub rows: Vec<ComparisonRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mauve: Option<MauveResult>,
    /// Statistics of the synthetic data.
    pub synthetic_stats: Option<TextStats>,
}

/// `metrics_private.json`: the whole [`EvalReport`], marked.
#[derive(Serialize)]
struct PrivateMetricsFile<'a> {
    covered_by_guarantee: bool,
    note: &'static str,
    #[serde(flatten)]
    report: &'a EvalReport,
}

const PUBLIC_NOTE: &str = "Covered by the DP guarantee for the training records: results of \
classifiers trained on the synthetic data and of the DP-SGD baselines (each its own (ε, δ) \
release, counted in the run ledger), measured on the held-out test set. Statistics of the \
training data are in metrics_private.json.";

const PRIVATE_NOTE: &str = "PRIVATE: NOT covered by the DP guarantee. Exact statistics of the \
private training and test data (label counts, lengths, vocabulary, the memorization check, the \
non-private ceiling). For the data holder only; `dpsynth report --public` never reads this file.";

impl EvalReport {
    /// The part of the report the DP guarantee covers (see [`PublicMetrics`]).
    pub fn public_part(&self) -> PublicMetrics {
        PublicMetrics {
            covered_by_guarantee: true,
            note: PUBLIC_NOTE.into(),
            labels: self.labels.labels.clone(),
            rows: self
                .rows
                .iter()
                .filter(|r| r.training.covered_by_guarantee())
                .cloned()
                .collect(),
            mauve: self.mauve.clone(),
            synthetic_stats: self.stats.get("synthetic").cloned(),
        }
    }

    /// Write `metrics.json` (covered by the guarantee) and `metrics_private.json` (everything,
    /// marked private) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let p = dir.join(files::METRICS);
        std::fs::write(&p, serde_json::to_string_pretty(&self.public_part())?)
            .map_err(io_err(&p))?;
        let p = dir.join(files::METRICS_PRIVATE);
        let private = PrivateMetricsFile {
            covered_by_guarantee: false,
            note: PRIVATE_NOTE,
            report: self,
        };
        std::fs::write(&p, serde_json::to_string_pretty(&private)?).map_err(io_err(&p))?;
        Ok(())
    }

    /// Plain-text comparison table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{:<14} {:<52} {:>7} {:>16} {:>16}\n",
            "classifier", "trained on", "n", "accuracy ± SE", "macro-F1 ± SE"
        ));
        for r in &self.rows {
            s.push_str(&format!(
                "{:<14} {:<52} {:>7} {:>8.1}% ± {:>4.1} {:>8.1}% ± {:>4.1}\n",
                r.classifier.to_string(),
                r.training.to_string(),
                r.train_examples,
                100.0 * r.metrics.accuracy,
                100.0 * r.metrics.accuracy_se,
                100.0 * r.metrics.macro_f1,
                100.0 * r.metrics.macro_f1_se
            ));
        }
        for r in &self.rows {
            if let Some(dp) = &r.dp {
                s.push_str(&format!(
                    "DP-SGD {}: q = {:.4}, {} steps, σ = {:.3}, C = {}, ε spent (PLD) = {:.3} at δ = {:e}{}\n",
                    r.classifier,
                    dp.sampling_rate,
                    dp.steps,
                    dp.noise_multiplier,
                    dp.clip,
                    dp.epsilon_spent,
                    dp.delta,
                    if dp.reproducible_seed {
                        " (seeded noise: reproducible, NOT secure)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(m) = &self.mauve {
            s.push_str(&format!(
                "MAUVE(real test, synthetic) = {:.3}  (k = {} clusters, c = {}, PCA dims = {})\n",
                m.mauve, m.num_buckets, m.scaling_factor, m.pca_dims
            ));
        }
        let mm = &self.memorization;
        s.push_str(&format!(
            "memorization (evidence, not a guarantee): {} exact duplicates of training records; longest shared word n-gram: mean {:.1}, p95 {:.0}, max {}; {} records share ≥ {} words\n",
            mm.exact_duplicates,
            mm.mean_longest_shared_ngram,
            mm.p95_longest_shared_ngram,
            mm.max_longest_shared_ngram,
            mm.records_with_long_shared_ngram,
            mm.long_ngram_threshold
        ));
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<Record>> {
    let r = dpsynth_data::read_jsonl(path)?;
    if r.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{what} file {} has no records",
            path.display()
        )));
    }
    Ok(r)
}

fn check_labels(syn: &[Record], train: &[Record], test: &[Record]) -> LabelCheck {
    let set = |r: &[Record]| {
        r.iter()
            .map(|x| x.label.clone())
            .collect::<BTreeSet<String>>()
    };
    let (s, tr, te) = (set(syn), set(train), set(test));
    let labels: Vec<String> = tr
        .union(&te)
        .chain(s.iter())
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let real: BTreeSet<String> = tr.union(&te).cloned().collect();
    let missing_in_synthetic: Vec<String> = real.difference(&s).cloned().collect();
    let only_in_synthetic: Vec<String> = s.difference(&real).cloned().collect();
    let missing_in_test: Vec<String> = tr.difference(&te).cloned().collect();
    let mut warnings = Vec::new();
    if !missing_in_synthetic.is_empty() {
        warnings.push(format!(
            "the synthetic set has no examples of {:?}: classifiers trained on it can never predict these labels",
            missing_in_synthetic
        ));
    }
    if !only_in_synthetic.is_empty() {
        warnings.push(format!(
            "the synthetic set has labels that the real data lacks: {:?} (kept; predictions of them count as errors)",
            only_in_synthetic
        ));
    }
    if !missing_in_test.is_empty() {
        warnings.push(format!(
            "the test set has no examples of {:?}",
            missing_in_test
        ));
    }
    let single = s.len() == 1;
    if single {
        warnings.push(format!(
            "the synthetic set has a single class ({:?}): a classifier trained on it predicts that class everywhere",
            s.iter().next().unwrap()
        ));
    }
    LabelCheck {
        labels,
        missing_in_synthetic,
        only_in_synthetic,
        missing_in_test,
        synthetic_single_class: single,
        warnings,
    }
}

fn drop_empty(records: Vec<Record>, what: &str, warnings: &mut Vec<String>) -> Result<Vec<Record>> {
    let n = records.len();
    let kept: Vec<Record> = records
        .into_iter()
        .filter(|r| !r.text.trim().is_empty())
        .collect();
    if kept.len() < n {
        warnings.push(format!(
            "{what}: {} of {n} records have empty text and were left out",
            n - kept.len()
        ));
    }
    if kept.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{what}: all {n} records have empty text"
        )));
    }
    Ok(kept)
}

/// Run the evaluation described by `cfg`.
///
/// # Privacy
/// Reading the synthetic data is post-processing of the DP fine-tuning. The real→real row, the
/// statistics of the training set and the memorization check read the *private* training data
/// without privacy: their output is for the data holder, in `metrics_private.json`; quotes of
/// training records go to `memorization_private.json`; `metrics.json` holds only what the
/// guarantee covers ([`PublicMetrics`]). Embeddings of the private texts are cached privately
/// ([`EvalConfig::effective_cache_dir`]). The DP-SGD baseline rows
/// are (ε, δ)-DP with respect to the training set (see [`crate::dpsgd`]): the logistic
/// regression sees only public-model embeddings of each record, and the DP CNN's vocabulary
/// and frozen embedding table come from the public MiniLM files ([`PublicEmbedding`]), never
/// from words counted in the training set (the non-private CNN rows do count their
/// vocabulary from their training data, which is fine for non-private numbers). Each DP row
/// spends the full (ε, δ) on its own: the rows are alternative baselines, not one release.
pub fn evaluate(cfg: &EvalConfig, progress: &Progress) -> Result<EvalReport> {
    let t0 = Instant::now();
    let mut warnings = Vec::new();
    let syn = drop_empty(
        read(&cfg.synthetic, "synthetic")?,
        "synthetic",
        &mut warnings,
    )?;
    let train = drop_empty(read(&cfg.train, "training")?, "training", &mut warnings)?;
    let test = drop_empty(read(&cfg.test, "test")?, "test", &mut warnings)?;
    let labels = check_labels(&syn, &train, &test);
    warnings.extend(labels.warnings.iter().cloned());
    let idx: BTreeMap<&str, usize> = labels
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let y = |r: &[Record]| {
        r.iter()
            .map(|x| idx[x.label.as_str()])
            .collect::<Vec<usize>>()
    };
    let (y_syn, y_train, y_test) = (y(&syn), y(&train), y(&test));
    let k = labels.labels.len();
    let texts = |r: &[Record]| r.iter().map(|x| x.text.clone()).collect::<Vec<String>>();
    let (t_syn, t_train, t_test) = (texts(&syn), texts(&train), texts(&test));

    let device = Device::Cpu;
    let need_embed = cfg.classifiers.contains(&ClassifierKind::Logreg) || cfg.mauve_max_texts >= 2;
    let need_vocab = cfg.classifiers.contains(&ClassifierKind::Cnn) && cfg.epsilon.is_some();
    let mut cache_hits = 0;
    let cache = cfg.effective_cache_dir();
    let mut public_emb = None;
    let emb = if need_embed || need_vocab {
        let dir = require_minilm_dir(cfg.minilm_dir.as_deref())?;
        if need_vocab {
            progress.note("loading MiniLM's public word embeddings for the DP CNN");
            public_emb = Some(PublicEmbedding::from_minilm(&dir, cfg.cnn.embed_dim)?);
        }
        if need_embed {
            if let Some(c) = &cache {
                mark_private_cache(c)?;
            }
            progress.note("loading MiniLM");
            let m = MiniLm::load(&dir, &device)?;
            let mut out = Vec::new();
            for t in [&t_syn, &t_train, &t_test] {
                let (e, hit) = m.embed_cached(t, cache.as_deref(), progress)?;
                cache_hits += hit as usize;
                out.push(e);
            }
            Some(out)
        } else {
            None
        }
    } else {
        None
    };

    let mut rows = Vec::new();
    for &kind in &cfg.classifiers {
        let mut sets: Vec<TrainingSet> = vec![TrainingSet::Synthetic];
        if cfg.real_baseline {
            sets.push(TrainingSet::RealNonPrivate);
        }
        if let Some(eps) = cfg.epsilon {
            sets.push(TrainingSet::RealDpSgd {
                epsilon: eps,
                delta: cfg.delta,
            });
        }
        for set in sets {
            let t = Instant::now();
            progress.note(&format!("training {kind} on {set}"));
            let (tx, ty, ttexts, n) = match set {
                TrainingSet::Synthetic => (0usize, &y_syn, &t_syn, syn.len()),
                _ => (1usize, &y_train, &t_train, train.len()),
            };
            let (pred, dp, cnn_info) = match kind {
                ClassifierKind::Logreg => {
                    let e = emb.as_ref().expect("embeddings computed");
                    let model = match &set {
                        TrainingSet::RealDpSgd { epsilon, delta } => {
                            let dp = DpSgdConfig {
                                epsilon: *epsilon,
                                delta: *delta,
                                seed: cfg.dp_seed,
                                ..cfg.dp_logreg.clone()
                            };
                            let (m, plan) = crate::logreg_dp::fit_dp(&e[tx], ty, k, &dp, progress)?;
                            (m, Some(plan))
                        }
                        _ => (LogReg::fit(&e[tx], ty, k, &cfg.logreg), None),
                    };
                    (model.0.predict(&e[2]), model.1, None)
                }
                ClassifierKind::Cnn => match &set {
                    TrainingSet::RealDpSgd { epsilon, delta } => {
                        let dp = DpSgdConfig {
                            epsilon: *epsilon,
                            delta: *delta,
                            seed: cfg.dp_seed,
                            ..cfg.dp_cnn.clone()
                        };
                        let emb = public_emb.clone().expect("public embedding loaded");
                        let (m, plan) =
                            WordCnn::fit_dp(ttexts, ty, k, emb, &cfg.cnn, &dp, &device, progress)?;
                        (m.predict(&t_test)?, Some(plan), None)
                    }
                    _ => {
                        let (m, info) = WordCnn::fit(ttexts, ty, k, &cfg.cnn, &device, progress)?;
                        (m.predict(&t_test)?, None, Some(info))
                    }
                },
            };
            rows.push(ComparisonRow {
                classifier: kind,
                training: set,
                train_examples: n,
                metrics: ClassMetrics::compute(&labels.labels, &y_test, &pred),
                seconds: t.elapsed().as_secs_f64(),
                dp,
                cnn: cnn_info,
            });
        }
    }

    let mauve_res = match &emb {
        Some(e) if cfg.mauve_max_texts >= 2 && syn.len() >= 2 && test.len() >= 2 => {
            progress.note("MAUVE");
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.mauve.seed);
            let mut pick = |e: &Embeddings| {
                let mut i: Vec<usize> = (0..e.n).collect();
                i.shuffle(&mut rng);
                i.truncate(cfg.mauve_max_texts);
                e.select(&i)
            };
            let p = pick(&e[2]);
            let q = pick(&e[0]);
            Some(mauve(&p, &q, &cfg.mauve)?)
        }
        _ => None,
    };

    progress.note("text statistics and memorization check");
    let mut stats = BTreeMap::new();
    stats.insert("synthetic".to_string(), text_stats(&syn));
    stats.insert("train".to_string(), text_stats(&train));
    stats.insert("test".to_string(), text_stats(&test));
    let (mem, mem_private) = memorization(&syn, &train, cfg.worst_examples, 8);

    let report = EvalReport {
        synthetic: cfg.synthetic.display().to_string(),
        train: cfg.train.display().to_string(),
        test: cfg.test.display().to_string(),
        labels,
        rows,
        mauve: mauve_res,
        stats,
        memorization: mem,
        warnings,
        embedding_cache_hits: cache_hits,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &cfg.out_dir {
        report.write(dir)?;
        let p = dir.join(files::MEMORIZATION_PRIVATE);
        std::fs::write(&p, serde_json::to_string_pretty(&mem_private)?).map_err(io_err(&p))?;
    }
    Ok(report)
}

/// Put a note into an embedding cache folder saying what it holds.
fn mark_private_cache(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let p = dir.join("PRIVATE.txt");
    if !p.exists() {
        std::fs::write(
            &p,
            "PRIVATE: MiniLM embeddings of the texts dpsynth evaluated, including the private \
             training and test records. NOT covered by any differential-privacy guarantee; do \
             not share. Safe to delete (recomputed when missing).\n",
        )
        .map_err(io_err(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_cached_in_the_run_directory_unless_a_shared_cache_is_asked_for() {
        let mut cfg = EvalConfig::new("s".into(), "tr".into(), "te".into());
        // The default never points outside the output directory (e.g. to ~/.cache).
        assert_eq!(cfg.cache_dir, None);
        assert_eq!(
            cfg.effective_cache_dir(),
            None,
            "no output directory: no cache"
        );
        cfg.out_dir = Some("run/eval".into());
        assert_eq!(
            cfg.effective_cache_dir(),
            Some(PathBuf::from("run/eval/embeddings_private"))
        );
        cfg.cache_dir = Some("/shared/cache".into());
        assert_eq!(cfg.effective_cache_dir(), Some("/shared/cache".into()));
        cfg.cache_embeddings = false;
        assert_eq!(cfg.effective_cache_dir(), None);
    }

    #[test]
    fn only_synthetic_and_dp_rows_are_covered() {
        assert!(TrainingSet::Synthetic.covered_by_guarantee());
        assert!(TrainingSet::RealDpSgd {
            epsilon: 1.0,
            delta: 1e-5
        }
        .covered_by_guarantee());
        assert!(!TrainingSet::RealNonPrivate.covered_by_guarantee());
    }
}
