//! Noise calibration ("which σ gives ε ≤ target?") and step budgets ("how many steps at σ?").

use crate::error::{check_delta, check_q, check_sigma, check_steps, PrivacyError};
use crate::event::DpEvent;
use crate::pld::{PldOptions, PrivacyLossDistribution};

/// Smallest σ considered by the calibration; a target met already at this σ returns it (with a warning).
pub const MIN_NOISE_MULTIPLIER: f64 = 0.1;
/// Largest σ considered by the calibration.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e4;
/// Largest step count [`max_steps`] searches.
pub const MAX_STEPS_SEARCHED: u64 = 1 << 34;

fn check_target(target_epsilon: f64) -> Result<(), PrivacyError> {
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(PrivacyError::invalid(
            "target_epsilon",
            target_epsilon,
            "must be finite and > 0",
        ));
    }
    Ok(())
}

fn eps_dp_sgd(
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    opts: &PldOptions,
) -> Result<f64, PrivacyError> {
    PrivacyLossDistribution::from_event(&DpEvent::dp_sgd(q, sigma, steps), opts)?.epsilon(delta)
}

/// Smallest noise multiplier σ (to relative precision 2e-4, rounded up) such that DP-SGD with
/// Poisson rate `sampling_probability` for `steps` steps is (target_epsilon, delta)-DP by the PLD
/// accountant with default options.
///
/// # Privacy
/// The returned σ always satisfies `epsilon_pld(dp_sgd(q, σ, steps), δ) ≤ target_epsilon` — this
/// is checked with the default (fine) PLD before returning. The search runs on a 10× coarser
/// pessimistic grid (Δ = 1e-3, ε within ~0.05 % of the fine grid and above it), starting from the
/// RDP-calibrated σ; bracketing + Illinois (regula falsi) always keeps the upper end of the bracket
/// on the conservative side and returns it.
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sampling_probability: f64,
    steps: u64,
) -> Result<f64, PrivacyError> {
    check_target(target_epsilon)?;
    check_delta(delta)?;
    check_q(sampling_probability)?;
    check_steps(steps)?;
    let fine = PldOptions::default();
    let coarse = PldOptions {
        value_discretization_interval: fine.value_discretization_interval * 10.0,
        ..fine
    };
    let f = |s: f64, o: &PldOptions| -> Result<f64, PrivacyError> {
        match eps_dp_sgd(sampling_probability, s, steps, delta, o) {
            Ok(e) => Ok(e),
            // δ below the mass at infinity means ε = ∞ at this σ: treat as "too little noise".
            Err(PrivacyError::Unbounded(_)) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    };
    // Starting point: the RDP-calibrated σ (cheap), which is ≥ the PLD one because RDP is looser.
    let start = rdp_sigma(target_epsilon, delta, sampling_probability, steps)
        .unwrap_or(1.0)
        .clamp(MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER);
    // Bracket on the coarse grid: ε(lo) > target ≥ ε(hi).
    let mut hi = start;
    let mut f_hi = f(hi, &coarse)?;
    while f_hi > target_epsilon {
        hi *= 1.25;
        if hi > MAX_NOISE_MULTIPLIER {
            return Err(PrivacyError::Unreachable(format!(
                "ε = {target_epsilon} at δ = {delta:e} would need σ > {MAX_NOISE_MULTIPLIER}"
            )));
        }
        f_hi = f(hi, &coarse)?;
    }
    let (mut lo, mut f_lo);
    loop {
        lo = hi * 0.8;
        if lo < MIN_NOISE_MULTIPLIER {
            tracing::warn!(
                sigma = hi,
                "calibration: the target is met already near the smallest σ searched; returning it"
            );
            return finish(hi, target_epsilon, &fine, &f);
        }
        f_lo = f(lo, &coarse)?;
        if f_lo > target_epsilon {
            break;
        }
        hi = lo;
        f_hi = f_lo;
    }
    let hi = illinois(lo, f_lo, hi, f_hi, target_epsilon, 2e-4, |s| f(s, &coarse))?;
    // The coarse pessimistic PLD is within ~1e-3 (relative) of the fine one and above it, so `hi`
    // normally meets the target under the default accountant too; check that with one fine
    // evaluation and search on the fine grid only in the unexpected case that it does not.
    if f(hi, &fine)? <= target_epsilon {
        return Ok(hi);
    }
    calibrate_fine_from(hi, target_epsilon, &fine, &f)
}

/// Smallest σ on a geometric bisection with RDP ε ≤ target (used only as a starting point).
fn rdp_sigma(target: f64, delta: f64, q: f64, steps: u64) -> Option<f64> {
    use crate::rdp::{epsilon_from_rdp, rdp_curve, DEFAULT_RDP_ORDERS};
    let eps = |s: f64| -> f64 {
        rdp_curve(&DpEvent::dp_sgd(q, s, steps), &DEFAULT_RDP_ORDERS)
            .and_then(|r| epsilon_from_rdp(&DEFAULT_RDP_ORDERS, &r, delta))
            .map(|r| r.epsilon)
            .unwrap_or(f64::INFINITY)
    };
    let (mut lo, mut hi) = (MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER);
    if eps(hi) > target {
        return None;
    }
    for _ in 0..40 {
        let mid = (lo * hi).sqrt();
        if eps(mid) <= target {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi / lo < 1.0 + 1e-4 {
            break;
        }
    }
    Some(hi)
}

fn calibrate_fine_from(
    start: f64,
    target: f64,
    fine: &PldOptions,
    f: &impl Fn(f64, &PldOptions) -> Result<f64, PrivacyError>,
) -> Result<f64, PrivacyError> {
    let (mut lo, mut f_lo) = (start, f(start, fine)?);
    let mut hi = start * 1.05;
    let mut f_hi = f(hi, fine)?;
    while f_hi > target {
        lo = hi;
        f_lo = f_hi;
        hi *= 1.05;
        if hi > MAX_NOISE_MULTIPLIER {
            return Err(PrivacyError::Unreachable(format!(
                "ε = {target} needs σ > {MAX_NOISE_MULTIPLIER}"
            )));
        }
        f_hi = f(hi, fine)?;
    }
    let s = illinois(lo, f_lo, hi, f_hi, target, 2e-4, |s| f(s, fine))?;
    finish(s, target, fine, f)
}

fn finish(
    s: f64,
    target: f64,
    fine: &PldOptions,
    f: &impl Fn(f64, &PldOptions) -> Result<f64, PrivacyError>,
) -> Result<f64, PrivacyError> {
    // Final guard: the returned σ satisfies the target under the default PLD accountant.
    let e = f(s, fine)?;
    if e > target {
        return Err(PrivacyError::Unreachable(format!(
            "internal: calibrated σ = {s} gives ε = {e} > {target}"
        )));
    }
    Ok(s)
}

/// Illinois (modified regula falsi) on ln ε(σ) − ln target over a bracket with
/// ε(lo) > target ≥ ε(hi); returns the final `hi` (conservative end) once (hi − lo)/hi < rel_tol.
fn illinois(
    mut lo: f64,
    f_lo: f64,
    mut hi: f64,
    f_hi: f64,
    target: f64,
    rel_tol: f64,
    mut f: impl FnMut(f64) -> Result<f64, PrivacyError>,
) -> Result<f64, PrivacyError> {
    let lt = target.ln();
    let g = |e: f64| {
        if e == 0.0 {
            -50.0
        } else {
            (e.ln() - lt).clamp(-50.0, 50.0)
        }
    };
    let (mut g_lo, mut g_hi) = (g(f_lo), g(f_hi));
    let mut side = 0i8;
    for _ in 0..100 {
        if (hi - lo) / hi < rel_tol {
            break;
        }
        let mut x = hi - g_hi * (hi - lo) / (g_hi - g_lo);
        // Keep the step strictly inside the bracket and not too close to either end.
        let w = hi - lo;
        if !x.is_finite() || x <= lo + 0.02 * w || x >= hi - 0.02 * w {
            x = x.clamp(lo + 0.02 * w, hi - 0.02 * w);
            if !x.is_finite() {
                x = 0.5 * (lo + hi);
            }
        }
        let gx = g(f(x)?);
        if gx > 0.0 {
            lo = x;
            g_lo = gx;
            if side == -1 {
                g_hi *= 0.5;
            }
            side = -1;
        } else {
            hi = x;
            g_hi = gx;
            if side == 1 {
                g_lo *= 0.5;
            }
            side = 1;
        }
    }
    Ok(hi)
}

/// The largest number of DP-SGD steps with noise multiplier σ and Poisson rate q such that the PLD
/// ε at `delta` stays ≤ `target_epsilon`.
///
/// # Privacy
/// Every returned count T satisfies `epsilon_pld(dp_sgd(q, σ, T), δ) ≤ target_epsilon` (checked with
/// the default PLD). Returns [`PrivacyError::Unreachable`] when even one step exceeds the target. If
/// the budget allows more than [`MAX_STEPS_SEARCHED`] steps, that cap is returned (a lower bound).
pub fn max_steps(
    noise_multiplier: f64,
    sampling_probability: f64,
    delta: f64,
    target_epsilon: f64,
) -> Result<u64, PrivacyError> {
    check_sigma("noise_multiplier", noise_multiplier)?;
    check_q(sampling_probability)?;
    check_delta(delta)?;
    check_target(target_epsilon)?;
    let fine = PldOptions::default();
    let coarse = PldOptions {
        value_discretization_interval: fine.value_discretization_interval * 10.0,
        ..fine
    };
    let ok = |t: u64, o: &PldOptions| -> Result<bool, PrivacyError> {
        match eps_dp_sgd(sampling_probability, noise_multiplier, t, delta, o) {
            Ok(e) => Ok(e <= target_epsilon),
            Err(PrivacyError::Unbounded(_)) => Ok(false),
            Err(e) => Err(e),
        }
    };
    if !ok(1, &fine)? {
        return Err(PrivacyError::Unreachable(format!(
            "a single step with σ = {noise_multiplier}, q = {sampling_probability} already exceeds ε = {target_epsilon} at δ = {delta:e}"
        )));
    }
    // Coarse grid (cheap): doubling, then bisection. Invariant ok(good), !ok(bad).
    let (mut good, mut bad) = (1u64, 2u64);
    if ok(1, &coarse)? {
        while ok(bad, &coarse)? {
            good = bad;
            if bad >= MAX_STEPS_SEARCHED {
                tracing::warn!("max_steps: budget allows more than {MAX_STEPS_SEARCHED} steps; returning that cap");
                return Ok(MAX_STEPS_SEARCHED);
            }
            bad = (bad * 2).min(MAX_STEPS_SEARCHED);
        }
        while bad - good > 1 {
            let mid = good + (bad - good) / 2;
            if ok(mid, &coarse)? {
                good = mid;
            } else {
                bad = mid;
            }
        }
    }
    // Fine grid (the reported accountant): re-establish the invariant around the coarse answer.
    // The fine ε is slightly below the coarse one, so the boundary is at or just above `good`.
    if ok(good, &fine)? {
        let mut step = 1u64;
        bad = good.saturating_add(step).min(MAX_STEPS_SEARCHED);
        while bad > good && ok(bad, &fine)? {
            good = bad;
            if good >= MAX_STEPS_SEARCHED {
                return Ok(MAX_STEPS_SEARCHED);
            }
            step = step.saturating_mul(4);
            bad = good.saturating_add(step).min(MAX_STEPS_SEARCHED);
        }
    } else {
        // Not expected (coarse ≥ fine); search below.
        bad = good;
        good = 1;
    }
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid, &fine)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(good)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pld::epsilon_pld;

    #[test]
    fn calibration_meets_target_and_is_tight() {
        let (q, steps, delta, target) = (0.01, 1000, 1e-5, 3.0);
        let s = calibrate_noise_multiplier(target, delta, q, steps).unwrap();
        let e = epsilon_pld(&DpEvent::dp_sgd(q, s, steps), delta).unwrap();
        assert!(e <= target, "{e}");
        // A σ 0.1 % smaller must fail the target (tightness).
        let e2 = epsilon_pld(&DpEvent::dp_sgd(q, s * 0.999, steps), delta).unwrap();
        assert!(e2 > target, "σ={s}: {e2}");
    }

    #[test]
    fn calibration_rejects_bad_input() {
        assert!(calibrate_noise_multiplier(0.0, 1e-5, 0.01, 10).is_err());
        assert!(calibrate_noise_multiplier(f64::NAN, 1e-5, 0.01, 10).is_err());
        assert!(calibrate_noise_multiplier(1.0, 0.0, 0.01, 10).is_err());
        assert!(calibrate_noise_multiplier(1.0, 1e-5, 0.0, 10).is_err());
        assert!(calibrate_noise_multiplier(1.0, 1e-5, 0.01, 0).is_err());
        assert!(matches!(
            calibrate_noise_multiplier(1e-9, 1e-5, 1.0, 1_000_000),
            Err(PrivacyError::Unreachable(_))
        ));
    }

    #[test]
    fn max_steps_is_the_boundary() {
        let (s, q, d, t) = (1.0, 0.02, 1e-5, 2.0);
        let n = max_steps(s, q, d, t).unwrap();
        assert!(epsilon_pld(&DpEvent::dp_sgd(q, s, n), d).unwrap() <= t);
        assert!(epsilon_pld(&DpEvent::dp_sgd(q, s, n + 1), d).unwrap() > t);
        assert!(matches!(
            max_steps(0.3, 1.0, 1e-5, 0.1),
            Err(PrivacyError::Unreachable(_))
        ));
    }
}
