//! The run-level privacy pieces: the report-side view of the DP label histogram and the run's
//! privacy ledger.
//!
//! There is one mechanism for labels and one accountant: the training crate releases the label
//! histogram with the Gaussian mechanism and composes it with DP-SGD under PLD in
//! `train/privacy.json` (`dpsynth_train::labels::dp_label_histogram`). The run ledger
//! (`privacy_ledger.json`) records that one release per training attempt, with the ε the
//! training ledger reports. The evaluation's DP-SGD baselines, trained on the same records for
//! comparison, are recorded as *separate* releases: not part of the synthetic data's guarantee,
//! but composed into the guarantee of any report that shows their results.
//!
//! Neighboring relation everywhere: add/remove one record of the private training set
//! (records are the privacy unit; a person with k records gets group privacy kε).

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::stage::{write_atomic, StageError};

/// A fresh seed from the OS CSPRNG (for data splits and other non-secret randomness when the
/// user gave no seed; recorded so the split can be reproduced).
pub fn os_seed() -> u64 {
    rand_chacha::ChaCha20Rng::from_os_rng().random()
}

/// One label's released count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelCount {
    pub label: String,
    /// Released count (noisy, rounded and clamped at 0). Never the true count, unless the run is
    /// non-private.
    pub count: u64,
}

/// What `RUN_DIR/histogram.json` holds: a post-processed copy of the label histogram the
/// training stage released (and recorded in its ledger), for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelHistogram {
    pub labels: Vec<LabelCount>,
    /// ε the histogram's noise was calibrated to on its own (its share of the run's budget);
    /// 0 when skipped (uniform labels), `null` when non-private. The run's guarantee composes it
    /// with DP-SGD under PLD, so the shares do not simply add up.
    pub epsilon: Option<f64>,
    /// `gaussian`, `none (uniform)` or `exact (non-private)`.
    pub mechanism: String,
    /// Standard deviation of the Gaussian noise on each count (sensitivity 1).
    pub scale: Option<f64>,
}

/// One release that touched the private data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `histogram` or `train`.
    pub stage: String,
    pub mechanism: String,
    /// `None` = ∞ (non-private).
    pub epsilon: Option<f64>,
    pub delta: f64,
    /// When the release happened (unix seconds).
    pub unix: u64,
    /// True once a later release replaced it (e.g. `--from histogram`). Replaced releases still
    /// count toward [`RunLedger::spent_in_directory`]: whoever saw them learned from the data.
    #[serde(default)]
    pub superseded: bool,
    /// A release that is not an input of the synthetic data: a DP-SGD baseline the evaluation
    /// trained on the same records for comparison. Not part of the synthetic data's guarantee
    /// ([`RunLedger::current`]), but part of what a report showing its result releases
    /// ([`RunLedger::reported`]) and of [`RunLedger::spent_in_directory`].
    #[serde(default)]
    pub separate: bool,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// `RUN_DIR/privacy_ledger.json`: every release from the private data in this run directory.
/// Append-only: an entry is written *before* its output leaves the stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunLedger {
    pub neighboring: String,
    pub entries: Vec<LedgerEntry>,
}

/// An (ε, δ) pair; ε = ∞ for non-private (the privacy crate's type).
pub use dpsynth_privacy::Guarantee;

pub const NEIGHBORING: &str = "add/remove one record of the private training set";

impl RunLedger {
    pub fn path(run_dir: &Path) -> std::path::PathBuf {
        run_dir.join("privacy_ledger.json")
    }

    /// Load the ledger (an empty one when absent).
    pub fn load(run_dir: &Path) -> Result<RunLedger, StageError> {
        let p = Self::path(run_dir);
        if !p.exists() {
            return Ok(RunLedger {
                neighboring: NEIGHBORING.into(),
                entries: Vec::new(),
            });
        }
        let text = std::fs::read_to_string(&p).map_err(|source| StageError::Io {
            path: p.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| StageError::BadRecord {
            path: p.display().to_string(),
            msg: e.to_string(),
        })
    }

    /// Append a release (marking earlier current entries of the same stage superseded) and
    /// write the ledger atomically. Call this before writing the stage's output.
    pub fn record(&mut self, run_dir: &Path, entry: LedgerEntry) -> Result<(), StageError> {
        for e in &mut self.entries {
            if e.stage == entry.stage {
                e.superseded = true;
            }
        }
        self.entries.push(entry);
        self.save(run_dir)
    }

    /// Replace the current entry of a stage in place (same release, updated numbers: a resumed
    /// training run reports its ledger's final ε).
    pub fn update_current(&mut self, run_dir: &Path, entry: LedgerEntry) -> Result<(), StageError> {
        if let Some(e) = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.stage == entry.stage && !e.superseded)
        {
            *e = entry;
            self.save(run_dir)
        } else {
            self.record(run_dir, entry)
        }
    }

    pub fn save(&self, run_dir: &Path) -> Result<(), StageError> {
        let json = serde_json::to_vec_pretty(self).expect("ledger serializes");
        write_atomic(&Self::path(run_dir), &json)
    }

    /// The guarantee of the current outputs (the synthetic data).
    ///
    /// # Privacy
    /// A `dpsynth run` has one current release, the training stage's: its ε is the training
    /// ledger's PLD ε of the label histogram (Gaussian) composed with DP-SGD (Mironov et al.
    /// 2019 / Koskela et al. 2021, PLD composition), so this is exact, not a sum. Should a
    /// directory ever hold several current releases (ledgers written by older versions with a
    /// separate histogram entry), they are combined by basic sequential composition (Dwork &
    /// Roth 2014, Theorem 3.16: ε and δ add up), which never understates ε.
    pub fn current(&self) -> Guarantee {
        compose(self.entries.iter().filter(|e| !e.superseded && !e.separate))
    }

    /// The current separate releases (the evaluation's DP-SGD baselines).
    pub fn separate_releases(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.entries.iter().filter(|e| !e.superseded && e.separate)
    }

    /// The guarantee of everything current together: the synthetic data *and* the separate
    /// releases (the DP-SGD baselines), i.e. of a report that shows the baselines' results.
    ///
    /// # Privacy
    /// The baselines are independent mechanisms run on the same training records as the
    /// fine-tuning: basic sequential composition (Dwork & Roth 2014, Thm. 3.16) bounds the
    /// whole without assuming anything about them, and never understates ε.
    pub fn reported(&self) -> Guarantee {
        compose(self.entries.iter().filter(|e| !e.superseded))
    }

    /// Everything ever released from this directory, including superseded releases (earlier
    /// training attempts replaced by `--from train` or a changed config).
    ///
    /// # Privacy
    /// Separate attempts are independent mechanisms on the same data: basic sequential
    /// composition (Dwork & Roth 2014, Thm 3.16) bounds their total without assuming anything
    /// about them, and never understates ε.
    pub fn spent_in_directory(&self) -> Guarantee {
        compose(self.entries.iter())
    }
}

/// The entries' releases together ([`dpsynth_privacy::compose_sequential`]; a non-private
/// entry, ε = `None`, makes the whole non-private).
///
/// # Privacy
/// Basic sequential composition (Dwork & Roth 2014, Thm 3.16), computed by the privacy crate.
fn compose<'a>(it: impl Iterator<Item = &'a LedgerEntry>) -> Guarantee {
    dpsynth_privacy::compose_sequential(
        it.map(|e| Guarantee::new(e.epsilon.unwrap_or(f64::INFINITY), e.delta)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_composes_current_and_keeps_superseded_spend() {
        let d = tempfile::tempdir().unwrap();
        let mut l = RunLedger::load(d.path()).unwrap();
        let e = |stage: &str, eps: Option<f64>, delta: f64| LedgerEntry {
            stage: stage.into(),
            mechanism: "m".into(),
            epsilon: eps,
            delta,
            unix: 0,
            superseded: false,
            separate: false,
            details: serde_json::Value::Null,
        };
        // One release per run: the training stage's (histogram + DP-SGD, composed by PLD).
        l.record(d.path(), e("train", Some(2.999), 1e-5)).unwrap();
        let g = l.current();
        assert!((g.epsilon - 2.999).abs() < 1e-12 && g.delta == 1e-5);
        // Updating the current entry (a resumed attempt, same release) does not add spend.
        l.update_current(d.path(), e("train", Some(2.998), 1e-5))
            .unwrap();
        assert!((l.current().epsilon - 2.998).abs() < 1e-12);
        assert!((l.spent_in_directory().epsilon - 2.998).abs() < 1e-12);
        // A new attempt (`--from train`) supersedes the old one, but the directory total keeps
        // both (basic composition of separate releases).
        l.record(d.path(), e("train", Some(1.0), 1e-5)).unwrap();
        assert!((l.current().epsilon - 1.0).abs() < 1e-12);
        assert!((l.spent_in_directory().epsilon - 3.998).abs() < 1e-12);
        assert!((l.spent_in_directory().delta - 2e-5).abs() < 1e-18);
        let back = RunLedger::load(d.path()).unwrap();
        assert_eq!(back, l);
        l.record(d.path(), e("train", None, 0.0)).unwrap();
        assert!(l.current().epsilon.is_infinite());
    }

    #[test]
    fn baselines_are_separate_releases_counted_when_reported() {
        let d = tempfile::tempdir().unwrap();
        let mut l = RunLedger::load(d.path()).unwrap();
        let e = |stage: &str, eps: f64, separate: bool| LedgerEntry {
            stage: stage.into(),
            mechanism: "m".into(),
            epsilon: Some(eps),
            delta: 1e-5,
            unix: 0,
            superseded: false,
            separate,
            details: serde_json::Value::Null,
        };
        l.record(d.path(), e("train", 3.0, false)).unwrap();
        l.record(d.path(), e("baseline:logreg", 3.0, true)).unwrap();
        l.record(d.path(), e("baseline:cnn", 3.0, true)).unwrap();
        // The synthetic data's guarantee is the training release alone ...
        assert!((l.current().epsilon - 3.0).abs() < 1e-12);
        // ... a report showing the baselines releases all three (basic composition).
        let r = l.reported();
        assert!((r.epsilon - 9.0).abs() < 1e-12 && (r.delta - 3e-5).abs() < 1e-18);
        assert_eq!(l.separate_releases().count(), 2);
        // Re-running the evaluation supersedes a baseline; the directory keeps counting it.
        l.record(d.path(), e("baseline:cnn", 3.0, true)).unwrap();
        assert!((l.reported().epsilon - 9.0).abs() < 1e-12);
        assert!((l.spent_in_directory().epsilon - 12.0).abs() < 1e-12);
    }
}
