//! DP-SGD training of the logistic-regression head on frozen (public-model) embeddings.

use crate::dpsgd::{self, DenseRows, DpPlan, DpSgdConfig, PerExampleGrads};
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
        let rows: Vec<Vec<f64>> = batch
            .iter()
            .map(|&i| {
                let mut g = vec![0.0; model.n_params()];
                model.example_grad(x.row(i), y[i], &mut g);
                g
            })
            .collect();
        let update = PerExampleGrads::new(DenseRows { rows })
            .clip(plan.clip)
            .add_noise(&mut rng, plan.noise_multiplier)
            .into_update(expected);
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
