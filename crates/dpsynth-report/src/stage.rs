//! Stage records, hashing and the skip / resume / re-run decision.
//!
//! Each stage of a run writes `RUN_DIR/stages/<stage>.json`: its resolved config (TOML text and
//! hash), the SHA-256 of its inputs and outputs, its status (`running` while it works, `done`
//! after) and how many times it was started. On a re-run:
//! - `done`, same config hash, same input hashes, outputs unchanged → **skip**;
//! - `running` (interrupted), same config and inputs → **resume** (training continues from its
//!   checkpoint and ledger; it never starts over and never spends budget twice);
//! - anything else (no record, config or inputs changed, outputs missing, `--from`) → **run**.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The stages of `dpsynth run`, in order.
pub const STAGES: &[&str] = &["data", "train", "synthesize", "evaluate", "report"];

/// Index of a stage in [`STAGES`].
pub fn stage_index(stage: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == stage)
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid stage record: {msg}")]
    BadRecord { path: String, msg: String },
    #[error("unknown stage \"{0}\"; stages are: data, train, synthesize, evaluate, report")]
    UnknownStage(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// SHA-256 of a file, or of a folder (sorted relative paths and their file hashes).
pub fn hash_path(path: &Path) -> Result<String, StageError> {
    dpsynth_data::sha256_path(path).map_err(|e| StageError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a string.
pub fn hash_str(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// A file (or folder) and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// Relative to the run directory when inside it, else as given.
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Running,
    Done,
}

/// What `RUN_DIR/stages/<stage>.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    pub status: StageStatus,
    /// SHA-256 of `config`.
    pub config_hash: String,
    /// The resolved config this stage depends on, as TOML.
    pub config: String,
    pub inputs: Vec<FileHash>,
    #[serde(default)]
    pub outputs: Vec<FileHash>,
    /// How many times this stage was started with this config (1 = no interruption).
    pub attempts: u32,
    pub started_unix: u64,
    #[serde(default)]
    pub finished_unix: Option<u64>,
    /// Wall-clock seconds of the last attempt.
    #[serde(default)]
    pub seconds: Option<f64>,
    pub dpsynth_version: String,
    /// Stage-specific summary (e.g. ε spent, records written).
    #[serde(default)]
    pub summary: serde_json::Value,
}

/// What to do with a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Finished with the same config and inputs; outputs intact.
    Skip(StageRecord),
    /// Interrupted with the same config and inputs: continue it.
    Resume(StageRecord),
    /// Run from scratch; the reason says why (for the log).
    Run { reason: String },
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Write a file atomically (temp file + rename), so a kill never leaves half a record.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// The stage records of one run directory.
#[derive(Debug, Clone)]
pub struct Pipeline {
    run_dir: PathBuf,
}

impl Pipeline {
    /// Open (and create) a run directory.
    pub fn open(run_dir: &Path) -> Result<Self, StageError> {
        std::fs::create_dir_all(run_dir.join("stages")).map_err(io_err(run_dir))?;
        Ok(Pipeline {
            run_dir: run_dir.to_path_buf(),
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn record_path(&self, stage: &str) -> PathBuf {
        self.run_dir.join("stages").join(format!("{stage}.json"))
    }

    /// The stage's record, if it has one.
    pub fn record(&self, stage: &str) -> Result<Option<StageRecord>, StageError> {
        let p = self.record_path(stage);
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StageError::BadRecord {
                path: p.display().to_string(),
                msg: e.to_string(),
            })
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.run_dir)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }

    fn abs(&self, rel: &str) -> PathBuf {
        let p = Path::new(rel);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.run_dir.join(p)
        }
    }

    /// Hash a list of paths (relative to the run directory when inside it).
    pub fn hash_all(&self, paths: &[PathBuf]) -> Result<Vec<FileHash>, StageError> {
        paths
            .iter()
            .map(|p| {
                Ok(FileHash {
                    path: self.rel(p),
                    sha256: hash_path(p)?,
                })
            })
            .collect()
    }

    /// Decide whether a stage is skipped, resumed or run. `force` (from `--from`) always runs.
    pub fn decide(
        &self,
        stage: &str,
        config: &toml::Table,
        inputs: &[PathBuf],
        force: bool,
    ) -> Result<Decision, StageError> {
        let config_text = toml::to_string(config).expect("toml table serializes");
        let config_hash = hash_str(&config_text);
        let Some(rec) = self.record(stage)? else {
            return Ok(Decision::Run {
                reason: "not run yet".into(),
            });
        };
        if force {
            return Ok(Decision::Run {
                reason: "asked to re-run (--from)".into(),
            });
        }
        if rec.config_hash != config_hash {
            return Ok(Decision::Run {
                reason: format!(
                    "config changed ({})",
                    changed_keys(&rec.config, &config_text).join(", ")
                ),
            });
        }
        let input_hashes = self.hash_all(inputs)?;
        if rec.inputs != input_hashes {
            let changed: Vec<_> = input_hashes
                .iter()
                .filter(|h| !rec.inputs.contains(h))
                .map(|h| h.path.clone())
                .collect();
            return Ok(Decision::Run {
                reason: format!("inputs changed ({})", changed.join(", ")),
            });
        }
        match rec.status {
            StageStatus::Running => Ok(Decision::Resume(rec)),
            StageStatus::Done => {
                for o in &rec.outputs {
                    let p = self.abs(&o.path);
                    if !p.exists() || hash_path(&p)? != o.sha256 {
                        return Ok(Decision::Run {
                            reason: format!("output {} is missing or was changed", o.path),
                        });
                    }
                }
                Ok(Decision::Skip(rec))
            }
        }
    }

    /// Mark a stage as started (status `running`) before it does any work.
    pub fn begin(
        &self,
        stage: &str,
        config: &toml::Table,
        inputs: &[PathBuf],
        resumed: Option<&StageRecord>,
    ) -> Result<StageRecord, StageError> {
        let config_text = toml::to_string(config).expect("toml table serializes");
        let rec = StageRecord {
            stage: stage.to_string(),
            status: StageStatus::Running,
            config_hash: hash_str(&config_text),
            config: config_text,
            inputs: self.hash_all(inputs)?,
            outputs: Vec::new(),
            attempts: resumed.map(|r| r.attempts + 1).unwrap_or(1),
            started_unix: now_unix(),
            finished_unix: None,
            seconds: None,
            dpsynth_version: env!("CARGO_PKG_VERSION").to_string(),
            summary: serde_json::Value::Null,
        };
        self.write(&rec)?;
        Ok(rec)
    }

    /// Mark a stage as done with its outputs (hashed now) and summary.
    pub fn finish(
        &self,
        mut rec: StageRecord,
        outputs: &[PathBuf],
        summary: serde_json::Value,
        seconds: f64,
    ) -> Result<StageRecord, StageError> {
        rec.outputs = self.hash_all(outputs)?;
        rec.status = StageStatus::Done;
        rec.finished_unix = Some(now_unix());
        rec.seconds = Some(seconds);
        rec.summary = summary;
        self.write(&rec)?;
        Ok(rec)
    }

    fn write(&self, rec: &StageRecord) -> Result<(), StageError> {
        let p = self.record_path(&rec.stage);
        let json = serde_json::to_vec_pretty(rec).expect("record serializes");
        write_atomic(&p, &json)
    }

    /// All records present, in stage order.
    pub fn records(&self) -> Vec<StageRecord> {
        STAGES
            .iter()
            .filter_map(|s| self.record(s).ok().flatten())
            .collect()
    }
}

/// Keys whose values differ between two TOML texts (for "config changed (train.steps)").
fn changed_keys(old: &str, new: &str) -> Vec<String> {
    fn flat(t: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => flat(t, &key, out),
                v => out.push((key, v.to_string())),
            }
        }
    }
    let parse = |s: &str| {
        let mut out = Vec::new();
        if let Ok(t) = toml::from_str::<toml::Table>(s) {
            flat(&t, "", &mut out);
        }
        out
    };
    let (a, b) = (parse(old), parse(new));
    let mut keys: Vec<String> = a
        .iter()
        .filter(|x| !b.contains(x))
        .chain(b.iter().filter(|x| !a.contains(x)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Parse `--from STAGE` into the index of the first stage to force.
///
/// `histogram` (a stage of earlier versions) means `train`: the label histogram is now released
/// by the training stage, in the same ledger.
pub fn parse_from(stage: &str) -> Result<usize, StageError> {
    let stage = if stage == "histogram" { "train" } else { stage };
    stage_index(stage).ok_or_else(|| StageError::UnknownStage(stage.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(steps: i64) -> toml::Table {
        let mut t = toml::Table::new();
        let mut train = toml::Table::new();
        train.insert("steps".into(), toml::Value::Integer(steps));
        t.insert("train".into(), toml::Value::Table(train));
        t
    }

    /// A fake stage: reads `input`, writes `out` (input + suffix), counts executions.
    fn run_stage(
        p: &Pipeline,
        config: &toml::Table,
        input: &Path,
        out: &Path,
        force: bool,
        runs: &mut u32,
    ) -> Decision {
        let d = p
            .decide("train", config, &[input.to_path_buf()], force)
            .unwrap();
        if let Decision::Skip(_) = d {
            return d;
        }
        let prev = match &d {
            Decision::Resume(r) => Some(r.clone()),
            _ => None,
        };
        let rec = p
            .begin("train", config, &[input.to_path_buf()], prev.as_ref())
            .unwrap();
        *runs += 1;
        let text = std::fs::read_to_string(input).unwrap();
        std::fs::write(out, format!("{text}+trained")).unwrap();
        p.finish(
            rec,
            &[out.to_path_buf()],
            serde_json::json!({"ok": true}),
            0.1,
        )
        .unwrap();
        d
    }

    #[test]
    fn skip_when_unchanged_rerun_when_config_input_or_output_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = Pipeline::open(d.path()).unwrap();
        let input = d.path().join("in.txt");
        let out = d.path().join("out.txt");
        std::fs::write(&input, "a").unwrap();
        let mut runs = 0;
        assert!(matches!(
            run_stage(&p, &cfg(1), &input, &out, false, &mut runs),
            Decision::Run { .. }
        ));
        assert!(matches!(
            run_stage(&p, &cfg(1), &input, &out, false, &mut runs),
            Decision::Skip(_)
        ));
        assert_eq!(runs, 1);
        // Config change → re-run, and the reason names the key.
        match run_stage(&p, &cfg(2), &input, &out, false, &mut runs) {
            Decision::Run { reason } => assert!(reason.contains("train.steps"), "{reason}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(runs, 2);
        // Input change → re-run.
        std::fs::write(&input, "b").unwrap();
        match run_stage(&p, &cfg(2), &input, &out, false, &mut runs) {
            Decision::Run { reason } => assert!(reason.contains("in.txt"), "{reason}"),
            d => panic!("{d:?}"),
        }
        // Output tampered → re-run.
        std::fs::write(&out, "tampered").unwrap();
        assert!(matches!(
            run_stage(&p, &cfg(2), &input, &out, false, &mut runs),
            Decision::Run { .. }
        ));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "b+trained");
        // Force (--from) → re-run.
        assert!(matches!(
            run_stage(&p, &cfg(2), &input, &out, true, &mut runs),
            Decision::Run { .. }
        ));
        assert_eq!(runs, 5);
        let rec = p.record("train").unwrap().unwrap();
        assert_eq!(rec.status, StageStatus::Done);
        assert_eq!(rec.outputs[0].path, "out.txt");
        assert_eq!(rec.summary["ok"], true);
    }

    #[test]
    fn interrupted_stage_is_resumed_not_restarted() {
        let d = tempfile::tempdir().unwrap();
        let p = Pipeline::open(d.path()).unwrap();
        let input = d.path().join("in.txt");
        std::fs::write(&input, "a").unwrap();
        // Simulate kill -9 after begin(): the record stays `running`.
        let rec = p
            .begin("train", &cfg(1), std::slice::from_ref(&input), None)
            .unwrap();
        assert_eq!(rec.attempts, 1);
        drop(rec);
        match p
            .decide("train", &cfg(1), std::slice::from_ref(&input), false)
            .unwrap()
        {
            Decision::Resume(r) => {
                assert_eq!(r.status, StageStatus::Running);
                let r2 = p
                    .begin("train", &cfg(1), std::slice::from_ref(&input), Some(&r))
                    .unwrap();
                assert_eq!(r2.attempts, 2);
            }
            d => panic!("expected resume, got {d:?}"),
        }
        // With a different config the interrupted attempt is not resumed.
        assert!(matches!(
            p.decide("train", &cfg(5), std::slice::from_ref(&input), false)
                .unwrap(),
            Decision::Run { .. }
        ));
    }

    #[test]
    fn folder_hash_covers_names_and_contents() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::write(a.join("sub/x"), "1").unwrap();
        let h1 = hash_path(&a).unwrap();
        std::fs::write(a.join("sub/x"), "2").unwrap();
        let h2 = hash_path(&a).unwrap();
        std::fs::rename(a.join("sub/x"), a.join("sub/y")).unwrap();
        let h3 = hash_path(&a).unwrap();
        assert!(h1 != h2 && h2 != h3 && h1 != h3);
        assert_eq!(
            hash_str("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            parse_from("nope"),
            Err(StageError::UnknownStage(_))
        ));
        assert_eq!(parse_from("train").unwrap(), 1);
        assert_eq!(
            parse_from("histogram").unwrap(),
            1,
            "histogram is part of train"
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = Pipeline::open(d.path()).unwrap();
        std::fs::write(d.path().join("stages/data.json"), "{").unwrap();
        let e = p.record("data").unwrap_err();
        assert!(e.to_string().contains("data.json"), "{e}");
    }
}
