//! The privacy ledger (`privacy.json` in the run directory): every DP event spent, ε by
//! PLD and RDP, accountant settings and the seed policy.
//!
//! # Privacy
//! The ledger is written (atomically: temp file + rename) *before* anything computed from
//! private data leaves the process: before the label histogram is used, before each
//! checkpoint and before the final adapter is written. Steps computed after the last
//! checkpoint of a crashed run never left the process, so a resumed run continues from
//! the ledger's `steps_spent`, which is never decreased: budget is never counted twice
//! and never forgotten.

use std::path::Path;

use dpsynth_privacy::{epsilon_pld, epsilon_rdp, DpEvent, Neighboring};
use serde::{Deserialize, Serialize};

use crate::labels::LabelHistogram;
use crate::rng::SeedPolicy;
use crate::{Result, TrainError};

/// DP-SGD as run so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpSgdEntry {
    /// Poisson sampling rate q = expected batch / number of units.
    pub sampling_probability: f64,
    pub noise_multiplier: f64,
    pub clip_norm: f64,
    pub expected_batch: f64,
    /// Records (or users) the rate refers to.
    pub units: usize,
    pub steps_planned: u64,
    /// Logical steps whose results may have left the process.
    pub steps_spent: u64,
}

/// The run's privacy ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub version: u32,
    /// `true` for `--no-dp` runs: nothing is private, ε = ∞.
    pub no_dp: bool,
    pub neighboring: Neighboring,
    pub delta: f64,
    /// The budget the run may not exceed (None: report only).
    pub target_epsilon: Option<f64>,
    pub label_histogram: Option<LabelHistogram>,
    pub dp_sgd: Option<DpSgdEntry>,
    /// ε of everything spent, by the PLD accountant (the headline number).
    pub epsilon_pld: Option<f64>,
    /// ε by the RDP accountant (a cross-check, ≥ PLD up to discretization).
    pub epsilon_rdp: Option<f64>,
    pub rdp_order: Option<f64>,
    pub accountant: String,
    pub seed_policy: SeedPolicy,
    /// Warnings users must see (seeded noise, non-private loss log).
    pub notes: Vec<String>,
}

impl Ledger {
    pub fn new(
        no_dp: bool,
        neighboring: Neighboring,
        delta: f64,
        target_epsilon: Option<f64>,
        seed_policy: SeedPolicy,
    ) -> Self {
        let mut notes = vec![
            "loss.csv and the progress bar's loss are computed on private batches without noise: \
             they are for the data owner and are NOT covered by this guarantee"
                .to_string(),
        ];
        if let SeedPolicy::Seeded { .. } = seed_policy {
            notes.push(
                "noise and sampling were seeded by the user: reproducible but NOT secure".into(),
            );
        }
        if no_dp {
            notes.push("--no-dp: no clipping, no noise; no privacy guarantee (ε = ∞)".into());
        }
        Self {
            version: 1,
            no_dp,
            neighboring,
            delta,
            target_epsilon,
            label_histogram: None,
            dp_sgd: None,
            epsilon_pld: None,
            epsilon_rdp: None,
            rdp_order: None,
            accountant: "dpsynth-privacy: PLD (default discretization, pessimistic) and RDP \
                         (default orders); Poisson-subsampled Gaussian, add/remove neighbors"
                .into(),
            seed_policy,
            notes,
        }
    }

    /// The composition of everything spent so far.
    pub fn spent_event(&self) -> DpEvent {
        let mut ev = Vec::new();
        if let Some(h) = &self.label_histogram {
            ev.push(DpEvent::gaussian(h.noise_multiplier));
        }
        if let Some(s) = &self.dp_sgd {
            if s.steps_spent > 0 {
                ev.push(DpEvent::dp_sgd(
                    s.sampling_probability,
                    s.noise_multiplier,
                    s.steps_spent,
                ));
            }
        }
        DpEvent::Composed(ev)
    }

    /// Recompute ε of the spent events.
    pub fn refresh(&mut self) -> Result<()> {
        if self.no_dp {
            self.epsilon_pld = None;
            self.epsilon_rdp = None;
            self.rdp_order = None;
            return Ok(());
        }
        let ev = self.spent_event();
        if ev.is_noop() {
            self.epsilon_pld = Some(0.0);
            self.epsilon_rdp = Some(0.0);
            return Ok(());
        }
        let (p, r) = epsilons(&ev, self.delta)?;
        self.epsilon_pld = Some(p);
        self.epsilon_rdp = Some(r.0);
        self.rdp_order = Some(r.1);
        Ok(())
    }

    /// Where this (read-back) ledger's plan differs from the plan `fresh` recomputed from the
    /// data and configuration of a resumed run: sampling rate, σ, clip norm, units, expected
    /// batch, planned steps, δ, neighboring relation, `no_dp`, and the label histogram's σ and
    /// label set. Empty when they agree exactly.
    ///
    /// # Privacy
    /// The ledger accounts the steps it records with *its* (q, σ, C); a resumed run that trained
    /// with other values (a changed data file changes n and so q; a calibration change after an
    /// upgrade changes σ) would spend budget no ledger describes. Resuming is only allowed when
    /// the recomputed plan equals the recorded one, compared exactly (JSON round-trips f64
    /// exactly, and the calibration is deterministic).
    pub fn plan_mismatches(
        &self,
        fresh: &Ledger,
        label_sigma: Option<f64>,
        labels: &[String],
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what}: ledger {a}, now {b}"));
            }
        };
        diff("no_dp", self.no_dp.to_string(), fresh.no_dp.to_string());
        diff(
            "neighboring",
            format!("{:?}", self.neighboring),
            format!("{:?}", fresh.neighboring),
        );
        diff("δ", self.delta.to_string(), fresh.delta.to_string());
        diff(
            "target ε",
            format!("{:?}", self.target_epsilon),
            format!("{:?}", fresh.target_epsilon),
        );
        match (&self.dp_sgd, &fresh.dp_sgd) {
            (Some(a), Some(b)) => {
                diff(
                    "sampling rate q",
                    a.sampling_probability.to_string(),
                    b.sampling_probability.to_string(),
                );
                diff(
                    "noise multiplier σ",
                    a.noise_multiplier.to_string(),
                    b.noise_multiplier.to_string(),
                );
                diff(
                    "clip norm C",
                    a.clip_norm.to_string(),
                    b.clip_norm.to_string(),
                );
                diff("units", a.units.to_string(), b.units.to_string());
                diff(
                    "expected batch",
                    a.expected_batch.to_string(),
                    b.expected_batch.to_string(),
                );
                diff(
                    "planned steps",
                    a.steps_planned.to_string(),
                    b.steps_planned.to_string(),
                );
            }
            (a, b) => diff(
                "DP-SGD",
                if a.is_some() { "present" } else { "absent" }.into(),
                if b.is_some() { "present" } else { "absent" }.into(),
            ),
        }
        diff(
            "label histogram σ",
            format!(
                "{:?}",
                self.label_histogram.as_ref().map(|h| h.noise_multiplier)
            ),
            format!("{label_sigma:?}"),
        );
        if let Some(h) = &self.label_histogram {
            diff(
                "label set",
                format!("{:?}", h.labels),
                format!("{labels:?}"),
            );
        }
        out
    }

    /// Write atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .map_err(|e| TrainError::file(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| TrainError::file(path, e))?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        serde_json::from_str(&s)
            .map_err(|e| TrainError::file(path, format!("not a privacy ledger: {e}")))
    }
}

/// (ε by PLD, (ε by RDP, order)) of an event.
pub fn epsilons(ev: &DpEvent, delta: f64) -> Result<(f64, (f64, f64))> {
    let p = epsilon_pld(ev, delta).map_err(|e| TrainError::Budget(e.to_string()))?;
    let r = epsilon_rdp(ev, delta).map_err(|e| TrainError::Budget(e.to_string()))?;
    Ok((p, (r.epsilon, r.order)))
}

/// ε by PLD, treating "unbounded" as ∞.
pub fn epsilon_or_inf(ev: &DpEvent, delta: f64) -> f64 {
    epsilon_pld(ev, delta).unwrap_or(f64::INFINITY)
}

/// Crash-test hook: when the environment variable `DPSYNTH_KILL_AT` equals `point`, the
/// process sends itself `SIGKILL` (no destructor, no flush: exactly a `kill -9` there).
///
/// The kill tests (`crates/dpsynth-cli/tests/kill_resume.rs`) use it to stop a run at each
/// boundary where a crash could lose or repeat a privacy spend; an unset variable costs one
/// environment lookup. Not for users: it never changes what a run computes.
pub fn kill_point(point: &str) {
    if std::env::var("DPSYNTH_KILL_AT").is_ok_and(|p| p == point) {
        eprintln!("DPSYNTH_KILL_AT={point}: killing this process (crash test)");
        #[cfg(unix)]
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

#[cfg(test)]
#[path = "tests_ledger.rs"]
mod tests_ledger;
