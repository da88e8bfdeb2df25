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
    /// Fill `buf` with independent `N(0, std²)` samples.
    fn fill_gaussian(&mut self, buf: &mut [f32], std: f64);
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
    /// Per-unit gradient norms before clipping.
    pub norms: Vec<f32>,
    /// Per-unit norms after clipping (each ≤ C up to rounding).
    pub clipped_norms: Vec<f32>,
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

    /// L2 norm of each unit's whole gradient (all trainable tensors together).
    pub fn norms(&self) -> Result<Vec<f32>> {
        let mut sq = vec![0f64; self.n];
        for g in &self.grads {
            let s = g
                .reshape((self.n, ()))?
                .sqr()?
                .sum(1)?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            for (a, b) in sq.iter_mut().zip(s) {
                *a += b;
            }
        }
        Ok(sq.into_iter().map(|s| s.sqrt() as f32).collect())
    }

    /// Clip each unit's gradient to L2 norm ≤ `clip` and sum them.
    ///
    /// # Privacy
    /// Flat per-example clipping, `g / max(1, ‖g‖₂ / C)` (Abadi et al. 2016, Alg. 1): bounds
    /// each unit's contribution to the sum, i.e. the L2 sensitivity of the sum under
    /// adding/removing one unit, by `C`. The scale factor is computed in f64 and rounded
    /// down so that rounding cannot push a clipped norm above `C`.
    pub fn clip_and_sum(self, clip: f64) -> Result<(ClippedSum, ClipStats)> {
        if !(clip > 0.0) || !clip.is_finite() {
            return Err(TrainError::Config(format!(
                "clip norm must be positive and finite, got {clip}"
            )));
        }
        let norms = self.norms()?;
        let factors: Vec<f32> = norms
            .iter()
            .map(|&n| {
                let n = n as f64;
                if n <= clip {
                    1.0
                } else {
                    // (1 - 1e-6) keeps f32 rounding on the safe side of C.
                    ((clip / n) * (1.0 - 1e-6)) as f32
                }
            })
            .collect();
        let clipped_norms = norms.iter().zip(&factors).map(|(n, f)| n * f).collect();
        let sum = self.weighted_sum(&factors)?;
        Ok((
            ClippedSum {
                sum,
                clip,
                units: self.n,
            },
            ClipStats {
                norms,
                clipped_norms,
            },
        ))
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
        Ok(())
    }

    /// Number of units summed.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Add `N(0, σ²C²)` to every coordinate, then divide by the expected batch size.
    ///
    /// # Privacy
    /// The Gaussian mechanism on a sum of L2-sensitivity `C` (Abadi et al. 2016, Alg. 1,
    /// line "add noise"; Dwork & Roth 2014, Thm. A.1 for the mechanism, accounted with the
    /// sampled-Gaussian RDP of Mironov et al. 2019 and with PLD). One draw per coordinate
    /// per logical step, also for empty batches. Dividing by the data-independent
    /// `expected_batch` is post-processing.
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
            let mut buf = vec![0f32; s.elem_count()];
            rng.fill_gaussian(&mut buf, std);
            let noise = Tensor::from_vec(buf, s.shape(), s.device())?;
            out.push(((s + noise)? / expected_batch)?);
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
