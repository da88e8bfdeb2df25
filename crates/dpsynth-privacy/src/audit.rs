//! Empirical privacy auditing from one training run (Steinke, Nasr & Jagielski 2023, "Privacy
//! Auditing with One (1) Training Run", NeurIPS 2023).
//!
//! Protocol: m canaries are each included in the training data independently with probability
//! 1/2 ([`inclusion_bits`]). After training, the auditor scores every canary (e.g. minus its loss),
//! guesses "included" for the k+ highest scores and "excluded" for the k− lowest, abstains on the
//! rest, and counts the v correct guesses out of r = k+ + k−.
//!
//! If the training run is (ε, δ)-DP, the number of correct guesses W satisfies (their Thm. 5.2,
//! the (ε, δ) version of Thm. 3.1):
//!
//! `P[W ≥ v] ≤ β + 2mδ·α`, with `β = P[Binomial(r, p) ≥ v]`, `p = e^ε/(1 + e^ε)` and
//! `α = max_{1≤i≤v} (1/i)·P[v > Binomial(r, p) ≥ v − i]`.
//!
//! [`epsilon_lower_bound`] returns the largest ε for which this p-value is still below
//! `1 − confidence`: with that confidence, the run is *not* (ε', δ)-DP for any ε' below it. An ε of
//! 0 means no evidence of leakage. A lower bound well below the accountant's ε is expected (the
//! audit is weak by design); a lower bound *above* it means a bug.
//!
//! Choosing k+/k− after looking at the scores is a multiple comparison. [`audit_from_scores`]
//! follows the conservative route: it tests every (k+, k−) of a grid fixed in advance at level
//! `(1 − confidence)/G` (Bonferroni / union bound over the G grid points), so the reported bound
//! holds at the stated confidence *including* the search. (The paper's experiments report the best
//! choice without correction and note the issue; we do not.)
//!
//! An audit can only report what its size allows: with m canaries, a grid of G guess sizes and
//! every guess right, the bound is at most [`audit_ceiling`] (≈ ln(r / ln(G/(1 − confidence)))
//! for the largest r of the grid). When that ceiling is at or below the claimed ε the audit
//! cannot detect a violation at all and its verdict must be "inconclusive", not "consistent".

use crate::error::{check_delta, PrivacyError};
use crate::rng::SecureRng;
use crate::special::{ln_gamma, log_add};

/// ln P[Binomial(r, p) = k] for k = 0..=r.
fn log_binom_pmf(r: u64, p: f64) -> Vec<f64> {
    let (lp, l1p) = (p.ln(), (-p).ln_1p());
    let rf = r as f64;
    let lgr = ln_gamma(rf + 1.0);
    (0..=r)
        .map(|k| {
            let kf = k as f64;
            let c = lgr - ln_gamma(kf + 1.0) - ln_gamma(rf - kf + 1.0);
            let a = if k == 0 { 0.0 } else { kf * lp };
            let b = if k == r { 0.0 } else { (rf - kf) * l1p };
            c + a + b
        })
        .collect()
}

fn check_counts(m: u64, r: u64, v: u64) -> Result<(), PrivacyError> {
    if !(v <= r && r <= m) || m == 0 {
        return Err(PrivacyError::invalid(
            "audit counts",
            v as f64,
            format!("need 0 ≤ v ≤ r ≤ m and m ≥ 1, got m = {m}, r = {r}, v = {v}"),
        ));
    }
    Ok(())
}

/// p-value of observing ≥ v correct guesses out of r (m canaries) under the null hypothesis
/// that the run is (ε, δ)-DP (Steinke, Nasr & Jagielski 2023, Thm. 5.2). Capped at 1.
pub fn p_value(m: u64, r: u64, v: u64, epsilon: f64, delta: f64) -> Result<f64, PrivacyError> {
    check_counts(m, r, v)?;
    if epsilon.is_nan() || epsilon < 0.0 || epsilon.is_infinite() {
        return Err(PrivacyError::invalid(
            "epsilon",
            epsilon,
            "must be finite and ≥ 0",
        ));
    }
    if !(0.0..1.0).contains(&delta) {
        return Err(PrivacyError::invalid("delta", delta, "must be in [0, 1)"));
    }
    if v == 0 {
        return Ok(1.0);
    }
    // p = e^ε/(1 + e^ε) = 1/(1 + e^−ε)
    let p = 1.0 / (1.0 + (-epsilon).exp());
    let lpmf = log_binom_pmf(r, p);
    // β = P[Bin ≥ v]
    let mut log_beta = f64::NEG_INFINITY;
    for &l in &lpmf[v as usize..] {
        log_beta = log_add(log_beta, l);
    }
    let beta = log_beta.exp();
    // α = max_i (1/i) Σ_{j=1..i} P[Bin = v − j]
    let mut alpha = 0.0f64;
    let mut sum = 0.0f64;
    for i in 1..=v {
        sum += lpmf[(v - i) as usize].exp();
        alpha = alpha.max(sum / i as f64);
    }
    Ok((beta + 2.0 * m as f64 * delta * alpha).min(1.0))
}

/// Largest ε such that observing v of r correct guesses (m canaries) has p-value < 1 − confidence
/// under (ε, δ)-DP: an empirical lower bound on the run's ε at that confidence. 0 = no evidence.
pub fn epsilon_lower_bound(
    m: u64,
    r: u64,
    v: u64,
    delta: f64,
    confidence: f64,
) -> Result<f64, PrivacyError> {
    check_counts(m, r, v)?;
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(PrivacyError::invalid(
            "confidence",
            confidence,
            "must be in (0, 1), e.g. 0.95",
        ));
    }
    let alpha = 1.0 - confidence;
    if p_value(m, r, v, 0.0, delta)? >= alpha {
        return Ok(0.0);
    }
    // p_value is non-decreasing in ε; keep p(lo) < alpha ≤ p(hi).
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while p_value(m, r, v, hi, delta)? < alpha {
        lo = hi;
        hi *= 2.0;
        if hi > 1e3 {
            return Ok(lo);
        }
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if p_value(m, r, v, mid, delta)? < alpha {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-9 {
            break;
        }
    }
    // `lo` is on the rejected side: a valid (conservative) lower bound.
    Ok(lo)
}

/// Outcome of [`audit_from_scores`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditResult {
    /// Empirical lower bound on ε at `confidence`, after the union bound over the guess grid.
    pub epsilon_lower_bound: f64,
    /// Number of canaries m.
    pub m: u64,
    /// Guesses "included" (top scores) of the best grid point.
    pub k_plus: u64,
    /// Guesses "excluded" (bottom scores) of the best grid point.
    pub k_minus: u64,
    /// r = k+ + k−.
    pub r: u64,
    /// Correct guesses v at the best grid point.
    pub v: u64,
    /// Number of (k+, k−) choices tested (the union-bound factor).
    pub hypotheses: usize,
    /// Confidence of the bound (e.g. 0.95).
    pub confidence: f64,
    /// δ of the null hypothesis.
    pub delta: f64,
    /// The audit's own ceiling: the bound if every guess at every grid point were right
    /// ([`audit_ceiling`]). A claimed ε at or above it cannot be refuted by this audit.
    #[serde(default)]
    pub ceiling: f64,
}

/// The largest ε lower bound [`audit_from_scores`] can report with `m` canaries and this guess
/// grid (default [`default_guess_grid`]) at `confidence` and `delta`: the bound if every guess
/// at every grid point were right (v = r), after the same union bound over the grid.
///
/// # Privacy
/// Not a statement about any run; it is the audit's power limit. A verdict "consistent" is
/// only informative when the claimed ε is below this ceiling (Steinke, Nasr & Jagielski 2023,
/// Thm. 5.2 with v = r).
pub fn audit_ceiling(
    m: usize,
    grid: Option<&[(usize, usize)]>,
    confidence: f64,
    delta: f64,
) -> Result<f64, PrivacyError> {
    let default;
    let grid = match grid {
        Some(g) => g,
        None => {
            default = default_guess_grid(m);
            &default
        }
    };
    if grid.is_empty() || grid.iter().any(|&(kp, km)| kp + km == 0 || kp + km > m) {
        return Err(PrivacyError::invalid(
            "guess grid",
            grid.len() as f64,
            "each (k+, k−) needs 1 ≤ k+ + k− ≤ number of canaries",
        ));
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(PrivacyError::invalid(
            "confidence",
            confidence,
            "must be in (0, 1), e.g. 0.95",
        ));
    }
    let per_test_conf = 1.0 - (1.0 - confidence) / grid.len() as f64;
    let mut rs: Vec<u64> = grid.iter().map(|&(kp, km)| (kp + km) as u64).collect();
    rs.sort_unstable();
    rs.dedup();
    let mut best = 0.0f64;
    for r in rs {
        best = best.max(epsilon_lower_bound(m as u64, r, r, delta, per_test_conf)?);
    }
    Ok(best)
}

/// A guess grid fixed in advance: k+ = k− = k (symmetric) and k+ = k, k− = 0, for k in a
/// geometric sequence up to m/2.
pub fn default_guess_grid(m: usize) -> Vec<(usize, usize)> {
    let mut ks = Vec::new();
    let mut k = 1usize.max(m / 200);
    while k <= m / 2 {
        ks.push(k);
        k = (k as f64 * 1.5).ceil() as usize;
    }
    if ks.last() != Some(&(m / 2)) && m >= 2 {
        ks.push(m / 2);
    }
    let mut grid: Vec<(usize, usize)> = ks.iter().map(|&k| (k, k)).collect();
    grid.extend(ks.iter().map(|&k| (k, 0)));
    grid
}

/// Audits one run from canary scores (higher = more likely included) and the true inclusion bits.
///
/// Tests every (k+, k−) of `grid` (default: [`default_guess_grid`]) at level
/// `(1 − confidence)/grid.len()` and reports the best lower bound; by the union bound it holds
/// with probability ≥ `confidence` over the canary coin flips despite the search.
///
/// # Privacy
/// The bound is a statement about the training run (Steinke, Nasr & Jagielski 2023, Thm. 5.2)
/// only if the inclusion bits were drawn independently with probability 1/2 *before* training
/// and the grid was fixed before looking at the scores.
pub fn audit_from_scores(
    scores: &[f64],
    included: &[bool],
    confidence: f64,
    delta: f64,
    grid: Option<&[(usize, usize)]>,
) -> Result<AuditResult, PrivacyError> {
    let m = scores.len();
    if m == 0 || included.len() != m {
        return Err(PrivacyError::invalid(
            "canaries",
            m as f64,
            format!(
                "need one inclusion bit per score and at least one canary ({} bits, {m} scores)",
                included.len()
            ),
        ));
    }
    if scores.iter().any(|s| s.is_nan()) {
        return Err(PrivacyError::invalid(
            "scores",
            f64::NAN,
            "scores must not be NaN",
        ));
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(PrivacyError::invalid(
            "confidence",
            confidence,
            "must be in (0, 1), e.g. 0.95",
        ));
    }
    if delta != 0.0 {
        check_delta(delta)?;
    }
    let default;
    let grid = match grid {
        Some(g) => g,
        None => {
            default = default_guess_grid(m);
            &default
        }
    };
    if grid.is_empty() || grid.iter().any(|&(kp, km)| kp + km == 0 || kp + km > m) {
        return Err(PrivacyError::invalid(
            "guess grid",
            grid.len() as f64,
            "each (k+, k−) needs 1 ≤ k+ + k− ≤ number of canaries",
        ));
    }
    // Order canaries by score, highest first (ties broken by index: fixed before looking).
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    // prefix counts of included among the top j, and of excluded among the bottom j
    let mut top_in = vec![0u64; m + 1];
    for (j, &i) in order.iter().enumerate() {
        top_in[j + 1] = top_in[j] + included[i] as u64;
    }
    let mut bottom_out = vec![0u64; m + 1];
    for (j, &i) in order.iter().rev().enumerate() {
        bottom_out[j + 1] = bottom_out[j] + (!included[i]) as u64;
    }
    let g = grid.len();
    // Each test at level (1 − confidence)/G, i.e. confidence 1 − (1 − confidence)/G.
    let per_test_conf = 1.0 - (1.0 - confidence) / g as f64;
    let ceiling = audit_ceiling(m, Some(grid), confidence, delta)?;
    let mut best: Option<AuditResult> = None;
    for &(kp, km) in grid {
        let v = top_in[kp] + bottom_out[km];
        let r = (kp + km) as u64;
        let eps = epsilon_lower_bound(m as u64, r, v, delta, per_test_conf)?;
        if best.as_ref().is_none_or(|b| eps > b.epsilon_lower_bound) {
            best = Some(AuditResult {
                epsilon_lower_bound: eps,
                m: m as u64,
                k_plus: kp as u64,
                k_minus: km as u64,
                r,
                v,
                hypotheses: g,
                confidence,
                delta,
                ceiling,
            });
        }
    }
    Ok(best.expect("grid is non-empty"))
}

/// Independent inclusion bits with probability 1/2 each (drawn before training).
pub fn inclusion_bits(rng: &mut SecureRng, m: usize) -> Vec<bool> {
    (0..m).map(|_| rng.next_u64() >> 63 == 1).collect()
}

/// Secret-sharer canaries (Carlini et al. 2019): `"my secret code is NNNNNN"` with `digits`
/// uniformly random digits, all distinct. `n` must not exceed 10^digits / 2.
pub fn secret_sharer_canaries(
    rng: &mut SecureRng,
    n: usize,
    digits: u32,
) -> Result<Vec<String>, PrivacyError> {
    if digits == 0 || digits > 18 || (n as f64) > 10f64.powi(digits as i32) / 2.0 {
        return Err(PrivacyError::invalid(
            "digits",
            digits as f64,
            format!("need 1..=18 digits and at most half of the 10^digits codes ({n} requested)"),
        ));
    }
    let space = 10u64.pow(digits);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let code = rng.below(space);
        if seen.insert(code) {
            out.push(format!(
                "my secret code is {code:0width$}",
                width = digits as usize
            ));
        }
    }
    Ok(out)
}

/// Random-token canaries: `len` lowercase letters each, all distinct (26^len ≥ 2n required).
pub fn random_token_canaries(
    rng: &mut SecureRng,
    n: usize,
    len: usize,
) -> Result<Vec<String>, PrivacyError> {
    if len == 0 || (len as f64) * 26f64.ln() < ((2 * n.max(1)) as f64).ln() {
        return Err(PrivacyError::invalid(
            "token length",
            len as f64,
            format!("too short for {n} distinct canaries"),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let s: String = (0..len)
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect();
        if seen.insert(s.clone()) {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_epsilon_is_a_fair_coin() {
        // ε = 0, δ = 0: p-value is the Binomial(r, 1/2) tail. r = 10, v = 8: (45 + 10 + 1)/1024.
        let p = p_value(100, 10, 8, 0.0, 0.0).unwrap();
        assert!((p - 56.0 / 1024.0).abs() < 1e-12, "{p}");
        // Chance-level guessing gives no evidence.
        assert_eq!(epsilon_lower_bound(1000, 100, 50, 1e-5, 0.95).unwrap(), 0.0);
        assert_eq!(epsilon_lower_bound(1000, 100, 0, 0.0, 0.95).unwrap(), 0.0);
    }

    #[test]
    fn perfect_guesses_closed_form() {
        // δ = 0, v = r: p-value = p^r with p = e^ε/(1+e^ε); the bound solves p^r = 0.05:
        // ε = ln(p/(1 − p)), p = 0.05^(1/r). r = 100 → ε = 3.4935...
        for &r in &[10u64, 100, 1000] {
            let p = 0.05f64.powf(1.0 / r as f64);
            let expected = (p / (1.0 - p)).ln();
            let got = epsilon_lower_bound(1000, r, r, 0.0, 0.95).unwrap();
            assert!((got - expected).abs() < 1e-6, "r={r}: {got} vs {expected}");
            assert!(got <= expected);
        }
        let e100 = epsilon_lower_bound(1000, 100, 100, 0.0, 0.95).unwrap();
        assert!((e100 - 3.4935).abs() < 1e-3);
        // δ > 0 only weakens the bound.
        let with_delta = epsilon_lower_bound(1000, 100, 100, 1e-5, 0.95).unwrap();
        assert!(with_delta <= e100 && with_delta > 0.0);
        // Single guess can never give 95% evidence.
        assert_eq!(epsilon_lower_bound(10, 1, 1, 0.0, 0.95).unwrap(), 0.0);
    }

    #[test]
    fn p_value_monotone() {
        let a = p_value(1000, 200, 150, 0.5, 1e-6).unwrap();
        let b = p_value(1000, 200, 150, 1.0, 1e-6).unwrap();
        let c = p_value(1000, 200, 160, 1.0, 1e-6).unwrap();
        assert!(a < b && c < b);
        assert!(p_value(1000, 200, 250, 1.0, 0.0).is_err());
        assert!(p_value(1000, 200, 150, f64::NAN, 0.0).is_err());
        assert!(epsilon_lower_bound(1000, 200, 150, 0.0, 1.5).is_err());
    }

    #[test]
    fn audit_of_randomized_response_is_valid_and_informative() {
        // Each canary's score is its inclusion bit through ε-randomized response: an ε-DP release.
        let mut rng = SecureRng::seeded(11);
        let (m, eps) = (4000usize, 2.0f64);
        let bits = inclusion_bits(&mut rng, m);
        let keep = eps.exp() / (1.0 + eps.exp());
        let scores: Vec<f64> = bits
            .iter()
            .map(|&b| {
                let flip = rng.uniform() > keep;
                let s = if b ^ flip { 1.0 } else { 0.0 };
                s + 1e-3 * rng.uniform() // break ties randomly
            })
            .collect();
        let res = audit_from_scores(&scores, &bits, 0.95, 0.0, None).unwrap();
        assert!(res.epsilon_lower_bound <= eps, "{res:?}");
        assert!(res.epsilon_lower_bound > 1.0, "{res:?}");
        assert!(res.hypotheses > 1);
        // Scores independent of the bits give (almost surely) no evidence.
        let noise: Vec<f64> = (0..m).map(|_| rng.uniform()).collect();
        let res0 = audit_from_scores(&noise, &bits, 0.95, 1e-5, None).unwrap();
        assert!(res0.epsilon_lower_bound < 0.3, "{res0:?}");
        assert!(audit_from_scores(&noise, &bits[..10], 0.95, 1e-5, None).is_err());
    }

    #[test]
    fn canaries_are_distinct_and_well_formed() {
        let mut rng = SecureRng::seeded(5);
        let c = secret_sharer_canaries(&mut rng, 500, 6).unwrap();
        assert_eq!(c.len(), 500);
        assert!(c
            .iter()
            .all(|s| s.starts_with("my secret code is ") && s.len() == 24));
        let set: std::collections::HashSet<_> = c.iter().collect();
        assert_eq!(set.len(), 500);
        let t = random_token_canaries(&mut rng, 300, 8).unwrap();
        assert!(t
            .iter()
            .all(|s| s.len() == 8 && s.chars().all(|ch| ch.is_ascii_lowercase())));
        assert!(secret_sharer_canaries(&mut rng, 60, 2).is_err());
        let bits = inclusion_bits(&mut rng, 10_000);
        let ones = bits.iter().filter(|&&b| b).count() as f64;
        assert!((ones - 5000.0).abs() < 5.0 * 50.0);
        // Same seed, same canaries.
        let mut r1 = SecureRng::seeded(9);
        let mut r2 = SecureRng::seeded(9);
        assert_eq!(
            secret_sharer_canaries(&mut r1, 5, 6).unwrap(),
            secret_sharer_canaries(&mut r2, 5, 6).unwrap()
        );
    }

    /// Reference: Thm. 5.2's p-value computed directly with exact integer binomial
    /// coefficients (u128) and plain products, for every v of small r, several ε and δ.
    #[test]
    fn p_value_matches_exact_binomial_reference() {
        fn choose(n: u64, k: u64) -> u128 {
            let k = k.min(n - k);
            let mut c: u128 = 1;
            for i in 0..k {
                c = c * (n - i) as u128 / (i + 1) as u128;
            }
            c
        }
        fn reference(m: u64, r: u64, v: u64, eps: f64, delta: f64) -> f64 {
            let p = eps.exp() / (1.0 + eps.exp());
            let pmf =
                |k: u64| choose(r, k) as f64 * p.powi(k as i32) * (1.0 - p).powi((r - k) as i32);
            if v == 0 {
                return 1.0;
            }
            let beta: f64 = (v..=r).map(pmf).sum();
            let alpha = (1..=v)
                .map(|i| (v - i..v).map(pmf).sum::<f64>() / i as f64)
                .fold(0.0, f64::max);
            (beta + 2.0 * m as f64 * delta * alpha).min(1.0)
        }
        for &r in &[1u64, 7, 20, 45, 60] {
            for v in 0..=r {
                for &eps in &[0.0, 0.3, 1.0, 2.5, 5.0] {
                    for &delta in &[0.0, 1e-5, 1e-3] {
                        let got = p_value(200, r, v, eps, delta).unwrap();
                        let want = reference(200, r, v, eps, delta);
                        assert!(
                            (got - want).abs() <= 1e-9 * want.max(1e-300) + 1e-300,
                            "r={r} v={v} ε={eps} δ={delta}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // The bound is the ε where the exact p-value crosses 1 − confidence, from below.
        for &(r, v) in &[(60u64, 60u64), (60, 55), (45, 40), (20, 20)] {
            let e = epsilon_lower_bound(200, r, v, 1e-5, 0.95).unwrap();
            assert!(e > 0.0);
            assert!(reference(200, r, v, e, 1e-5) < 0.05, "r={r} v={v}");
            assert!(
                reference(200, r, v, e + 1e-6, 1e-5) >= 0.05 - 1e-9,
                "r={r} v={v}"
            );
        }
    }

    /// The ceiling is the bound with every guess right, it dominates every reported bound,
    /// and it grows with the number of canaries (128 canaries cannot refute ε = 3).
    #[test]
    fn ceiling_bounds_every_result_and_grows_with_m() {
        let c128 = audit_ceiling(128, None, 0.95, 1e-5).unwrap();
        assert!(c128 < 3.1, "{c128}");
        let c1024 = audit_ceiling(1024, None, 0.95, 1e-5).unwrap();
        assert!(c1024 > 4.5 && c1024 > c128, "{c1024}");
        // Perfect separation at m = 1024 reaches the ceiling exactly.
        let bits: Vec<bool> = (0..1024).map(|i| i % 3 != 0).collect();
        let scores: Vec<f64> = bits.iter().map(|&b| b as u8 as f64).collect();
        let grid = [(300usize, 300usize), (100, 0)];
        let res = audit_from_scores(&scores, &bits, 0.95, 1e-5, Some(&grid)).unwrap();
        assert_eq!(res.v, res.r);
        assert!(
            (res.ceiling - res.epsilon_lower_bound).abs() < 1e-12,
            "{res:?}"
        );
        let mut rng = SecureRng::seeded(3);
        let noise: Vec<f64> = (0..1024).map(|_| rng.uniform()).collect();
        let res = audit_from_scores(&noise, &bits, 0.95, 1e-5, None).unwrap();
        assert!(res.epsilon_lower_bound <= res.ceiling);
        assert!((res.ceiling - c1024).abs() < 1e-12);
        assert!(audit_ceiling(10, Some(&[]), 0.95, 0.0).is_err());
        assert!(audit_ceiling(10, Some(&[(6, 6)]), 0.95, 0.0).is_err());
    }

    /// Validity by repetition: for an ε-DP mechanism (randomized response on each bit, the
    /// worst case for this test), the bound exceeds ε in at most ~5% of audits.
    #[test]
    fn bound_exceeds_true_epsilon_rarely() {
        let (m, eps) = (512usize, 1.5f64);
        let keep = eps.exp() / (1.0 + eps.exp());
        let mut over = 0;
        let trials = 100;
        for t in 0..trials {
            let mut rng = SecureRng::seeded(500 + t);
            let bits = inclusion_bits(&mut rng, m);
            let scores: Vec<f64> = bits
                .iter()
                .map(|&b| ((b ^ (rng.uniform() > keep)) as u8) as f64 + 1e-3 * rng.uniform())
                .collect();
            let res = audit_from_scores(&scores, &bits, 0.95, 0.0, None).unwrap();
            over += (res.epsilon_lower_bound > eps) as usize;
        }
        // 5% would be 5 of 100; the union bound makes it rarer (binomial sd ≈ 2.2).
        assert!(over <= 10, "{over} of {trials} audits exceeded the true ε");
    }
}
