//! What a report shows, read from a run directory's files. Loading never fails: a missing or
//! unreadable piece becomes `None` plus a note, and the renderer says "not run".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::privacy::{LabelHistogram, RunLedger};
use crate::stage::{Pipeline, StageRecord, StageStatus, STAGES};

/// Files of a run directory (names shared by the pipeline and the report).
pub mod files {
    pub const CONFIG: &str = "config.toml";
    pub const HISTOGRAM: &str = "histogram.json";
    pub const DATA_DIR: &str = "data";
    pub const DATA_SUMMARY: &str = "data/summary.json";
    pub const TRAIN_DIR: &str = "train";
    /// Candidate names of the training crate's ledger inside `train/`.
    pub const TRAIN_LEDGERS: &[&str] = &["privacy.json", "ledger.json"];
    pub const LOSS: &str = "loss.csv";
    pub const SYNTHETIC: &str = "synthetic.jsonl";
    /// Filter counts of the synthesis post-processing (public: DP post-processing).
    pub const SYNTHETIC_FILTER: &str = "synthetic.filter.json";
    /// The ε = 0 control (public base model, same template and filters, no private data).
    pub const CONTROL_SYNTHETIC: &str = "synthetic_control.jsonl";
    pub const CONTROL_FILTER: &str = "synthetic_control.filter.json";
    pub const CONTROL_EVAL_DIR: &str = "eval/control";
    pub const CONTROL_METRICS: &str = "eval/control/metrics.json";
    /// Label fidelity: NON-private diagnostics (private files).
    pub const LABEL_FIDELITY: &str = "eval/label_fidelity_private.json";
    pub const CONTROL_LABEL_FIDELITY: &str = "eval/control/label_fidelity_private.json";
    /// The regime planner's choice (public quantities only).
    pub const PLAN: &str = "plan.json";
    pub const EVAL_DIR: &str = "eval";
    /// What the DP guarantee covers (synthetic-data and DP-baseline results), marked
    /// `"covered_by_guarantee": true`.
    pub const METRICS: &str = "eval/metrics.json";
    /// Everything the evaluation measured, including exact statistics of the private data.
    pub const METRICS_PRIVATE: &str = "eval/metrics_private.json";
    /// `dpsynth audit`'s result: a second DP training run on the private records (private).
    pub const AUDIT: &str = "audit/audit.json";
    pub const REPORT_HTML: &str = "report.html";
    pub const REPORT_MD: &str = "report.md";
    pub const REPORT_FILES: &str = "report_files";
}

/// Which data a downstream classifier was trained on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    /// Trained on the DP synthetic data, tested on real data.
    Synthetic,
    /// Trained with DP-SGD directly on the real data (the baseline).
    Baseline,
    /// Trained non-privately on the real data (the ceiling).
    Ceiling,
    Other(String),
}

impl Setting {
    pub fn describe(&self) -> String {
        match self {
            Setting::Synthetic => "synthetic → real".into(),
            Setting::Baseline => "DP-SGD on real data (baseline)".into(),
            Setting::Ceiling => "real → real, non-private (ceiling)".into(),
            Setting::Other(s) => s.clone(),
        }
    }
}

/// One downstream score found in metrics.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub setting: Setting,
    pub classifier: String,
    pub accuracy: f64,
    pub macro_f1: Option<f64>,
    /// Bootstrap standard errors over the test sample, when the evaluation wrote them.
    pub accuracy_se: Option<f64>,
    pub macro_f1_se: Option<f64>,
}

impl Score {
    /// `value` with its standard error when known: `0.702 ± 0.013`.
    pub fn with_se(value: f64, se: Option<f64>) -> String {
        match se.filter(|s| *s > 0.0) {
            Some(s) => format!("{} ± {}", fmt_num(value), fmt_num(s)),
            None => fmt_num(value),
        }
    }
}

/// Everything a run report shows.
#[derive(Debug, Clone, Default)]
pub struct RunView {
    pub dir: PathBuf,
    /// The resolved config (TOML table), if written.
    pub config: Option<toml::Table>,
    pub config_text: Option<String>,
    pub stages: BTreeMap<String, StageRecord>,
    pub ledger: Option<RunLedger>,
    /// The training crate's own ledger (scalar fields shown as they are).
    pub train_ledger: Option<Value>,
    pub histogram: Option<LabelHistogram>,
    pub loss: Option<Vec<(f64, f64)>>,
    /// Everything the evaluation measured (`eval/metrics_private.json`, or a `metrics.json`
    /// written before the public/private split): PRIVATE.
    pub metrics: Option<Value>,
    pub scores: Vec<Score>,
    /// `eval/metrics.json` when it is marked `"covered_by_guarantee": true`: the only
    /// evaluation file a public report reads.
    pub public_metrics: Option<Value>,
    pub public_scores: Vec<Score>,
    /// (label, text) of synthetic records (public: DP post-processing).
    pub synthetic: Option<Vec<(String, String)>>,
    pub data_summary: Option<Value>,
    /// `audit/audit.json` written by `dpsynth audit` (schema version 1), if present.
    pub audit: Option<Value>,
    /// Problems met while loading (shown in the report, never fatal).
    pub notes: Vec<String>,
}

fn read_json(p: &Path, notes: &mut Vec<String>) -> Option<Value> {
    if !p.exists() {
        return None;
    }
    match std::fs::read_to_string(p)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("{} could not be read: {e}", p.display()));
            None
        }
    }
}

/// Parse a loss CSV: a header naming `step` and `loss` columns (else the first two columns).
pub fn parse_loss_csv(text: &str) -> Option<Vec<(f64, f64)>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()?
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let (si, li, has_header) = match (
        col(&["step", "steps", "iteration"]),
        col(&["loss", "train_loss", "mean_loss"]),
    ) {
        (Some(s), Some(l)) => (s, l, true),
        _ => (0, 1, header.iter().all(|h| h.parse::<f64>().is_err())),
    };
    let mut out = Vec::new();
    let first = if has_header {
        None
    } else {
        Some(header.join(","))
    };
    for (i, line) in first
        .into_iter()
        .chain(lines.map(|s| s.to_string()))
        .enumerate()
    {
        let f: Vec<&str> = line.split(',').map(|s| s.trim()).collect();
        let step = f
            .get(si)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(i as f64);
        if let Some(l) = f.get(li).and_then(|s| s.parse::<f64>().ok()) {
            out.push((step, l));
        }
    }
    Some(out)
}

/// Find downstream scores anywhere in metrics.json: every object with a numeric `accuracy`
/// (or `acc`) is one score; the keys on its path and its own short string fields say which
/// setting and classifier it is.
pub fn extract_scores(metrics: &Value) -> Vec<Score> {
    /// Short string fields of an object and of its direct child objects (`training.kind=…`):
    /// how a row says what it is.
    fn tags(m: &serde_json::Map<String, Value>) -> Vec<String> {
        let mut out = Vec::new();
        for (k, x) in m {
            match x {
                Value::String(s) if s.len() <= 60 => out.push(format!("{k}={s}")),
                Value::Object(o) => {
                    for (k2, y) in o {
                        if let Value::String(s) = y {
                            if s.len() <= 60 {
                                out.push(format!("{k}.{k2}={s}"));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
    fn setting_of(d: &str) -> Option<Setting> {
        let has = |w: &str| d.contains(w);
        if has("baseline") || has("dp_sgd") || has("dpsgd") || has("dp-sgd") {
            Some(Setting::Baseline)
        } else if has("synth") {
            Some(Setting::Synthetic)
        } else if has("ceiling") || has("real") || has("non_private") || has("nonprivate") {
            Some(Setting::Ceiling)
        } else {
            None
        }
    }
    fn classifier_of(d: &str) -> Option<&'static str> {
        let has = |w: &str| d.contains(w);
        if has("cnn") {
            Some("cnn")
        } else if has("embed") || has("bert") || has("logreg") || has("minilm") {
            Some("embedding")
        } else {
            None
        }
    }
    /// `ctx`: one entry per level (key on the path and the level's tags), innermost last; the
    /// innermost level that says something wins (a file-level `"synthetic": "x.jsonl"` must not
    /// label every row).
    fn walk(v: &Value, ctx: &mut Vec<String>, out: &mut Vec<Score>) {
        match v {
            Value::Object(m) => {
                let level = tags(m).join(" ").to_ascii_lowercase();
                let key = ctx.pop().unwrap_or_default();
                ctx.push(format!("{key} {level}"));
                let acc = m
                    .get("accuracy")
                    .or_else(|| m.get("acc"))
                    .and_then(Value::as_f64);
                if let Some(accuracy) = acc {
                    let setting = ctx
                        .iter()
                        .rev()
                        .find_map(|d| setting_of(d))
                        .unwrap_or_else(|| Setting::Other(ctx.join(" ").trim().to_string()));
                    let classifier = ctx
                        .iter()
                        .rev()
                        .find_map(|d| classifier_of(d))
                        .unwrap_or("classifier")
                        .to_string();
                    let macro_f1 = ["macro_f1", "f1_macro", "macro-f1", "f1"]
                        .iter()
                        .find_map(|k| m.get(*k).and_then(Value::as_f64));
                    let num = |k: &str| m.get(k).and_then(Value::as_f64);
                    out.push(Score {
                        setting,
                        classifier,
                        accuracy,
                        macro_f1,
                        accuracy_se: num("accuracy_se"),
                        macro_f1_se: num("macro_f1_se"),
                    });
                } else {
                    for (k, x) in m {
                        if x.is_object() || x.is_array() {
                            ctx.push(k.to_ascii_lowercase());
                            walk(x, ctx, out);
                            ctx.pop();
                        }
                    }
                }
                ctx.pop();
                ctx.push(key);
            }
            Value::Array(a) => {
                for x in a {
                    ctx.push(String::new());
                    walk(x, ctx, out);
                    ctx.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(metrics, &mut Vec::new(), &mut out);
    out
}

/// Find a number under a key containing `name` (e.g. MAUVE): the value itself, or the first
/// `score`/`mauve`/`mean` field of an object there.
pub fn find_named_number(v: &Value, name: &str) -> Option<f64> {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k.to_ascii_lowercase().contains(name) {
                    if let Some(f) = x.as_f64() {
                        return Some(f);
                    }
                    if let Value::Object(o) = x {
                        for key in [name, "score", "mean", "value"] {
                            if let Some(f) = o.get(key).and_then(Value::as_f64) {
                                return Some(f);
                            }
                        }
                    }
                }
            }
            m.values().find_map(|x| find_named_number(x, name))
        }
        _ => None,
    }
}

/// The object under the first key containing `name`.
pub fn find_named_object<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .iter()
            .find(|(k, x)| k.to_ascii_lowercase().contains(name) && x.is_object())
            .map(|(_, x)| x)
            .or_else(|| m.values().find_map(|x| find_named_object(x, name))),
        _ => None,
    }
}

/// Numeric and boolean leaves of an object, flattened to dotted keys. Strings are dropped on
/// purpose: memorization summaries must never quote private records.
pub fn numeric_leaves(v: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(x, &key, out);
                }
            }
            Value::Number(n) => {
                out.push((prefix.to_string(), fmt_num(n.as_f64().unwrap_or(f64::NAN))))
            }
            Value::Bool(b) => out.push((prefix.to_string(), b.to_string())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// Numbers for tables: integers as integers, else 4 significant-ish digits.
pub fn fmt_num(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        }
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x.abs() >= 0.01 || x == 0.0 {
        format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{x:.3e}")
    }
}

/// Read (label, text) of up to `limit` synthetic records.
fn read_synthetic(p: &Path, notes: &mut Vec<String>) -> Option<Vec<(String, String)>> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            notes.push(format!("{}: {e}", p.display()));
            return None;
        }
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let label = v.get("label").map(|l| match l {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                let t = v.get("text").and_then(Value::as_str);
                match (label, t) {
                    (Some(l), Some(t)) => out.push((l, t.to_string())),
                    _ => bad += 1,
                }
            }
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        notes.push(format!("{}: {bad} lines were not records", p.display()));
    }
    Some(out)
}

impl RunView {
    /// Read everything a report needs from a run directory.
    pub fn load(dir: &Path) -> RunView {
        let mut v = RunView {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        let notes = &mut v.notes;
        v.audit = read_json(&dir.join(files::AUDIT), notes);
        let cfg_path = dir.join(files::CONFIG);
        if let Ok(t) = std::fs::read_to_string(&cfg_path) {
            match toml::from_str::<toml::Table>(&t) {
                Ok(tab) => v.config = Some(tab),
                Err(e) => notes.push(format!("{}: {e}", cfg_path.display())),
            }
            v.config_text = Some(t);
        }
        if dir.join("stages").is_dir() {
            if let Ok(p) = Pipeline::open(dir) {
                for s in STAGES {
                    match p.record(s) {
                        Ok(Some(r)) => {
                            v.stages.insert(s.to_string(), r);
                        }
                        Ok(None) => {}
                        Err(e) => notes.push(e.to_string()),
                    }
                }
            }
        }
        if RunLedger::path(dir).exists() {
            match RunLedger::load(dir) {
                Ok(l) => v.ledger = Some(l),
                Err(e) => notes.push(e.to_string()),
            }
        }
        for name in files::TRAIN_LEDGERS {
            let p = dir.join(files::TRAIN_DIR).join(name);
            if let Some(j) = read_json(&p, notes) {
                v.train_ledger = Some(j);
                break;
            }
        }
        if let Some(h) = read_json(&dir.join(files::HISTOGRAM), notes) {
            match serde_json::from_value(h) {
                Ok(h) => v.histogram = Some(h),
                Err(e) => notes.push(format!("{}: {e}", files::HISTOGRAM)),
            }
        }
        let loss_p = dir.join(files::TRAIN_DIR).join(files::LOSS);
        if let Ok(t) = std::fs::read_to_string(&loss_p) {
            v.loss = parse_loss_csv(&t);
        }
        let metrics = read_json(&dir.join(files::METRICS), notes);
        let covered = |m: &Value| m.get("covered_by_guarantee") == Some(&Value::Bool(true));
        match metrics {
            Some(m) if covered(&m) => {
                v.public_scores = extract_scores(&m);
                v.public_metrics = Some(m);
                v.metrics = read_json(&dir.join(files::METRICS_PRIVATE), notes);
            }
            // Written before the split: everything in one file, private.
            other => v.metrics = other,
        }
        if let Some(m) = &v.metrics {
            v.scores = extract_scores(m);
        }
        v.synthetic = read_synthetic(&dir.join(files::SYNTHETIC), notes);
        v.data_summary = read_json(&dir.join(files::DATA_SUMMARY), notes);
        v
    }

    /// A config value by dotted key.
    pub fn config_value(&self, key: &str) -> Option<&toml::Value> {
        let (s, k) = key.split_once('.')?;
        self.config.as_ref()?.get(s)?.get(k)
    }

    /// Target total ε from the config (∞ for non-private).
    pub fn target_epsilon(&self) -> Option<f64> {
        self.config_value("privacy.epsilon").and_then(|v| match v {
            toml::Value::Float(f) => Some(*f),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        })
    }

    pub fn config_str(&self, key: &str) -> Option<String> {
        self.config_value(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// Status of a stage in words.
    pub fn stage_status(&self, stage: &str) -> &'static str {
        match self.stages.get(stage).map(|r| r.status) {
            Some(StageStatus::Done) => "done",
            Some(StageStatus::Running) => "interrupted (or running)",
            None => "not run",
        }
    }

    /// The ε actually spent by training according to the training crate's ledger.
    pub fn train_ledger_epsilon(&self) -> Option<f64> {
        let l = self.train_ledger.as_ref()?;
        for k in [
            "epsilon_pld",
            "epsilon",
            "eps",
            "epsilon_spent",
            "spent_epsilon",
        ] {
            if let Some(x) = l.get(k).and_then(Value::as_f64) {
                return Some(x);
            }
        }
        find_named_number(l, "epsilon")
    }
}
