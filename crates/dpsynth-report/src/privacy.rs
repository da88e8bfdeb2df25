//! The run-level privacy pieces: the DP label histogram and the run's privacy ledger (composition
//! of the histogram's release with the DP fine-tuning's ledger).
//!
//! Neighboring relation everywhere: add/remove one record of the private training set
//! (records are the privacy unit; a person with k records gets group privacy kε).

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::stage::{write_atomic, StageError};

/// A fresh seed from the OS CSPRNG (for data splits and other non-secret randomness when the
/// user gave no seed; recorded so the split can be reproduced).
pub fn os_seed() -> u64 {
    rand_chacha::ChaCha20Rng::from_os_rng().random()
}

/// One label's noisy count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelCount {
    pub label: String,
    /// Released count (noisy, clamped at 0). Never the true count, unless the run is non-private.
    pub count: u64,
}

/// What `RUN_DIR/histogram.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelHistogram {
    pub labels: Vec<LabelCount>,
    /// ε of this release (0 when skipped, `null`/∞ when non-private).
    pub epsilon: Option<f64>,
    /// `discrete-laplace`, `none (uniform)` or `exact (non-private)`.
    pub mechanism: String,
    /// Noise scale b of the discrete Laplace (P(k) ∝ exp(-|k|/b), b = 1/ε).
    pub scale: Option<f64>,
}

/// Sample a discrete Laplace variable with P(k) ∝ exp(-ε|k|), as the difference of two
/// geometric variables with success probability 1 - exp(-ε).
fn discrete_laplace<R: Rng>(rng: &mut R, epsilon: f64) -> i64 {
    let q = (-epsilon).exp(); // failure probability
    let geo = |rng: &mut R| -> i64 {
        // Inversion: G = floor(ln U / ln q), U uniform in (0, 1].
        let u: f64 = 1.0 - rng.random::<f64>();
        (u.ln() / q.ln()).floor() as i64
    };
    geo(rng) - geo(rng)
}

/// Release a label histogram with ε-DP.
///
/// `domain` is the list of label names, treated as public (it comes from the recipe or the
/// dataset's schema, and the report says so); `labels` are the private records' labels. A label
/// in `labels` outside `domain` is ignored.
///
/// # Privacy
/// Adding or removing one record changes exactly one count by 1 (L1 sensitivity 1), so adding
/// independent discrete Laplace noise with P(k) ∝ exp(-ε|k|) to each count is ε-DP (pure, δ = 0):
/// the geometric mechanism of Ghosh, Roughgarden & Sundararajan, "Universally utility-maximizing
/// privacy mechanisms" (STOC 2009), Def. 2.1 and Lemma 2.2; the discrete analogue of Dwork,
/// McSherry, Nissim & Smith (TCC 2006), Prop. 1. Clamping at 0 is post-processing. Noise is
/// drawn from ChaCha20 seeded by the OS unless `seed` is given (then reproducible, not secure).
/// The geometric variables are drawn by floating-point inversion; exact integer samplers
/// (Canonne, Kamath & Steinke 2020) would remove the floating-point caveat.
/// `epsilon = 0` spends nothing and returns a uniform histogram without reading `labels`;
/// `epsilon = ∞` returns exact counts (non-private run).
pub fn dp_label_histogram(
    labels: &[String],
    domain: &[String],
    epsilon: f64,
    seed: Option<u64>,
) -> LabelHistogram {
    if epsilon == 0.0 {
        return LabelHistogram {
            labels: domain
                .iter()
                .map(|l| LabelCount {
                    label: l.clone(),
                    count: 1,
                })
                .collect(),
            epsilon: Some(0.0),
            mechanism: "none (uniform over labels)".into(),
            scale: None,
        };
    }
    let mut counts: BTreeMap<&str, i64> = domain.iter().map(|l| (l.as_str(), 0)).collect();
    for l in labels {
        if let Some(c) = counts.get_mut(l.as_str()) {
            *c += 1;
        }
    }
    let exact = epsilon.is_infinite();
    let mut rng = match seed {
        Some(s) => rand_chacha::ChaCha20Rng::seed_from_u64(s),
        None => rand_chacha::ChaCha20Rng::from_os_rng(),
    };
    LabelHistogram {
        labels: domain
            .iter()
            .map(|l| {
                let c = counts[l.as_str()];
                let noisy = if exact {
                    c
                } else {
                    c + discrete_laplace(&mut rng, epsilon)
                };
                LabelCount {
                    label: l.clone(),
                    count: noisy.max(0) as u64,
                }
            })
            .collect(),
        epsilon: if exact { None } else { Some(epsilon) },
        mechanism: if exact {
            "exact (non-private run)".into()
        } else {
            "discrete-laplace".into()
        },
        scale: if exact { None } else { Some(1.0 / epsilon) },
    }
}

/// Split `total` synthetic records over labels in proportion to the released counts
/// (largest remainder; every label gets at least one when `total ≥ labels`). Post-processing.
pub fn allocate(hist: &LabelHistogram, total: u64) -> Vec<(String, u64)> {
    let n = hist.labels.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    let sum: u64 = hist.labels.iter().map(|l| l.count).sum();
    let weights: Vec<f64> = if sum == 0 {
        vec![1.0; n as usize]
    } else {
        hist.labels.iter().map(|l| l.count as f64).collect()
    };
    let wsum: f64 = weights.iter().sum();
    let floor_each = if total >= n { 1 } else { 0 };
    let rest = total - floor_each * n;
    let exact: Vec<f64> = weights.iter().map(|w| w / wsum * rest as f64).collect();
    let mut out: Vec<u64> = exact
        .iter()
        .map(|x| x.floor() as u64 + floor_each)
        .collect();
    let mut left = total - out.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.partial_cmp(&fa).unwrap_or(std::cmp::Ordering::Equal)
    });
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    hist.labels
        .iter()
        .zip(out)
        .map(|(l, c)| (l.label.clone(), c))
        .collect()
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

/// An (ε, δ) pair; ε = ∞ for non-private.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guarantee {
    pub epsilon: f64,
    pub delta: f64,
}

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

    /// The guarantee of the current outputs (the synthetic data): composition of the current
    /// (not superseded) releases.
    ///
    /// # Privacy
    /// Basic sequential composition (Dwork & Roth, "The Algorithmic Foundations of Differential
    /// Privacy", 2014, Theorem 3.16): releasing an (ε₁, δ₁)-DP and an (ε₂, δ₂)-DP output of the
    /// same data is (ε₁ + ε₂, δ₁ + δ₂)-DP. It is conservative (tighter composition via PLD is
    /// possible when both mechanisms are expressed in one accountant), so the reported ε errs
    /// toward larger.
    pub fn current(&self) -> Guarantee {
        compose(self.entries.iter().filter(|e| !e.superseded))
    }

    /// Everything ever released from this directory, including superseded releases.
    pub fn spent_in_directory(&self) -> Guarantee {
        compose(self.entries.iter())
    }
}

fn compose<'a>(it: impl Iterator<Item = &'a LedgerEntry>) -> Guarantee {
    let mut g = Guarantee {
        epsilon: 0.0,
        delta: 0.0,
    };
    for e in it {
        g.epsilon += e.epsilon.unwrap_or(f64::INFINITY);
        g.delta += e.delta;
    }
    g.delta = g.delta.min(1.0);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n_pos: usize, n_neg: usize) -> Vec<String> {
        std::iter::repeat_n("pos".to_string(), n_pos)
            .chain(std::iter::repeat_n("neg".to_string(), n_neg))
            .collect()
    }

    #[test]
    fn discrete_laplace_has_the_right_spread() {
        // Var of discrete Laplace with parameter ε: 2q/(1-q)^2, q = e^-ε. Fixed seed, 200k draws.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let eps: f64 = 0.5;
        let n = 200_000;
        let xs: Vec<i64> = (0..n).map(|_| discrete_laplace(&mut rng, eps)).collect();
        let mean = xs.iter().sum::<i64>() as f64 / n as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let q = (-eps).exp();
        let want = 2.0 * q / (1.0 - q).powi(2);
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - want).abs() / want < 0.03, "var {var} want {want}");
        // P(0) = (1-q)/(1+q).
        let p0 = xs.iter().filter(|&&x| x == 0).count() as f64 / n as f64;
        assert!((p0 - (1.0 - q) / (1.0 + q)).abs() < 0.01, "p0 {p0}");
    }

    #[test]
    fn histogram_is_noisy_exact_or_uniform_as_asked() {
        let domain = vec!["neg".to_string(), "pos".to_string()];
        let l = labels(600, 400);
        let h = dp_label_histogram(&l, &domain, 1.0, Some(1));
        assert_eq!(h.mechanism, "discrete-laplace");
        assert_eq!(h.labels.len(), 2);
        // Noise with ε = 1 is a few units; counts stay close.
        assert!((h.labels[1].count as i64 - 600).abs() < 40);
        let exact = dp_label_histogram(&l, &domain, f64::INFINITY, None);
        assert_eq!(exact.labels[0].count, 400);
        assert_eq!(exact.epsilon, None);
        let uni = dp_label_histogram(&l, &domain, 0.0, None);
        assert!(uni.labels.iter().all(|c| c.count == 1));
        // Seeded noise is reproducible; different seeds differ somewhere over many labels.
        let dom: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let a = dp_label_histogram(&[], &dom, 0.5, Some(3));
        let b = dp_label_histogram(&[], &dom, 0.5, Some(3));
        let c = dp_label_histogram(&[], &dom, 0.5, Some(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn allocation_sums_to_total_and_follows_counts() {
        let h = LabelHistogram {
            labels: vec![
                LabelCount {
                    label: "a".into(),
                    count: 300,
                },
                LabelCount {
                    label: "b".into(),
                    count: 100,
                },
                LabelCount {
                    label: "c".into(),
                    count: 0,
                },
            ],
            epsilon: Some(0.1),
            mechanism: "discrete-laplace".into(),
            scale: Some(10.0),
        };
        let a = allocate(&h, 100);
        assert_eq!(a.iter().map(|x| x.1).sum::<u64>(), 100);
        assert_eq!(a[2].1, 1, "every label gets at least one");
        assert!(a[0].1 > 2 * a[1].1);
        assert_eq!(allocate(&h, 2).iter().map(|x| x.1).sum::<u64>(), 2);
    }

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
            details: serde_json::Value::Null,
        };
        l.record(d.path(), e("histogram", Some(0.1), 0.0)).unwrap();
        l.record(d.path(), e("train", Some(2.9), 1e-5)).unwrap();
        let g = l.current();
        assert!((g.epsilon - 3.0).abs() < 1e-12 && g.delta == 1e-5);
        // Updating the current training entry (resume) does not add spend.
        l.update_current(d.path(), e("train", Some(2.85), 1e-5))
            .unwrap();
        assert!((l.current().epsilon - 2.95).abs() < 1e-12);
        // A re-released histogram supersedes the old one but the directory total keeps both.
        l.record(d.path(), e("histogram", Some(0.1), 0.0)).unwrap();
        assert!((l.current().epsilon - 2.95).abs() < 1e-12);
        assert!((l.spent_in_directory().epsilon - 3.05).abs() < 1e-12);
        let back = RunLedger::load(d.path()).unwrap();
        assert_eq!(back, l);
        l.record(d.path(), e("train", None, 0.0)).unwrap();
        assert!(l.current().epsilon.is_infinite());
    }
}
