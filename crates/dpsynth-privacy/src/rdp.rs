//! Rényi-DP accountant (the cross-check of the PLD accountant).
//!
//! RDP of the Poisson-subsampled Gaussian mechanism is computed exactly, for integer orders by the
//! binomial expansion and for fractional orders by the two-sided series of Mironov, Talwar & Zhang
//! (2019), "Rényi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3. Conversion to
//! (ε, δ) uses the improved bound of Balle et al. (2020) "Hypothesis testing interpretations and
//! Rényi DP", Thm. 21 / Canonne, Kamath & Steinke (2020), Prop. 12:
//! `ε = RDP(α) + ln(1 − 1/α) − (ln δ + ln α)/(α − 1)`, minimised over the order grid, together
//! with the KL (Bretagnolle–Huber) bound `δ ≥ sqrt(1 − e^{−RDP})` ⇒ ε = 0 that dp_accounting uses.

use crate::error::{check_delta, check_epsilon, PrivacyError};
use crate::event::DpEvent;
use crate::special::{ln_gamma, log_add, log_erfc, log_sub};

/// The default order grid: 1.1, 1.2, …, 10.9 (step 0.1), 11, 12, …, 63, 128, 256, 512 — the grid
/// dp_accounting 0.6's `RdpAccountant` evidently uses by default (every optimal order in the
/// reference vectors lies on it and the ε agree to 1e-6 there), so the two RDP numbers are directly
/// comparable. Opacus's grid is the same without 128–512. When the optimum lies on the edge of the
/// grid (1.1 or 512) a warning is logged and [`RdpEpsilon::order_on_grid_edge`] is set; use
/// [`epsilon_rdp_with_orders`] for another grid.
pub const DEFAULT_RDP_ORDERS: [f64; 155] = default_orders();

const fn default_orders() -> [f64; 155] {
    let mut o = [0.0; 155];
    let mut i = 0;
    while i < 99 {
        o[i] = 1.0 + (i as f64 + 1.0) / 10.0;
        i += 1;
    }
    let mut k = 11;
    while k < 64 {
        o[i] = k as f64;
        i += 1;
        k += 1;
    }
    o[152] = 128.0;
    o[153] = 256.0;
    o[154] = 512.0;
    o
}

/// Result of an RDP → (ε, δ) conversion.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RdpEpsilon {
    /// The smallest ε over the order grid.
    pub epsilon: f64,
    /// The order α achieving it.
    pub order: f64,
    /// True when `order` is the smallest or largest order of the grid (a wider grid may give a smaller ε).
    pub order_on_grid_edge: bool,
}

/// RDP ε(α) of `event` at each order in `orders` (all orders must be > 1).
///
/// # Privacy
/// Gaussian: α/(2σ²) (Mironov 2017, Prop. 7). Laplace: Mironov 2017, Prop. 6. Poisson-subsampled
/// Gaussian: exact A_α of Mironov, Talwar & Zhang 2019 (Thm. 5 for the dominating pair, Sec. 3.3 for
/// the evaluation), valid for add/remove neighbors. Composition adds RDP per order (Mironov 2017,
/// Prop. 1). A Poisson-sampled composition of Gaussians is reduced to one Gaussian with
/// σ_eff = (Σ σ_i⁻²)^(−1/2) (the queries can be stacked into one query of L2 sensitivity 1 per σ-scaled
/// block). Poisson-sampled Laplace is not supported by this accountant (use PLD).
pub fn rdp_curve(event: &DpEvent, orders: &[f64]) -> Result<Vec<f64>, PrivacyError> {
    event.validate()?;
    for &a in orders {
        if !(a > 1.0 && a.is_finite()) {
            return Err(PrivacyError::invalid(
                "rdp order",
                a,
                "orders must be finite and > 1",
            ));
        }
    }
    let mut out = vec![0.0; orders.len()];
    accumulate(event, 1.0, orders, &mut out)?;
    Ok(out)
}

fn accumulate(
    event: &DpEvent,
    count: f64,
    orders: &[f64],
    out: &mut [f64],
) -> Result<(), PrivacyError> {
    match event {
        DpEvent::Gaussian { noise_multiplier } => {
            for (o, &a) in out.iter_mut().zip(orders) {
                *o += count * gaussian_rdp(*noise_multiplier, a);
            }
        }
        DpEvent::Laplace { noise_multiplier } => {
            for (o, &a) in out.iter_mut().zip(orders) {
                *o += count * laplace_rdp(*noise_multiplier, a);
            }
        }
        DpEvent::PoissonSampled {
            sampling_probability,
            event,
        } => {
            let sigma = effective_gaussian_sigma(event).ok_or_else(|| PrivacyError::Unsupported {
                accountant: "RDP",
                reason: format!(
                    "Poisson sampling is supported over Gaussian mechanisms only, got {event}; use the PLD accountant"
                ),
            })?;
            if sigma.is_infinite() {
                return Ok(());
            }
            for (o, &a) in out.iter_mut().zip(orders) {
                *o += count * subsampled_gaussian_rdp(*sampling_probability, sigma, a);
            }
        }
        DpEvent::SelfComposed { event, count: c } => {
            if *c > 0 {
                accumulate(event, count * *c as f64, orders, out)?;
            }
        }
        DpEvent::Composed(events) => {
            for e in events {
                accumulate(e, count, orders, out)?;
            }
        }
    }
    Ok(())
}

/// σ of the single Gaussian equivalent to a (self-)composition of Gaussians; `inf` for a no-op.
pub(crate) fn effective_gaussian_sigma(event: &DpEvent) -> Option<f64> {
    fn inv_sq(e: &DpEvent) -> Option<f64> {
        match e {
            DpEvent::Gaussian { noise_multiplier } => Some(noise_multiplier.powi(-2)),
            DpEvent::SelfComposed { event, count } => {
                if *count == 0 {
                    Some(0.0)
                } else {
                    inv_sq(event).map(|v| v * *count as f64)
                }
            }
            DpEvent::Composed(events) => events.iter().map(inv_sq).sum(),
            _ => None,
        }
    }
    inv_sq(event).map(|s| {
        if s == 0.0 {
            f64::INFINITY
        } else {
            s.powf(-0.5)
        }
    })
}

fn gaussian_rdp(sigma: f64, alpha: f64) -> f64 {
    alpha / (2.0 * sigma * sigma)
}

/// Mironov 2017, Prop. 6: for α > 1,
/// `1/(α−1) · ln( α/(2α−1) · e^{(α−1)/b} + (α−1)/(2α−1) · e^{−α/b} )`.
fn laplace_rdp(b: f64, alpha: f64) -> f64 {
    let t1 = (alpha / (2.0 * alpha - 1.0)).ln() + (alpha - 1.0) / b;
    let t2 = ((alpha - 1.0) / (2.0 * alpha - 1.0)).ln() - alpha / b;
    // Never above the pure-DP bound 1/b.
    (log_add(t1, t2) / (alpha - 1.0)).min(1.0 / b)
}

/// RDP at order α of the Poisson-subsampled Gaussian mechanism (add/remove neighbors).
pub fn subsampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q >= 1.0 {
        return gaussian_rdp(sigma, alpha);
    }
    let log_a = if alpha.fract() == 0.0 && alpha <= 1e6 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    // A_α ≥ 1 mathematically; clamp rounding below 0.
    (log_a / (alpha - 1.0)).max(0.0)
}

fn log_binom(n: f64, k: f64) -> f64 {
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
}

/// ln A_α for integer α: `A_α = Σ_i C(α,i) q^i (1−q)^{α−i} exp((i² − i)/(2σ²))`.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let s2 = 2.0 * sigma * sigma;
    let a = alpha as f64;
    let mut acc = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let fi = i as f64;
        let t = log_binom(a, fi) + fi * lq + (a - fi) * l1q + (fi * fi - fi) / s2;
        acc = log_add(acc, t);
    }
    acc
}

/// ln A_α for fractional α: the split at z0 = σ² ln(1/q − 1) + 1/2 into two series with
/// generalized binomial coefficients (Mironov, Talwar & Zhang 2019, Sec. 3.3). Positive and
/// negative terms are summed separately in log space and subtracted at the end.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let s2 = 2.0 * sigma * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let sq2s = std::f64::consts::SQRT_2 * sigma;
    let (mut pos, mut neg) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    // log |C(α, i)| and its sign, updated iteratively: C(α, i+1) = C(α, i) (α − i)/(i + 1).
    let mut log_coef = 0.0f64;
    let mut sign = 1.0f64;
    let mut i = 0u64;
    loop {
        let fi = i as f64;
        let j = alpha - fi;
        let lt0 = log_coef + fi * lq + j * l1q;
        let lt1 = log_coef + j * lq + fi * l1q;
        let le0 = log_erfc((fi - z0) / sq2s) - std::f64::consts::LN_2;
        let le1 = log_erfc((z0 - j) / sq2s) - std::f64::consts::LN_2;
        let ls0 = lt0 + (fi * fi - fi) / s2 + le0;
        let ls1 = lt1 + (j * j - j) / s2 + le1;
        let term = log_add(ls0, ls1);
        if sign > 0.0 {
            pos = log_add(pos, term);
        } else {
            neg = log_add(neg, term);
        }
        // Past i > α the coefficients alternate in sign with decreasing magnitude, so the
        // truncation error is at most the magnitude of the next term; we stop once a term is below
        // e^-30 of the sum and add that term once more to the positive part (an upper bound).
        if fi > alpha + 1.0 && term < pos - 30.0 {
            pos = log_add(pos, term);
            break;
        }
        if i > 5_000_000 {
            // Never reached for α ≥ 1.01 (terms decay like i^(−α−2)); bound the remainder crudely
            // but conservatively by (number of terms so far) × last term.
            pos = log_add(pos, term + (i as f64).ln());
            break;
        }
        let factor = j / (fi + 1.0);
        if factor < 0.0 {
            sign = -sign;
        }
        if factor == 0.0 {
            // α is an integer after all: the series terminates.
            break;
        }
        log_coef += factor.abs().ln();
        i += 1;
    }
    log_sub(pos, neg)
}

/// ε for a given δ from an RDP curve (Balle et al. 2020 / Canonne–Kamath–Steinke 2020 conversion).
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
) -> Result<RdpEpsilon, PrivacyError> {
    check_delta(delta)?;
    if orders.is_empty() || orders.len() != rdp.len() {
        return Err(PrivacyError::invalid(
            "rdp orders",
            orders.len() as f64,
            "need a non-empty order grid with one RDP value per order",
        ));
    }
    let mut best = (f64::INFINITY, orders[0], 0usize);
    for (idx, (&a, &r)) in orders.iter().zip(rdp).enumerate() {
        if r.is_nan() {
            continue;
        }
        let eps = if delta * delta + (-r).exp_m1() > 0.0 {
            // Bretagnolle–Huber: TV ≤ sqrt(1 − e^{−KL}) ≤ sqrt(1 − e^{−RDP(α)}) < δ ⇒ (0, δ)-DP.
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta.ln() + a.ln()) / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a, idx);
        }
    }
    if !best.0.is_finite() {
        return Err(PrivacyError::Unbounded(
            "RDP is infinite at every order of the grid".into(),
        ));
    }
    let on_edge = best.0 > 0.0 && orders.len() > 1 && (best.2 == 0 || best.2 == orders.len() - 1);
    Ok(RdpEpsilon {
        epsilon: best.0.max(0.0),
        order: best.1,
        order_on_grid_edge: on_edge,
    })
}

/// ε(δ) of `event` by the RDP accountant over [`DEFAULT_RDP_ORDERS`].
///
/// # Privacy
/// An upper bound on the true ε (every step is an exact RDP value or a valid conversion bound; see
/// the module docs). Looser than [`crate::epsilon_pld`], typically by 5–30 %; use it as a cross-check.
pub fn epsilon_rdp(event: &DpEvent, delta: f64) -> Result<RdpEpsilon, PrivacyError> {
    epsilon_rdp_with_orders(event, delta, &DEFAULT_RDP_ORDERS)
}

/// As [`epsilon_rdp`] over a caller-chosen order grid (integer or fractional orders > 1).
pub fn epsilon_rdp_with_orders(
    event: &DpEvent,
    delta: f64,
    orders: &[f64],
) -> Result<RdpEpsilon, PrivacyError> {
    check_delta(delta)?;
    let rdp = rdp_curve(event, orders)?;
    let res = epsilon_from_rdp(orders, &rdp, delta)?;
    if res.order_on_grid_edge {
        tracing::warn!(
            order = res.order,
            epsilon = res.epsilon,
            "RDP: the optimal order is on the edge of the order grid; a wider grid could give a smaller ε (the PLD ε is unaffected)"
        );
    }
    Ok(res)
}

/// δ(ε) of `event` by the RDP accountant over [`DEFAULT_RDP_ORDERS`]
/// (`δ = min_α exp((α−1)(RDP(α) − ε + ln(1 − 1/α)) − ln α)`, Canonne–Kamath–Steinke 2020, Prop. 12).
pub fn delta_rdp(event: &DpEvent, epsilon: f64) -> Result<f64, PrivacyError> {
    check_epsilon(epsilon)?;
    let orders = DEFAULT_RDP_ORDERS;
    let rdp = rdp_curve(event, &orders)?;
    let mut best = f64::INFINITY;
    for (&a, &r) in orders.iter().zip(&rdp) {
        let kl = if r == 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        let conv = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
        best = best.min(kl.min(conv));
    }
    Ok(best.exp().min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_and_fractional_series_agree_near_integers() {
        // The fractional series at α = k ± 1e-9 must approach the exact binomial sum at α = k.
        for &(q, s) in &[(0.01, 1.0), (0.1, 0.8), (0.5, 2.0), (0.001, 0.6)] {
            for k in [2u64, 3, 7, 20] {
                let exact = log_a_int(q, s, k);
                let frac = log_a_frac(q, s, k as f64 + 1e-9);
                assert!(
                    (exact - frac).abs() < 1e-6 * exact.abs().max(1e-3),
                    "q={q} σ={s} α={k}: {exact} vs {frac}"
                );
            }
        }
    }

    /// A_α = E_{z~N(0,σ²)}[(1 − q + q e^{(2z−1)/(2σ²)})^α] by a fine trapezoid rule.
    fn log_a_quadrature(q: f64, s: f64, a: f64) -> f64 {
        let (lo, hi, n) = (-40.0 * s, 40.0 * s + a, 400_000);
        let h = (hi - lo) / n as f64;
        let mut acc = 0.0;
        for k in 0..=n {
            let z = lo + k as f64 * h;
            let w = if k == 0 || k == n { 0.5 } else { 1.0 };
            let dens = (-z * z / (2.0 * s * s)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt());
            let ratio = 1.0 - q + q * ((2.0 * z - 1.0) / (2.0 * s * s)).exp();
            acc += w * dens * ratio.powf(a);
        }
        (acc * h).ln()
    }

    #[test]
    fn fractional_orders_match_numerical_integration() {
        for &(q, s) in &[(0.5, 0.6), (0.1, 0.6), (0.01, 1.0), (0.05, 0.8)] {
            for &a in &[1.1, 1.5, 2.5, 4.9] {
                let series = log_a_frac(q, s, a);
                let quad = log_a_quadrature(q, s, a);
                assert!(
                    (series - quad).abs() < 1e-7 * quad.abs().max(1e-6),
                    "q={q} σ={s} α={a}: series {series} vs quadrature {quad}"
                );
                // Conservative truncation: never below the integral beyond round-off.
                assert!(series >= quad - 1e-12 * quad.abs().max(1e-6));
            }
        }
    }

    #[test]
    fn rdp_is_monotone_in_order_and_below_full_gaussian() {
        let orders: Vec<f64> = (0..60).map(|i| 1.1 + i as f64 * 0.35).collect();
        let r = rdp_curve(&DpEvent::dp_sgd(0.05, 1.1, 1), &orders).unwrap();
        for w in r.windows(2) {
            assert!(w[1] >= w[0] - 1e-12);
        }
        for (&a, &v) in orders.iter().zip(&r) {
            assert!(v <= gaussian_rdp(1.1, a) + 1e-12);
            assert!(v >= 0.0);
        }
    }

    #[test]
    fn small_q_approximation() {
        // For small q and moderate α, RDP ≈ 2 q² α / σ² ... at least within a factor of the
        // second-order term q² α (e^{1/σ²} − 1)/2 (Mironov et al. 2019, Sec. 3.3 heuristics).
        let (q, s, a) = (1e-3, 2.0, 4.0);
        let r = subsampled_gaussian_rdp(q, s, a);
        let approx = q * q * a * ((1.0 / (s * s)).exp() - 1.0) / 2.0;
        assert!((r / approx - 1.0).abs() < 0.01, "{r} vs {approx}");
    }

    #[test]
    fn laplace_rdp_limits() {
        // α → ∞ tends to ε = 1/b; α → 1 tends to KL = 1/b + e^{-1/b} − 1.
        let b = 2.0;
        assert!((laplace_rdp(b, 1e6) - 0.5).abs() < 1e-4);
        let kl = 1.0 / b + (-1.0 / b).exp() - 1.0;
        assert!((laplace_rdp(b, 1.0 + 1e-7) - kl).abs() < 1e-5);
    }

    #[test]
    fn conversion_flags_edges() {
        // Huge ε: optimum at the smallest order 2.
        let r = epsilon_rdp(&DpEvent::dp_sgd(0.5, 0.6, 1000), 1e-5).unwrap();
        assert!(r.order_on_grid_edge && r.order == DEFAULT_RDP_ORDERS[0]);
        let r = epsilon_rdp(&DpEvent::dp_sgd(0.01, 1.0, 1000), 1e-5).unwrap();
        assert!(!r.order_on_grid_edge);
    }
}
