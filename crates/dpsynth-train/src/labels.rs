//! The label distribution of the synthetic dataset: uniform, from a file, or a DP estimate
//! of the private label histogram.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rng::DpRng;
use crate::{Result, TrainError};

/// Where per-label sample counts come from at synthesis time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelDistribution {
    /// Every label equally often (no privacy cost).
    Uniform,
    /// The private label histogram estimated with the Gaussian mechanism (costs budget).
    Dp,
    /// Proportions from a JSON file `{"label": weight, ...}` (public knowledge; no cost).
    File(std::path::PathBuf),
}

impl std::str::FromStr for LabelDistribution {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "uniform" => Self::Uniform,
            "dp" => Self::Dp,
            f => Self::File(f.into()),
        })
    }
}

/// A released (noisy) label histogram and its post-processed proportions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelHistogram {
    pub labels: Vec<String>,
    /// Counts with Gaussian noise (as released; may be negative).
    pub noisy_counts: Vec<f64>,
    /// `max(0, count)` normalised to sum 1 (uniform if all are ≤ 0).
    pub proportions: Vec<f64>,
    /// Noise standard deviation (= noise multiplier, sensitivity 1).
    pub noise_multiplier: f64,
}

/// Release the label histogram with the Gaussian mechanism.
///
/// `units` are the privacy units: with record-level DP one entry per record (its label);
/// with user-level DP one entry per user holding that user's labels. Each unit adds a
/// total weight of 1 spread evenly over its labels.
///
/// # Privacy
/// Adding or removing one unit changes the count vector by a vector of L1 norm 1, hence L2
/// norm ≤ 1: the Gaussian mechanism with standard deviation σ is
/// `DpEvent::Gaussian { noise_multiplier: σ }` (Dwork & Roth 2014, Thm. A.1; Mironov 2017,
/// Prop. 7 for its RDP), composed into the run's ledger. The label *names* are treated as
/// public schema. Clamping at 0 and normalising is post-processing.
pub fn dp_label_histogram(
    labels: &[String],
    units: &[Vec<&str>],
    noise_multiplier: f64,
    rng: &mut DpRng,
) -> Result<LabelHistogram> {
    if !(noise_multiplier > 0.0) {
        return Err(TrainError::Config(
            "label histogram noise must be positive".into(),
        ));
    }
    let idx: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut counts = vec![0f64; labels.len()];
    for u in units {
        if u.is_empty() {
            continue;
        }
        let w = 1.0 / u.len() as f64;
        for l in u {
            let i = idx
                .get(l)
                .ok_or_else(|| TrainError::Data(format!("label `{l}` not in the label set")))?;
            counts[*i] += w;
        }
    }
    let noisy: Vec<f64> = counts
        .iter()
        .map(|c| c + rng.gaussian(noise_multiplier))
        .collect();
    Ok(LabelHistogram {
        labels: labels.to_vec(),
        proportions: proportions_from(&noisy),
        noisy_counts: noisy,
        noise_multiplier,
    })
}

/// Post-processing: clamp at 0 and normalise (uniform when nothing is positive).
pub fn proportions_from(w: &[f64]) -> Vec<f64> {
    let c: Vec<f64> = w.iter().map(|x| x.max(0.0)).collect();
    let s: f64 = c.iter().sum();
    if s > 0.0 {
        c.iter().map(|x| x / s).collect()
    } else {
        vec![1.0 / w.len().max(1) as f64; w.len()]
    }
}

/// Split `n` samples over labels by proportions (largest remainders; sums to `n`).
pub fn allocate(n: usize, proportions: &[f64]) -> Vec<usize> {
    let raw: Vec<f64> = proportions.iter().map(|p| p * n as f64).collect();
    let mut out: Vec<usize> = raw.iter().map(|x| x.floor() as usize).collect();
    let mut rest = n.saturating_sub(out.iter().sum());
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = raw[a] - raw[a].floor();
        let fb = raw[b] - raw[b].floor();
        fb.partial_cmp(&fa)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(raw.len() * 2) {
        if rest == 0 {
            break;
        }
        out[i] += 1;
        rest -= 1;
    }
    out
}
