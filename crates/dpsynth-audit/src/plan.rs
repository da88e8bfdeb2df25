//! How much the audit's training sees of each canary, and the data it trains on.
//!
//! A canary can only be detected if training actually samples it. DP-SGD samples each unit
//! with probability q = B/n per step, so an inserted canary is seen q·T times in expectation
//! and never with probability (1 − q)^T. With the quick preset (n = 8,192, B = 32, T = 160)
//! that is 0.62 times and 54% never: half of the inserted canaries are invisible even to a
//! trainer with no noise, and the audit cannot refute any claim.
//!
//! The audit therefore keeps the user's B, T (the user's run's number of steps, also when it is
//! given in epochs), δ and every other setting, but trains on a random subset of the user's
//! units so that each canary is sampled at least [`AuditPlan::expected_samples`] ≥
//! `min_expected_samples` times in expectation (default 4: 98% of inserted canaries are seen
//! at least once). The audit run's own ledger claims the ε of *this* run (σ calibrated for its
//! q), and that claim is what the audit tests.
//!
//! # Privacy
//! The one-run bound (Steinke, Nasr & Jagielski 2023, Thm. 5.2) holds for any fixed dataset
//! of non-canary records, so choosing a subset of the user's records (before training,
//! independently of the canary coins) does not affect its validity; it only changes the run
//! being audited, whose claimed ε is recomputed by the same accountant.

/// The audit run's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuditPlan {
    /// Units (records, or users with user-level DP) in the user's data.
    pub user_units: usize,
    /// User units the audit trains on (all of them unless subsampled).
    pub kept_units: usize,
    /// Canary units inserted.
    pub inserted: usize,
    /// Logical steps T (the user's run's).
    pub steps: u64,
    /// Poisson rate q = B / (kept + inserted), at most 1.
    pub sampling_probability: f64,
    /// q·T: expected number of times each inserted canary is sampled.
    pub expected_samples: f64,
    /// (1 − q)^T: probability that an inserted canary is never sampled.
    pub p_never_sampled: f64,
}

/// The steps the user's run would take on `user_units` units (as `dpsynth_train::train::plan`
/// computes them: `steps`, else ⌈epochs / q⌉ with epochs defaulting to 1).
pub fn user_steps(
    user_units: usize,
    expected_batch: usize,
    steps: Option<u64>,
    epochs: Option<f64>,
) -> u64 {
    match steps {
        Some(s) => s,
        None => {
            let q = (expected_batch as f64 / user_units.max(1) as f64).min(1.0);
            (epochs.unwrap_or(1.0) / q).ceil().max(1.0) as u64
        }
    }
}

/// Plan the audit run: keep as many of the user's units as allow each inserted canary to be
/// sampled at least `min_expected_samples` times in expectation (0 = keep all), but never
/// fewer than make q ≤ 1.
pub fn audit_plan(
    user_units: usize,
    inserted: usize,
    expected_batch: usize,
    steps: u64,
    min_expected_samples: f64,
) -> AuditPlan {
    let b = expected_batch.max(1);
    let mut kept = user_units;
    if min_expected_samples > 0.0 {
        let max_total = (b as f64 * steps as f64 / min_expected_samples).floor() as usize;
        kept = kept.min(max_total.saturating_sub(inserted));
        kept = kept.max(b.saturating_sub(inserted)).min(user_units);
    }
    let total = (kept + inserted).max(1);
    let q = (b as f64 / total as f64).min(1.0);
    AuditPlan {
        user_units,
        kept_units: kept,
        inserted,
        steps,
        sampling_probability: q,
        expected_samples: q * steps as f64,
        p_never_sampled: (1.0 - q).powf(steps as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_preset_plan() {
        // The quick preset as the user runs it: 54% of canaries never sampled.
        let t = user_steps(8192, 32, Some(160), None);
        let user = audit_plan(8192, 64, 32, t, 0.0);
        assert_eq!(user.kept_units, 8192);
        assert!((user.p_never_sampled - 0.54).abs() < 0.01, "{user:?}");
        // The audit's plan: 4 samples per canary, 768 user records kept of 8192.
        let p = audit_plan(8192, 512, 32, t, 4.0);
        assert_eq!(p.kept_units, 1280 - 512);
        assert!((p.expected_samples - 4.0).abs() < 1e-9, "{p:?}");
        assert!(p.p_never_sampled < 0.02, "{p:?}");
    }

    #[test]
    fn epochs_become_the_users_steps_and_q_stays_at_most_one() {
        // 2 epochs at q = 32/1000: 63 steps.
        assert_eq!(user_steps(1000, 32, None, Some(2.0)), 63);
        assert_eq!(user_steps(1000, 32, Some(7), Some(2.0)), 7);
        // Few steps: can't reach the target without q > 1; keep B units in total.
        let p = audit_plan(1000, 10, 32, 2, 4.0);
        assert_eq!(p.kept_units, 22);
        assert_eq!(p.sampling_probability, 1.0);
        // Small data: nothing to drop.
        let p = audit_plan(64, 64, 48, 120, 4.0);
        assert_eq!(p.kept_units, 64);
        assert!(p.expected_samples > 40.0);
    }
}
