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

fn eps_event(event: &DpEvent, delta: f64, opts: &PldOptions) -> Result<f64, PrivacyError> {
    PrivacyLossDistribution::from_event(event, opts)?.epsilon(delta)
}

/// The default (fine) PLD options and a 10× coarser pessimistic grid for cheap searches.
fn fine_and_coarse() -> (PldOptions, PldOptions) {
    let fine = PldOptions::default();
    let coarse = PldOptions {
        value_discretization_interval: fine.value_discretization_interval * 10.0,
        ..fine
    };
    (fine, coarse)
}

/// Smallest noise multiplier σ (to relative precision 2e-4, rounded up) such that DP-SGD with
/// Poisson rate `sampling_probability` for `steps` steps is (target_epsilon, delta)-DP by the PLD
/// accountant with default options.
///
/// # Privacy
/// The returned σ always satisfies `epsilon_pld(dp_sgd(q, σ, steps), δ) ≤ target_epsilon` — this
/// is checked with the default (fine) PLD before returning. See
/// [`calibrate_noise_multiplier_for`], which this calls with [`DpEvent::dp_sgd`].
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sampling_probability: f64,
    steps: u64,
) -> Result<f64, PrivacyError> {
    check_q(sampling_probability)?;
    check_steps(steps)?;
    calibrate_noise_multiplier_for(target_epsilon, delta, |s| {
        DpEvent::dp_sgd(sampling_probability, s, steps)
    })
}

/// Smallest σ (to relative precision 2e-4, rounded up) such that the event `event_of(σ)` is
/// (target_epsilon, delta)-DP by the PLD accountant with default options. `event_of` must be
/// monotone: more noise never gives a larger ε (true of every event built from Gaussian
/// mechanisms whose noise multipliers grow with σ, e.g. [`DpEvent::dpsynth_run`]).
///
/// # Privacy
/// The returned σ always satisfies `epsilon_pld(event_of(σ), δ) ≤ target_epsilon` — checked with
/// the default (fine) PLD before returning. The search runs on a 10× coarser pessimistic grid
/// (Δ = 1e-3, ε within ~0.05 % of the fine grid and above it), starting from the RDP-calibrated σ
/// (RDP is looser than PLD, Mironov 2017 Prop. 3 vs. Koskela et al. 2020); bracketing + Illinois
/// (regula falsi) always keeps the upper, conservative end of the bracket and returns it.
pub fn calibrate_noise_multiplier_for(
    target_epsilon: f64,
    delta: f64,
    event_of: impl Fn(f64) -> DpEvent,
) -> Result<f64, PrivacyError> {
    check_target(target_epsilon)?;
    check_delta(delta)?;
    event_of(1.0).validate()?;
    let (fine, coarse) = fine_and_coarse();
    let f = |s: f64, o: &PldOptions| -> Result<f64, PrivacyError> {
        match eps_event(&event_of(s), delta, o) {
            Ok(e) => Ok(e),
            // δ below the mass at infinity means ε = ∞ at this σ: treat as "too little noise".
            Err(PrivacyError::Unbounded(_)) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    };
    // Starting point: the RDP-calibrated σ (cheap), which is ≥ the PLD one because RDP is looser.
    let start = rdp_sigma(target_epsilon, delta, &event_of)
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

/// The noise multipliers of a dpsynth training run: the DP label histogram's (if released) and
/// DP-SGD's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunNoise {
    /// σ of the Gaussian label histogram (`None`: no histogram released).
    pub label_sigma: Option<f64>,
    /// σ of DP-SGD.
    pub sigma: f64,
    /// PLD ε of the composed run at the calibration's δ.
    pub epsilon: f64,
}

/// Calibrate a whole dpsynth training run ([`DpEvent::dpsynth_run`]) to `target_epsilon`: the
/// label histogram (when `label_share` is `Some(s)`) gets the smallest σ whose ε on its own is
/// ≤ `s × target_epsilon`, then DP-SGD gets the smallest σ for which the *composed* run (the
/// histogram and `steps` Poisson-subsampled Gaussian steps) meets `target_epsilon`. One function serves
/// `dpsynth account` and `dpsynth train`, so both print the same σ for the same plan.
///
/// # Privacy
/// Both σ come from [`calibrate_noise_multiplier_for`], whose result is checked against the
/// default PLD accountant; the composition is accounted by PLD (adaptive composition, Koskela et
/// al. 2020; the histogram is a sensitivity-1 Gaussian mechanism, Balle & Wang 2018), so the
/// returned plan is (target_epsilon, δ)-DP.
pub fn calibrate_run(
    target_epsilon: f64,
    delta: f64,
    sampling_probability: f64,
    steps: u64,
    label_share: Option<f64>,
) -> Result<RunNoise, PrivacyError> {
    check_target(target_epsilon)?;
    check_q(sampling_probability)?;
    check_steps(steps)?;
    let label_sigma = match label_share {
        None => None,
        Some(share) => {
            if !(share > 0.0 && share < 1.0) {
                return Err(PrivacyError::invalid(
                    "label_share",
                    share,
                    "must be in (0, 1): the label histogram's share of ε",
                ));
            }
            Some(calibrate_noise_multiplier_for(
                target_epsilon * share,
                delta,
                DpEvent::gaussian,
            )?)
        }
    };
    let sigma = calibrate_noise_multiplier_for(target_epsilon, delta, |s| {
        DpEvent::dpsynth_run(label_sigma, sampling_probability, s, steps)
    })?;
    let epsilon = crate::pld::epsilon_pld(
        &DpEvent::dpsynth_run(label_sigma, sampling_probability, sigma, steps),
        delta,
    )?;
    Ok(RunNoise {
        label_sigma,
        sigma,
        epsilon,
    })
}

/// Smallest σ on a geometric bisection with RDP ε ≤ target (used only as a starting point).
fn rdp_sigma(target: f64, delta: f64, event_of: &impl Fn(f64) -> DpEvent) -> Option<f64> {
    use crate::rdp::{epsilon_from_rdp, rdp_curve, DEFAULT_RDP_ORDERS};
    let eps = |s: f64| -> f64 {
        rdp_curve(&event_of(s), &DEFAULT_RDP_ORDERS)
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
    let (fine, coarse) = fine_and_coarse();
    let ok = |t: u64, o: &PldOptions| -> Result<bool, PrivacyError> {
        let ev = DpEvent::dp_sgd(sampling_probability, noise_multiplier, t);
        match eps_event(&ev, delta, o) {
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
    fn generic_calibration_equals_dp_sgd_calibration() {
        let (q, steps, delta, target) = (0.02, 300, 1e-5, 2.0);
        let a = calibrate_noise_multiplier(target, delta, q, steps).unwrap();
        let b = calibrate_noise_multiplier_for(target, delta, |s| DpEvent::dp_sgd(q, s, steps))
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn run_calibration_composes_the_label_histogram() {
        let (q, steps, delta, target) = (0.01, 500, 1e-5, 3.0);
        let run = calibrate_run(target, delta, q, steps, Some(1.0 / 30.0)).unwrap();
        let ls = run.label_sigma.unwrap();
        // The histogram alone spends at most its share, and tightly.
        let e_label = epsilon_pld(&DpEvent::gaussian(ls), delta).unwrap();
        assert!(e_label <= 0.1 + 1e-12, "{e_label}");
        assert!(epsilon_pld(&DpEvent::gaussian(ls * 0.999), delta).unwrap() > 0.1);
        // The composed run meets the target, tightly, and needs more noise than DP-SGD alone.
        let e = epsilon_pld(&DpEvent::dpsynth_run(Some(ls), q, run.sigma, steps), delta).unwrap();
        assert!(e <= target && (e - run.epsilon).abs() < 1e-12, "{e}");
        let e2 = epsilon_pld(
            &DpEvent::dpsynth_run(Some(ls), q, run.sigma * 0.999, steps),
            delta,
        )
        .unwrap();
        assert!(e2 > target, "{e2}");
        let alone = calibrate_noise_multiplier(target, delta, q, steps).unwrap();
        assert!(run.sigma > alone, "{} vs {alone}", run.sigma);
        // Without a histogram it is plain DP-SGD calibration.
        let none = calibrate_run(target, delta, q, steps, None).unwrap();
        assert_eq!(none.label_sigma, None);
        assert!(
            (none.sigma / alone - 1.0).abs() < 1e-6,
            "{} vs {alone}",
            none.sigma
        );
        assert!(calibrate_run(target, delta, q, steps, Some(0.0)).is_err());
        assert!(calibrate_run(target, delta, q, steps, Some(1.0)).is_err());
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
