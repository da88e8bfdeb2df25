//! The audit's power and validity at its defaults, over 10 repeated audits each (issue 13,
//! item 9), on simulated score distributions (`dpsynth_audit::simulate`: white-box Dirac
//! canaries, the exact release of DP-SGD).
//!
//! What is repeated: the whole audit except model training — fresh canary coins, the audit
//! plan (`audit_plan` with `DEFAULT_MIN_EXPECTED_SAMPLES`), every canary's Poisson sampling in
//! every step and the Gaussian noise, the bound with `DEFAULT_CANARIES` canaries, the default
//! guess grid, 95% confidence and δ = 1e-5 (the run default) — for the quick preset's training (8,192
//! records, batch 32, 160 steps):
//! * noise disabled, ledger claiming ε = 1 and ε = 3: flagged (violation) in ≥ 9 of 10;
//! * correct DP-SGD calibrated to ε = 1 and ε = 8: bound below the claim in all 10.

use dpsynth_audit::run::{DEFAULT_CANARIES, DEFAULT_MIN_EXPECTED_SAMPLES};
use dpsynth_audit::simulate::simulate_audit;
use dpsynth_audit::{audit_plan, Verdict};
use dpsynth_privacy::SecureRng;

const N: usize = 8192;
const BATCH: usize = 32;
const STEPS: u64 = 160;
const REPEATS: u64 = 10;

/// δ of `dpsynth run` (`privacy.delta`, `dpsynth_report::defaults::DELTA`), which `dpsynth
/// audit --config` audits. (δ matters: the bound's 2mδ term caps the ceiling; at δ = 5e-5 it
/// would be ≈ 3.2 with 1,024 canaries, see the privacy crate's `audit_ceiling`.)
fn delta() -> f64 {
    1e-5
}

fn audit(seed: u64, sigma: f64) -> dpsynth_audit::simulate::SimulatedAudit {
    let mut rng = SecureRng::seeded(seed);
    simulate_audit(
        DEFAULT_CANARIES,
        N,
        BATCH,
        STEPS,
        DEFAULT_MIN_EXPECTED_SAMPLES,
        sigma,
        delta(),
        0.95,
        &mut rng,
    )
    .unwrap()
}

#[test]
fn no_noise_trainer_is_flagged_at_claims_one_and_three() {
    let mut flagged = [0; 2];
    for r in 0..REPEATS {
        let a = audit(100 + r, 0.0);
        eprintln!(
            "no noise, run {r}: bound {:.3} (v/r {}/{}), ceiling {:.3}, q·T {:.2}",
            a.bound.epsilon_lower_bound,
            a.bound.v,
            a.bound.r,
            a.bound.ceiling,
            a.plan.expected_samples
        );
        assert!(a.bound.ceiling > 4.5, "ceiling {:?}", a.bound);
        assert!(a.plan.expected_samples >= DEFAULT_MIN_EXPECTED_SAMPLES - 0.05);
        for (i, claim) in [1.0, 3.0].into_iter().enumerate() {
            flagged[i] += (a.verdict(claim) == Verdict::Violation) as usize;
        }
    }
    assert!(flagged[0] >= 9, "claim 1 flagged in {} of 10", flagged[0]);
    assert!(flagged[1] >= 9, "claim 3 flagged in {} of 10", flagged[1]);
}

#[test]
fn correct_runs_stay_below_their_claim() {
    for eps in [1.0, 8.0] {
        // σ as the audit run's ledger would calibrate it for the audit's q (inserted ≈ m/2).
        let p = audit_plan(
            N,
            DEFAULT_CANARIES / 2,
            BATCH,
            STEPS,
            DEFAULT_MIN_EXPECTED_SAMPLES,
        );
        let sigma = dpsynth_privacy::calibrate_noise_multiplier(
            eps,
            delta(),
            p.sampling_probability,
            STEPS,
        )
        .unwrap();
        for r in 0..REPEATS {
            let a = audit(200 + r, sigma);
            eprintln!(
                "ε = {eps} (σ = {sigma:.3}), run {r}: bound {:.3} (v/r {}/{}), ceiling {:.3}, verdict {:?}",
                a.bound.epsilon_lower_bound,
                a.bound.v,
                a.bound.r,
                a.bound.ceiling,
                a.verdict(eps)
            );
            assert!(
                a.bound.epsilon_lower_bound <= eps,
                "ε = {eps}: {:?}",
                a.bound
            );
            assert_ne!(a.verdict(eps), Verdict::Violation);
        }
    }
}
