//! From membership scores to the empirical ε lower bound.
//!
//! The statistics (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training
//! Run": p-value, ε lower bound, the union-bounded (k₊, k₋) guess grid) live in
//! [`dpsynth_privacy::audit`]; this module feeds it the audit's scores and checks the inputs.

pub use dpsynth_privacy::audit::AuditResult;

use crate::{AuditError, Result};

/// Guess from `scores` (higher = more likely inserted) with the privacy crate's default
/// guess grid, and bound ε at `confidence` for the claimed `delta`.
///
/// # Privacy
/// Valid only if the inclusion bits were drawn independently with probability 1/2 before
/// training and the grid is fixed before looking at the scores (Steinke et al. 2023,
/// Thm. 5.2); [`dpsynth_privacy::audit::audit_from_scores`] applies the union bound over the
/// grid, so the bound holds at `confidence` including the search.
pub fn bound_from_scores(
    scores: &[f64],
    inserted: &[bool],
    delta: f64,
    confidence: f64,
) -> Result<AuditResult> {
    if scores.len() != inserted.len() {
        return Err(AuditError::Config(format!(
            "{} scores for {} canaries",
            scores.len(),
            inserted.len()
        )));
    }
    Ok(dpsynth_privacy::audit::audit_from_scores(
        scores, inserted, confidence, delta, None,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn coins(seed: u64, m: usize) -> Vec<bool> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..m).map(|_| rng.random_bool(0.5)).collect()
    }

    /// An attack that separates perfectly gets every guess right and a large bound; the
    /// pure-DP closed form `q^r ≤ 1 − c'` bounds it from above.
    #[test]
    fn perfect_scores_give_a_large_bound() {
        let inserted = coins(11, 200);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let s: Vec<f64> = inserted
            .iter()
            .map(|&b| if b { 1.0 } else { 0.0 } + rng.random::<f64>() * 0.5)
            .collect();
        let b = bound_from_scores(&s, &inserted, 1e-5, 0.95).unwrap();
        assert_eq!(b.v, b.r, "{b:?}");
        assert!(b.epsilon_lower_bound > 2.5, "{b:?}");
        // Even with r = m = 200 all right at 95% (no union bound, δ = 0) ε ≤ ln(q/(1−q)),
        // q = 0.05^(1/200).
        let q = 0.05f64.powf(1.0 / 200.0);
        assert!(b.epsilon_lower_bound <= (q / (1.0 - q)).ln());
    }

    /// Scores independent of the coins: positive bounds in at most ~5% of runs.
    #[test]
    fn independent_scores_rarely_give_a_bound() {
        let inserted = coins(13, 200);
        let mut positive = 0;
        for t in 0..200 {
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + t);
            let s: Vec<f64> = (0..200).map(|_| r.random::<f64>()).collect();
            if bound_from_scores(&s, &inserted, 1e-5, 0.95)
                .unwrap()
                .epsilon_lower_bound
                > 0.0
            {
                positive += 1;
            }
        }
        // Expected ≤ 10 of 200 (sd ≈ 3.1); the union bound makes it much rarer in practice.
        assert!(
            positive <= 20,
            "{positive} of 200 null runs gave a positive bound"
        );
    }

    /// A perfectly wrong attack (held-out canaries score higher) gives no evidence.
    #[test]
    fn reversed_scores_give_zero() {
        let inserted: Vec<bool> = (0..64).map(|i| i % 2 == 0).collect();
        let s: Vec<f64> = inserted
            .iter()
            .map(|&b| if b { 0.0 } else { 1.0 })
            .collect();
        let b = bound_from_scores(&s, &inserted, 1e-5, 0.95).unwrap();
        assert_eq!(b.epsilon_lower_bound, 0.0);
    }

    /// The score direction matters: the loss-drop score (higher = inserted) on canaries
    /// whose loss dropped only when inserted.
    #[test]
    fn loss_drop_scores_point_the_right_way() {
        use crate::score::{loss_score, ExampleLoss};
        let inserted = coins(5, 100);
        let base = ExampleLoss {
            sum: 12.0,
            count: 6,
        };
        let s: Vec<f64> = inserted
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let jitter = (i % 7) as f64 * 0.01;
                let t = if b { 0.5 + jitter } else { 2.0 + jitter };
                loss_score(
                    base,
                    ExampleLoss {
                        sum: t * 6.0,
                        count: 6,
                    },
                )
            })
            .collect();
        let b = bound_from_scores(&s, &inserted, 1e-5, 0.95).unwrap();
        assert!(b.epsilon_lower_bound > 2.0, "{b:?}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(bound_from_scores(&[], &[], 0.0, 0.95).is_err());
        assert!(bound_from_scores(&[1.0], &[true, false], 0.0, 0.95).is_err());
        assert!(bound_from_scores(&[1.0, 2.0], &[true, false], 0.0, 1.0).is_err());
        assert!(bound_from_scores(&[f64::NAN, 2.0], &[true, false], 0.0, 0.9).is_err());
    }
}
