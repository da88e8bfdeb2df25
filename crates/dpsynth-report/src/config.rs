//! Run configuration: TOML file + flag overrides on top of preset defaults, checked before any work.
//!
//! Resolution order (later wins): preset defaults ([`crate::defaults`]) → `run.toml` → flags.
//! Every key of the file is also a flag (see [`KEYS`]); errors name the key (`train.epsilon`), where
//! it came from (the file or the flag) and, for unknown keys, the closest known key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::defaults::{self, Preset};

/// Kind of a config value, used to check types before deserializing and to parse flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// A filesystem path (string); relative paths in a file are relative to that file's folder.
    Path,
    Int,
    /// A float; integers and `inf` are accepted.
    Float,
    Bool,
    /// A list of strings; as a flag, comma-separated.
    StrList,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Path => "a path (string)",
            Kind::Int => "an integer",
            Kind::Float => "a number",
            Kind::Bool => "true or false",
            Kind::StrList => "a list of strings",
        }
    }
}

/// One configuration key: its dotted name in `run.toml`, its flag, its kind and its help.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub key: &'static str,
    pub flag: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

macro_rules! key {
    ($key:literal, $flag:literal, $kind:ident, $help:literal) => {
        KeySpec {
            key: $key,
            flag: $flag,
            kind: Kind::$kind,
            help: $help,
        }
    };
}

/// Every key of `run.toml`. The CLI turns each into a flag (`--epsilon 8` sets `privacy.epsilon`).
pub const KEYS: &[KeySpec] = &[
    key!("run.dir", "dir", Path, "Run directory: every stage's outputs, records and the report go here [default: runs/<recipe>-<method>-eps<ε>]"),
    key!("run.preset", "preset", Str, "Defaults to start from: quick (≈ 20 min on 2 cores) or full (bigger machines)"),
    key!("run.seed", "seed", Int, "Seed for sampling, noise and generation. Unset = OS randomness (secure). Set = reproducible but NOT secure noise"),
    key!("run.threads", "threads", Int, "Worker threads (0 = all cores)"),
    key!("data.recipe", "recipe", Str, "Built-in dataset: rotten-tomatoes, bbc-news or spamassassin (ignored when data.path is set)"),
    key!("data.path", "data-path", Path, "Your dataset file (CSV/TSV/JSONL/Parquet) instead of a recipe"),
    key!("data.text_column", "text-column", Str, "Text column of data.path"),
    key!("data.label_column", "label-column", Str, "Label column of data.path"),
    key!("data.assets", "assets", Path, "Assets folder (models, recipe data) [default: $DPSYNTH_ASSETS or <workspace>/assets]"),
    key!("data.max_train", "max-train", Int, "Private training records to use (random subset; 0 = all)"),
    key!("data.max_test", "max-test", Int, "Held-out real test records to use (0 = all)"),
    key!("data.test_fraction", "test-fraction", Float, "Fraction held out as real test data"),
    key!("data.split_seed", "split-seed", Int, "Seed of the train/test split and the training subset only (not secret: it never touches the noise); a sweep sets it so every point sees the same split [default: run.seed, else random]"),
    key!("privacy.epsilon", "epsilon", Float, "Total ε of the run (label histogram + fine-tuning, composed under PLD); inf = non-private"),
    key!("privacy.delta", "delta", Float, "δ of the (ε, δ) guarantee; keep it well below 1/n"),
    key!("privacy.label_histogram_epsilon", "label-histogram-epsilon", Float, "Share of privacy.epsilon for the DP label histogram: its Gaussian noise is calibrated to this ε alone, then composed with DP-SGD under PLD so the run's total stays privacy.epsilon (0 = no histogram, uniform labels)"),
    key!("privacy.max_grad_norm", "max-grad-norm", Float, "Per-example gradient clipping norm C"),
    key!("model.path", "model", Path, "Generator model (GGUF or safetensors folder) [default: <assets>/smollm2/…gguf]"),
    key!("model.embedding", "embedding-model", Path, "Sentence-embedding model folder for evaluation [default: <assets>/minilm]"),
    key!("train.method", "method", Str, "Fine-tuning method: lora, prompt or full"),
    key!("train.steps", "steps", Int, "DP-SGD steps [default: chosen by the regime planner from train.time_budget; the preset's number when the budget is 0]"),
    key!("train.batch_size", "batch-size", Int, "Expected batch size (Poisson sampling rate q = batch_size / n) [default: chosen by the regime planner, as train.steps]"),
    key!("train.time_budget", "time-budget", Float, "Training time budget in seconds: the regime planner picks expected batch, steps, σ and the learning-rate schedule from N, ε, δ and this budget (public quantities only; explicit train.steps / train.batch_size win). 0 = off"),
    key!("train.throughput", "throughput", Float, "Training examples per second the planner assumes (0 = the bench constant of this project's Xeon for the method at train.max_seq_len tokens; measure yours with `dpsynth bench`)"),
    key!("train.lr_schedule", "lr-schedule", Str, "Learning-rate decay after linear warm-up: auto (cosine when planned, else linear), linear, cosine or constant"),
    key!("train.learning_rate", "learning-rate", Float, "Peak learning rate (AdamW; linear warm-up, then train.lr_schedule) [default: 3e-3 with the quick preset, 1e-3 with full; 1e-2 for prompt tuning]"),
    key!("train.max_seq_len", "max-seq-len", Int, "Text tokens kept per training example (the label prompt and EOS come on top, uncounted); longer texts are truncated"),
    key!("train.lora_rank", "lora-rank", Int, "LoRA rank r"),
    key!("train.lora_alpha", "lora-alpha", Float, "LoRA alpha (scaling = alpha / rank)"),
    key!("train.lora_targets", "lora-targets", StrList, "LoRA target modules (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) [default: q_proj,v_proj]"),
    key!("train.prompt_tokens", "prompt-tokens", Int, "Soft-prompt length for prompt tuning"),
    key!("train.prompt_template", "prompt-template", Str, "Label-conditioned prefix of every training example and generation prompt; {label} is replaced by the label name [default: the recipe's, e.g. a movie-review prompt for rotten-tomatoes; \"Write a {label} text:\\n\" for your own data]"),
    key!("synth.count", "synth-count", Int, "Synthetic records to generate (split over labels by the DP label histogram)"),
    key!("synth.max_new_tokens", "max-new-tokens", Int, "Tokens generated per synthetic record"),
    key!("synth.temperature", "temperature", Float, "Sampling temperature"),
    key!("synth.top_p", "top-p", Float, "Nucleus sampling p (1 = off)"),
    key!("synth.batch_size", "synth-batch-size", Int, "Sequences generated together"),
    key!("synth.filter", "synth-filter", Bool, "Post-process candidates (free, no ε): remove exact and near duplicates, score each under the DP model with every label's prefix, re-label to the most likely label, keep synth.count balanced by the DP label histogram"),
    key!("synth.candidates", "candidates", Int, "Candidates sampled before filtering (0 = as many as the real training records); synth.count of them are kept"),
    key!("synth.near_dup_jaccard", "near-dup-jaccard", Float, "Near-duplicate threshold: Jaccard similarity of character 5-grams (Lee et al. 2022: 0.8; above 1 = exact duplicates only)"),
    key!("synth.control", "control", Bool, "Also build the ε = 0 control (the public base model, same template and filters, uniform labels, no private data) and evaluate it next to the DP data"),
    key!("eval.classifiers", "classifiers", StrList, "Downstream classifiers: embedding (BERT-embedding), cnn (word-level CNN)"),
    key!("eval.baseline", "baseline", Bool, "Also train the DP-SGD baseline classifier on the real data at the same ε"),
    key!("eval.ceiling", "ceiling", Bool, "Also train the non-private real-data classifier (the ceiling)"),
    key!("eval.mauve", "mauve", Bool, "Compute MAUVE between synthetic and real test texts"),
    key!("eval.label_fidelity", "label-fidelity", Bool, "Label fidelity: how often a classifier trained on the real training data agrees with each synthetic label (a NON-private diagnostic for the data holder, kept out of public outputs)"),
];

/// A key's help as its flag shows it (`dpsynth run`, `dpsynth train`, `dpsynth audit`): the text,
/// the `run.toml` name and, unless the text names its own, the quick preset's default.
pub fn flag_help(spec: &KeySpec) -> String {
    let mut s = format!("{} [{}]", spec.help, spec.key);
    if !spec.help.contains("[default") {
        if let Some(v) = default_text(spec.key) {
            s.push_str(&format!(" [default: {v}]"));
        }
    }
    s
}

/// The quick preset's value of `key` as text, if it has one.
fn default_text(key: &str) -> Option<String> {
    let t = toml::Table::try_from(preset_config(Preset::Quick)).ok()?;
    let (sec, k) = key.split_once('.')?;
    Some(match t.get(sec)?.get(k)? {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_infinite() => "inf".into(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    })
}

/// Look a key up by its dotted name.
pub fn key_spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.key == key)
}

/// Look a key up by its flag name (without `--`).
pub fn flag_spec(flag: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.flag == flag)
}

/// Built-in dataset recipes and the folder (under `<assets>/data/`) each needs.
pub const RECIPES: &[&str] = &["rotten-tomatoes", "bbc-news", "spamassassin"];
/// Fine-tuning methods.
pub const METHODS: &[&str] = &["lora", "prompt", "full"];
/// Modules LoRA can adapt (the llama projections).
pub const LORA_TARGETS: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];
/// Learning-rate schedules (`auto`: cosine when the regime planner chose the steps, else linear).
pub const LR_SCHEDULES: &[&str] = &["auto", "linear", "cosine", "constant"];
/// Downstream classifiers.
pub const CLASSIFIERS: &[&str] = &["embedding", "cnn"];

/// The resolved configuration of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub run: RunSection,
    pub data: DataSection,
    pub privacy: PrivacySection,
    pub model: ModelSection,
    pub train: TrainSection,
    pub synth: SynthSection,
    pub eval: EvalSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    pub preset: Preset,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub threads: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub recipe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub text_column: String,
    pub label_column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<PathBuf>,
    pub max_train: u64,
    pub max_test: u64,
    pub test_fraction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    pub epsilon: f64,
    pub delta: f64,
    pub label_histogram_epsilon: f64,
    pub max_grad_norm: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub method: String,
    /// 0 = chosen by the regime planner (needs `time_budget` > 0).
    pub steps: u64,
    /// 0 = chosen by the regime planner (needs `time_budget` > 0).
    pub batch_size: u64,
    /// Seconds; 0 = no planner.
    pub time_budget: f64,
    /// Examples/s the planner assumes; 0 = the bench constant.
    pub throughput: f64,
    /// auto, linear, cosine or constant.
    pub lr_schedule: String,
    pub learning_rate: f64,
    pub max_seq_len: u64,
    pub lora_rank: u64,
    pub lora_alpha: f64,
    /// `None`: [`defaults::LORA_TARGETS`] (not serialized when unset, so run directories written
    /// before this key existed keep their stage hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_targets: Option<Vec<String>>,
    pub prompt_tokens: u64,
    /// `None`: the recipe's default template (resolved by the CLI from `dpsynth_data::prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthSection {
    pub count: u64,
    pub max_new_tokens: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub batch_size: u64,
    pub filter: bool,
    /// 0 = as many as the real training records.
    pub candidates: u64,
    pub near_dup_jaccard: f64,
    pub control: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub classifiers: Vec<String>,
    pub baseline: bool,
    pub ceiling: bool,
    pub mauve: bool,
    pub label_fidelity: bool,
}

/// Errors found while reading, merging or checking a configuration. Each names the key or path.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {msg}")]
    Read { path: String, msg: String },
    #[error("{path}: not valid TOML: {msg}")]
    Parse { path: String, msg: String },
    #[error("unknown key `{key}` in {origin}{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        key: String,
        origin: String,
        suggestion: Option<String>,
    },
    #[error("`{key}` in {origin} must be {expected}, found {found}")]
    WrongType {
        key: String,
        origin: String,
        expected: &'static str,
        found: String,
    },
    #[error("`{key}` ({origin}): {msg}")]
    Invalid {
        key: String,
        origin: String,
        msg: String,
    },
    #[error("`{key}` ({origin}): {path} does not exist{hint}")]
    PathNotFound {
        key: String,
        origin: String,
        path: String,
        hint: String,
    },
}

impl ConfigError {
    /// The config key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::WrongType { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::PathNotFound { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A flag override: dotted key and the raw text the user typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: String,
    pub raw: String,
}

impl Override {
    pub fn new(key: impl Into<String>, raw: impl Into<String>) -> Self {
        Override {
            key: key.into(),
            raw: raw.into(),
        }
    }
}

/// A resolved config plus where each explicitly set key came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: RunConfig,
    /// key → "run.toml" / "--epsilon"; keys absent here are defaults.
    pub origins: BTreeMap<String, String>,
}

/// The defaults of a preset, as a config.
pub fn preset_config(preset: Preset) -> RunConfig {
    let n = preset.numbers();
    RunConfig {
        run: RunSection {
            dir: None,
            preset,
            seed: None,
            threads: 0,
        },
        data: DataSection {
            recipe: defaults::RECIPE.into(),
            path: None,
            text_column: "text".into(),
            label_column: "label".into(),
            assets: None,
            max_train: n.max_train,
            max_test: n.max_test,
            test_fraction: 0.1,
            split_seed: None,
        },
        privacy: PrivacySection {
            epsilon: defaults::EPSILON,
            delta: defaults::DELTA,
            label_histogram_epsilon: defaults::LABEL_HISTOGRAM_EPSILON,
            max_grad_norm: defaults::MAX_GRAD_NORM,
        },
        model: ModelSection {
            path: None,
            embedding: None,
        },
        train: TrainSection {
            method: defaults::METHOD.into(),
            steps: n.steps,
            batch_size: n.batch_size,
            time_budget: n.train_time_budget,
            throughput: 0.0,
            lr_schedule: "auto".into(),
            learning_rate: n.learning_rate,
            max_seq_len: n.max_seq_len,
            lora_rank: defaults::LORA_RANK,
            lora_alpha: defaults::LORA_ALPHA,
            lora_targets: None,
            prompt_tokens: defaults::PROMPT_TOKENS,
            prompt_template: None,
        },
        synth: SynthSection {
            count: n.synth_count,
            max_new_tokens: n.max_new_tokens,
            temperature: 1.0,
            top_p: 0.95,
            batch_size: defaults::SYNTH_BATCH,
            filter: true,
            candidates: n.synth_candidates,
            near_dup_jaccard: 0.8,
            control: true,
        },
        eval: EvalSection {
            classifiers: vec!["embedding".into(), "cnn".into()],
            baseline: true,
            ceiling: true,
            mauve: true,
            label_fidelity: true,
        },
    }
}

fn toml_type_name(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string \"{s}\""),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn suggest(key: &str) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for k in KEYS {
        // Compare both the full key and its last component, so `epsilonn` and `train.epsilon` find `privacy.epsilon`.
        let last = key.rsplit('.').next().unwrap_or(key);
        let klast = k.key.rsplit('.').next().unwrap_or(k.key);
        let s = strsim::jaro_winkler(key, k.key).max(strsim::jaro_winkler(last, klast));
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, k.key));
        }
    }
    best.filter(|(s, _)| *s > 0.8).map(|(_, k)| k.to_string())
}

/// Check one value's type against its key's kind; returns the (possibly normalized) value.
fn check_kind(
    spec: &KeySpec,
    v: toml::Value,
    origin: &str,
    base_dir: Option<&Path>,
) -> Result<toml::Value, ConfigError> {
    let wrong = |v: &toml::Value| ConfigError::WrongType {
        key: spec.key.to_string(),
        origin: origin.to_string(),
        expected: spec.kind.describe(),
        found: toml_type_name(v),
    };
    Ok(match (spec.kind, v) {
        (Kind::Str, v @ toml::Value::String(_)) => v,
        (Kind::Path, toml::Value::String(s)) => {
            let p = PathBuf::from(&s);
            let p = match base_dir {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            };
            toml::Value::String(p.to_string_lossy().into_owned())
        }
        (Kind::Int, v @ toml::Value::Integer(_)) => v,
        (Kind::Float, toml::Value::Integer(i)) => toml::Value::Float(i as f64),
        (Kind::Float, v @ toml::Value::Float(_)) => v,
        (Kind::Bool, v @ toml::Value::Boolean(_)) => v,
        (Kind::StrList, toml::Value::Array(a)) => {
            if let Some(bad) = a.iter().find(|x| !x.is_str()) {
                return Err(wrong(bad));
            }
            toml::Value::Array(a)
        }
        (_, v) => return Err(wrong(&v)),
    })
}

/// Parse a flag's raw text as the key's kind.
fn parse_flag(spec: &KeySpec, raw: &str) -> Result<toml::Value, ConfigError> {
    let origin = format!("--{}", spec.flag);
    let wrong = |found: String| ConfigError::WrongType {
        key: spec.key.to_string(),
        origin: origin.clone(),
        expected: spec.kind.describe(),
        found,
    };
    let t = raw.trim();
    Ok(match spec.kind {
        Kind::Str | Kind::Path => toml::Value::String(raw.to_string()),
        Kind::Int => toml::Value::Integer(t.parse().map_err(|_| wrong(format!("\"{raw}\"")))?),
        Kind::Float => {
            let f = match t.to_ascii_lowercase().as_str() {
                "inf" | "+inf" | "infinity" | "∞" => f64::INFINITY,
                _ => t.parse().map_err(|_| wrong(format!("\"{raw}\"")))?,
            };
            toml::Value::Float(f)
        }
        Kind::Bool => match t {
            "true" | "yes" | "1" => toml::Value::Boolean(true),
            "false" | "no" | "0" => toml::Value::Boolean(false),
            _ => return Err(wrong(format!("\"{raw}\""))),
        },
        Kind::StrList => toml::Value::Array(
            t.split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

/// Flatten a TOML table into dotted keys, checking each against [`KEYS`].
fn flatten_checked(
    table: &toml::Table,
    origin: &str,
    base_dir: Option<&Path>,
    out: &mut Vec<(String, toml::Value)>,
) -> Result<(), ConfigError> {
    for (section, v) in table {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = format!("{section}.{k}");
                    let spec = key_spec(&key).ok_or_else(|| ConfigError::UnknownKey {
                        suggestion: suggest(&key),
                        key: key.clone(),
                        origin: origin.to_string(),
                    })?;
                    out.push((key, check_kind(spec, v.clone(), origin, base_dir)?));
                }
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    suggestion: suggest(section),
                    key: section.clone(),
                    origin: origin.to_string(),
                })
            }
        }
    }
    Ok(())
}

fn set_dotted(table: &mut toml::Table, key: &str, v: toml::Value) {
    let (section, k) = key.split_once('.').expect("dotted key");
    let sec = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = sec {
        t.insert(k.to_string(), v);
    }
}

/// Parse a config file's text into a checked list of (key, value) (no defaults applied).
pub fn parse_config_text(
    text: &str,
    origin: &str,
    base_dir: Option<&Path>,
) -> Result<Vec<(String, toml::Value)>, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_string(),
        msg: e.to_string(),
    })?;
    let mut out = Vec::new();
    flatten_checked(&table, origin, base_dir, &mut out)?;
    Ok(out)
}

/// Read a TOML file into a table (used by sweeps, whose file has an extra `[sweep]` section).
pub fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// Resolve a configuration: preset defaults, then the file's keys, then flag overrides; then
/// check every value ([`RunConfig::validate`]). Nothing is run or written.
pub fn resolve(file: Option<&Path>, overrides: &[Override]) -> Result<Resolved, ConfigError> {
    let file_entries = match file {
        Some(p) => {
            let table = read_toml(p)?;
            resolve_table_entries(&table, p)?
        }
        None => Vec::new(),
    };
    resolve_entries(file_entries, overrides)
}

/// Checked (key, value, origin) entries of a file's table.
pub fn resolve_table_entries(
    table: &toml::Table,
    path: &Path,
) -> Result<Vec<(String, toml::Value, String)>, ConfigError> {
    let origin = path.display().to_string();
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut out = Vec::new();
    flatten_checked(table, &origin, base, &mut out)?;
    Ok(out
        .into_iter()
        .map(|(k, v)| (k, v, origin.clone()))
        .collect())
}

/// Resolve from already-checked file entries plus flag overrides.
pub fn resolve_entries(
    file_entries: Vec<(String, toml::Value, String)>,
    overrides: &[Override],
) -> Result<Resolved, ConfigError> {
    let resolved = merge_entries(file_entries, overrides)?;
    resolved.config.validate(&resolved.origins)?;
    Ok(resolved)
}

/// Resolve the settings of a single training from preset defaults plus flag overrides, checking
/// every value but no path: `dpsynth train` and `dpsynth audit --data` name their own data and
/// model files and need neither the recipe data nor the embedding model of a whole run.
pub fn resolve_training(overrides: &[Override]) -> Result<Resolved, ConfigError> {
    let resolved = merge_entries(Vec::new(), overrides)?;
    resolved.config.validate_values(&resolved.origins)?;
    Ok(resolved)
}

/// Defaults, then file entries, then overrides (later wins), then the derived defaults; unchecked.
fn merge_entries(
    file_entries: Vec<(String, toml::Value, String)>,
    overrides: &[Override],
) -> Result<Resolved, ConfigError> {
    let mut entries = file_entries;
    for o in overrides {
        let spec = key_spec(&o.key)
            .or_else(|| flag_spec(o.key.trim_start_matches("--")))
            .ok_or_else(|| ConfigError::UnknownKey {
                key: o.key.clone(),
                origin: "the command line".into(),
                suggestion: suggest(&o.key),
            })?;
        entries.push((
            spec.key.to_string(),
            parse_flag(spec, &o.raw)?,
            format!("--{}", spec.flag),
        ));
    }
    // The preset decides the defaults, so read it first (last setting wins).
    let mut preset = Preset::default();
    for (k, v, origin) in &entries {
        if k == "run.preset" {
            let s = v.as_str().unwrap_or_default();
            preset = Preset::parse(s).ok_or_else(|| ConfigError::Invalid {
                key: k.clone(),
                origin: origin.clone(),
                msg: format!("unknown preset \"{s}\"; use quick or full"),
            })?;
        }
    }
    let defaults = preset_config(preset);
    let mut table = toml::Table::try_from(&defaults).expect("defaults serialize");
    let mut origins = BTreeMap::new();
    for (k, v, origin) in entries {
        set_dotted(&mut table, &k, v);
        origins.insert(k, origin);
    }
    let mut config: RunConfig = table.try_into().map_err(|e: toml::de::Error| {
        // Unreachable in practice: keys and kinds were checked above. Keep a clear message anyway.
        ConfigError::Invalid {
            key: "config".into(),
            origin: "merged configuration".into(),
            msg: e.to_string(),
        }
    })?;
    // Method-dependent default: a soft prompt needs a larger step than LoRA matrices (prompt
    // tuning is usually run with a learning rate ~10× LoRA's). Only when the user set none.
    if config.train.method == "prompt" && !origins.contains_key("train.learning_rate") {
        config.train.learning_rate = defaults::PROMPT_LEARNING_RATE;
    }
    // With a time budget the regime planner chooses what the user did not set explicitly
    // (0 = planned); the preset's numbers remain the fallback when the budget is 0.
    if config.train.time_budget > 0.0 {
        if !origins.contains_key("train.steps") {
            config.train.steps = 0;
        }
        if !origins.contains_key("train.batch_size") {
            config.train.batch_size = 0;
        }
    }
    Ok(Resolved { config, origins })
}

/// Where assets live: `data.assets`, else `$DPSYNTH_ASSETS`, else `./assets`, else the workspace's.
pub fn default_assets_dir() -> PathBuf {
    if let Ok(p) = std::env::var("DPSYNTH_ASSETS") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let local = PathBuf::from("assets");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

impl RunConfig {
    /// The assets folder this run reads models and recipe data from.
    pub fn assets_dir(&self) -> PathBuf {
        self.data.assets.clone().unwrap_or_else(default_assets_dir)
    }
    /// The generator model path.
    pub fn model_path(&self) -> PathBuf {
        self.model
            .path
            .clone()
            .unwrap_or_else(|| self.assets_dir().join(defaults::MODEL))
    }
    /// The sentence-embedding model folder.
    pub fn embedding_path(&self) -> PathBuf {
        self.model
            .embedding
            .clone()
            .unwrap_or_else(|| self.assets_dir().join(defaults::EMBEDDING_MODEL))
    }
    /// The dataset's short name: the recipe, or the file stem of `data.path`.
    pub fn dataset_name(&self) -> String {
        match &self.data.path {
            Some(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into()),
            None => self.data.recipe.clone(),
        }
    }
    /// The run directory: `run.dir`, else `runs/<dataset>-<method>-eps<ε>`.
    pub fn run_dir(&self) -> PathBuf {
        self.run.dir.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(format!(
                "{}-{}-eps{}",
                self.dataset_name(),
                self.train.method,
                fmt_eps(self.privacy.epsilon)
            ))
        })
    }
    /// The ε the training crate targets: the run's whole ε (∞ when non-private). Its ledger
    /// composes the label histogram with DP-SGD under PLD, so nothing is subtracted here.
    pub fn train_epsilon(&self) -> f64 {
        self.privacy.epsilon
    }
    /// Share of ε the DP label histogram is calibrated to (0 = uniform labels, no histogram;
    /// 0 for non-private runs, which use exact counts).
    pub fn label_budget_share(&self) -> f64 {
        if self.privacy.epsilon.is_finite() {
            self.privacy.label_histogram_epsilon / self.privacy.epsilon
        } else {
            0.0
        }
    }
    /// Is this run non-private (ε = ∞)?
    pub fn is_non_private(&self) -> bool {
        self.privacy.epsilon.is_infinite()
    }

    /// Check every value; errors name the key and where it was set. Paths must exist.
    pub fn validate(&self, origins: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        self.validate_values(origins)?;
        self.validate_paths(origins)
    }

    /// Check every value except that paths exist ([`RunConfig::validate`] does both).
    pub fn validate_values(&self, origins: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let origin = |k: &str| {
            origins
                .get(k)
                .cloned()
                .unwrap_or_else(|| "default".to_string())
        };
        let invalid = |k: &str, msg: String| ConfigError::Invalid {
            key: k.to_string(),
            origin: origin(k),
            msg,
        };
        let p = &self.privacy;
        if p.epsilon.is_nan() || p.epsilon <= 0.0 {
            return Err(invalid(
                "privacy.epsilon",
                format!(
                    "ε must be > 0 (use inf for a non-private run), got {}",
                    p.epsilon
                ),
            ));
        }
        if !(p.delta > 0.0 && p.delta < 1.0) {
            return Err(invalid(
                "privacy.delta",
                format!("δ must be in (0, 1), got {}", p.delta),
            ));
        }
        if !(p.label_histogram_epsilon >= 0.0 && p.label_histogram_epsilon.is_finite()) {
            return Err(invalid(
                "privacy.label_histogram_epsilon",
                format!(
                    "must be a finite number ≥ 0, got {}",
                    p.label_histogram_epsilon
                ),
            ));
        }
        if p.epsilon.is_finite() && p.label_histogram_epsilon >= p.epsilon {
            return Err(invalid(
                "privacy.label_histogram_epsilon",
                format!(
                    "{} leaves nothing of privacy.epsilon = {} for fine-tuning; use a small part (default {})",
                    p.label_histogram_epsilon,
                    p.epsilon,
                    defaults::LABEL_HISTOGRAM_EPSILON
                ),
            ));
        }
        if let Some(t) = &self.train.prompt_template {
            if !t.contains("{label}") {
                return Err(invalid(
                    "train.prompt_template",
                    format!("{t:?} must contain {{label}} (the generator must be told which label to write)"),
                ));
            }
        }
        if !(p.max_grad_norm > 0.0 && p.max_grad_norm.is_finite()) {
            return Err(invalid(
                "privacy.max_grad_norm",
                format!("must be > 0, got {}", p.max_grad_norm),
            ));
        }
        if !METHODS.contains(&self.train.method.as_str()) {
            return Err(invalid(
                "train.method",
                format!(
                    "unknown method \"{}\"; use one of {}",
                    self.train.method,
                    METHODS.join(", ")
                ),
            ));
        }
        let t = &self.train;
        if !(t.time_budget >= 0.0 && t.time_budget.is_finite()) {
            return Err(invalid(
                "train.time_budget",
                format!(
                    "must be a number of seconds ≥ 0 (0 = off), got {}",
                    t.time_budget
                ),
            ));
        }
        if !(t.throughput >= 0.0 && t.throughput.is_finite()) {
            return Err(invalid(
                "train.throughput",
                format!(
                    "must be examples/s ≥ 0 (0 = bench constant), got {}",
                    t.throughput
                ),
            ));
        }
        if !LR_SCHEDULES.contains(&t.lr_schedule.as_str()) {
            return Err(invalid(
                "train.lr_schedule",
                format!(
                    "unknown schedule \"{}\"; use one of {}",
                    t.lr_schedule,
                    LR_SCHEDULES.join(", ")
                ),
            ));
        }
        let planned = t.time_budget > 0.0;
        for (k, v) in [("train.steps", t.steps), ("train.batch_size", t.batch_size)] {
            if v == 0 && !planned {
                return Err(invalid(
                    k,
                    "must be ≥ 1 (0 = chosen by the planner, which needs train.time_budget > 0)"
                        .into(),
                ));
            }
        }
        if self.synth.near_dup_jaccard.is_nan() || self.synth.near_dup_jaccard <= 0.0 {
            return Err(invalid(
                "synth.near_dup_jaccard",
                format!(
                    "must be > 0 (≤ 1 removes near duplicates, above 1 only exact ones), got {}",
                    self.synth.near_dup_jaccard
                ),
            ));
        }
        if let Some(targets) = &self.train.lora_targets {
            if targets.is_empty() {
                return Err(invalid(
                    "train.lora_targets",
                    format!("name at least one of {}", LORA_TARGETS.join(", ")),
                ));
            }
            if let Some(bad) = targets.iter().find(|t| !LORA_TARGETS.contains(&t.as_str())) {
                return Err(invalid(
                    "train.lora_targets",
                    format!("unknown module \"{bad}\"; use {}", LORA_TARGETS.join(", ")),
                ));
            }
        }
        for (k, v) in [
            ("train.max_seq_len", self.train.max_seq_len),
            ("train.lora_rank", self.train.lora_rank),
            ("train.prompt_tokens", self.train.prompt_tokens),
            ("synth.count", self.synth.count),
            ("synth.max_new_tokens", self.synth.max_new_tokens),
            ("synth.batch_size", self.synth.batch_size),
        ] {
            if v == 0 {
                return Err(invalid(k, "must be ≥ 1".into()));
            }
        }
        for (k, v) in [
            ("train.learning_rate", self.train.learning_rate),
            ("train.lora_alpha", self.train.lora_alpha),
            ("synth.temperature", self.synth.temperature),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(invalid(k, format!("must be a finite number > 0, got {v}")));
            }
        }
        if !(self.synth.top_p > 0.0 && self.synth.top_p <= 1.0) {
            return Err(invalid(
                "synth.top_p",
                format!("must be in (0, 1], got {}", self.synth.top_p),
            ));
        }
        if !(self.data.test_fraction > 0.0 && self.data.test_fraction < 1.0) {
            return Err(invalid(
                "data.test_fraction",
                format!("must be in (0, 1), got {}", self.data.test_fraction),
            ));
        }
        if self.eval.classifiers.is_empty() {
            return Err(invalid(
                "eval.classifiers",
                format!("name at least one of {}", CLASSIFIERS.join(", ")),
            ));
        }
        for c in &self.eval.classifiers {
            if !CLASSIFIERS.contains(&c.as_str()) {
                return Err(invalid(
                    "eval.classifiers",
                    format!("unknown classifier \"{c}\"; use {}", CLASSIFIERS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Check that the dataset, assets and models exist.
    fn validate_paths(&self, origins: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let origin = |k: &str| {
            origins
                .get(k)
                .cloned()
                .unwrap_or_else(|| "default".to_string())
        };
        let invalid = |k: &str, msg: String| ConfigError::Invalid {
            key: k.to_string(),
            origin: origin(k),
            msg,
        };
        // Paths: the dataset first (the error users hit most), then assets and models.
        let missing = |k: &str, path: &Path, hint: &str| ConfigError::PathNotFound {
            key: k.to_string(),
            origin: origin(k),
            path: path.display().to_string(),
            hint: hint.to_string(),
        };
        let fetch_hint = "; run scripts/fetch-assets.sh or set data.assets / $DPSYNTH_ASSETS";
        match &self.data.path {
            Some(path) => {
                if !path.is_file() {
                    return Err(missing("data.path", path, ""));
                }
            }
            None => {
                if !RECIPES.contains(&self.data.recipe.as_str()) {
                    return Err(invalid(
                        "data.recipe",
                        format!(
                            "unknown recipe \"{}\"; use one of {} or set data.path",
                            self.data.recipe,
                            RECIPES.join(", ")
                        ),
                    ));
                }
                let dir = self.assets_dir().join("data").join(&self.data.recipe);
                if !dir.is_dir() {
                    let k = if origins.contains_key("data.assets") {
                        "data.assets"
                    } else {
                        "data.recipe"
                    };
                    return Err(missing(k, &dir, fetch_hint));
                }
            }
        }
        if let Some(a) = &self.data.assets {
            if !a.is_dir() {
                return Err(missing("data.assets", a, ""));
            }
        }
        let model = self.model_path();
        if !model.exists() {
            let hint = if self.model.path.is_none() {
                fetch_hint
            } else {
                ""
            };
            return Err(missing("model.path", &model, hint));
        }
        let emb = self.embedding_path();
        if !emb.exists() {
            let hint = if self.model.embedding.is_none() {
                fetch_hint
            } else {
                ""
            };
            return Err(missing("model.embedding", &emb, hint));
        }
        Ok(())
    }

    /// The TOML text of the whole config (what `RUN_DIR/config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// The part of the config a stage depends on (its hash decides whether the stage re-runs).
    pub fn stage_config(&self, sections: &[&str]) -> toml::Table {
        let full = toml::Table::try_from(self).expect("config serializes");
        let mut out = toml::Table::new();
        for s in sections {
            if let Some((sec, key)) = s.split_once('.') {
                if let Some(v) = full.get(sec).and_then(|t| t.get(key)) {
                    set_dotted(&mut out, s, v.clone());
                }
            } else if let Some(v) = full.get(*s) {
                out.insert(s.to_string(), v.clone());
            }
        }
        out
    }
}

/// ε for names and tables: `3`, `0.5`, `inf`.
pub fn fmt_eps(eps: f64) -> String {
    if eps.is_infinite() {
        "inf".into()
    } else if eps.fract() == 0.0 {
        format!("{}", eps as i64)
    } else {
        format!("{eps}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An assets folder with the layout validation looks for.
    pub(crate) fn fake_assets() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for r in RECIPES {
            std::fs::create_dir_all(d.path().join("data").join(r)).unwrap();
        }
        std::fs::create_dir_all(d.path().join("smollm2")).unwrap();
        std::fs::write(d.path().join(defaults::MODEL), b"gguf").unwrap();
        std::fs::create_dir_all(d.path().join("minilm")).unwrap();
        d
    }

    fn with_assets(a: &tempfile::TempDir) -> Override {
        Override::new("data.assets", a.path().to_str().unwrap())
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("run.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_resolve_and_match_the_documented_numbers() {
        let a = fake_assets();
        let r = resolve(None, &[with_assets(&a)]).unwrap();
        let c = &r.config;
        assert_eq!(c.data.recipe, "rotten-tomatoes");
        assert_eq!(c.train.method, "lora");
        assert_eq!(c.privacy.epsilon, 3.0);
        assert_eq!(c.data.max_train, defaults::QUICK.max_train);
        // The quick preset has a time budget: steps and batch are the planner's (0 here).
        assert_eq!(c.train.time_budget, defaults::QUICK.train_time_budget);
        assert_eq!((c.train.steps, c.train.batch_size), (0, 0));
        assert_eq!(c.synth.count, defaults::QUICK.synth_count);
        // Explicit values win over the plan; without a budget the preset's numbers apply.
        let r = resolve(None, &[with_assets(&a), Override::new("train.steps", "12")]).unwrap();
        assert_eq!((r.config.train.steps, r.config.train.batch_size), (12, 0));
        let r = resolve(
            None,
            &[with_assets(&a), Override::new("train.time_budget", "0")],
        )
        .unwrap();
        assert_eq!(r.config.train.steps, defaults::QUICK.steps);
        assert_eq!(r.config.train.batch_size, defaults::QUICK.batch_size);
        // 0 without a budget, a bad schedule, a negative budget: named errors.
        for (k, v) in [
            ("train.lr_schedule", "warm"),
            ("train.time_budget", "-5"),
            ("train.throughput", "-1"),
            ("synth.near_dup_jaccard", "0"),
        ] {
            let e = resolve(None, &[with_assets(&a), Override::new(k, v)]).unwrap_err();
            assert_eq!(e.key(), Some(k), "{e}");
        }
        let e = resolve(
            None,
            &[
                with_assets(&a),
                Override::new("train.time_budget", "0"),
                Override::new("train.steps", "0"),
            ],
        )
        .unwrap_err();
        assert_eq!(e.key(), Some("train.steps"), "{e}");
        assert!((c.label_budget_share() - 0.1 / 3.0).abs() < 1e-12);
        assert_eq!(
            c.train.prompt_template, None,
            "the recipe's template by default"
        );
        assert_eq!(c.run_dir(), PathBuf::from("runs/rotten-tomatoes-lora-eps3"));
    }

    #[test]
    fn every_key_round_trips_through_the_struct() {
        // KEYS and the struct must agree: each key set in a file lands in the config.
        let full = toml::Table::try_from(preset_config(Preset::Full)).unwrap();
        let mut n = 0;
        for (sec, t) in &full {
            for k in t.as_table().unwrap().keys() {
                assert!(
                    key_spec(&format!("{sec}.{k}")).is_some(),
                    "{sec}.{k} missing in KEYS"
                );
                n += 1;
            }
        }
        // Optional keys (dir, seed, path, assets, split seed, model paths, LoRA targets, prompt
        // template) are not serialized when unset.
        assert_eq!(n + 9, KEYS.len());
        let flags: std::collections::BTreeSet<_> = KEYS.iter().map(|k| k.flag).collect();
        assert_eq!(flags.len(), KEYS.len(), "flags must be unique");
    }

    #[test]
    fn flag_help_names_the_key_and_the_documented_default() {
        let h = flag_help(key_spec("privacy.epsilon").unwrap());
        assert!(h.contains("[privacy.epsilon]"), "{h}");
        assert!(
            h.contains(&format!("[default: {}]", defaults::EPSILON)),
            "{h}"
        );
        // Keys whose text states its own default get no second one.
        let h = flag_help(key_spec("train.steps").unwrap());
        assert_eq!(h.matches("[default").count(), 1, "{h}");
        // The learning rate's text spells out the numbers of defaults.rs.
        let h = flag_help(key_spec("train.learning_rate").unwrap());
        for lr in [
            defaults::QUICK.learning_rate,
            defaults::FULL.learning_rate,
            defaults::PROMPT_LEARNING_RATE,
        ] {
            assert!(h.contains(&format!("{lr:e}")), "{lr:e} missing in {h}");
        }
        let h = flag_help(key_spec("train.lora_targets").unwrap());
        assert!(h.contains(&defaults::LORA_TARGETS.join(",")), "{h}");
    }

    #[test]
    fn training_settings_resolve_without_assets_but_values_are_checked() {
        // No assets folder anywhere: `dpsynth train` names its own files.
        let r = resolve_training(&[Override::new("data.assets", "/no/such/assets")]).unwrap();
        assert_eq!(r.config.privacy.epsilon, defaults::EPSILON);
        let e = resolve_training(&[Override::new("lora-targets", "q_proj,qkv")]).unwrap_err();
        assert_eq!(e.key(), Some("train.lora_targets"), "{e}");
        assert!(e.to_string().contains("--lora-targets"), "{e}");
        let e = resolve_training(&[Override::new("epsilon", "0")]).unwrap_err();
        assert_eq!(e.key(), Some("privacy.epsilon"), "{e}");
        let r = resolve_training(&[Override::new("lora-targets", "k_proj,o_proj")]).unwrap();
        assert_eq!(
            r.config.train.lora_targets,
            Some(vec!["k_proj".to_string(), "o_proj".to_string()])
        );
    }

    #[test]
    fn prompt_tuning_gets_its_own_default_learning_rate_unless_set() {
        let a = fake_assets();
        let m = Override::new("train.method", "prompt");
        let r = resolve(None, &[with_assets(&a), m.clone()]).unwrap();
        assert_eq!(r.config.train.learning_rate, defaults::PROMPT_LEARNING_RATE);
        let r = resolve(
            None,
            &[
                with_assets(&a),
                m,
                Override::new("train.learning_rate", "0.5"),
            ],
        )
        .unwrap();
        assert_eq!(r.config.train.learning_rate, 0.5, "an explicit value wins");
        let r = resolve(None, &[with_assets(&a)]).unwrap();
        assert_eq!(r.config.train.learning_rate, defaults::QUICK.learning_rate);
    }

    #[test]
    fn preset_full_changes_defaults_and_file_values_win() {
        let a = fake_assets();
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "[run]\npreset = \"full\"\n[train]\nsteps = 7\n");
        let r = resolve(Some(&p), &[with_assets(&a)]).unwrap();
        // The budget plans the batch; the file's steps win.
        assert_eq!(r.config.train.batch_size, 0);
        assert_eq!(r.config.train.time_budget, defaults::FULL.train_time_budget);
        assert_eq!(r.config.train.steps, 7);
        assert_eq!(r.origins["train.steps"], p.display().to_string());
        // Flags win over the file.
        let r = resolve(
            Some(&p),
            &[with_assets(&a), Override::new("train.steps", "9")],
        )
        .unwrap();
        assert_eq!(r.config.train.steps, 9);
        assert_eq!(r.origins["train.steps"], "--steps");
    }

    #[test]
    fn unknown_key_is_named_with_a_suggestion() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "[privacy]\nepsilonn = 3\n");
        let e = resolve(Some(&p), &[]).unwrap_err();
        assert_eq!(e.key(), Some("privacy.epsilonn"));
        let msg = e.to_string();
        assert!(msg.contains("unknown key `privacy.epsilonn`"), "{msg}");
        assert!(msg.contains("did you mean `privacy.epsilon`"), "{msg}");
        // Unknown section too.
        let p = write(d.path(), "[trian]\nsteps = 3\n");
        let e = resolve(Some(&p), &[]).unwrap_err();
        assert_eq!(e.key(), Some("trian.steps"));
        // A top-level key outside any section.
        let p = write(d.path(), "epsilon = 3\n");
        assert_eq!(resolve(Some(&p), &[]).unwrap_err().key(), Some("epsilon"));
    }

    #[test]
    fn wrong_type_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "[train]\nsteps = \"many\"\n");
        let e = resolve(Some(&p), &[]).unwrap_err();
        assert!(matches!(e, ConfigError::WrongType { ref key, .. } if key == "train.steps"));
        assert!(e.to_string().contains("must be an integer"), "{e}");
        let p = write(d.path(), "[privacy]\nepsilon = \"3\"\n");
        assert_eq!(
            resolve(Some(&p), &[]).unwrap_err().key(),
            Some("privacy.epsilon")
        );
        let p = write(d.path(), "[eval]\nclassifiers = [1]\n");
        assert_eq!(
            resolve(Some(&p), &[]).unwrap_err().key(),
            Some("eval.classifiers")
        );
        // From a flag.
        let e = resolve(None, &[Override::new("train.batch_size", "8.5")]).unwrap_err();
        assert!(matches!(e, ConfigError::WrongType { ref origin, .. } if origin == "--batch-size"));
        let e = resolve(None, &[Override::new("privacy.epsilon", "three")]).unwrap_err();
        assert_eq!(e.key(), Some("privacy.epsilon"));
    }

    #[test]
    fn non_positive_epsilon_is_rejected_and_inf_accepted() {
        let a = fake_assets();
        for bad in ["0", "-1", "nan"] {
            let e = resolve(
                None,
                &[with_assets(&a), Override::new("privacy.epsilon", bad)],
            )
            .unwrap_err();
            assert_eq!(e.key(), Some("privacy.epsilon"), "{bad}: {e}");
            assert!(e.to_string().contains("--epsilon"), "{e}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "[privacy]\nepsilon = -2.0\n");
        let e = resolve(Some(&p), &[with_assets(&a)]).unwrap_err();
        assert_eq!(e.key(), Some("privacy.epsilon"));
        assert!(e.to_string().contains("run.toml"), "{e}");
        let p = write(d.path(), "[privacy]\nepsilon = inf\n");
        let r = resolve(Some(&p), &[with_assets(&a)]).unwrap();
        assert!(r.config.is_non_private());
        assert!(r.config.train_epsilon().is_infinite());
        // The histogram's share must leave something for training.
        let e = resolve(None, &[with_assets(&a), Override::new("epsilon", "0.1")]).unwrap_err();
        assert_eq!(e.key(), Some("privacy.label_histogram_epsilon"));
        let e = resolve(None, &[with_assets(&a), Override::new("delta", "1")]).unwrap_err();
        assert_eq!(e.key(), Some("privacy.delta"));
    }

    #[test]
    fn missing_dataset_path_is_named() {
        let a = fake_assets();
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "[data]\npath = \"no/such/file.csv\"\n");
        let e = resolve(Some(&p), &[with_assets(&a)]).unwrap_err();
        assert_eq!(e.key(), Some("data.path"));
        let msg = e.to_string();
        // Relative to the config file's folder.
        assert!(
            msg.contains(&d.path().join("no/such/file.csv").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("does not exist"), "{msg}");
        // An existing file passes.
        std::fs::write(d.path().join("mine.csv"), "text,label\n").unwrap();
        let p = write(d.path(), "[data]\npath = \"mine.csv\"\n");
        let r = resolve(Some(&p), &[with_assets(&a)]).unwrap();
        assert_eq!(r.config.dataset_name(), "mine");
        // Missing assets for a recipe name the assets path.
        let e = resolve(None, &[Override::new("assets", "/no/such/assets")]).unwrap_err();
        assert_eq!(e.key(), Some("data.assets"));
        assert!(e.to_string().contains("/no/such/assets"));
    }

    #[test]
    fn bad_enum_values_are_named() {
        let a = fake_assets();
        for (k, v) in [
            ("train.method", "adapter"),
            ("data.recipe", "imdb"),
            ("eval.classifiers", "embedding,svm"),
            ("run.preset", "huge"),
        ] {
            let e = resolve(None, &[with_assets(&a), Override::new(k, v)]).unwrap_err();
            assert_eq!(e.key(), Some(k), "{e}");
        }
    }

    #[test]
    fn stage_config_selects_sections_and_keys() {
        let c = preset_config(Preset::Quick);
        let t = c.stage_config(&["train", "privacy.epsilon"]);
        assert!(t["train"].get("steps").is_some());
        assert_eq!(t["privacy"].as_table().unwrap().len(), 1);
        assert!(t.get("synth").is_none());
        // inf survives TOML.
        let mut c = c;
        c.privacy.epsilon = f64::INFINITY;
        assert!(c.to_toml().contains("epsilon = inf"));
    }
}
