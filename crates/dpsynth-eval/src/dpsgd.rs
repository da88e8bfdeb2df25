//! DP-SGD for the baseline classifiers: Poisson sampling → per-example gradients → clipping →
//! sum → Gaussian noise → update, with the step order enforced by types:
//!
//! [`PerExampleGrads`] (only way to start) —[`PerExampleGrads::clip`]→ [`ClippedSum`]
//! —[`ClippedSum::add_noise`]→ [`NoisyGrad`] —[`NoisyGrad::into_update`]→ averaged gradient.
//! A model's DP update step accepts only a [`NoisyGrad`]-derived value; there is no other way to
//! get one.
//!
//! # Privacy
//! This is the subsampled Gaussian mechanism of Abadi et al., "Deep Learning with Differential
//! Privacy" (CCS 2016, Algorithm 1), with Poisson subsampling at rate `q` as analysed for the
//! add/remove neighbouring relation by Mironov, Talwar & Zhang, "Rényi Differential Privacy of
//! the Sampled Gaussian Mechanism" (2019, Thm. 11) and accounted here with the PLD accountant of
//! `dpsynth-privacy` (`DpEvent::dp_sgd(q, σ, steps)`). Each example's whole gradient is clipped
//! to L2 norm ≤ C, the clipped gradients are summed, and N(0, σ²C²) noise is added to *every*
//! coordinate of the *trainable* parameter vector (including coordinates no example touched). Dividing by
//! the expected batch size qN (a public constant) and the optimizer update are post-processing.

use dpsynth_privacy::{calibrate_noise_multiplier, epsilon_pld, DpEvent, SecureRng};
use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

/// A vector of gradient coordinates that noise can be added to (a model's full parameter set).
pub trait GradVector: Sized {
    /// Add i.i.d. N(0, std²) to every coordinate.
    fn add_gaussian(&mut self, rng: &mut SecureRng, std: f64);
    /// Multiply every coordinate by `s`.
    fn scale(&mut self, s: f64);
    /// Squared L2 norm.
    fn sq_norm(&self) -> f64;
}

impl GradVector for Vec<f64> {
    fn add_gaussian(&mut self, rng: &mut SecureRng, std: f64) {
        for v in self.iter_mut() {
            *v += rng.gaussian(std);
        }
    }
    fn scale(&mut self, s: f64) {
        self.iter_mut().for_each(|v| *v *= s);
    }
    fn sq_norm(&self) -> f64 {
        self.iter().map(|v| v * v).sum()
    }
}

impl GradVector for Vec<Vec<f32>> {
    fn add_gaussian(&mut self, rng: &mut SecureRng, std: f64) {
        for p in self.iter_mut() {
            rng.add_gaussian(p, std);
        }
    }
    fn scale(&mut self, s: f64) {
        self.iter_mut()
            .flatten()
            .for_each(|v| *v = (*v as f64 * s) as f32);
    }
    fn sq_norm(&self) -> f64 {
        self.iter().flatten().map(|v| (*v as f64).powi(2)).sum()
    }
}

/// How a model's per-example gradients are clipped and summed.
pub trait PerExampleSource {
    type Sum: GradVector;
    /// L2 norm of each example's full gradient.
    fn norms(&self) -> Vec<f64>;
    /// `Σ_b factors[b] · g_b`.
    fn weighted_sum(self, factors: &[f64]) -> Self::Sum;
}

/// Per-example gradients of one Poisson-sampled batch (model-specific storage).
pub struct PerExampleGrads<S: PerExampleSource> {
    source: S,
}

impl<S: PerExampleSource> PerExampleGrads<S> {
    /// Wrap per-example gradients computed by a model. The source must hold one *exact*
    /// gradient per example of the sampled batch (tested against a one-at-a-time oracle).
    pub fn new(source: S) -> Self {
        Self { source }
    }

    /// Clip each example's gradient to L2 norm ≤ `clip` and sum.
    ///
    /// # Privacy
    /// Bounds each example's contribution (the sensitivity of the sum under add/remove) by
    /// `clip` (Abadi et al. 2016, Alg. 1, "clip gradient"). Factors are `min(1, C/‖g‖)`,
    /// shrunk by a relative 1e-6 so that float rounding can never leave a norm above C.
    pub fn clip(self, clip: f64) -> ClippedSum<S::Sum> {
        assert!(
            clip > 0.0 && clip.is_finite(),
            "clipping norm must be positive"
        );
        let norms = self.source.norms();
        let factors: Vec<f64> = norms
            .iter()
            .map(|&n| {
                let f = if n > clip { clip / n } else { 1.0 };
                f * (1.0 - 1e-6)
            })
            .collect();
        let max_clipped = norms
            .iter()
            .zip(&factors)
            .map(|(n, f)| n * f)
            .fold(0.0f64, f64::max);
        assert!(
            max_clipped <= clip,
            "clipped norm {max_clipped} > C = {clip}"
        );
        let n = factors.len();
        ClippedSum {
            sum: self.source.weighted_sum(&factors),
            clip,
            batch_size: n,
            max_clipped_norm: max_clipped,
        }
    }
}

/// Sum of clipped per-example gradients (still not private).
pub struct ClippedSum<G: GradVector> {
    sum: G,
    clip: f64,
    batch_size: usize,
    max_clipped_norm: f64,
}

impl<G: GradVector> ClippedSum<G> {
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// Largest per-example norm after clipping (≤ C).
    pub fn max_clipped_norm(&self) -> f64 {
        self.max_clipped_norm
    }

    /// Add N(0, (σC)²) to every coordinate.
    ///
    /// # Privacy
    /// The Gaussian mechanism with noise multiplier σ relative to the sensitivity C
    /// (Abadi et al. 2016, Alg. 1, "add noise"); `rng` must be a CSPRNG seeded from the OS
    /// unless the user asked for a reproducible (not secure) seed.
    pub fn add_noise(mut self, rng: &mut SecureRng, noise_multiplier: f64) -> NoisyGrad<G> {
        self.sum.add_gaussian(rng, noise_multiplier * self.clip);
        NoisyGrad { grad: self.sum }
    }
}

/// A privatized gradient sum: safe to use for updates.
pub struct NoisyGrad<G: GradVector> {
    grad: G,
}

impl<G: GradVector> NoisyGrad<G> {
    /// Divide by the expected batch size `qN` (public) to get the averaged gradient.
    pub fn into_update(mut self, expected_batch_size: f64) -> DpUpdate<G> {
        self.grad.scale(1.0 / expected_batch_size.max(1e-12));
        DpUpdate { grad: self.grad }
    }
}

/// The averaged noisy gradient a DP training step applies.
pub struct DpUpdate<G> {
    grad: G,
}

impl<G> DpUpdate<G> {
    pub fn grad(&self) -> &G {
        &self.grad
    }
}

/// DP-SGD settings for a baseline classifier.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DpSgdConfig {
    pub epsilon: f64,
    pub delta: f64,
    /// Per-example clipping norm C.
    pub clip: f64,
    /// Expected batch size L; the sampling rate is q = L / N.
    pub expected_batch_size: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    /// Reproducible (NOT secure) noise when set.
    pub seed: Option<u64>,
}

/// The privacy parameters a DP training run used.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DpPlan {
    pub sampling_rate: f64,
    pub steps: u64,
    pub noise_multiplier: f64,
    pub target_epsilon: f64,
    /// ε of the calibrated (q, σ, steps) by the PLD accountant.
    pub epsilon_spent: f64,
    pub delta: f64,
    pub clip: f64,
    pub reproducible_seed: bool,
}

/// Plan DP-SGD over `n` training examples: q = L/N, steps = ⌈epochs/q⌉, σ from the accountant.
///
/// # Privacy
/// σ comes from `dpsynth_privacy::calibrate_noise_multiplier`, which guarantees
/// `epsilon_pld(dp_sgd(q, σ, steps), δ) ≤ ε`; we re-check that bound here and refuse to train
/// otherwise.
pub fn plan(cfg: &DpSgdConfig, n: usize) -> Result<DpPlan> {
    if n == 0 {
        return Err(EvalError::Invalid(
            "DP-SGD baseline: empty training set".into(),
        ));
    }
    let q = (cfg.expected_batch_size as f64 / n as f64).min(1.0);
    let steps = ((cfg.epochs as f64) / q).ceil().max(1.0) as u64;
    let sigma = calibrate_noise_multiplier(cfg.epsilon, cfg.delta, q, steps)
        .map_err(|e| EvalError::Privacy(e.to_string()))?;
    let spent = epsilon_pld(&DpEvent::dp_sgd(q, sigma, steps), cfg.delta)
        .map_err(|e| EvalError::Privacy(e.to_string()))?;
    if spent > cfg.epsilon * (1.0 + 1e-9) {
        return Err(EvalError::Privacy(format!(
            "calibrated σ={sigma} gives ε={spent} > target {}",
            cfg.epsilon
        )));
    }
    Ok(DpPlan {
        sampling_rate: q,
        steps,
        noise_multiplier: sigma,
        target_epsilon: cfg.epsilon,
        epsilon_spent: spent,
        delta: cfg.delta,
        clip: cfg.clip,
        reproducible_seed: cfg.seed.is_some(),
    })
}

/// The noise/sampling RNG for a run: OS-seeded CSPRNG, or a reproducible seed (with a warning).
///
/// # Privacy
/// A user-chosen seed makes the noise reproducible and therefore NOT secure; we log a warning.
pub fn noise_rng(seed: Option<u64>) -> SecureRng {
    match seed {
        Some(s) => {
            tracing::warn!("DP-SGD baseline seeded with {s}: reproducible, not secure");
            SecureRng::seeded(s)
        }
        None => SecureRng::from_os(),
    }
}

/// Logistic-regression per-example gradients: rows of `[W | b]` gradients.
///
/// `dim` is the number of trainable coordinates, given separately from the rows so that an
/// empty Poisson batch still sums to a zero vector of full length, to which noise is added.
pub struct DenseRows {
    pub rows: Vec<Vec<f64>>,
    pub dim: usize,
}

impl PerExampleSource for DenseRows {
    type Sum = Vec<f64>;
    fn norms(&self) -> Vec<f64> {
        self.rows.iter().map(|r| r.sq_norm().sqrt()).collect()
    }
    /// # Privacy
    /// The sum has `dim` coordinates whatever the batch: with no row (an empty Poisson batch)
    /// it is the zero vector of full length, so [`ClippedSum::add_noise`] still adds N(0, σ²C²)
    /// to every coordinate, as the sampled Gaussian mechanism requires (Mironov et al. 2019:
    /// the mechanism's output distribution must not reveal that the batch was empty).
    fn weighted_sum(self, factors: &[f64]) -> Vec<f64> {
        let mut s = vec![0.0; self.dim];
        for (r, f) in self.rows.iter().zip(factors) {
            assert_eq!(
                r.len(),
                self.dim,
                "per-example gradient of the wrong length"
            );
            for (a, b) in s.iter_mut().zip(r) {
                *a += f * b;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_every_norm_and_keeps_small_ones() {
        let rows = vec![
            vec![3.0, 4.0],
            vec![0.3, 0.4],
            vec![0.0, 0.0],
            vec![-30.0, 40.0],
        ];
        let src = DenseRows {
            rows: rows.clone(),
            dim: 2,
        };
        let norms = src.norms();
        assert_eq!(norms, vec![5.0, 0.5, 0.0, 50.0]);
        let clipped = PerExampleGrads::new(src).clip(1.0);
        assert!(clipped.max_clipped_norm() <= 1.0);
        // expected sum: (3,4)/5 + (0.3,0.4) + 0 + (-30,40)/50, times (1-1e-6)
        let want = [0.6 + 0.3 - 0.6, 0.8 + 0.4 + 0.8];
        for (a, b) in clipped.sum.iter().zip(want) {
            assert!((a - b * (1.0 - 1e-6)).abs() < 1e-12);
        }
    }

    #[test]
    fn noise_has_std_sigma_c() {
        let src = DenseRows {
            rows: vec![vec![0.0; 20000]],
            dim: 20000,
        };
        let mut rng = SecureRng::seeded(11);
        let noisy = PerExampleGrads::new(src).clip(2.0).add_noise(&mut rng, 1.5);
        let g = noisy.into_update(1.0).grad;
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        let sd = (g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        // std of the sample sd ≈ 3 / sqrt(2n) ≈ 0.015
        assert!((sd - 3.0).abs() < 0.06, "sd {sd}");
        assert!(mean.abs() < 0.1, "mean {mean}");
    }

    #[test]
    fn plan_respects_target_epsilon() {
        let cfg = DpSgdConfig {
            epsilon: 3.0,
            delta: 1e-5,
            clip: 1.0,
            expected_batch_size: 100,
            epochs: 2,
            learning_rate: 0.1,
            seed: Some(1),
        };
        let p = plan(&cfg, 1000).unwrap();
        assert!((p.sampling_rate - 0.1).abs() < 1e-12);
        assert_eq!(p.steps, 20);
        assert!(p.epsilon_spent <= 3.0 && p.epsilon_spent > 2.5, "{p:?}");
        assert!(p.noise_multiplier > 0.3 && p.noise_multiplier < 5.0);
    }
}
