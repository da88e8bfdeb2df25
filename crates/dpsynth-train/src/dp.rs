//! The DP-SGD gradient pipeline, with the step order enforced by types:
//!
//! [`PerExampleGrads`] → [`PerExampleGrads::clip_and_sum`] → [`ClippedSum`] (summed over the
//! micro-batches of one logical batch) → [`ClippedSum::add_noise`] → [`NoisyGradient`] →
//! [`crate::optim::AdamW::step`]. The optimizer accepts only a [`ReleasableGradient`], which
//! is implemented by exactly two types: [`NoisyGradient`] (can only be made by adding noise
//! to a [`ClippedSum`], which can only be made by clipping) and [`NonPrivateGradient`]
//! (`--no-dp`, made by the explicitly named [`PerExampleGrads::sum_without_privacy`]).
//!
//! # Privacy
//! This is the DP-SGD algorithm of Abadi et al., "Deep Learning with Differential Privacy"
//! (CCS 2016, Algorithm 1): each example's (or, for user-level DP, each user's) whole
//! gradient is clipped to L2 norm `C` (flat clipping across every trainable tensor), the
//! clipped gradients are summed, Gaussian noise `N(0, σ²C²)` is added once per coordinate per
//! logical step, and the sum is divided by the *expected* batch size (a data-independent
//! constant, so the division is post-processing). With Poisson sampling (rate q) each
//! step is the sampled Gaussian mechanism analysed by Mironov, Talwar & Zhang, "Rényi
//! Differential Privacy of the Sampled Gaussian Mechanism" (2019), and by the PLD
//! accountant of Koskela et al. (2020) / Doroshenko et al. (2022).

use candle_core::{DType, Device, Tensor};

use crate::{Result, TrainError};

/// A source of Gaussian noise (the privacy crate's CSPRNG in production).
pub trait NoiseSource {
    /// One `N(0, std²)` sample in f64.
    fn sample_gaussian(&mut self, std: f64) -> f64;
}

/// Gradients of each training unit (an example, or one user's summed examples) in one
/// physical micro-batch: for each trainable tensor `[n_units, ...shape]`.
#[derive(Debug)]
pub struct PerExampleGrads {
    grads: Vec<Tensor>,
    n: usize,
}

/// Clipping statistics of one micro-batch.
#[derive(Debug, Clone, Default)]
pub struct ClipStats {
    /// Per-unit gradient norms before clipping (accumulated in f64; NaN or ∞ for a dropped unit).
    pub norms: Vec<f64>,
    /// Per-unit norms after clipping (each ≤ C up to rounding; 0 for a dropped unit).
    pub clipped_norms: Vec<f64>,
    /// Units whose gradient had a NaN or infinite coordinate: left out of the sum (see
    /// [`PerExampleGrads::clip_and_sum`]). A statistic of the private batch, not covered by
    /// the guarantee.
    pub dropped_nonfinite: usize,
}

impl PerExampleGrads {
    /// From batched gradients `[B, ...]` (one row per unit).
    pub fn new(grads: Vec<Tensor>) -> Result<Self> {
        let n = grads.first().map(|g| g.dim(0)).transpose()?.unwrap_or(0);
        for g in &grads {
            if g.dim(0)? != n {
                return Err(TrainError::Other(
                    "per-example gradients disagree on batch".into(),
                ));
            }
        }
        Ok(Self { grads, n })
    }

    /// One unit's gradient (parameter-shaped tensors).
    pub fn single(grads: Vec<Tensor>) -> Result<Self> {
        Self::new(
            grads
                .iter()
                .map(|g| g.unsqueeze(0))
                .collect::<candle_core::Result<_>>()?,
        )
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Sum the rows belonging to the same unit: `unit[i]` is the unit (user) of row `i`,
    /// units numbered `0..n_units`. Used for user-level DP, where the clipped quantity is
    /// a user's total gradient.
    pub fn group_sum(self, unit: &[usize], n_units: usize) -> Result<Self> {
        if unit.len() != self.n || unit.iter().any(|&u| u >= n_units) {
            return Err(TrainError::Other("bad unit assignment".into()));
        }
        let dev = self
            .grads
            .first()
            .map(|g| g.device().clone())
            .unwrap_or(Device::Cpu);
        let mut m = vec![0f32; n_units * self.n];
        for (i, &u) in unit.iter().enumerate() {
            m[u * self.n + i] = 1.0;
        }
        let m = Tensor::from_vec(m, (n_units, self.n), &dev)?;
        let grads = self
            .grads
            .iter()
            .map(|g| {
                let mut shape = g.dims().to_vec();
                let flat = g.reshape((self.n, ()))?;
                shape[0] = n_units;
                m.matmul(&flat)?.reshape(shape)
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { grads, n: n_units })
    }

    /// L2 norm of each unit's whole gradient (all trainable tensors together), with the squares
    /// accumulated in f64 (exact enough for any size: an f32 sum of 10⁸ squares can be off by
    /// more than the clipping margin). NaN or ∞ when the gradient has a non-finite coordinate
    /// (squares of finite f32 values cannot overflow f64).
    pub fn norms(&self) -> Result<Vec<f64>> {
        let mut sq = vec![0f64; self.n];
        if self.n == 0 {
            return Ok(sq);
        }
        for g in &self.grads {
            let g = g.contiguous()?;
            // CPU f32 (the training dtype): read the rows in place; otherwise convert.
            let done = {
                let (storage, layout) = g.storage_and_layout();
                match (&*storage, layout.contiguous_offsets(), g.dtype()) {
                    (candle_core::Storage::Cpu(cpu), Some((a, b)), DType::F32) => {
                        let data = &cpu.as_slice::<f32>()?[a..b];
                        let per = data.len() / self.n;
                        if per > 0 {
                            for (acc, row) in sq.iter_mut().zip(data.chunks_exact(per)) {
                                *acc += row.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                            }
                        }
                        true
                    }
                    _ => false,
                }
            };
            if !done {
                let s = g
                    .to_dtype(DType::F64)?
                    .reshape((self.n, ()))?
                    .sqr()?
                    .sum(1)?
                    .to_vec1::<f64>()?;
                for (a, b) in sq.iter_mut().zip(s) {
                    *a += b;
                }
            }
        }
        Ok(sq.into_iter().map(f64::sqrt).collect())
    }

    /// Clip each unit's gradient to L2 norm ≤ `clip` and sum them; a unit whose gradient has
    /// a NaN or infinite coordinate is dropped (counted in [`ClipStats::dropped_nonfinite`]).
    ///
    /// # Privacy
    /// Flat per-example clipping, `g / max(1, ‖g‖₂ / C)` (Abadi et al. 2016, Alg. 1): bounds
    /// each unit's contribution to the sum, i.e. the L2 sensitivity of the sum under
    /// adding/removing one unit, by `C`. The norm is accumulated in f64 and the scale factor
    /// is computed in f64 and shrunk by a relative 1e-6, so that rounding cannot push a clipped
    /// norm above `C`.
    ///
    /// A non-finite gradient is replaced by the zero vector (contribution 0): the clipped sum
    /// is then `Σ_{i kept} clip(g_i)`, in which every unit contributes a vector of norm ≤ C
    /// (0 ≤ C for a dropped one), so adding or removing one unit still moves the sum by at
    /// most C in L2 and the Gaussian mechanism's analysis is unchanged (Dwork & Roth 2014,
    /// Thm. A.1; the drop is a per-unit function applied before summing, like clipping).
    /// Without the drop a single NaN would make the whole update NaN: the released step would
    /// then reveal that some sampled unit had a non-finite gradient, an event with no
    /// sensitivity bound at all. The count of dropped units is a non-private statistic: it
    /// goes to the private logs (loss.csv, the checkpoint state), never to the ledger.
    pub fn clip_and_sum(self, clip: f64) -> Result<(ClippedSum, ClipStats)> {
        if !(clip > 0.0) || !clip.is_finite() {
            return Err(TrainError::Config(format!(
                "clip norm must be positive and finite, got {clip}"
            )));
        }
        let norms = self.norms()?;
        let factors: Vec<f64> = norms
            .iter()
            .map(|&n| {
                if !n.is_finite() {
                    0.0
                } else if n <= clip {
                    1.0
                } else {
                    // (1 - 1e-6) keeps f32 rounding on the safe side of C.
                    (clip / n) * (1.0 - 1e-6)
                }
            })
            .collect();
        let dropped = norms.iter().filter(|n| !n.is_finite()).count();
        let clipped_norms = norms
            .iter()
            .zip(&factors)
            .map(|(&n, &f)| if f == 0.0 { 0.0 } else { n * f })
            .collect();
        let sum = if dropped == 0 {
            let f: Vec<f32> = factors.iter().map(|&f| f as f32).collect();
            self.weighted_sum(&f)?
        } else {
            // 0 · NaN = NaN: the dropped rows must leave the product, not just get factor 0.
            let keep: Vec<u32> = (0..self.n as u32)
                .filter(|&i| norms[i as usize].is_finite())
                .collect();
            let f: Vec<f32> = keep.iter().map(|&i| factors[i as usize] as f32).collect();
            let kept = self.select_rows(&keep)?;
            kept.weighted_sum(&f)?
        };
        Ok((
            ClippedSum {
                sum,
                clip,
                units: self.n,
                dropped_nonfinite: dropped,
            },
            ClipStats {
                norms,
                clipped_norms,
                dropped_nonfinite: dropped,
            },
        ))
    }

    /// The rows `rows` only (in that order).
    fn select_rows(&self, rows: &[u32]) -> Result<Self> {
        let dev = self
            .grads
            .first()
            .map(|g| g.device().clone())
            .unwrap_or(Device::Cpu);
        let idx = Tensor::from_slice(rows, rows.len(), &dev)?;
        let grads = self
            .grads
            .iter()
            .map(|g| g.index_select(&idx, 0))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            grads,
            n: rows.len(),
        })
    }

    /// Sum without clipping, for `--no-dp` runs only.
    ///
    /// # Privacy
    /// None: the result can only become a [`NonPrivateGradient`], and a run that uses it
    /// records `"no_dp": true` and ε = ∞ in its ledger.
    pub fn sum_without_privacy(self) -> Result<UnclippedSum> {
        let f = vec![1f32; self.n];
        Ok(UnclippedSum {
            sum: self.weighted_sum(&f)?,
        })
    }

    fn weighted_sum(&self, factors: &[f32]) -> Result<Vec<Tensor>> {
        if self.n == 0 {
            return Ok(self
                .grads
                .iter()
                .map(|g| Tensor::zeros(&g.dims()[1..], g.dtype(), g.device()))
                .collect::<candle_core::Result<_>>()?);
        }
        let dev = self
            .grads
            .first()
            .map(|g| g.device().clone())
            .unwrap_or(Device::Cpu);
        let f = Tensor::from_slice(factors, (1, self.n), &dev)?;
        Ok(self
            .grads
            .iter()
            .map(|g| {
                let shape = g.dims()[1..].to_vec();
                f.matmul(&g.reshape((self.n, ()))?.contiguous()?)?
                    .reshape(shape)
            })
            .collect::<candle_core::Result<_>>()?)
    }

    /// The raw per-unit gradients (tests).
    pub fn tensors(&self) -> &[Tensor] {
        &self.grads
    }
}

/// The sum of clipped per-unit gradients of one logical batch (possibly empty).
#[derive(Debug)]
pub struct ClippedSum {
    sum: Vec<Tensor>,
    clip: f64,
    units: usize,
    dropped_nonfinite: usize,
}

impl ClippedSum {
    /// The empty sum (a logical batch with no sampled units still gets noise).
    pub fn zeros(shapes: &[Vec<usize>], clip: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            sum: shapes
                .iter()
                .map(|s| Tensor::zeros(s.as_slice(), DType::F32, device))
                .collect::<candle_core::Result<_>>()?,
            clip,
            units: 0,
            dropped_nonfinite: 0,
        })
    }

    /// Add another micro-batch's clipped sum (same clip norm).
    pub fn accumulate(&mut self, other: ClippedSum) -> Result<()> {
        if other.clip != self.clip || other.sum.len() != self.sum.len() {
            return Err(TrainError::Other(
                "clipped sums with different settings".into(),
            ));
        }
        for (a, b) in self.sum.iter_mut().zip(other.sum) {
            *a = (&*a + b)?;
        }
        self.units += other.units;
        self.dropped_nonfinite += other.dropped_nonfinite;
        Ok(())
    }

    /// Number of units summed (dropped ones included).
    pub fn units(&self) -> usize {
        self.units
    }

    /// Units dropped for a non-finite gradient (a private statistic; see
    /// [`PerExampleGrads::clip_and_sum`]).
    pub fn dropped_nonfinite(&self) -> usize {
        self.dropped_nonfinite
    }

    /// Add `N(0, σ²C²)` to every coordinate, then divide by the expected batch size.
    ///
    /// # Privacy
    /// The Gaussian mechanism on a sum of L2-sensitivity `C` (Abadi et al. 2016, Alg. 1,
    /// line "add noise"; Dwork & Roth 2014, Thm. A.1 for the mechanism, accounted with the
    /// sampled-Gaussian RDP of Mironov et al. 2019 and with PLD). One draw per coordinate
    /// per logical step, also for empty batches. Dividing by the data-independent
    /// `expected_batch` is post-processing. The noise is drawn in f64 and added to the sum in
    /// f64, and the noisy average is rounded to f32 once (as `SecureRng::add_gaussian` in the
    /// evaluation path): an f32 noise sample added in f32 would round twice and leave the
    /// low-order bits of the output depending on the unnoised sum more than once-rounding does
    /// (the floating-point caveat of Mironov 2012, "On significance of the least significant
    /// bits for differential privacy").
    pub fn add_noise(
        self,
        noise_multiplier: f64,
        expected_batch: f64,
        rng: &mut dyn NoiseSource,
    ) -> Result<NoisyGradient> {
        if !(noise_multiplier >= 0.0) || !(expected_batch > 0.0) {
            return Err(TrainError::Config(
                "bad noise multiplier or batch size".into(),
            ));
        }
        let std = noise_multiplier * self.clip;
        let mut out = Vec::with_capacity(self.sum.len());
        for s in self.sum {
            let v = s.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let noisy: Vec<f32> = v
                .into_iter()
                .map(|x| ((x as f64 + rng.sample_gaussian(std)) / expected_batch) as f32)
                .collect();
            out.push(Tensor::from_vec(noisy, s.shape(), s.device())?);
        }
        Ok(NoisyGradient { g: out })
    }
}

/// A sum of unclipped gradients (`--no-dp`).
#[derive(Debug)]
pub struct UnclippedSum {
    sum: Vec<Tensor>,
}

impl UnclippedSum {
    pub fn zeros(shapes: &[Vec<usize>], device: &Device) -> Result<Self> {
        Ok(Self {
            sum: shapes
                .iter()
                .map(|s| Tensor::zeros(s.as_slice(), DType::F32, device))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    pub fn accumulate(&mut self, other: UnclippedSum) -> Result<()> {
        for (a, b) in self.sum.iter_mut().zip(other.sum) {
            *a = (&*a + b)?;
        }
        Ok(())
    }

    /// Divide by the expected batch size (same scaling as the private path).
    pub fn into_gradient(self, expected_batch: f64) -> Result<NonPrivateGradient> {
        Ok(NonPrivateGradient {
            g: self
                .sum
                .into_iter()
                .map(|s| s / expected_batch)
                .collect::<candle_core::Result<_>>()?,
        })
    }
}

/// A gradient that satisfies DP: clipped, summed, noised, averaged.
#[derive(Debug)]
pub struct NoisyGradient {
    g: Vec<Tensor>,
}

/// A gradient computed without any privacy protection (`--no-dp`).
#[derive(Debug)]
pub struct NonPrivateGradient {
    g: Vec<Tensor>,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::NoisyGradient {}
    impl Sealed for super::NonPrivateGradient {}
}

/// What the optimizer may consume. Sealed: only [`NoisyGradient`] and
/// [`NonPrivateGradient`] implement it.
pub trait ReleasableGradient: sealed::Sealed {
    fn tensors(&self) -> &[Tensor];
}

impl ReleasableGradient for NoisyGradient {
    fn tensors(&self) -> &[Tensor] {
        &self.g
    }
}

impl ReleasableGradient for NonPrivateGradient {
    fn tensors(&self) -> &[Tensor] {
        &self.g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact f64 L2 norm of a tensor's elements.
    fn norm64(t: &Tensor) -> f64 {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn norms_are_accumulated_in_f64_so_clipping_holds_for_long_gradients() {
        // One large coordinate and 10⁶ small ones: in f32, 1 + 10⁻⁸ == 1, so an f32 running sum
        // of the squares loses the small ones (true ‖g‖² = 1.01).
        let n = 1_000_000;
        let mut v = vec![1e-4f32; n + 1];
        v[0] = 1.0;
        let exact: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((exact - 1.01f64.sqrt()).abs() < 1e-6);
        let g = Tensor::from_vec(v, (1, n + 1), &Device::Cpu).unwrap();
        let peg = PerExampleGrads::new(vec![g]).unwrap();
        let norms = peg.norms().unwrap();
        assert!(
            (norms[0] - exact).abs() < 1e-9,
            "norm {} vs exact {exact}",
            norms[0]
        );
        // C just below the true norm: the unit must be clipped, to ≤ C.
        let c = exact * (1.0 - 1e-5);
        let (sum, stats) = peg.clip_and_sum(c).unwrap();
        let out = sum.add_noise(0.0, 1.0, &mut Fixed(vec![0.0])).unwrap();
        let clipped = norm64(&out.tensors()[0]);
        assert!(clipped <= c, "clipped norm {clipped} > C = {c}");
        assert!(stats.clipped_norms[0] <= c);
    }

    #[test]
    fn non_finite_gradients_are_dropped_and_counted_not_spread() {
        let dev = Device::Cpu;
        let rows = vec![
            0.3f32,
            0.4, // unit 0: norm 0.5
            f32::NAN,
            1.0, // unit 1: NaN
            f32::INFINITY,
            0.0, // unit 2: +∞
            3.0,
            4.0, // unit 3: norm 5, clipped to 1
        ];
        let g = Tensor::from_vec(rows, (4, 2), &dev).unwrap();
        let (sum, stats) = PerExampleGrads::new(vec![g])
            .unwrap()
            .clip_and_sum(1.0)
            .unwrap();
        assert_eq!(stats.dropped_nonfinite, 2);
        assert_eq!(stats.clipped_norms[1], 0.0);
        assert_eq!(stats.clipped_norms[2], 0.0);
        let mut acc = ClippedSum::zeros(&[vec![2]], 1.0, &dev).unwrap();
        acc.accumulate(sum).unwrap();
        assert_eq!((acc.units(), acc.dropped_nonfinite()), (4, 2));
        let out = acc.add_noise(1.0, 1.0, &mut Fixed(vec![0.0])).unwrap();
        let v = out.tensors()[0].to_vec1::<f32>().unwrap();
        // unit 0 + unit 3 clipped: (0.3 + 0.6, 0.4 + 0.8), up to the 1e-6 safety factor.
        assert!(
            (v[0] - 0.9).abs() < 1e-5 && (v[1] - 1.2).abs() < 1e-5,
            "{v:?}"
        );
        // With noise the update stays finite.
        let g = Tensor::from_vec(vec![f32::NAN, 1.0], (1, 2), &dev).unwrap();
        let (s, _) = PerExampleGrads::new(vec![g])
            .unwrap()
            .clip_and_sum(1.0)
            .unwrap();
        let out = s.add_noise(1.0, 2.0, &mut Fixed(vec![0.25, -1.5])).unwrap();
        assert_eq!(
            out.tensors()[0].to_vec1::<f32>().unwrap(),
            vec![0.125, -0.75]
        );
    }

    /// A noise source returning a fixed cycle of values.
    struct Fixed(Vec<f64>);
    impl NoiseSource for Fixed {
        fn sample_gaussian(&mut self, _std: f64) -> f64 {
            let z = self.0.remove(0);
            self.0.push(z);
            z
        }
    }

    #[test]
    fn noise_is_added_in_f64_and_the_average_rounded_once() {
        let dev = Device::Cpu;
        let n = 1000;
        let x: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 1.37e-3).collect();
        let z: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 * 1.1e-10 - 5e-8)
            .collect();
        let eb = 3.0;
        let g = Tensor::from_vec(x.clone(), (1, n), &dev).unwrap();
        let (s, _) = PerExampleGrads::new(vec![g])
            .unwrap()
            .clip_and_sum(1e9)
            .unwrap();
        let out = s.add_noise(1.0, eb, &mut Fixed(z.clone())).unwrap();
        let got = out.tensors()[0].to_vec1::<f32>().unwrap();
        let mut twice = 0;
        for i in 0..n {
            let once = ((x[i] as f64 + z[i]) / eb) as f32;
            assert_eq!(got[i], once, "coordinate {i}");
            // What f32 noise added in f32 and divided in f32 gives:
            if (x[i] + z[i] as f32) / eb as f32 != once {
                twice += 1;
            }
        }
        assert!(twice > 0, "the test must distinguish the two roundings");
    }
}
