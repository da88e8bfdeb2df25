//! Free post-processing of synthetic candidates: exact and near-duplicate removal, scoring of
//! every candidate under the (DP) model with every label's prompt prefix, re-labelling by that
//! likelihood, and class balancing by the released label proportions.
//!
//! # Privacy
//! Everything here is a function of the DP model (adapter + public base model), the public
//! prompt template, the synthetic texts sampled from that model and the DP label histogram
//! already released in the training ledger (or, for the ε = 0 control, the public base model and
//! uniform labels). By post-processing (Dwork & Roth 2014, Prop. 2.1) it costs no ε and needs no
//! ledger entry. No private record is read.
//!
//! # Constants and where they come from
//! - Near duplicates: Jaccard similarity of character 5-gram shingles ≥ 0.8, found with MinHash
//!   (64 hashes, 16 bands × 4 rows) and confirmed exactly: the threshold of Lee et al. 2022
//!   ("Deduplicating training data makes language models better"), not tuned here. With 16 bands
//!   of 4 rows a pair at Jaccard 0.8 becomes a candidate with probability 1 − (1 − 0.8⁴)¹⁶ ≈ 0.9996.
//! - Re-labelling: the Bayes rule under the model, posterior(l | x) ∝ π_l · p(x | prefix_l),
//!   with π the released label proportions: argmax, no tuned constant.
//! - Selection: per label, the candidates with the highest posterior are kept up to the label's
//!   quota (the target count split by π). `min_confidence` (default 0: off) can drop unsure
//!   candidates before that; any non-zero value must be chosen on a validation split or another
//!   dataset, never on the test split.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use dpsynth_lm::Generator;
use serde::{Deserialize, Serialize};

use crate::labels::allocate;
use crate::{Result, TrainError};

/// Default near-duplicate threshold (Jaccard of character 5-grams; Lee et al. 2022).
pub const NEAR_DUP_JACCARD: f64 = 0.8;
const SHINGLE: usize = 5;
const BANDS: usize = 16;
const ROWS: usize = 4;

/// Settings of the post-processing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterConfig {
    /// Candidates at or above this Jaccard similarity to an earlier kept one are dropped
    /// (> 1 disables near-duplicate removal; exact duplicates are always removed).
    pub near_dup_jaccard: f64,
    /// Re-label each candidate to the label with the highest posterior under the model.
    pub relabel: bool,
    /// Drop candidates whose posterior for their (final) label is below this (0 = off).
    pub min_confidence: f64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            near_dup_jaccard: NEAR_DUP_JACCARD,
            relabel: true,
            min_confidence: 0.0,
        }
    }
}

impl FilterConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.near_dup_jaccard > 0.0) || self.near_dup_jaccard.is_nan() {
            return Err(TrainError::Config(format!(
                "near-duplicate threshold must be in (0, 1] (or > 1 to disable), got {}",
                self.near_dup_jaccard
            )));
        }
        if !(0.0..1.0).contains(&self.min_confidence) {
            return Err(TrainError::Config(format!(
                "min_confidence must be in [0, 1), got {}",
                self.min_confidence
            )));
        }
        Ok(())
    }
}

/// Per-label counts of the post-processing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelFilterCounts {
    pub label: String,
    /// Candidates generated with this label's prompt (after length filter and dedup).
    pub prompted: usize,
    /// Candidates whose label after re-labelling is this one.
    pub assigned: usize,
    /// Quota from the target count and the label proportions.
    pub target: usize,
    pub kept: usize,
}

/// What each filter did (written next to the synthetic data as `<name>.filter.json` and shown
/// in the report). Post-processing of DP outputs: not private.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FilterCounts {
    /// Which model scored the candidates ("DP model" or "base model (ε = 0 control)").
    pub model: String,
    /// Candidates sampled.
    pub generated: usize,
    /// Empty or outside the word-count limits.
    pub removed_by_length: usize,
    pub exact_duplicates: usize,
    pub near_duplicates: usize,
    pub after_dedup: usize,
    /// Candidates whose label changed (posterior argmax ≠ prompted label).
    pub relabeled: usize,
    pub dropped_low_confidence: usize,
    /// Dropped because their label's quota was full (lowest posterior first).
    pub dropped_by_balance: usize,
    pub kept: usize,
    pub per_label: Vec<LabelFilterCounts>,
    /// Label proportions used for the posterior prior and the quotas.
    pub proportions: Vec<f64>,
    pub near_dup_jaccard: f64,
    pub min_confidence: f64,
    /// Mean posterior of the kept records' labels.
    pub mean_confidence_kept: f64,
    pub scoring_seconds: f64,
}

/// `text` lower-cased, letters and digits only, words separated by one space.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(c.to_lowercase());
        } else {
            space = true;
        }
    }
    out
}

fn hash64<T: Hash>(x: T) -> u64 {
    // SipHash with fixed zero keys: deterministic across runs.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    x.hash(&mut h);
    h.finish()
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Sorted, de-duplicated hashes of the character 5-grams of a normalized text.
fn shingles(norm: &str) -> Vec<u64> {
    let chars: Vec<char> = norm.chars().collect();
    let mut v: Vec<u64> = if chars.len() <= SHINGLE {
        vec![hash64(norm)]
    } else {
        chars.windows(SHINGLE).map(hash64).collect()
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// Jaccard similarity of two sorted, de-duplicated sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Result of [`dedup`].
#[derive(Debug, Clone, PartialEq)]
pub struct Dedup {
    /// Indices of the kept texts, in input order.
    pub kept: Vec<usize>,
    pub exact: usize,
    pub near: usize,
}

/// Remove exact duplicates (equal normalized text) and near duplicates (character 5-gram
/// Jaccard ≥ `threshold` to an earlier kept text; MinHash LSH finds the candidates, the exact
/// Jaccard confirms them). The first occurrence is kept.
pub fn dedup(texts: &[&str], threshold: f64) -> Dedup {
    let mut seen: HashSet<String> = HashSet::new();
    let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut sets: Vec<Vec<u64>> = Vec::with_capacity(texts.len());
    let mut out = Dedup {
        kept: Vec::new(),
        exact: 0,
        near: 0,
    };
    for (i, t) in texts.iter().enumerate() {
        let norm = normalize(t);
        let sh = shingles(&norm);
        sets.push(Vec::new());
        if !seen.insert(norm) {
            out.exact += 1;
            continue;
        }
        if threshold > 1.0 {
            out.kept.push(i);
            continue;
        }
        let sig: Vec<u64> = (0..BANDS * ROWS)
            .map(|k| {
                let seed = mix(k as u64 + 1);
                sh.iter().map(|&s| mix(s ^ seed)).min().unwrap_or(0)
            })
            .collect();
        let keys: Vec<u64> = (0..BANDS)
            .map(|b| hash64((b, &sig[b * ROWS..(b + 1) * ROWS])))
            .collect();
        let mut dup = false;
        let mut checked: HashSet<usize> = HashSet::new();
        'bands: for k in &keys {
            if let Some(members) = buckets.get(k) {
                for &m in members {
                    if checked.insert(m) && jaccard(&sh, &sets[m]) >= threshold {
                        dup = true;
                        break 'bands;
                    }
                }
            }
        }
        if dup {
            out.near += 1;
            continue;
        }
        for k in keys {
            buckets.entry(k).or_default().push(i);
        }
        sets[i] = sh;
        out.kept.push(i);
    }
    out
}

/// `log p(text ++ EOS | prefix_l)` for every label's prefix under the generator's model (base
/// weights plus its adapter): teacher-forced, no sampling.
pub fn label_log_likelihoods(
    generator: &Generator,
    prefixes: &[Vec<u32>],
    text: &[u32],
    eos: u32,
) -> Result<Vec<f64>> {
    Ok(
        score_candidates(generator, prefixes, &[text.to_vec()], eos, |_| {})?
            .pop()
            .unwrap_or_default(),
    )
}

/// [`label_log_likelihoods`] of many candidates: every (candidate, label) pair goes through
/// [`Generator::continuation_log_likelihoods`], which batches pairs of similar length. Calls
/// `progress(done)` after each block of candidates.
pub fn score_candidates(
    generator: &Generator,
    prefixes: &[Vec<u32>],
    texts: &[Vec<u32>],
    eos: u32,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<f64>>> {
    if prefixes.iter().any(|p| p.is_empty()) {
        return Err(TrainError::Config("empty prompt prefix".into()));
    }
    let k = prefixes.len();
    let conts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            let mut c = t.clone();
            c.push(eos);
            c
        })
        .collect();
    let mut out = Vec::with_capacity(texts.len());
    // Blocks of candidates: large enough to batch well, small enough for steady progress.
    const BLOCK: usize = 256;
    for (b, block) in conts.chunks(BLOCK).enumerate() {
        let pairs: Vec<(&[u32], &[u32])> = block
            .iter()
            .flat_map(|c| prefixes.iter().map(move |p| (p.as_slice(), c.as_slice())))
            .collect();
        let ll = generator.continuation_log_likelihoods(&pairs)?;
        out.extend(ll.chunks(k).map(|c| c.to_vec()));
        progress((b * BLOCK + block.len()).min(texts.len()));
    }
    Ok(out)
}

/// Posterior `π_l p(x | l) / Σ_k π_k p(x | k)` from log-likelihoods (labels with π = 0 get 0).
pub fn posterior(log_lik: &[f64], prior: &[f64]) -> Vec<f64> {
    let lp: Vec<f64> = log_lik
        .iter()
        .zip(prior)
        .map(|(&l, &p)| {
            if p > 0.0 {
                l + p.ln()
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let m = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return vec![1.0 / prior.len() as f64; prior.len()];
    }
    let e: Vec<f64> = lp.iter().map(|&x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The decision for each candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Final label of each candidate, `None` when dropped.
    pub label: Vec<Option<usize>>,
    /// Posterior of each candidate's final (or prompted, if not re-labelled) label.
    pub confidence: Vec<f64>,
    pub relabeled: usize,
    pub dropped_low_confidence: usize,
    pub dropped_by_balance: usize,
    /// Per label: (assigned, target, kept).
    pub per_label: Vec<(usize, usize, usize)>,
}

/// Re-label, drop unsure candidates, then balance: each label keeps its highest-posterior
/// candidates up to its quota. `target`: total records wanted (`None`: as many as the balance
/// allows, i.e. the largest n whose quotas every label can fill).
pub fn select(
    log_liks: &[Vec<f64>],
    prompted: &[usize],
    prior: &[f64],
    target: Option<usize>,
    cfg: &FilterConfig,
) -> Result<Selection> {
    let k = prior.len();
    if log_liks.len() != prompted.len() {
        return Err(TrainError::Other(
            "select: one prompted label per candidate".into(),
        ));
    }
    if k == 0 || !(prior.iter().all(|&p| p >= 0.0) && prior.iter().sum::<f64>() > 0.0) {
        return Err(TrainError::Config(
            "label proportions must be ≥ 0 with a positive sum".into(),
        ));
    }
    let mut label = vec![None; prompted.len()];
    let mut confidence = vec![0.0; prompted.len()];
    let (mut relabeled, mut low) = (0, 0);
    let mut by_label: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, (ll, &p)) in log_liks.iter().zip(prompted).enumerate() {
        if ll.len() != k || p >= k {
            return Err(TrainError::Other(format!(
                "select: candidate {i} has {} scores (labels: {k}) or prompted label {p}",
                ll.len()
            )));
        }
        let post = posterior(ll, prior);
        let l = if cfg.relabel {
            (0..k)
                .max_by(|&a, &b| post[a].total_cmp(&post[b]).then(b.cmp(&a)))
                .unwrap_or(p)
        } else {
            p
        };
        confidence[i] = post[l];
        if l != p {
            relabeled += 1;
        }
        if post[l] < cfg.min_confidence {
            low += 1;
            continue;
        }
        label[i] = Some(l);
        by_label[l].push(i);
    }
    let assigned: Vec<usize> = by_label.iter().map(|v| v.len()).collect();
    let n = match target {
        Some(n) => n,
        None => (0..k)
            .filter(|&l| prior[l] > 0.0)
            .map(|l| {
                let s: f64 = prior.iter().sum();
                // The largest n with allocate(n)[l] ≤ assigned[l] is about assigned / π_l.
                ((assigned[l] as f64 + 0.5) / (prior[l] / s)).floor() as usize
            })
            .min()
            .unwrap_or(0),
    };
    let mut quotas = allocate(n, prior);
    if target.is_none() {
        // Rounding in `allocate` can exceed what a label holds by one: shrink until it fits.
        let mut m = n;
        while m > 0 && quotas.iter().zip(&assigned).any(|(q, a)| q > a) {
            m -= 1;
            quotas = allocate(m, prior);
        }
    }
    let mut balance = 0;
    let mut per_label = Vec::with_capacity(k);
    for l in 0..k {
        let v = &mut by_label[l];
        v.sort_by(|&a, &b| confidence[b].total_cmp(&confidence[a]).then(a.cmp(&b)));
        for &i in v.iter().skip(quotas[l]) {
            label[i] = None;
            balance += 1;
        }
        per_label.push((assigned[l], quotas[l], v.len().min(quotas[l])));
    }
    Ok(Selection {
        label,
        confidence,
        relabeled,
        dropped_low_confidence: low,
        dropped_by_balance: balance,
        per_label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_exact_and_near_duplicates() {
        assert_eq!(normalize("  A  Great, great FILM!! "), "a great great film");
        let texts = [
            "A sharp, funny and moving film about growing up in a small town.",
            "a sharp funny and moving film about growing up in a small town", // exact (normalized)
            "A sharp, funny and moving film about growing up in a small city.", // near
            "Dull, overlong and badly acted: a waste of a good cast.",
            "An entirely different review of a quiet French drama.",
        ];
        let d = dedup(&texts, NEAR_DUP_JACCARD);
        assert_eq!(d.kept, vec![0, 3, 4]);
        assert_eq!((d.exact, d.near), (1, 1));
        // Threshold > 1: only exact duplicates go.
        let d = dedup(&texts, 1.5);
        assert_eq!(d.kept, vec![0, 2, 3, 4]);
        let a = shingles(&normalize(texts[0]));
        let c = shingles(&normalize(texts[2]));
        let j = jaccard(&a, &c);
        assert!((0.8..1.0).contains(&j), "{j}");
        assert!(jaccard(&a, &shingles(&normalize(texts[3]))) < 0.2);
    }

    #[test]
    fn dedup_scales_and_finds_all_copies() {
        // 2,000 distinct texts (10 pseudo-random words each) plus 200 exact copies (after
        // normalization) and 200 near copies (one short word appended).
        let words = [
            "film", "story", "actor", "plot", "scene", "music", "camera", "dialogue", "ending",
            "director", "charm", "humor", "drama", "pace", "script", "cast", "visual", "sound",
            "moment", "heart", "tension", "romance", "action", "comedy", "thriller", "drags",
            "soars", "fails", "shines", "bores", "delights", "confuses", "moves", "works", "sinks",
            "sparkles", "stumbles", "lingers", "flows", "falters",
        ];
        let mut state = 12345u64;
        let base: Vec<String> = (0..2000)
            .map(|_| {
                (0..10)
                    .map(|_| {
                        state = mix(state);
                        words[(state % words.len() as u64) as usize]
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let mut texts: Vec<String> = base.clone();
        for t in base.iter().take(200) {
            texts.push(format!("{t}!"));
        }
        for t in base.iter().skip(200).take(200) {
            texts.push(format!("{t} it"));
        }
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let d = dedup(&refs, NEAR_DUP_JACCARD);
        assert_eq!(d.exact, 200);
        // Every planted copy is gone (recall of the LSH + exact check), and random texts are
        // not taken for copies of each other (no false positives).
        assert_eq!(d.near, 200);
        assert_eq!(d.kept, (0..2000).collect::<Vec<_>>());
    }

    #[test]
    fn select_relabels_and_balances_by_the_prior() {
        // Two labels; log-likelihoods favour label 1 for candidates 0..4, label 0 for 4..10.
        let ll: Vec<Vec<f64>> = (0..10)
            .map(|i| {
                if i < 4 {
                    vec![-10.0, -10.0 + 1.0 + i as f64]
                } else {
                    vec![-10.0 + (i - 3) as f64, -10.0]
                }
            })
            .collect();
        let prompted = vec![0; 10];
        let prior = [0.5, 0.5];
        let s = select(&ll, &prompted, &prior, Some(6), &FilterConfig::default()).unwrap();
        assert_eq!(s.relabeled, 4);
        // Quotas 3/3: label 1 keeps its 3 most confident (3, 2, 1), label 0 keeps 9, 8, 7.
        let kept: Vec<(usize, usize)> = s
            .label
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (i, l)))
            .collect();
        assert_eq!(kept, vec![(1, 1), (2, 1), (3, 1), (7, 0), (8, 0), (9, 0)]);
        assert_eq!(s.dropped_by_balance, 4);
        assert_eq!(s.per_label, vec![(6, 3, 3), (4, 3, 3)]);
        // Auto size: label 1 has 4, label 0 has 6 → the largest n whose 50/50 quotas fit is 9
        // (quotas 5 and 4).
        let s = select(&ll, &prompted, &prior, None, &FilterConfig::default()).unwrap();
        assert_eq!(s.label.iter().filter(|l| l.is_some()).count(), 9);
        assert_eq!(s.per_label, vec![(6, 5, 5), (4, 4, 4)]);
        // Without re-labelling every candidate keeps label 0; a confidence floor drops the
        // ones the model thinks are label 1.
        let cfg = FilterConfig {
            relabel: false,
            min_confidence: 0.5,
            ..Default::default()
        };
        let s = select(&ll, &prompted, &prior, Some(10), &cfg).unwrap();
        assert_eq!(s.relabeled, 0);
        assert_eq!(s.dropped_low_confidence, 4);
        // A strong prior moves a borderline candidate: ll difference 1 nat, prior 0.9 / 0.1.
        let p = posterior(&[-5.0, -4.0], &[0.9, 0.1]);
        assert!(p[0] > p[1]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Bad input.
        assert!(select(&ll, &prompted[..3], &prior, None, &FilterConfig::default()).is_err());
        assert!(select(&ll, &prompted, &[0.0, 0.0], None, &FilterConfig::default()).is_err());
        assert!(FilterConfig {
            min_confidence: 1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn batched_scores_match_the_one_sequence_oracle_for_every_length_and_adapter() {
        use candle_core::Device;
        use dpsynth_lm::{Adapter, GeneratorOptions, LlamaConfig, LlamaWeights, PromptAdapter};
        let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 11).unwrap();
        let prompt = Adapter::Prompt(
            PromptAdapter::init_random(3, w.config.hidden_size, 0.5, 5, &Device::Cpu).unwrap(),
        );
        let prefixes = vec![vec![1u32, 5, 9], vec![1u32, 6, 10, 11, 12]];
        // 40 candidates of lengths 1..=13 (several batches, ragged padding).
        let texts: Vec<Vec<u32>> = (0..40u32)
            .map(|i| {
                (0..1 + (i * 7) % 13)
                    .map(|j| 20 + (i * 3 + j) % 40)
                    .collect()
            })
            .collect();
        let eos = 2u32;
        for a in [None, Some(&prompt)] {
            let g = Generator::new(
                &w,
                a,
                GeneratorOptions {
                    batch_size: 4,
                    weights: dpsynth_lm::WeightFormat::F32,
                },
                &Device::Cpu,
            )
            .unwrap();
            let mut calls = Vec::new();
            let got = score_candidates(&g, &prefixes, &texts, eos, |d| calls.push(d)).unwrap();
            assert_eq!(calls.last(), Some(&texts.len()));
            assert_eq!(got.len(), texts.len());
            for (t, ll) in texts.iter().zip(&got) {
                assert_eq!(ll.len(), prefixes.len());
                for (p, &l) in prefixes.iter().zip(ll) {
                    let mut seq = p.clone();
                    seq.extend_from_slice(t);
                    seq.push(eos);
                    let want = -dpsynth_lm::sequence_loss(&w, a, &seq, p.len()..seq.len())
                        .unwrap()
                        .sum;
                    assert!(
                        (l - want).abs() < 1e-3 * want.abs().max(1.0),
                        "{l} vs {want}"
                    );
                }
            }
        }
        // Bad input: an out-of-vocabulary token is an error, not a panic.
        let g = Generator::new(&w, None, GeneratorOptions::default(), &Device::Cpu).unwrap();
        assert!(score_candidates(&g, &prefixes, &[vec![1_000_000]], eos, |_| {}).is_err());
    }

    #[test]
    fn scores_equal_teacher_forced_log_likelihood_under_the_adapter() {
        use candle_core::{Device, Tensor};
        use dpsynth_lm::{Adapter, GeneratorOptions, LlamaConfig, LlamaWeights, LoraAdapter};
        let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 7).unwrap();
        let cfg = dpsynth_lm::LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
        };
        let mut l = LoraAdapter::init(&cfg, &w.config, 3, &Device::Cpu).unwrap();
        for b in l.b.values_mut() {
            *b = Tensor::randn(0f32, 0.3, b.dims(), &Device::Cpu).unwrap();
        }
        let adapter = Adapter::Lora(l);
        let prefixes = vec![vec![1u32, 5, 9], vec![1u32, 6, 10, 11]];
        let text = [20u32, 21, 22, 23, 24];
        let eos = 2u32;
        let mut per_adapter = Vec::new();
        for a in [None, Some(&adapter)] {
            let g = Generator::new(
                &w,
                a,
                GeneratorOptions {
                    batch_size: 2,
                    weights: dpsynth_lm::WeightFormat::F32,
                },
                &Device::Cpu,
            )
            .unwrap();
            let got = label_log_likelihoods(&g, &prefixes, &text, eos).unwrap();
            assert_eq!(got.len(), 2);
            for (p, &ll) in prefixes.iter().zip(&got) {
                // Independent oracle: the plain forward's summed cross-entropy over text + EOS.
                let mut seq = p.clone();
                seq.extend_from_slice(&text);
                seq.push(eos);
                let want = -dpsynth_lm::sequence_loss(&w, a, &seq, p.len()..seq.len())
                    .unwrap()
                    .sum;
                assert!(
                    (ll - want).abs() < 1e-3 * want.abs().max(1.0),
                    "{ll} vs {want}"
                );
                assert!(ll < 0.0);
            }
            per_adapter.push(got);
        }
        // The adapter changes the scores (the DP model, not the base, is what scores).
        assert!((per_adapter[0][0] - per_adapter[1][0]).abs() > 1e-4);
        assert!(label_log_likelihoods(
            &Generator::new(
                &w,
                None,
                GeneratorOptions {
                    batch_size: 1,
                    weights: dpsynth_lm::WeightFormat::F32
                },
                &Device::Cpu
            )
            .unwrap(),
            &[vec![]],
            &text,
            eos
        )
        .is_err());
    }
}
