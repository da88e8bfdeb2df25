//! Sampling a labeled synthetic dataset from a trained run.

use std::path::Path;

use crate::{Result, TrainError};

/// Read a label-proportion file `{"label": weight, ...}`; every label of the data must
/// appear, weights non-negative with a positive sum. Returns proportions in `labels` order.
pub fn read_label_file(path: &Path, labels: &[String]) -> Result<Vec<f64>> {
    let s = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
    let m: std::collections::BTreeMap<String, f64> = serde_json::from_str(&s).map_err(|e| {
        TrainError::file(
            path,
            format!("expected a JSON object {{\"label\": weight}}: {e}"),
        )
    })?;
    for k in m.keys() {
        if !labels.contains(k) {
            return Err(TrainError::file(
                path,
                format!("label `{k}` is not one of the trained labels {labels:?}"),
            ));
        }
    }
    let mut w = Vec::new();
    for l in labels {
        let x = *m.get(l).unwrap_or(&0.0);
        if !(x >= 0.0 && x.is_finite()) {
            return Err(TrainError::file(
                path,
                format!("weight of `{l}` must be ≥ 0"),
            ));
        }
        w.push(x);
    }
    let s: f64 = w.iter().sum();
    if !(s > 0.0) {
        return Err(TrainError::file(path, "weights must have a positive sum"));
    }
    Ok(w.into_iter().map(|x| x / s).collect())
}
