//! Membership scores: per-example losses of the base and the fine-tuned model, the loss
//! difference score, exposure (Carlini et al. 2019) and the ROC AUC of the scores.

use std::path::Path;

use candle_core::{DType, Tensor};
use dpsynth_lm::{Adapter, LlamaWeights};
use dpsynth_train::model::Example;

use crate::{AuditError, Result};

/// Summed next-token negative log-likelihood of an example's target tokens (natural log).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExampleLoss {
    pub sum: f64,
    pub count: usize,
}

impl ExampleLoss {
    /// Mean NLL per target token (the training loss of the example).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Losses of `examples` (prefix context, loss on the text and EOS, exactly as in training)
/// under `weights` with an optional adapter, `batch` sequences per forward pass.
pub fn example_losses(
    weights: &LlamaWeights,
    adapter: Option<&Adapter>,
    examples: &[Example],
    batch: usize,
) -> Result<Vec<ExampleLoss>> {
    let dev = weights.device();
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let b = chunk.len();
        let t = chunk.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if t < 2 {
            return Err(AuditError::Data(
                "an example has fewer than two tokens: nothing to score".into(),
            ));
        }
        let mut ids = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        let mut sel = Vec::new();
        let mut tgt = Vec::new();
        let mut owner = Vec::new();
        for (i, e) in chunk.iter().enumerate() {
            ids[i * t..i * t + e.ids.len()].copy_from_slice(&e.ids);
            mask[i * t..i * t + e.ids.len()]
                .iter_mut()
                .for_each(|m| *m = 1.0);
            for j in e.target_positions() {
                sel.push((i * t + j - 1) as u32);
                tgt.push(e.ids[j]);
                owner.push(i);
            }
        }
        let mut res = vec![ExampleLoss { sum: 0.0, count: 0 }; b];
        if !sel.is_empty() {
            let ids = Tensor::from_vec(ids, (b, t), dev)?;
            let mask = Tensor::from_vec(mask, (b, t), dev)?;
            let logits = dpsynth_lm::forward_logits_batch(weights, adapter, &ids, Some(&mask))?;
            let v = logits.dim(2)?;
            let n = sel.len();
            let rows = logits
                .reshape((b * t, v))?
                .index_select(&Tensor::from_vec(sel, n, dev)?, 0)?
                .to_dtype(DType::F32)?;
            let lp = dpsynth_lm::model::log_softmax(&rows)?;
            let picked: Vec<f32> = lp
                .gather(&Tensor::from_vec(tgt, (n, 1), dev)?, 1)?
                .flatten_all()?
                .to_vec1()?;
            for (p, &o) in picked.iter().zip(&owner) {
                res[o].sum -= *p as f64;
                res[o].count += 1;
            }
        }
        out.extend(res);
    }
    Ok(out)
}

/// The adapter a finished training run wrote to `run_dir/adapter` (by `dpsynth-train`).
pub fn load_trained_adapter(run_dir: &Path, base: &LlamaWeights) -> Result<Adapter> {
    Ok(Adapter::load(
        &run_dir.join("adapter"),
        &base.config,
        base.device(),
    )?)
}

/// The membership score of one canary: how much the fine-tuned model improved on it,
/// `base mean NLL − fine-tuned mean NLL` (higher = more likely trained on). Subtracting the
/// base loss calibrates away how easy the canary is for any model.
pub fn loss_score(base: ExampleLoss, trained: ExampleLoss) -> f64 {
    base.mean() - trained.mean()
}

/// Exposure of a secret (Carlini et al. 2019, §4.1: `log2 |R| − log2 rank`), estimated from
/// `alternatives` random secrets of the same format: `−log2((c + 1) / (K + 1))` with `c` the
/// alternatives whose NLL is ≤ the true secret's. Ties count against the canary, so the
/// estimate is conservative; it saturates at `log2(K + 1)` (a canary ranked first among K
/// samples). A secret the model knows nothing about has expected exposure ≈ 1.44 bits.
pub fn exposure(true_nll: f64, alternatives: &[f64]) -> f64 {
    let c = alternatives.iter().filter(|&&a| a <= true_nll).count();
    -(((c + 1) as f64) / ((alternatives.len() + 1) as f64)).log2()
}

/// ROC AUC of `scores` for separating `positive` from the rest (Mann–Whitney, ties 1/2).
/// `None` without both classes.
pub fn auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let pos: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, &p)| !p)
        .map(|(s, _)| *s)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for a in &pos {
        for b in &neg {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use dpsynth_lm::LlamaConfig;

    #[test]
    fn exposure_estimate() {
        // Best of 15 alternatives: log2(16) = 4 bits.
        assert!((exposure(1.0, &[2.0; 15]) - 4.0).abs() < 1e-12);
        // Worst: every alternative is at least as likely: 0 bits.
        assert_eq!(exposure(3.0, &[2.0, 3.0, 1.0]), 0.0);
        // Ties count against the canary.
        assert_eq!(exposure(2.0, &[2.0]), 0.0);
        // Middle: 1 of 3 below → -log2(2/4) = 1.
        assert!((exposure(2.0, &[1.0, 3.0, 4.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn auc_cases() {
        assert_eq!(
            auc(&[3.0, 2.0, 1.0, 0.0], &[true, true, false, false]),
            Some(1.0)
        );
        assert_eq!(auc(&[0.0, 1.0], &[true, false]), Some(0.0));
        assert_eq!(auc(&[1.0, 1.0], &[true, false]), Some(0.5));
        assert_eq!(auc(&[1.0], &[true]), None);
    }

    #[test]
    fn loss_score_sign() {
        let b = ExampleLoss { sum: 8.0, count: 4 };
        let t = ExampleLoss { sum: 2.0, count: 4 };
        assert_eq!(loss_score(b, t), 1.5);
    }

    /// Batched, padded losses equal the one-sequence reference `dpsynth_lm::sequence_loss`.
    #[test]
    fn batched_losses_match_sequence_loss() {
        let cfg = LlamaConfig::tiny();
        let w = LlamaWeights::random(&cfg, &Device::Cpu, 5).unwrap();
        let ex = vec![
            Example {
                ids: vec![1, 5, 6, 7, 8, 2],
                n_prefix: 2,
            },
            Example {
                ids: vec![1, 9, 10, 2],
                n_prefix: 2,
            },
            Example {
                ids: vec![1, 11, 12, 13, 14, 15, 16, 2],
                n_prefix: 3,
            },
        ];
        for batch in [1, 2, 3] {
            let got = example_losses(&w, None, &ex, batch).unwrap();
            for (e, g) in ex.iter().zip(&got) {
                let r = dpsynth_lm::sequence_loss(&w, None, &e.ids, e.target_positions()).unwrap();
                assert_eq!(g.count, r.count);
                assert!(
                    (g.sum - r.sum).abs() < 1e-3 * r.sum.abs().max(1.0),
                    "{g:?} {r:?}"
                );
            }
        }
    }
}
