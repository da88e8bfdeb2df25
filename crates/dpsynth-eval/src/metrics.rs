//! Classification metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix.

use serde::{Deserialize, Serialize};

/// Metrics of predictions against gold labels over `labels` (class index = position).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    pub n: usize,
    pub accuracy: f64,
    /// Mean of per-class F1 over all classes in `labels` (a class never predicted and absent
    /// from the gold labels counts as F1 = 0 only if it is in the gold labels; classes with no
    /// gold examples are left out of the mean, as in scikit-learn with `labels=present`).
    pub macro_f1: f64,
    /// Standard error of `accuracy` and of `macro_f1` over the test sample: the standard
    /// deviation of each across [`BOOTSTRAP`] bootstrap resamples of the (gold, prediction)
    /// pairs (fixed seed, so the same predictions give the same value). What a test set of this
    /// size can resolve; it does not include the randomness of training.
    #[serde(default)]
    pub accuracy_se: f64,
    #[serde(default)]
    pub macro_f1_se: f64,
    pub labels: Vec<String>,
    pub per_class: Vec<PerClass>,
    /// `confusion[gold][pred]`.
    pub confusion: Vec<Vec<usize>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PerClass {
    pub label: String,
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Bootstrap resamples behind [`ClassMetrics::accuracy_se`] and [`ClassMetrics::macro_f1_se`].
pub const BOOTSTRAP: usize = 500;

/// Accuracy and macro-F1 (classes with gold support only) of a confusion matrix.
fn accuracy_and_macro_f1(confusion: &[Vec<usize>]) -> (f64, f64) {
    let k = confusion.len();
    let n: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let mut f1s = Vec::new();
    for (c, row) in confusion.iter().enumerate() {
        let tp = row[c] as f64;
        let support: usize = row.iter().sum();
        let predicted: usize = confusion.iter().map(|r| r[c]).sum();
        if support == 0 {
            continue;
        }
        let f1 = if predicted + support > 0 {
            2.0 * tp / (predicted + support) as f64
        } else {
            0.0
        };
        f1s.push(f1);
    }
    let acc = if n > 0 {
        correct as f64 / n as f64
    } else {
        0.0
    };
    let mf1 = if f1s.is_empty() {
        0.0
    } else {
        f1s.iter().sum::<f64>() / f1s.len() as f64
    };
    (acc, mf1)
}

/// Bootstrap standard errors of accuracy and macro-F1 (see [`ClassMetrics::accuracy_se`]).
fn bootstrap_se(k: usize, gold: &[usize], pred: &[usize]) -> (f64, f64) {
    use rand::{Rng, SeedableRng};
    let n = gold.len();
    if n < 2 {
        return (0.0, 0.0);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5e_b007);
    let (mut a, mut f) = (Vec::with_capacity(BOOTSTRAP), Vec::with_capacity(BOOTSTRAP));
    let mut confusion = vec![vec![0usize; k]; k];
    for _ in 0..BOOTSTRAP {
        confusion.iter_mut().for_each(|r| r.fill(0));
        for _ in 0..n {
            let i = rng.random_range(0..n);
            confusion[gold[i]][pred[i]] += 1;
        }
        let (acc, mf1) = accuracy_and_macro_f1(&confusion);
        a.push(acc);
        f.push(mf1);
    }
    let sd = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    };
    (sd(&a), sd(&f))
}

impl ClassMetrics {
    /// `gold` and `pred` are class indices into `labels`.
    pub fn compute(labels: &[String], gold: &[usize], pred: &[usize]) -> Self {
        assert_eq!(gold.len(), pred.len());
        let k = labels.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&g, &p) in gold.iter().zip(pred) {
            confusion[g][p] += 1;
        }
        let (accuracy_se, macro_f1_se) = bootstrap_se(k, gold, pred);
        let n = gold.len();
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let mut per_class = Vec::with_capacity(k);
        let mut f1s = Vec::new();
        for c in 0..k {
            let tp = confusion[c][c] as f64;
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = (0..k).map(|g| confusion[g][c]).sum();
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            if support > 0 {
                f1s.push(f1);
            }
            per_class.push(PerClass {
                label: labels[c].clone(),
                support,
                precision,
                recall,
                f1,
            });
        }
        ClassMetrics {
            n,
            accuracy: if n > 0 {
                correct as f64 / n as f64
            } else {
                0.0
            },
            macro_f1: if f1s.is_empty() {
                0.0
            } else {
                f1s.iter().sum::<f64>() / f1s.len() as f64
            },
            accuracy_se,
            macro_f1_se,
            labels: labels.to_vec(),
            per_class,
            confusion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_example() {
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // gold: a a a b b c ; pred: a a b b c c
        let m = ClassMetrics::compute(&labels, &[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2]);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        // a: p=1 r=2/3 f1=0.8 ; b: p=1/2 r=1/2 f1=0.5 ; c: p=1/2 r=1 f1=2/3
        let f = [0.8, 0.5, 2.0 / 3.0];
        for (pc, want) in m.per_class.iter().zip(f) {
            assert!((pc.f1 - want).abs() < 1e-12, "{pc:?}");
        }
        assert!((m.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_standard_errors_match_the_binomial_formula() {
        let labels = vec!["a".to_string(), "b".to_string()];
        // 1,000 examples, 700 right: binomial SE sqrt(0.7 * 0.3 / 1000) = 0.0145.
        let gold: Vec<usize> = (0..1000).map(|i| i % 2).collect();
        let pred: Vec<usize> = (0..1000)
            .map(|i| if i < 700 { i % 2 } else { 1 - i % 2 })
            .collect();
        let m = ClassMetrics::compute(&labels, &gold, &pred);
        assert!((m.accuracy - 0.7).abs() < 1e-12);
        let want = (0.7f64 * 0.3 / 1000.0).sqrt();
        assert!(
            (m.accuracy_se - want).abs() < 0.15 * want,
            "{} vs {want}",
            m.accuracy_se
        );
        assert!(m.macro_f1_se > 0.5 * want && m.macro_f1_se < 2.0 * want);
        // Deterministic; perfect predictions have no spread.
        assert_eq!(m, ClassMetrics::compute(&labels, &gold, &pred));
        let p = ClassMetrics::compute(&labels, &gold, &gold);
        assert_eq!((p.accuracy_se, p.macro_f1_se), (0.0, 0.0));
        // The shortcut macro-F1 equals the per-class definition.
        assert!((accuracy_and_macro_f1(&m.confusion).1 - m.macro_f1).abs() < 1e-12);
    }

    #[test]
    fn never_predicted_class_has_zero_precision_not_nan() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let m = ClassMetrics::compute(&labels, &[0, 1], &[0, 0]);
        assert_eq!(m.per_class[1].precision, 0.0);
        assert!(m.macro_f1.is_finite());
    }
}
