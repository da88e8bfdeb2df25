//! DP-SGD training of the logistic-regression head on frozen (public-model) embeddings.

use dpsynth_privacy::SecureRng;

use crate::dpsgd::{self, DenseRows, DpPlan, DpSgdConfig, DpUpdate, PerExampleGrads};
use crate::embed::Embeddings;
use crate::logreg::LogReg;
use crate::{EvalError, Progress, Result};

/// Fit [`LogReg`] with DP-SGD (Poisson sampling, analytic per-example gradients, clipping,
/// Gaussian noise, SGD with momentum 0.9 on the noisy averaged gradient, no regularization).
///
/// # Privacy
/// (ε, δ)-DP with respect to the training records under add/remove, by the subsampled Gaussian
/// mechanism (Abadi et al. 2016, Alg. 1; Mironov, Talwar & Zhang 2019, Thm. 11), σ calibrated
/// with the PLD accountant ([`dpsgd::plan`]). The embedding model is public and frozen, so each
/// example's embedding is a fixed function of that example alone; only the head is trained.
/// Per-example gradients are exact (`(p - onehot(y)) ⊗ [x, 1]`, tested against finite
/// differences), clipped to ≤ C, summed, noised on every coordinate. Momentum and the step are
/// post-processing of the noisy gradients.
pub fn fit_dp(
    x: &Embeddings,
    y: &[usize],
    k: usize,
    dp: &DpSgdConfig,
    progress: &Progress,
) -> Result<(LogReg, DpPlan)> {
    if x.n != y.len() {
        return Err(EvalError::Invalid(
            "embeddings and labels differ in length".into(),
        ));
    }
    let plan = dpsgd::plan(dp, x.n)?;
    let mut model = LogReg::zeros(k, x.dim);
    let mut rng = dpsgd::noise_rng(dp.seed);
    let mut velocity = vec![0.0; model.n_params()];
    let expected = plan.sampling_rate * x.n as f64;
    let pb = progress.bar("DP-SGD logreg (steps)", plan.steps);
    for _ in 0..plan.steps {
        let batch = rng.poisson_sample(x.n, plan.sampling_rate);
        let update = noisy_step_gradient(&model, x, y, &batch, &plan, expected, &mut rng);
        for ((p, v), g) in model
            .params
            .iter_mut()
            .zip(&mut velocity)
            .zip(update.grad())
        {
            *v = 0.9 * *v + g;
            *p -= dp.learning_rate * *v;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((model, plan))
}

/// One DP-SGD step's averaged noisy gradient for the Poisson batch `batch` (possibly empty).
///
/// # Privacy
/// Per-example gradients → clip to C → sum → N(0, σ²C²) on each of the model's
/// `n_params()` coordinates → divide by the public expected batch size (Abadi et al. 2016,
/// Alg. 1). An empty batch yields pure noise of full length ([`DenseRows::dim`]), so every step
/// is the sampled Gaussian mechanism the accountant counts (Mironov et al. 2019).
fn noisy_step_gradient(
    model: &LogReg,
    x: &Embeddings,
    y: &[usize],
    batch: &[usize],
    plan: &DpPlan,
    expected: f64,
    rng: &mut SecureRng,
) -> DpUpdate<Vec<f64>> {
    let dim = model.n_params();
    let rows: Vec<Vec<f64>> = batch
        .iter()
        .map(|&i| {
            let mut g = vec![0.0; dim];
            model.example_grad(x.row(i), y[i], &mut g);
            g
        })
        .collect();
    PerExampleGrads::new(DenseRows { rows, dim })
        .clip(plan.clip)
        .add_noise(rng, plan.noise_multiplier)
        .into_update(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_poisson_batch_still_gets_noise_on_every_coordinate() {
        let (n, dim, k) = (10, 50, 3);
        let x = Embeddings {
            n,
            dim,
            data: (0..n * dim).map(|i| (i % 7) as f32 / 7.0).collect(),
        };
        let y: Vec<usize> = (0..n).map(|i| i % k).collect();
        let model = LogReg::zeros(k, dim);
        let plan = DpPlan {
            sampling_rate: 0.1,
            steps: 1,
            noise_multiplier: 2.0,
            target_epsilon: 1.0,
            epsilon_spent: 1.0,
            delta: 1e-5,
            clip: 0.5,
            reproducible_seed: true,
        };
        let mut rng = SecureRng::seeded(5);
        let expected = 4.0;
        let g = noisy_step_gradient(&model, &x, &y, &[], &plan, expected, &mut rng);
        let g = g.grad();
        assert_eq!(g.len(), model.n_params(), "noise on every coordinate");
        let m = g.len() as f64;
        let sd = (g.iter().map(|v| v * v).sum::<f64>() / m).sqrt();
        let want = plan.noise_multiplier * plan.clip / expected;
        // (k·(dim+1) = 153 coordinates: the sample sd is within ±25% with overwhelming odds)
        assert!((sd / want - 1.0).abs() < 0.25, "sd {sd} vs {want}");
        // A non-empty batch has the same shape.
        let g2 = noisy_step_gradient(&model, &x, &y, &[1, 4], &plan, expected, &mut rng);
        assert_eq!(g2.grad().len(), model.n_params());
    }
}
