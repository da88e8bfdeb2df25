//! Composition of separate (ε, δ)-DP releases on the same private data: training attempts in one
//! run directory, the evaluation's DP-SGD baselines next to the synthetic data, the points of a
//! sweep. Each release was accounted on its own (the PLD accountant composes the steps *within*
//! a training run); this module adds up what several of them release together.

/// An (ε, δ)-differential-privacy guarantee; ε = ∞ for a non-private release.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guarantee {
    pub epsilon: f64,
    pub delta: f64,
}

impl Guarantee {
    /// What releasing nothing costs: (0, 0).
    pub const NOTHING: Guarantee = Guarantee {
        epsilon: 0.0,
        delta: 0.0,
    };

    pub fn new(epsilon: f64, delta: f64) -> Self {
        Guarantee { epsilon, delta }
    }
}

/// `a + b` rounded up: the floating-point sum, moved one ulp up when rounding to nearest lost a
/// positive remainder (Knuth's TwoSum gives the exact rounding error).
fn add_up(a: f64, b: f64) -> f64 {
    let s = a + b;
    if !s.is_finite() {
        return s;
    }
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    if err > 0.0 {
        s.next_up()
    } else {
        s
    }
}

/// The guarantee of several separate releases on the same data, together: basic sequential
/// composition, ε and δ add up (δ at most 1). No releases: (0, 0). A non-private release
/// (ε = ∞) makes the whole non-private.
///
/// # Privacy
/// Dwork & Roth 2014, *The Algorithmic Foundations of Differential Privacy*, Theorem 3.16: the
/// composition of k mechanisms that are (ε_i, δ_i)-DP is (Σ ε_i, Σ δ_i)-DP. It holds for any
/// mechanisms, also when each is chosen from the earlier outputs (Dwork & Roth 2014, Section
/// 3.5 and Appendix B), so it needs nothing from the ledgers but their (ε, δ). It is loose for many similar releases (advanced or PLD composition would
/// give less), never too small. Conservative in every approximation: each floating-point sum
/// is rounded up, and an invalid ε (negative or NaN) counts as ∞ and an invalid δ (outside
/// [0, 1] or NaN) as 1, so a corrupt entry can only make the total larger.
pub fn compose_sequential(releases: impl IntoIterator<Item = Guarantee>) -> Guarantee {
    let mut total = Guarantee::NOTHING;
    for g in releases {
        let epsilon = if g.epsilon >= 0.0 {
            g.epsilon
        } else {
            f64::INFINITY
        };
        let delta = if (0.0..=1.0).contains(&g.delta) {
            g.delta
        } else {
            1.0
        };
        total.epsilon = add_up(total.epsilon, epsilon);
        total.delta = add_up(total.delta, delta).min(1.0);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilons_and_deltas_add_up() {
        let g = compose_sequential([
            Guarantee::new(3.0, 1e-5),
            Guarantee::new(3.0, 1e-5),
            Guarantee::new(3.0, 1e-5),
        ]);
        assert_eq!(g.epsilon, 9.0, "exact sums stay exact");
        assert!((g.delta - 3e-5).abs() < 1e-18 && g.delta >= 3e-5);
        assert_eq!(compose_sequential([]), Guarantee::NOTHING);
        let one = Guarantee::new(2.5, 1e-6);
        assert_eq!(compose_sequential([one]), one);
    }

    #[test]
    fn non_private_and_invalid_releases_never_lower_the_total() {
        let g = compose_sequential([
            Guarantee::new(1.0, 1e-5),
            Guarantee::new(f64::INFINITY, 0.0),
        ]);
        assert!(g.epsilon.is_infinite());
        for bad in [f64::NAN, -1.0] {
            let g = compose_sequential([Guarantee::new(1.0, 1e-5), Guarantee::new(bad, 1e-5)]);
            assert!(g.epsilon.is_infinite(), "ε = {bad} must count as ∞");
            let g = compose_sequential([Guarantee::new(1.0, 1e-5), Guarantee::new(1.0, bad)]);
            assert_eq!(g.delta, 1.0, "δ = {bad} must count as 1");
        }
        // δ is a probability: capped at 1.
        let g = compose_sequential([Guarantee::new(1.0, 0.7), Guarantee::new(1.0, 0.7)]);
        assert_eq!(g.delta, 1.0);
    }

    #[test]
    fn floating_point_rounding_errs_upward() {
        // 1 + 1e-17 rounds to 1 under round-to-nearest: the composed ε must be above 1.
        let g = compose_sequential([Guarantee::new(1.0, 0.0), Guarantee::new(1e-17, 0.0)]);
        assert!(g.epsilon > 1.0, "{}", g.epsilon);
        assert_eq!(g.epsilon, 1.0f64.next_up());
        // Many releases: never below the exact sum (multiples of a power of two add exactly;
        // the f64 nearest 0.1 is above 0.1, so 1000 of them sum to more than 100).
        let unit = 2f64.powi(-40);
        let g = compose_sequential((0..1000).map(|_| Guarantee::new(3.0 * unit, 0.0)));
        assert!(g.epsilon >= 3000.0 * unit);
        let g = compose_sequential((0..1000).map(|_| Guarantee::new(0.1, 0.0)));
        assert!(g.epsilon >= 100.0, "{}", g.epsilon);
    }
}
