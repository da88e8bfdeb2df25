//! Small dense linear algebra on f64: symmetric eigendecomposition (cyclic Jacobi) and PCA.

/// Eigendecomposition of a symmetric `n×n` matrix (row-major) by the cyclic Jacobi method.
/// Returns eigenvalues in descending order and the matching eigenvectors as rows.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), n * n);
    let mut a = a.to_vec();
    // v: columns are eigenvectors (row-major storage of V)
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let app = a[p * n + p];
                let aqq = a[q * n + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A' = J^T A J on rows/cols p,q
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let vals = order.iter().map(|&i| a[i * n + i]).collect();
    let vecs = order
        .iter()
        .map(|&j| (0..n).map(|k| v[k * n + j]).collect())
        .collect();
    (vals, vecs)
}

/// PCA as in scikit-learn (centered, not whitened): project `x` (`n×d`, row-major) onto the
/// fewest leading components whose cumulative explained-variance ratio reaches
/// `explained_variance` (`np.argmax(cumsum >= ev) + 1` components). Returns the projected
/// rows and the number of components kept.
pub fn pca_project(
    x: &[f64],
    n: usize,
    d: usize,
    explained_variance: f64,
) -> (Vec<Vec<f64>>, usize) {
    let (centered, vals, vecs) = pca(x, n, d);
    let total: f64 = vals.iter().map(|v| v.max(0.0)).sum();
    let mut cum = 0.0;
    let mut k = d;
    for (i, v) in vals.iter().enumerate() {
        cum += v.max(0.0) / total;
        if cum >= explained_variance {
            k = i + 1;
            break;
        }
    }
    let proj = project(&centered, n, d, &vecs[..k]);
    (proj, k)
}

/// PCA onto exactly the `k` leading components (centered, not whitened).
pub fn pca_project_dims(x: &[f64], n: usize, d: usize, k: usize) -> Vec<Vec<f64>> {
    let (centered, _vals, vecs) = pca(x, n, d);
    project(&centered, n, d, &vecs[..k.min(d)])
}

fn project(centered: &[f64], n: usize, d: usize, vecs: &[Vec<f64>]) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            let r = &centered[i * d..(i + 1) * d];
            vecs.iter()
                .map(|v| v.iter().zip(r).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect()
}

/// Centered data, eigenvalues (descending) and eigenvectors of its covariance.
#[allow(clippy::type_complexity)]
fn pca(x: &[f64], n: usize, d: usize) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    let mut mean = vec![0.0; d];
    for i in 0..n {
        for j in 0..d {
            mean[j] += x[i * d + j];
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    let centered: Vec<f64> = (0..n * d).map(|k| x[k] - mean[k % d]).collect();
    let mut cov = vec![0.0; d * d];
    for i in 0..n {
        let r = &centered[i * d..(i + 1) * d];
        for a in 0..d {
            let ra = r[a];
            let row = &mut cov[a * d..(a + 1) * d];
            for (b, rb) in r.iter().enumerate().skip(a) {
                row[b] += ra * rb;
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            cov[a * d + b] = cov[b * d + a];
        }
    }
    let (vals, vecs) = symmetric_eigen(&cov, d);
    (centered, vals, vecs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_reconstructs_matrix() {
        let n = 6;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = ((i * 7 + j * 3) % 5) as f64 + if i == j { 3.0 } else { 0.0 };
            }
        }
        for i in 0..n {
            for j in 0..i {
                let s = (a[i * n + j] + a[j * n + i]) / 2.0;
                a[i * n + j] = s;
                a[j * n + i] = s;
            }
        }
        let (vals, vecs) = symmetric_eigen(&a, n);
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| vals[k] * vecs[k][i] * vecs[k][j]).sum();
                assert!(
                    (r - a[i * n + j]).abs() < 1e-9,
                    "({i},{j}) {r} vs {}",
                    a[i * n + j]
                );
                let dot: f64 = (0..n).map(|k| vecs[i][k] * vecs[j][k]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn pca_keeps_dominant_direction() {
        // points on the line y = 2x plus tiny noise in z: one component explains > 0.9
        let pts: Vec<f64> = (0..50)
            .flat_map(|i| {
                let t = i as f64 - 25.0;
                [t, 2.0 * t, 0.01 * ((i * 13 % 7) as f64)]
            })
            .collect();
        let (proj, k) = pca_project(&pts, 50, 3, 0.9);
        assert_eq!(k, 1);
        let var: f64 = proj.iter().map(|r| r[0] * r[0]).sum::<f64>() / 50.0;
        let want: f64 = (0..50)
            .map(|i| 5.0 * ((i as f64 - 25.0) + 0.5).powi(2))
            .sum::<f64>()
            / 50.0;
        assert!((var - want).abs() / want < 1e-4, "{var} vs {want}");
    }
}
