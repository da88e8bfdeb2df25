//! Multinomial logistic regression with L2 regularization on frozen sentence embeddings,
//! trained full-batch with L-BFGS (f64), plus the analytic per-example gradients the DP-SGD
//! baseline needs.
//!
//! Objective (scikit-learn's `LogisticRegression(C)`, divided by n):
//! `mean_i CE(softmax(W x_i + b), y_i) + ||W||² / (2 C n)`; the bias is not penalized.

use serde::{Deserialize, Serialize};

use crate::embed::Embeddings;

/// Hyperparameters of the non-private fit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogRegConfig {
    /// Inverse regularization strength, as scikit-learn's `C` (default 1.0).
    pub c: f64,
    pub max_iter: usize,
    /// Stop when the gradient's max-norm falls below this.
    pub tol: f64,
}

impl Default for LogRegConfig {
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 300,
            tol: 1e-5,
        }
    }
}

/// A fitted model: `k` classes over `d` features. Parameters are laid out as
/// `[W (k×d, row-major) | b (k)]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogReg {
    pub k: usize,
    pub d: usize,
    pub params: Vec<f64>,
}

impl LogReg {
    pub fn zeros(k: usize, d: usize) -> Self {
        Self {
            k,
            d,
            params: vec![0.0; k * d + k],
        }
    }
    pub fn n_params(&self) -> usize {
        self.k * self.d + self.k
    }

    /// Class probabilities for one row.
    pub fn probs(&self, x: &[f32]) -> Vec<f64> {
        probs(&self.params, self.k, self.d, x)
    }

    pub fn predict(&self, x: &Embeddings) -> Vec<usize> {
        (0..x.n).map(|i| argmax(&self.probs(x.row(i)))).collect()
    }

    /// Fit with L-BFGS from zero. `y[i] < k`.
    pub fn fit(x: &Embeddings, y: &[usize], k: usize, cfg: &LogRegConfig) -> Self {
        let mut m = LogReg::zeros(k, x.dim);
        let lambda = 1.0 / (cfg.c * x.n.max(1) as f64);
        let f = |p: &[f64], g: &mut [f64]| loss_grad(p, k, x, y, lambda, g);
        lbfgs(&mut m.params, f, cfg.max_iter, cfg.tol);
        m
    }

    /// Gradient of the (unregularized) cross-entropy of one example w.r.t. the parameters,
    /// written into `g` (length [`LogReg::n_params`]): `(p - onehot(y)) ⊗ [x, 1]`.
    pub fn example_grad(&self, x: &[f32], y: usize, g: &mut [f64]) {
        let mut p = self.probs(x);
        p[y] -= 1.0;
        for c in 0..self.k {
            let row = &mut g[c * self.d..(c + 1) * self.d];
            for (gj, xj) in row.iter_mut().zip(x) {
                *gj = p[c] * *xj as f64;
            }
            g[self.k * self.d + c] = p[c];
        }
    }

    /// Mean cross-entropy over a data set (for tests and diagnostics).
    pub fn mean_loss(&self, x: &Embeddings, y: &[usize]) -> f64 {
        let mut g = vec![0.0; self.n_params()];
        loss_grad(&self.params, self.k, x, y, 0.0, &mut g)
    }
}

pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn probs(p: &[f64], k: usize, d: usize, x: &[f32]) -> Vec<f64> {
    let mut z: Vec<f64> = (0..k)
        .map(|c| {
            let w = &p[c * d..(c + 1) * d];
            w.iter().zip(x).map(|(a, b)| a * *b as f64).sum::<f64>() + p[k * d + c]
        })
        .collect();
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for v in &mut z {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in &mut z {
        *v /= s;
    }
    z
}

/// Mean CE + λ/2 ||W||²; gradient into `g`.
fn loss_grad(p: &[f64], k: usize, x: &Embeddings, y: &[usize], lambda: f64, g: &mut [f64]) -> f64 {
    let d = x.dim;
    g.iter_mut().for_each(|v| *v = 0.0);
    let n = x.n.max(1) as f64;
    let mut loss = 0.0;
    for i in 0..x.n {
        let xi = x.row(i);
        let mut pr = probs(p, k, d, xi);
        loss -= pr[y[i]].max(1e-300).ln();
        pr[y[i]] -= 1.0;
        for c in 0..k {
            let coef = pr[c] / n;
            let row = &mut g[c * d..(c + 1) * d];
            for (gj, xj) in row.iter_mut().zip(xi) {
                *gj += coef * *xj as f64;
            }
            g[k * d + c] += coef;
        }
    }
    loss /= n;
    for j in 0..k * d {
        loss += 0.5 * lambda * p[j] * p[j];
        g[j] += lambda * p[j];
    }
    loss
}

/// Minimize `f` (returns value, writes gradient) with L-BFGS (memory 10) and a backtracking
/// Armijo line search.
pub fn lbfgs<F: FnMut(&[f64], &mut [f64]) -> f64>(
    x: &mut [f64],
    mut f: F,
    max_iter: usize,
    tol: f64,
) -> f64 {
    let n = x.len();
    let m = 10;
    let mut g = vec![0.0; n];
    let mut fx = f(x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut g_new = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    for _ in 0..max_iter {
        if g.iter().fold(0.0f64, |a, v| a.max(v.abs())) < tol {
            break;
        }
        // two-loop recursion
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, yv) in s_hist.iter().zip(&y_hist).rev() {
            let rho = 1.0 / dot(yv, s);
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(yv) {
                *qi -= a * yi;
            }
            alphas.push((a, rho));
        }
        if let (Some(s), Some(yv)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, yv) / dot(yv, yv);
            q.iter_mut().for_each(|v| *v *= gamma);
        } else {
            let gn = dot(&g, &g).sqrt().max(1e-12);
            q.iter_mut().for_each(|v| *v /= gn);
        }
        for ((s, yv), (a, rho)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = rho * dot(yv, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        // direction = -q
        let mut dg = -dot(&g, &q);
        if dg >= 0.0 {
            // not a descent direction: reset to steepest descent
            s_hist.clear();
            y_hist.clear();
            q = g.clone();
            dg = -dot(&g, &g);
        }
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            for i in 0..n {
                x_new[i] = x[i] - step * q[i];
            }
            let f_new = f(&x_new, &mut g_new);
            if f_new.is_finite() && f_new <= fx + 1e-4 * step * dg {
                let s: Vec<f64> = (0..n).map(|i| x_new[i] - x[i]).collect();
                let yv: Vec<f64> = (0..n).map(|i| g_new[i] - g[i]).collect();
                if dot(&s, &yv) > 1e-12 {
                    s_hist.push(s);
                    y_hist.push(yv);
                    if s_hist.len() > m {
                        s_hist.remove(0);
                        y_hist.remove(0);
                    }
                }
                x.copy_from_slice(&x_new);
                g.copy_from_slice(&g_new);
                let improved = fx - f_new;
                fx = f_new;
                accepted = true;
                if improved.abs() < 1e-12 * fx.abs().max(1.0) {
                    return fx;
                }
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    fx
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn blobs(n: usize, seed: u64) -> (Embeddings, Vec<usize>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = 5;
        let centers = [
            [2.0f32, 0., 0., 0., 0.],
            [0., 2., 0., 0., 0.],
            [0., 0., 2., 0., 0.],
        ];
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 3;
            for &center in centers[c].iter().take(d) {
                data.push(center + rng.random_range(-1.0f32..1.0));
            }
            y.push(c);
        }
        (Embeddings::new(n, d, data), y)
    }

    #[test]
    fn fits_separable_blobs_and_reaches_stationary_point() {
        let (x, y) = blobs(300, 1);
        let cfg = LogRegConfig::default();
        let m = LogReg::fit(&x, &y, 3, &cfg);
        let pred = m.predict(&x);
        let acc = pred.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / 300.0;
        assert!(acc > 0.95, "train accuracy {acc}");
        let mut g = vec![0.0; m.n_params()];
        loss_grad(&m.params, 3, &x, &y, 1.0 / 300.0, &mut g);
        let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(gmax < 1e-4, "gradient at optimum {gmax}");
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let (x, y) = blobs(12, 2);
        let mut m = LogReg::zeros(3, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        m.params
            .iter_mut()
            .for_each(|p| *p = rng.random_range(-0.5..0.5));
        let mut g = vec![0.0; m.n_params()];
        let lambda = 0.1;
        loss_grad(&m.params, 3, &x, &y, lambda, &mut g);
        let mut scratch = vec![0.0; m.n_params()];
        for j in 0..m.n_params() {
            let mut p = m.params.clone();
            p[j] += 1e-6;
            let fp = loss_grad(&p, 3, &x, &y, lambda, &mut scratch);
            p[j] -= 2e-6;
            let fm = loss_grad(&p, 3, &x, &y, lambda, &mut scratch);
            let fd = (fp - fm) / 2e-6;
            assert!((fd - g[j]).abs() < 1e-6, "param {j}: {fd} vs {}", g[j]);
        }
        // per-example gradients average to the unregularized full gradient
        let mut full = vec![0.0; m.n_params()];
        loss_grad(&m.params, 3, &x, &y, 0.0, &mut full);
        let mut acc = vec![0.0; m.n_params()];
        let mut gi = vec![0.0; m.n_params()];
        for (i, &yi) in y.iter().enumerate().take(x.n) {
            m.example_grad(x.row(i), yi, &mut gi);
            acc.iter_mut()
                .zip(&gi)
                .for_each(|(a, b)| *a += b / x.n as f64);
        }
        for (a, b) in acc.iter().zip(&full) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
