//! Privacy-loss-distribution (PLD) accountant: the tight accountant dpsynth reports first.
//!
//! # Method
//! * Each basic mechanism (Gaussian or Laplace, optionally Poisson-subsampled) is described by its
//!   exact privacy profile δ(ε) for each of the two add/remove directions (Zhu, Dong & Wang 2022,
//!   Prop. 30: "remove" pair `((1−q)B + qA, B)`, "add" pair `(B, (1−q)B + qA)`), with
//!   `A = N(1, σ²)`, `B = N(0, σ²)` for the Gaussian (Laplace analogously).
//! * The profile is discretized on the grid `εᵢ = i·Δ` with the pessimistic **connect-the-dots**
//!   construction of Doroshenko, Ghazi, Kamath, Kumar & Manurangsi (2022), "Connect the Dots:
//!   Tighter Discrete Approximations of Privacy Loss Distributions", Alg. 1 / Thm. 3.3: the PMF on
//!   the grid whose hockey-stick curve interpolates the true curve linearly in `e^ε` between grid
//!   points. As δ is convex in `e^ε`, the interpolation lies above the true curve, so the discrete
//!   PLD *dominates* the mechanism. Beyond the top grid point the remaining δ is put on `+∞`; below
//!   the bottom grid point the chord to `(e^ε = 0, δ = 1)` is used (again above a convex curve).
//! * Composition is convolution of PLDs (Koskela, Jälkö & Honkela 2020; Meiser & Mohammadi 2018),
//!   done by FFT (`rustfft`); k-fold self-composition raises the spectrum to the k-th power. The
//!   output window is chosen with Chernoff bounds so that at most `tail_mass_truncation` of mass
//!   lies outside it on either side; that mass (which could alias into the window) is added to the
//!   mass at `+∞`, which can only increase δ(ε).
//! * δ(ε) and ε(δ) are then exact for the discrete PMF (piecewise solution between grid points).
//!
//! Every approximation in this file errs towards a larger δ (larger ε); each is commented.

use rustfft::num_complex::Complex64;
use rustfft::FftPlanner;

use crate::error::{check_delta, check_epsilon, PrivacyError};
use crate::event::DpEvent;
use crate::rdp::effective_gaussian_sigma;
use crate::special::{log_erfc, norm_sf};

/// Tuning knobs of the PLD accountant. The defaults match dp_accounting's `PLDAccountant`
/// (value discretization interval 1e-4, pessimistic, tail truncation 1e-15).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PldOptions {
    /// Grid spacing Δ of privacy-loss values. Smaller is tighter and slower.
    pub value_discretization_interval: f64,
    /// Mass allowed outside the FFT window per self-composition, per side (added to δ).
    pub tail_mass_truncation: f64,
    /// Largest FFT length; when a composition needs more, Δ is coarsened ×4 (still pessimistic,
    /// only less tight) and the computation is redone.
    pub max_fft_len: usize,
}

impl Default for PldOptions {
    fn default() -> Self {
        PldOptions {
            value_discretization_interval: 1e-4,
            tail_mass_truncation: 1e-15,
            max_fft_len: 1 << 20,
        }
    }
}

/// Mass of the base noise distribution left out of a mechanism's discretization range
/// (dp_accounting uses e^-50 ≈ 2e-22; we use 4e-18, which after even 10⁶ compositions adds < 1e-11
/// to δ). It is not lost: it sits at `+∞` (δ(ε_top) is kept there).
const BASE_TAIL_Z: f64 = 8.6; // P(N(0,1) > 8.6) ≈ 4e-18

/// A discrete privacy loss distribution on the grid `(lo + k)·Δ`, plus mass at `+∞`.
#[derive(Clone, Debug)]
struct Pmf {
    lo: i64,
    p: Vec<f64>,
    inf: f64,
}

impl Pmf {
    fn identity() -> Pmf {
        Pmf {
            lo: 0,
            p: vec![1.0],
            inf: 0.0,
        }
    }

    /// δ(ε) = p(∞) + Σ_{v_j > ε} p_j (1 − e^{ε − v_j}).
    fn delta(&self, eps: f64, dv: f64) -> f64 {
        let mut d = self.inf;
        for (k, &p) in self.p.iter().enumerate().rev() {
            let v = (self.lo + k as i64) as f64 * dv;
            if v <= eps {
                break;
            }
            d += p * -(eps - v).exp_m1();
        }
        d.min(1.0)
    }

    /// Smallest ε ≥ 0 with δ(ε) ≤ target (exact for this PMF).
    fn epsilon(&self, target: f64, dv: f64) -> Result<f64, PrivacyError> {
        if self.inf > target {
            return Err(PrivacyError::Unbounded(format!(
                "δ = {target:e} is below the probability {:e} of an unbounded privacy loss \
                 (includes numerical truncation allowance); ask for a larger δ",
                self.inf
            )));
        }
        let e_neg = (-dv).exp();
        // a = p(∞) + Σ_{j>i} p_j ; d = Σ_{j>i} p_j e^{v_{i+1} − v_j}
        let mut a = self.inf;
        let mut d = 0.0f64;
        for (k, &p) in self.p.iter().enumerate().rev() {
            let v = (self.lo + k as i64) as f64 * dv;
            // δ at v with masses above v: a − e^{v − v_{i+1}} d = a − e^{−Δ} d
            let delta_here = a - e_neg * d;
            if delta_here > target && d > 0.0 {
                // crossing in (v, v + Δ]: target = a − e^{ε − (v+Δ)} d
                let eps = v + dv + ((a - target) / d).ln();
                return Ok(eps.max(0.0));
            }
            a += p;
            d = p + e_neg * d;
        }
        // Crossing below the lowest grid point (or never): solve with all masses.
        let v0 = self.lo as f64 * dv;
        if d > 0.0 && a > target {
            Ok((v0 + ((a - target) / d).ln()).max(0.0))
        } else {
            Ok(0.0)
        }
    }

    /// Moves tail mass: total ≤ `tail` at the low end onto the lowest kept bin (loss rounded up:
    /// pessimistic), total ≤ `tail` at the high end onto +∞ (pessimistic).
    fn truncate(&mut self, tail: f64) {
        let n = self.p.len();
        let mut lo_cut = 0usize;
        let mut acc = 0.0;
        while lo_cut + 1 < n && acc + self.p[lo_cut] <= tail {
            acc += self.p[lo_cut];
            lo_cut += 1;
        }
        let mut hi_cut = n;
        let mut acc_hi = 0.0;
        while hi_cut > lo_cut + 1 && acc_hi + self.p[hi_cut - 1] <= tail {
            acc_hi += self.p[hi_cut - 1];
            hi_cut -= 1;
        }
        if lo_cut == 0 && hi_cut == n {
            return;
        }
        let mut p: Vec<f64> = self.p[lo_cut..hi_cut].to_vec();
        p[0] += acc;
        self.p = p;
        self.lo += lo_cut as i64;
        self.inf += acc_hi;
    }
}

/// A basic mechanism whose add/remove privacy profiles we know in closed form.
#[derive(Clone, Copy, Debug)]
enum Base {
    /// Gaussian with noise multiplier σ (sensitivity 1).
    Gaussian(f64),
    /// Laplace with scale b (sensitivity 1).
    Laplace(f64),
}

impl Base {
    /// Hockey-stick divergence δ_{A‖B}(t) of the unsampled pair; both pairs are symmetric
    /// (δ_{A‖B} = δ_{B‖A}) for Gaussian and Laplace location families.
    fn delta(&self, t: f64) -> f64 {
        match *self {
            Base::Gaussian(s) => {
                // Φ̄(σt − 1/(2σ)) − e^t Φ̄(σt + 1/(2σ)); second term in log space to avoid inf·0.
                let a = norm_sf(s * t - 0.5 / s);
                let zb = s * t + 0.5 / s;
                let b = if t > 0.0 {
                    (t + log_erfc(zb / std::f64::consts::SQRT_2) - std::f64::consts::LN_2).exp()
                } else {
                    t.exp() * norm_sf(zb)
                };
                (a - b).max(0.0)
            }
            Base::Laplace(b) => {
                let e = 1.0 / b;
                if t >= e {
                    0.0
                } else if t >= -e {
                    -((t - e) / 2.0).exp_m1()
                } else {
                    -t.exp_m1()
                }
            }
        }
    }

    /// Range of the unsampled loss ℓ = ln(a(x)/b(x)) that carries all but ~4e-18 of the mass
    /// (Gaussian) or all of it (Laplace): (ℓ_min, ℓ_max).
    fn loss_range(&self) -> (f64, f64) {
        match *self {
            Base::Gaussian(s) => {
                let z = BASE_TAIL_Z;
                (
                    (1.0 - 2.0 * z * s) / (2.0 * s * s),
                    (1.0 + 2.0 * z * s) / (2.0 * s * s),
                )
            }
            Base::Laplace(b) => (-1.0 / b, 1.0 / b),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Direction {
    Remove,
    Add,
}

/// Exact privacy profile of the Poisson-subsampled base mechanism for one direction.
///
/// Remove: δ(ε) = q·δ_base(t), t = ln(1 + (e^ε − 1)/q)  (for e^ε > 1 − q; else 1 − e^ε).
/// Add:    δ(ε) = q·e^{ε+t}·δ_base(−t), t = ln(1 + (e^{−ε} − 1)/q)  (for ε < −ln(1 − q); else 0).
/// (Both follow from writing the subsampled hockey-stick divergence on the threshold set of the
/// base loss; cf. Balle, Barthe & Gaboardi 2018, Thm. 8 / Zhu, Dong & Wang 2022, Prop. 30.)
fn subsampled_delta(base: Base, q: f64, dir: Direction, eps: f64) -> f64 {
    if q >= 1.0 {
        return base.delta(eps);
    }
    match dir {
        Direction::Remove => {
            let u = eps.exp_m1() / q; // (e^ε − 1)/q
            if u <= -1.0 {
                return -eps.exp_m1();
            }
            let t = u.ln_1p();
            (q * base.delta(t)).min(1.0)
        }
        Direction::Add => {
            let u = (-eps).exp_m1() / q;
            if u <= -1.0 {
                return 0.0;
            }
            let t = u.ln_1p();
            (q * (eps + t).exp() * base.delta(-t)).min(1.0)
        }
    }
}

/// Loss range (ε_lo, ε_hi) of the subsampled mechanism in one direction.
fn subsampled_range(base: Base, q: f64, dir: Direction) -> (f64, f64) {
    let (lmin, lmax) = base.loss_range();
    if q >= 1.0 {
        return (lmin, lmax);
    }
    // L' = ln(1 − q + q e^ℓ) is increasing in ℓ; add direction is −L' with roles swapped.
    let f = |l: f64| (q * l.exp_m1()).ln_1p();
    match dir {
        Direction::Remove => (f(lmin), f(lmax)),
        Direction::Add => (-f(lmax), -f(lmin)),
    }
}

/// Pessimistic connect-the-dots PMF of a privacy profile δ(·) on the grid i·Δ covering [lo, hi].
///
/// `delta` is the profile of the pair (P, Q) and `delta_rev` that of the reversed pair (Q, P). The
/// identity δ_{P‖Q}(ε) = 1 − e^ε + e^ε·δ_{Q‖P}(−ε) gives the "excess over the line" h(ε), whose
/// second differences equal those of δ (the line 1 − e^ε has none in e^ε-space) but which is small,
/// hence accurate, exactly where δ is close to 1 − e^ε. Each mass uses whichever form is smaller.
fn connect_dots(
    delta: impl Fn(f64) -> f64,
    delta_rev: impl Fn(f64) -> f64,
    lo: f64,
    hi: f64,
    dv: f64,
    max_len: usize,
) -> Result<Pmf, PrivacyError> {
    let i_lo = (lo / dv).floor() as i64;
    let mut i_hi = (hi / dv).ceil() as i64;
    if i_hi < i_lo + 2 {
        i_hi = i_lo + 2;
    }
    let n = (i_hi - i_lo + 1) as usize;
    if n > max_len {
        return Err(PrivacyError::TooLarge(format!("{n} grid points")));
    }
    let eps_at = |k: usize| (i_lo + k as i64) as f64 * dv;
    let d: Vec<f64> = (0..n).map(|k| delta(eps_at(k))).collect();
    let h: Vec<f64> = (0..n)
        .map(|k| {
            let e = eps_at(k);
            e.exp() * delta_rev(-e)
        })
        .collect();
    let em1 = dv.exp_m1();
    let e = dv.exp();
    let mut p = vec![0.0; n];
    // Interior points: p_i = e^{ε_i}(s_i − s_{i−1}) with s_i the chord slope in e^ε-space,
    // which simplifies to [(δ_{i+1} − δ_i) − e^Δ(δ_i − δ_{i−1})]/(e^Δ − 1).
    for k in 1..n - 1 {
        let f = if h[k + 1] < d[k - 1] { &h } else { &d };
        let v = ((f[k + 1] - f[k]) - e * (f[k] - f[k - 1])) / em1;
        // Tiny negative values are floating-point noise of a convex curve; clamping them to 0 only
        // adds mass (total ≥ 1 by at most the noise), which can only increase δ.
        p[k] = v.max(0.0);
    }
    // Top point: the curve is flat (= δ(ε_top), kept at +∞) to its right.
    p[n - 1] = (e * (d[n - 2] - d[n - 1]) / em1).max(0.0);
    let inf = d[n - 1];
    // Bottom point: chord to (e^ε = 0, δ = 1), i.e. total mass exactly 1.
    let rest: f64 = p[1..].iter().sum::<f64>() + inf;
    p[0] = (1.0 - rest).max(0.0);
    Ok(Pmf { lo: i_lo, p, inf })
}

/// A privacy loss distribution for add/remove neighbors: one PMF per direction.
///
/// Build it once with [`PrivacyLossDistribution::from_event`] and query it for many δ or ε.
#[derive(Clone, Debug)]
pub struct PrivacyLossDistribution {
    remove: Pmf,
    /// `None` when the add direction equals the remove direction (unsampled Gaussian/Laplace).
    add: Option<Pmf>,
    dv: f64,
}

struct Builder {
    dv: f64,
    opts: PldOptions,
    planner: FftPlanner<f64>,
}

impl PrivacyLossDistribution {
    /// Discretizes and composes `event`.
    ///
    /// # Privacy
    /// The result dominates the true PLD of `event` for both add and remove neighbors (see the
    /// module documentation: connect-the-dots is pessimistic, truncated tails go to +∞), so ε and δ
    /// read from it are upper bounds. When the composition is too wide for `max_fft_len`, Δ is
    /// coarsened (a coarser pessimistic grid is still an upper bound) and
    /// [`Self::value_discretization_interval`] reports the Δ used.
    pub fn from_event(event: &DpEvent, opts: &PldOptions) -> Result<Self, PrivacyError> {
        event.validate()?;
        let dv0 = opts.value_discretization_interval;
        if !(dv0 > 0.0 && dv0 <= 1.0) {
            return Err(PrivacyError::invalid(
                "value_discretization_interval",
                dv0,
                "must be in (0, 1]",
            ));
        }
        if !(opts.tail_mass_truncation > 0.0 && opts.tail_mass_truncation < 1e-6) {
            return Err(PrivacyError::invalid(
                "tail_mass_truncation",
                opts.tail_mass_truncation,
                "must be in (0, 1e-6)",
            ));
        }
        let mut dv = dv0;
        let mut last_err = None;
        for _ in 0..12 {
            let mut b = Builder {
                dv,
                opts: *opts,
                planner: FftPlanner::new(),
            };
            match b.build(event) {
                Ok((remove, add)) => {
                    if dv != dv0 {
                        tracing::debug!(
                            dv,
                            "PLD: coarsened the discretization interval to fit the FFT limit"
                        );
                    }
                    return Ok(PrivacyLossDistribution { remove, add, dv });
                }
                Err(PrivacyError::TooLarge(msg)) => {
                    last_err = Some(msg);
                    dv *= 4.0;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PrivacyError::TooLarge(format!(
            "the privacy loss distribution does not fit even with a coarse grid ({})",
            last_err.unwrap_or_default()
        )))
    }

    /// The grid spacing Δ actually used (≥ the requested one).
    pub fn value_discretization_interval(&self) -> f64 {
        self.dv
    }

    /// Smallest ε such that the mechanism is (ε, δ)-DP under both add and remove neighbors.
    pub fn epsilon(&self, delta: f64) -> Result<f64, PrivacyError> {
        check_delta(delta)?;
        let mut eps = self.remove.epsilon(delta, self.dv)?;
        if let Some(add) = &self.add {
            eps = eps.max(add.epsilon(delta, self.dv)?);
        }
        Ok(eps)
    }

    /// Smallest δ such that the mechanism is (ε, δ)-DP under both add and remove neighbors.
    pub fn delta(&self, epsilon: f64) -> Result<f64, PrivacyError> {
        check_epsilon(epsilon)?;
        let mut d = self.remove.delta(epsilon, self.dv);
        if let Some(add) = &self.add {
            d = d.max(add.delta(epsilon, self.dv));
        }
        Ok(d)
    }
}

impl Builder {
    fn build(&mut self, event: &DpEvent) -> Result<(Pmf, Option<Pmf>), PrivacyError> {
        // A (self-)composition of plain Gaussians is exactly one Gaussian with σ_eff.
        if let Some(s) = effective_gaussian_sigma(event) {
            if s.is_infinite() {
                return Ok((Pmf::identity(), None));
            }
            return self.base(Base::Gaussian(s), 1.0);
        }
        match event {
            DpEvent::Gaussian { noise_multiplier } => {
                self.base(Base::Gaussian(*noise_multiplier), 1.0)
            }
            DpEvent::Laplace { noise_multiplier } => {
                self.base(Base::Laplace(*noise_multiplier), 1.0)
            }
            DpEvent::PoissonSampled {
                sampling_probability: q,
                event: inner,
            } => {
                if let Some(s) = effective_gaussian_sigma(inner) {
                    if s.is_infinite() {
                        return Ok((Pmf::identity(), None));
                    }
                    self.base(Base::Gaussian(s), *q)
                } else if let DpEvent::Laplace { noise_multiplier } = **inner {
                    self.base(Base::Laplace(noise_multiplier), *q)
                } else {
                    Err(PrivacyError::Unsupported {
                        accountant: "PLD",
                        reason: format!(
                            "Poisson sampling is supported over Gaussian or Laplace mechanisms, got {inner}"
                        ),
                    })
                }
            }
            DpEvent::SelfComposed {
                event: inner,
                count,
            } => {
                if *count == 0 {
                    return Ok((Pmf::identity(), None));
                }
                let (r, a) = self.build(inner)?;
                let r2 = self.self_compose(&r, *count)?;
                let a2 = match a {
                    Some(a) => Some(self.self_compose(&a, *count)?),
                    None => None,
                };
                Ok((r2, a2))
            }
            DpEvent::Composed(events) => {
                // Merge the plain-Gaussian children exactly, compose the rest by convolution.
                let mut inv_sq = 0.0;
                let mut others = Vec::new();
                for e in events {
                    match effective_gaussian_sigma(e) {
                        Some(s) => inv_sq += s.powi(-2),
                        None => others.push(e),
                    }
                }
                let mut acc: (Pmf, Option<Pmf>) = if inv_sq > 0.0 {
                    self.base(Base::Gaussian(inv_sq.powf(-0.5)), 1.0)?
                } else {
                    (Pmf::identity(), None)
                };
                for e in others {
                    let (r, a) = self.build(e)?;
                    let new_r = self.convolve(&acc.0, &r)?;
                    let new_a = match (&acc.1, &a) {
                        (None, None) => None,
                        (x, y) => Some(
                            self.convolve(x.as_ref().unwrap_or(&acc.0), y.as_ref().unwrap_or(&r))?,
                        ),
                    };
                    acc = (new_r, new_a);
                }
                Ok(acc)
            }
        }
    }

    fn base(&mut self, base: Base, q: f64) -> Result<(Pmf, Option<Pmf>), PrivacyError> {
        let max = self.opts.max_fft_len;
        let (lo, hi) = subsampled_range(base, q, Direction::Remove);
        let rem = |e: f64| subsampled_delta(base, q, Direction::Remove, e);
        let add = |e: f64| subsampled_delta(base, q, Direction::Add, e);
        // The add pair is the remove pair reversed (and the unsampled pairs are symmetric).
        let remove = connect_dots(rem, add, lo, hi, self.dv, max)?;
        if q >= 1.0 {
            return Ok((remove, None));
        }
        let (lo, hi) = subsampled_range(base, q, Direction::Add);
        let add = connect_dots(add, rem, lo, hi, self.dv, max)?;
        Ok((remove, Some(add)))
    }

    fn fft_len(&self, n: usize) -> Result<usize, PrivacyError> {
        let len = n.next_power_of_two();
        // 3·2^k is also fast in rustfft and often much closer.
        let alt = if len >= 4 && len / 4 * 3 >= n {
            len / 4 * 3
        } else {
            len
        };
        if alt > self.opts.max_fft_len {
            return Err(PrivacyError::TooLarge(format!("FFT of length {alt}")));
        }
        Ok(alt)
    }

    fn convolve(&mut self, a: &Pmf, b: &Pmf) -> Result<Pmf, PrivacyError> {
        let n_out = a.p.len() + b.p.len() - 1;
        let mut p = if a.p.len().min(b.p.len()) <= 64 {
            let mut out = vec![0.0; n_out];
            for (i, &x) in a.p.iter().enumerate() {
                if x == 0.0 {
                    continue;
                }
                for (j, &y) in b.p.iter().enumerate() {
                    out[i + j] += x * y;
                }
            }
            out
        } else {
            let n = self.fft_len(n_out)?;
            let mut fa = to_complex(&a.p, n);
            let mut fb = to_complex(&b.p, n);
            let fwd = self.planner.plan_fft_forward(n);
            fwd.process(&mut fa);
            fwd.process(&mut fb);
            for (x, y) in fa.iter_mut().zip(&fb) {
                *x *= *y;
            }
            self.planner.plan_fft_inverse(n).process(&mut fa);
            let scale = 1.0 / n as f64;
            // Negative values are FFT round-off (~1e-17); clamping them to 0 adds mass, which can
            // only increase δ.
            fa[..n_out]
                .iter()
                .map(|c| (c.re * scale).max(0.0))
                .collect()
        };
        for v in p.iter_mut() {
            if *v < 0.0 {
                *v = 0.0;
            }
        }
        let mut out = Pmf {
            lo: a.lo + b.lo,
            p,
            inf: 1.0 - (1.0 - a.inf) * (1.0 - b.inf),
        };
        out.truncate(self.opts.tail_mass_truncation);
        Ok(out)
    }

    fn self_compose(&mut self, a: &Pmf, k: u64) -> Result<Pmf, PrivacyError> {
        if k == 1 {
            return Ok(a.clone());
        }
        let tail = self.opts.tail_mass_truncation;
        let kf = k as f64;
        // Drop the far tails of the single-step PMF first (≤ tail/k per side: the lower tail moves
        // up onto the lowest kept bin, the upper tail onto +∞; both pessimistic, ≤ tail in total).
        let mut a = a.clone();
        a.truncate(tail / kf);
        let a = &a;
        let len = a.p.len();
        // Chernoff bounds on the index J of the k-fold sum (indices relative to a.lo, in 0..len):
        // P(S ≥ U) ≤ e^{−λU} M(λ)^k and P(S ≤ L) ≤ e^{λL} M(−λ)^k for every λ > 0, with the exact
        // MGF M of this PMF's finite part. Any λ gives a valid bound; we search λ on a log grid and
        // refine by golden section.
        let terms: Vec<(f64, f64)> =
            a.p.iter()
                .enumerate()
                .filter(|(_, &p)| p > 0.0)
                .map(|(j, &p)| (j as f64, p.ln()))
                .collect();
        // Blocks of 32 bins (mass at the block centre) approximate the MGF cheaply; they are used
        // only to *choose* λ. The bound itself is then evaluated with the exact MGF.
        let blocks: Vec<(f64, f64)> =
            a.p.chunks(32)
                .enumerate()
                .filter_map(|(bi, c)| {
                    let m: f64 = c.iter().sum();
                    (m > 0.0).then(|| ((bi * 32) as f64 + (c.len() as f64 - 1.0) / 2.0, m.ln()))
                })
                .collect();
        let log_mgf = |t: &[(f64, f64)], lam: f64| -> f64 {
            let m = t
                .iter()
                .map(|&(j, lp)| lp + lam * j)
                .fold(f64::NEG_INFINITY, f64::max);
            m + t
                .iter()
                .map(|&(j, lp)| (lp + lam * j - m).exp())
                .sum::<f64>()
                .ln()
        };
        let log_tail = tail.ln();
        let max_sum = kf * (len - 1) as f64;
        // Bound as a function of x = ln(λ in loss units); `sign` +1 for the upper tail (U), −1 for
        // the lower tail (gives −L).
        let dv = self.dv;
        let bound = |t: &[(f64, f64)], x: f64, sign: f64| -> f64 {
            let lam = x.exp() * dv;
            let v = (kf * log_mgf(t, sign * lam) - log_tail) / lam;
            if v.is_finite() {
                v
            } else {
                f64::INFINITY
            }
        };
        let search = |sign: f64| -> f64 {
            let (x0, x1, steps) = ((1e-3f64).ln(), (1e3f64).ln(), 24);
            let h = (x1 - x0) / steps as f64;
            let (mut best_x, mut best_v) = (x0, f64::INFINITY);
            for i in 0..=steps {
                let x = x0 + h * i as f64;
                let v = bound(&blocks, x, sign);
                if v < best_v {
                    best_x = x;
                    best_v = v;
                }
            }
            // Golden-section refinement around the best grid point, still on the blocks.
            let (mut lo, mut hi) = (best_x - h, best_x + h);
            let g = 0.618_033_988_749_895;
            let mut c = hi - g * (hi - lo);
            let mut d = lo + g * (hi - lo);
            let (mut fc, mut fd) = (bound(&blocks, c, sign), bound(&blocks, d, sign));
            for _ in 0..12 {
                if fc < fd {
                    hi = d;
                    d = c;
                    fd = fc;
                    c = hi - g * (hi - lo);
                    fc = bound(&blocks, c, sign);
                } else {
                    lo = c;
                    c = d;
                    fc = fd;
                    d = lo + g * (hi - lo);
                    fd = bound(&blocks, d, sign);
                }
            }
            let x = if fc < fd { c } else { d };
            // Exact bound at the chosen λ (valid for any λ > 0); fall back to the best grid point.
            bound(&terms, x, sign).min(bound(&terms, best_x, sign))
        };
        let upper = search(1.0).min(max_sum);
        // bound(−) = (k ln M(−λ) − ln tail)/λ = −L, so L = −bound.
        let lower = (-search(-1.0)).max(0.0);
        let upper = upper.ceil().min(max_sum).max(0.0) as u64;
        let lower = lower.floor().max(0.0).min(upper as f64) as u64;
        let width = (upper - lower + 1) as usize;
        let n = self.fft_len(width.max(len))?;
        let mut f = to_complex(&a.p, n);
        self.planner.plan_fft_forward(n).process(&mut f);
        // z^k by binary exponentiation (relative error ~ k·1e-16, like the polar form, but with
        // multiplications only). |z| ≤ 1 so nothing overflows.
        for c in f.iter_mut() {
            let mut base = *c;
            let mut acc = Complex64::new(1.0, 0.0);
            let mut e = k;
            while e > 0 {
                if e & 1 == 1 {
                    acc *= base;
                }
                base *= base;
                e >>= 1;
            }
            *c = acc;
        }
        self.planner.plan_fft_inverse(n).process(&mut f);
        let scale = 1.0 / n as f64;
        let nn = n as u64;
        let p: Vec<f64> = (lower..=upper)
            .map(|v| (f[(v % nn) as usize].re * scale).max(0.0))
            .collect();
        let finite = (1.0 - a.inf).powf(kf);
        let mut out = Pmf {
            lo: a.lo * k as i64 + lower as i64,
            p,
            // Mass outside [lower, upper] (≤ tail on each side by the Chernoff bounds) may have
            // aliased anywhere into the window; charging it to +∞ keeps δ an upper bound.
            inf: (1.0 - finite + 2.0 * tail).min(1.0),
        };
        out.truncate(tail);
        Ok(out)
    }
}

fn to_complex(p: &[f64], n: usize) -> Vec<Complex64> {
    let mut v = vec![Complex64::new(0.0, 0.0); n];
    for (c, &x) in v.iter_mut().zip(p) {
        c.re = x;
    }
    v
}

/// ε(δ) of `event` by the PLD accountant with default options (the number dpsynth reports).
///
/// # Privacy
/// Upper bound on the optimal ε for add/remove neighbors: pessimistic connect-the-dots
/// discretization (Doroshenko et al. 2022, Thm. 3.3), FFT composition with truncated tails charged
/// to δ (Koskela et al. 2020). See [`PrivacyLossDistribution::from_event`].
pub fn epsilon_pld(event: &DpEvent, delta: f64) -> Result<f64, PrivacyError> {
    check_delta(delta)?;
    PrivacyLossDistribution::from_event(event, &PldOptions::default())?.epsilon(delta)
}

/// δ(ε) of `event` by the PLD accountant with default options.
///
/// # Privacy
/// Upper bound on the optimal δ; see [`epsilon_pld`].
pub fn delta_pld(event: &DpEvent, epsilon: f64) -> Result<f64, PrivacyError> {
    check_epsilon(epsilon)?;
    PrivacyLossDistribution::from_event(event, &PldOptions::default())?.delta(epsilon)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Analytic δ(ε) of the Gaussian mechanism (Balle & Wang 2018, Thm. 8).
    fn gaussian_delta(s: f64, eps: f64) -> f64 {
        Base::Gaussian(s).delta(eps)
    }

    #[test]
    fn gaussian_pld_matches_analytic_and_is_pessimistic() {
        for &s in &[0.5, 1.0, 3.0, 20.0] {
            let pld =
                PrivacyLossDistribution::from_event(&DpEvent::gaussian(s), &PldOptions::default())
                    .unwrap();
            for &eps in &[0.0, 0.1, 0.5, 1.0, 2.0] {
                let exact = gaussian_delta(s, eps);
                let d = pld.delta(eps).unwrap();
                assert!(
                    d >= exact * (1.0 - 1e-9) - 1e-18,
                    "σ={s} ε={eps}: {d} < {exact}"
                );
                assert!(d <= exact * 1.001 + 1e-12, "σ={s} ε={eps}: {d} ≫ {exact}");
            }
        }
    }

    #[test]
    fn composed_gaussians_equal_one_gaussian() {
        // 4 × N(σ=2) ≡ N(σ=1): both accounted exactly the same way.
        let a = epsilon_pld(
            &DpEvent::SelfComposed {
                event: Box::new(DpEvent::gaussian(2.0)),
                count: 4,
            },
            1e-5,
        )
        .unwrap();
        let b = epsilon_pld(&DpEvent::gaussian(1.0), 1e-5).unwrap();
        assert!((a - b).abs() < 1e-12);
    }

    #[test]
    fn laplace_pure_dp() {
        // Laplace with b = 1 is (1, 0)-DP and not (ε < 1, 0)-DP; for δ > 0 ε(δ) < 1.
        let pld = PrivacyLossDistribution::from_event(
            &DpEvent::Laplace {
                noise_multiplier: 1.0,
            },
            &PldOptions::default(),
        )
        .unwrap();
        assert!(pld.delta(1.0).unwrap() < 1e-12);
        assert!(pld.delta(0.9).unwrap() > 0.0);
        // exact δ(ε) = 1 − e^{(ε − 1)/2}
        let d = pld.delta(0.5).unwrap();
        let exact = -((0.5f64 - 1.0) / 2.0).exp_m1();
        assert!(d >= exact && d < exact * 1.001, "{d} vs {exact}");
        let e = pld.epsilon(1e-6).unwrap();
        assert!(e <= 1.0 && e > 0.99, "{e}");
    }

    #[test]
    fn subsampled_profile_limits() {
        let b = Base::Gaussian(1.0);
        // q = 1 reduces to the base profile in both directions.
        for &e in &[0.0, 0.5, 2.0] {
            assert!((subsampled_delta(b, 1.0, Direction::Add, e) - b.delta(e)).abs() < 1e-15);
        }
        // δ(ε) ≤ q for ε ≥ 0 (amplification by subsampling).
        for &q in &[0.001, 0.1, 0.7] {
            for &e in &[0.0, 0.3, 1.0] {
                assert!(subsampled_delta(b, q, Direction::Remove, e) <= q + 1e-15);
                assert!(subsampled_delta(b, q, Direction::Add, e) <= q + 1e-15);
            }
        }
        // Below the minimum loss, δ = 1 − e^ε exactly.
        let q = 0.2;
        let e = (1.0f64 - q).ln() - 0.01;
        assert!((subsampled_delta(b, q, Direction::Remove, e) + e.exp_m1()).abs() < 1e-15);
    }

    #[test]
    fn connect_dots_pmf_is_a_distribution() {
        let pmf = connect_dots(
            |e| subsampled_delta(Base::Gaussian(0.8), 0.05, Direction::Add, e),
            |e| subsampled_delta(Base::Gaussian(0.8), 0.05, Direction::Remove, e),
            -5.0,
            0.06,
            1e-3,
            1 << 20,
        )
        .unwrap();
        let total: f64 = pmf.p.iter().sum::<f64>() + pmf.inf;
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        assert!(pmf.p.iter().all(|&p| p >= 0.0));
        // Valid PLD: E_P[e^{-L}] ≤ 1 (the Q-mass).
        let q_mass: f64 = pmf
            .p
            .iter()
            .enumerate()
            .map(|(k, &p)| p * (-((pmf.lo + k as i64) as f64 * 1e-3)).exp())
            .sum();
        assert!(q_mass <= 1.0 + 1e-9, "{q_mass}");
    }

    #[test]
    fn epsilon_and_delta_queries_invert() {
        let pld = PrivacyLossDistribution::from_event(
            &DpEvent::dp_sgd(0.01, 1.0, 300),
            &PldOptions::default(),
        )
        .unwrap();
        for &d in &[1e-3, 1e-5, 1e-7] {
            let e = pld.epsilon(d).unwrap();
            let back = pld.delta(e).unwrap();
            assert!((back / d - 1.0).abs() < 1e-9, "δ={d} → ε={e} → δ={back}");
        }
    }
}
