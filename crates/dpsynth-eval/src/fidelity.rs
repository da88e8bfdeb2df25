//! Label fidelity: how often a classifier trained on the *real* training data agrees with each
//! synthetic record's label. A clean synthetic set scores about as high as the real→real
//! accuracy; a set whose labels are noise scores about the majority rate.
//!
//! # Privacy
//! NOT covered by the guarantee. The classifier is the same non-private MiniLM + logistic
//! regression fit on the private training set as the real→real ceiling
//! ([`crate::logreg::LogReg::fit`] with the evaluation's [`crate::logreg::LogRegConfig`]); the
//! agreement rate is a non-private statistic of the private data, for the data holder only. It
//! is written to `label_fidelity_private.json` and must stay out of `--public` outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::embed::{require_minilm_dir, MiniLm};
use crate::logreg::{LogReg, LogRegConfig};
use crate::{io_err, EvalError, Progress, Result};

/// File name of the (private) label-fidelity result.
pub const LABEL_FIDELITY_FILE: &str = "label_fidelity_private.json";

/// Agreement for one synthetic label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelAgreement {
    pub label: String,
    /// Synthetic records carrying this label.
    pub records: usize,
    /// Of those, how many the real-data classifier also puts in this label.
    pub agreed: usize,
}

/// The label-fidelity diagnostic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelFidelity {
    /// Always true: computed from the private training data without privacy.
    pub private: bool,
    pub note: String,
    pub classifier: String,
    pub synthetic_records: usize,
    pub real_train_records: usize,
    /// Fraction of synthetic records whose label the real-data classifier predicts.
    pub agreement: f64,
    /// Binomial standard error of `agreement`.
    pub standard_error: f64,
    /// Share of the most frequent synthetic label (what agreeing by always predicting one
    /// label can reach, for reference).
    pub majority_share: f64,
    pub per_label: Vec<LabelAgreement>,
}

/// Agreement of `predicted` with `labels_syn` (class indices into `names`).
pub fn agreement(
    names: &[String],
    labels_syn: &[usize],
    predicted: &[usize],
) -> Result<LabelFidelity> {
    if labels_syn.len() != predicted.len() || labels_syn.is_empty() {
        return Err(EvalError::Invalid(format!(
            "label fidelity: {} synthetic labels but {} predictions",
            labels_syn.len(),
            predicted.len()
        )));
    }
    let mut per: Vec<LabelAgreement> = names
        .iter()
        .map(|l| LabelAgreement {
            label: l.clone(),
            records: 0,
            agreed: 0,
        })
        .collect();
    for (&y, &p) in labels_syn.iter().zip(predicted) {
        let e = per.get_mut(y).ok_or_else(|| {
            EvalError::Invalid(format!("label fidelity: class index {y} out of range"))
        })?;
        e.records += 1;
        e.agreed += (y == p) as usize;
    }
    let n = labels_syn.len() as f64;
    let a = per.iter().map(|e| e.agreed).sum::<usize>() as f64 / n;
    let maj = per.iter().map(|e| e.records).max().unwrap_or(0) as f64 / n;
    Ok(LabelFidelity {
        private: true,
        note: "non-private diagnostic for the data holder: a classifier trained on the private \
               training data without privacy; not covered by the (ε, δ) guarantee"
            .into(),
        classifier: "MiniLM + logistic regression trained on the real training set (as the real→real ceiling)".into(),
        synthetic_records: labels_syn.len(),
        real_train_records: 0,
        agreement: a,
        standard_error: (a * (1.0 - a) / n).sqrt(),
        majority_share: maj,
        per_label: per,
    })
}

/// Settings of [`label_fidelity`].
#[derive(Clone, Debug)]
pub struct FidelityConfig {
    pub synthetic: PathBuf,
    pub train: PathBuf,
    pub minilm_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub logreg: LogRegConfig,
    /// Where to write [`LABEL_FIDELITY_FILE`] (none: nothing written).
    pub out_dir: Option<PathBuf>,
}

/// Train MiniLM + logistic regression on the real training records and measure how often it
/// agrees with each synthetic record's label.
///
/// # Privacy
/// Reads the private training data without privacy: the result is marked private (see the
/// module docs).
pub fn label_fidelity(cfg: &FidelityConfig, progress: &Progress) -> Result<LabelFidelity> {
    let syn = read(&cfg.synthetic)?;
    let train = read(&cfg.train)?;
    let mut names: Vec<String> = train
        .iter()
        .chain(&syn)
        .map(|r| r.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    names.dedup();
    let idx: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let y_train: Vec<usize> = train.iter().map(|r| idx[r.label.as_str()]).collect();
    let y_syn: Vec<usize> = syn.iter().map(|r| idx[r.label.as_str()]).collect();
    let dir = require_minilm_dir(cfg.minilm_dir.as_deref())?;
    progress.note("label fidelity: MiniLM + logreg on the real training data (private diagnostic)");
    let m = MiniLm::load(&dir, &Device::Cpu)?;
    let texts = |r: &[dpsynth_data::Record]| r.iter().map(|x| x.text.clone()).collect::<Vec<_>>();
    let (e_train, _) = m.embed_cached(&texts(&train), cfg.cache_dir.as_deref(), progress)?;
    let (e_syn, _) = m.embed_cached(&texts(&syn), cfg.cache_dir.as_deref(), progress)?;
    let model = LogReg::fit(&e_train, &y_train, names.len(), &cfg.logreg);
    let mut f = agreement(&names, &y_syn, &model.predict(&e_syn))?;
    f.real_train_records = train.len();
    if let Some(d) = &cfg.out_dir {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
        let p = d.join(LABEL_FIDELITY_FILE);
        std::fs::write(&p, serde_json::to_string_pretty(&f)?).map_err(io_err(&p))?;
    }
    Ok(f)
}

fn read(p: &Path) -> Result<Vec<dpsynth_data::Record>> {
    let r: Vec<dpsynth_data::Record> = dpsynth_data::read_jsonl(p)?
        .into_iter()
        .filter(|r| !r.text.trim().is_empty())
        .collect();
    if r.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: no records with text",
            p.display()
        )));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::Embeddings;

    #[test]
    fn agreement_counts_and_standard_error() {
        let names = vec!["neg".to_string(), "pos".to_string()];
        let f = agreement(&names, &[0, 0, 1, 1], &[0, 1, 1, 1]).unwrap();
        assert_eq!(f.agreement, 0.75);
        assert!((f.standard_error - (0.75f64 * 0.25 / 4.0).sqrt()).abs() < 1e-12);
        assert_eq!(f.per_label[0].agreed, 1);
        assert_eq!(f.per_label[1].agreed, 2);
        assert!(f.private);
        assert!(agreement(&names, &[0, 1], &[0]).is_err());
        assert!(agreement(&names, &[3], &[0]).is_err());
    }

    /// The real-data classifier agrees with clean synthetic labels and not with shuffled ones.
    #[test]
    fn fidelity_separates_clean_from_noisy_labels() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut make = |n: usize| {
            let mut data = Vec::new();
            let mut y = Vec::new();
            for i in 0..n {
                let c = i % 2;
                for d in 0..8 {
                    let mean = if d == 0 { 2.0 * c as f32 - 1.0 } else { 0.0 };
                    data.push(mean + rng.random_range(-0.5f32..0.5));
                }
                y.push(c);
            }
            (Embeddings::new(n, 8, data), y)
        };
        let (xt, yt) = make(200);
        let (xs, ys) = make(200);
        let m = LogReg::fit(&xt, &yt, 2, &LogRegConfig::default());
        let names = vec!["a".to_string(), "b".to_string()];
        let clean = agreement(&names, &ys, &m.predict(&xs)).unwrap();
        assert!(clean.agreement > 0.95, "{}", clean.agreement);
        let noisy: Vec<usize> = ys
            .iter()
            .enumerate()
            .map(|(i, &y)| if i % 4 < 2 { 1 - y } else { y })
            .collect();
        let bad = agreement(&names, &noisy, &m.predict(&xs)).unwrap();
        assert!(
            bad.agreement < 0.6 && bad.agreement > 0.4,
            "{}",
            bad.agreement
        );
    }
}
