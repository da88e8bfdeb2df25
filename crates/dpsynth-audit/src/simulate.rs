//! Simulated audits: the score distributions of DP-SGD's canaries without training a model,
//! so that the audit's power and validity can be checked over many repetitions in the normal
//! test suite (`tests/repeated_audits.rs`).
//!
//! The simulated auditor is the white-box one of Steinke, Nasr & Jagielski 2023 (§7) and
//! Nasr et al. 2023 ("Tight auditing of differentially private machine learning"): each canary
//! is a gradient-space (Dirac) canary of norm C = 1 in its own coordinate, each inserted
//! independently with probability 1/2, then Poisson-sampled at rate q in each of T steps like
//! every other unit; the auditor sees every noisy sum and scores a canary by the sum over the
//! steps of its coordinate: `score = Binomial(T, q)·[inserted] + σ·√T·N(0, 1)`. With σ = 0
//! (a trainer whose noise is disabled) every sampled canary is detected exactly, which models
//! a trainer that memorizes every canary it samples.
//!
//! # Privacy
//! For σ > 0 this is exactly the release of a correct DP-SGD run (Poisson-subsampled Gaussian,
//! Abadi et al. 2016; accounted by the PLD accountant), so the bound computed from these scores
//! must stay below the accountant's ε with probability ≥ the audit's confidence.

use dpsynth_privacy::audit::{audit_from_scores, inclusion_bits, AuditResult};
use dpsynth_privacy::SecureRng;

use crate::plan::AuditPlan;
use crate::run::{verdict, Verdict};

/// Scores of the white-box Dirac-canary attacker (see the module docs).
pub fn dirac_scores(
    inserted: &[bool],
    q: f64,
    steps: u64,
    sigma: f64,
    rng: &mut SecureRng,
) -> Vec<f64> {
    inserted
        .iter()
        .map(|&b| {
            let mut s = 0.0;
            if b {
                for _ in 0..steps {
                    s += (rng.uniform() < q) as u8 as f64;
                }
            }
            if sigma > 0.0 {
                s += rng.gaussian(sigma * (steps as f64).sqrt());
            }
            s
        })
        .collect()
}

/// One simulated audit's outcome.
#[derive(Debug, Clone)]
pub struct SimulatedAudit {
    pub bound: AuditResult,
    pub plan: AuditPlan,
}

impl SimulatedAudit {
    /// The verdict for a claimed ε.
    pub fn verdict(&self, claimed: f64) -> Verdict {
        verdict(
            Some(claimed),
            self.bound.epsilon_lower_bound,
            self.bound.ceiling,
        )
    }
}

/// One simulated audit of a run on `user_units` units with expected batch `batch` for `steps`
/// steps and noise multiplier `sigma` (0 = noise disabled), with `m` canaries, planned as
/// [`crate::run_audit_with`] plans it ([`crate::audit_plan`] with `min_expected_samples`).
#[allow(clippy::too_many_arguments)]
pub fn simulate_audit(
    m: usize,
    user_units: usize,
    batch: usize,
    steps: u64,
    min_expected_samples: f64,
    sigma: f64,
    delta: f64,
    confidence: f64,
    rng: &mut SecureRng,
) -> crate::Result<SimulatedAudit> {
    let bits = inclusion_bits(rng, m);
    let inserted = bits.iter().filter(|&&b| b).count();
    let plan = crate::plan::audit_plan(user_units, inserted, batch, steps, min_expected_samples);
    let scores = dirac_scores(&bits, plan.sampling_probability, steps, sigma, rng);
    let bound = audit_from_scores(&scores, &bits, confidence, delta, None)?;
    Ok(SimulatedAudit { bound, plan })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_noise_scores_count_samples() {
        let mut rng = SecureRng::seeded(1);
        let bits = [true, false, true, false];
        let s = dirac_scores(&bits, 1.0, 5, 0.0, &mut rng);
        assert_eq!(s, vec![5.0, 0.0, 5.0, 0.0]);
        let s = dirac_scores(&bits, 0.0, 5, 0.0, &mut rng);
        assert_eq!(s, vec![0.0; 4]);
    }

    /// The finding, reproduced: with 128 canaries at the user's q (quick preset) a
    /// no-noise trainer is not flagged at ε = 3 (ceiling ≈ 3.0).
    #[test]
    fn old_defaults_could_not_flag_a_no_noise_trainer() {
        let mut rng = SecureRng::seeded(2);
        let a = simulate_audit(128, 8192, 32, 160, 0.0, 0.0, 1e-5, 0.95, &mut rng).unwrap();
        assert!(a.bound.ceiling < 3.1, "{:?}", a.bound);
        assert_ne!(a.verdict(3.0), Verdict::Violation);
        assert!(a.plan.p_never_sampled > 0.5);
    }
}
