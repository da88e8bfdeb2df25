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

impl ClassMetrics {
    /// `gold` and `pred` are class indices into `labels`.
    pub fn compute(labels: &[String], gold: &[usize], pred: &[usize]) -> Self {
        assert_eq!(gold.len(), pred.len());
        let k = labels.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&g, &p) in gold.iter().zip(pred) {
            confusion[g][p] += 1;
        }
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
    fn never_predicted_class_has_zero_precision_not_nan() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let m = ClassMetrics::compute(&labels, &[0, 1], &[0, 0]);
        assert_eq!(m.per_class[1].precision, 0.0);
        assert!(m.macro_f1.is_finite());
    }
}
