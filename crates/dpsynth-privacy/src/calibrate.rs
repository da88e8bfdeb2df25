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
/// is checked with the default (fine) PLD before returning; the search itself runs on a 10× coarser
/// pessimistic grid and then tightens. Bracketing + Illinois (regula falsi) always keeps the upper
/// end of the bracket on the conservative side.
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
    // Bracket on the coarse grid: ε(lo) > target ≥ ε(hi).
    let (mut lo, mut f_lo);
    let mut hi = 1.0f64;
    let mut f_hi = f(hi, &coarse)?;
    if f_hi > target_epsilon {
        loop {
            lo = hi;
            f_lo = f_hi;
            hi *= 2.0;
            if hi > MAX_NOISE_MULTIPLIER {
                return Err(PrivacyError::Unreachable(format!(
                    "ε = {target_epsilon} at δ = {delta:e} would need σ > {MAX_NOISE_MULTIPLIER}"
                )));
            }
            f_hi = f(hi, &coarse)?;
            if f_hi <= target_epsilon {
                break;
            }
        }
    } else {
        loop {
            let cand = hi / 2.0;
            if cand < MIN_NOISE_MULTIPLIER {
                tracing::warn!(
                    sigma = hi,
                    "calibration: the target is met already at the smallest σ searched; returning it"
                );
                return finish(hi, target_epsilon, &fine, &f);
            }
            let fc = f(cand, &coarse)?;
            if fc > target_epsilon {
                lo = cand;
                f_lo = fc;
                break;
            }
            hi = cand;
            f_hi = fc;
        }
    }
    let hi = illinois(lo, f_lo, hi, f_hi, target_epsilon, 1e-3, |s| f(s, &coarse))?;
    // Tighten on the fine grid inside [hi·(1 − 2%), hi]; the fine PLD is at most the coarse one.
    let f_hi = f(hi, &fine)?;
    if f_hi > target_epsilon {
        // Not expected (coarse ≥ fine), but never return a σ that fails the target.
        return calibrate_fine_from(hi, target_epsilon, &fine, &f);
    }
    let mut lo = hi * 0.98;
    let mut f_lo = f(lo, &fine)?;
    let mut hi = hi;
    let mut f_hi = f_hi;
    while f_lo <= target_epsilon {
        hi = lo;
        f_hi = f_lo;
        lo *= 0.98;
        if lo < MIN_NOISE_MULTIPLIER {
            return finish(hi, target_epsilon, &fine, &f);
        }
        f_lo = f(lo, &fine)?;
    }
    let s = illinois(lo, f_lo, hi, f_hi, target_epsilon, 2e-4, |s| f(s, &fine))?;
    finish(s, target_epsilon, &fine, &f)
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
    let ok = |t: u64| -> Result<bool, PrivacyError> {
        match eps_dp_sgd(sampling_probability, noise_multiplier, t, delta, &fine) {
            Ok(e) => Ok(e <= target_epsilon),
            Err(PrivacyError::Unbounded(_)) => Ok(false),
            Err(e) => Err(e),
        }
    };
    if !ok(1)? {
        return Err(PrivacyError::Unreachable(format!(
            "a single step with σ = {noise_multiplier}, q = {sampling_probability} already exceeds ε = {target_epsilon} at δ = {delta:e}"
        )));
    }
    // Start from an RDP-free guess: ε grows roughly like sqrt(T) for large T; double from 1.
    let (mut good, mut bad) = (1u64, 2u64);
    while ok(bad)? {
        good = bad;
        if bad >= MAX_STEPS_SEARCHED {
            tracing::warn!(
                "max_steps: budget allows more than {MAX_STEPS_SEARCHED} steps; returning that cap"
            );
            return Ok(MAX_STEPS_SEARCHED);
        }
        bad = (bad * 2).min(MAX_STEPS_SEARCHED);
    }
    // Invariant: ok(good), !ok(bad).
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid)? {
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
