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

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use dpsynth_lm::{Adapter, GenRequest, Generator, GeneratorOptions, SamplingParams, WeightFormat};
use serde::{Deserialize, Serialize};

use crate::filter::{FilterConfig, FilterCounts, LabelFilterCounts};
use crate::labels::{allocate, LabelDistribution};
use crate::ledger::Ledger;
use crate::train::{RunInfo, RunPaths};

/// Settings of `dpsynth synthesize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthConfig {
    /// A run directory written by `dpsynth train`.
    pub run: PathBuf,
    /// Records to generate.
    pub n: usize,
    /// Output JSONL.
    pub out: PathBuf,
    /// Override the run's label distribution (`uniform`, `dp` or a JSON file).
    pub label_distribution: Option<LabelDistribution>,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub max_new_tokens: usize,
    /// Keep only texts with at least / at most this many whitespace-separated words.
    pub min_words: usize,
    pub max_words: Option<usize>,
    /// Sequences decoded together.
    pub batch_size: usize,
    /// Sampling seed (generation is post-processing: a seed has no privacy effect).
    pub seed: Option<u64>,
    /// Base model (default: the run's).
    pub model: Option<PathBuf>,
    /// Generator weight format: `auto` (bf16 where the CPU has AVX-512 BF16, else f32), `bf16`,
    /// `f32` (exact) or `q8_0`.
    pub weights: String,
    /// Generation rounds to fill per-label quotas after filtering and de-duplication.
    pub max_rounds: usize,
    /// Post-processing ([`crate::filter`]): when set, `candidates` texts are sampled, exact and
    /// near duplicates removed, every candidate scored under the model with every label's
    /// prefix, re-labelled, and `n` kept, balanced by the label proportions. `None`: the plain
    /// sampler (`n` records, per-label quotas, exact duplicates and length filter only).
    #[serde(default)]
    pub filter: Option<FilterConfig>,
    /// Candidates to sample when filtering (default: `n`; at least `n` is sensible).
    #[serde(default)]
    pub candidates: Option<usize>,
    /// The ε = 0 control: sample from the public base model (the run's adapter is not loaded)
    /// with the same template, uniform labels (the DP histogram is not read) and the same
    /// filters. Uses no private data at all.
    #[serde(default)]
    pub base_only: bool,
    /// Sample only this shard of the slots and write a shard file to `out`, to be joined by
    /// [`crate::shard::merge`] (needs `seed`). See [`crate::shard`].
    #[serde(default)]
    pub shard: Option<crate::shard::ShardSpec>,
}

impl SynthConfig {
    pub fn new(run: PathBuf, n: usize, out: PathBuf) -> Self {
        Self {
            run,
            n,
            out,
            label_distribution: None,
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.95),
            max_new_tokens: 96,
            min_words: 1,
            max_words: None,
            // The CLI's default (`dpsynth_report::defaults::SYNTH_BATCH`, measured there).
            batch_size: 64,
            seed: None,
            model: None,
            weights: "auto".into(),
            max_rounds: 4,
            filter: None,
            candidates: None,
            base_only: false,
            shard: None,
        }
    }
}

/// Progress of a synthesis run.
pub trait SynthProgress {
    fn start(&mut self, _total: usize) {}
    fn written(&mut self, _done: usize, _tokens_per_second: f64) {}
    fn message(&mut self, _msg: &str) {}
    fn finish(&mut self) {}
}

/// No output.
pub struct NoSynthProgress;
impl SynthProgress for NoSynthProgress {}

/// What a synthesis run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthSummary {
    pub out: PathBuf,
    pub written: usize,
    pub requested: usize,
    pub per_label: Vec<(String, usize, usize)>,
    pub duplicates_removed: usize,
    pub filtered_by_length: usize,
    pub generated_tokens: usize,
    pub tokens_per_second: f64,
    pub seconds: f64,
    /// What the post-processing did (only with [`SynthConfig::filter`]).
    #[serde(default)]
    pub filter: Option<FilterCounts>,
}

/// Where [`synthesize`] writes the filter counts for an output file: `synthetic.jsonl` →
/// `synthetic.filter.json`.
pub fn filter_counts_path(out: &Path) -> PathBuf {
    out.with_extension("filter.json")
}

#[derive(Serialize)]
struct OutRecord<'a> {
    id: String,
    text: &'a str,
    label: &'a str,
    /// With the filter: the scoring model's posterior of `label` (a soft label; post-processing).
    #[serde(skip_serializing_if = "Option::is_none")]
    label_posterior: Option<f64>,
}

/// Per-label proportions for a run, from `dist` (or the run's own setting).
pub fn label_proportions(
    info: &RunInfo,
    ledger: &Ledger,
    dist: &LabelDistribution,
) -> Result<Vec<f64>> {
    let k = info.labels.len();
    match dist {
        LabelDistribution::Uniform => Ok(vec![1.0 / k as f64; k]),
        LabelDistribution::File(f) => read_label_file(f, &info.labels),
        LabelDistribution::Dp => {
            let h = ledger.label_histogram.as_ref().ok_or_else(|| {
                TrainError::Config(
                    "this run released no DP label histogram (it was trained with \
                     --label-distribution uniform or a file); use --label-distribution uniform \
                     or a file"
                        .into(),
                )
            })?;
            if h.labels != info.labels {
                return Err(TrainError::Other(
                    "ledger labels differ from run.json".into(),
                ));
            }
            Ok(h.proportions.clone())
        }
    }
}

/// Generate a labeled synthetic dataset from a trained run (the library entry point of
/// `dpsynth synthesize`).
///
/// Records come from *slots*: slot `g` (0 ≤ g < `candidates`, or `n` without the filter) has a
/// label fixed by the label quotas ([`crate::shard::slot_labels`]) and a sampler seed derived
/// from (seed, g, attempt) ([`crate::shard::slot_seed`]); a slot whose text fails the length
/// filter is retried with the next attempt's seed, up to `max_rounds` attempts. A record's id is
/// `syn-<g>`. So a slot's text depends on nothing but the seed, the model and `g`, which is what
/// lets [`SynthConfig::shard`] split the work over processes ([`crate::shard`]) and
/// [`crate::shard::merge`] rebuild exactly the single-process output. Exact duplicates (same
/// label and text; and near duplicates with the filter) are dropped in slot order, not
/// regenerated.
///
/// Writes `out`, its dataset card (`<out>.card.json` / `.card.md`, [`crate::card`]) and with
/// the filter its counts (`<out>.filter.json`). With `shard`, writes only a shard file to `out`.
///
/// # Privacy
/// Post-processing of the DP adapter and the DP label histogram (Dwork & Roth 2014, Prop.
/// 2.1): no additional cost. The run's ledger must exist (it is written before the adapter),
/// and the base model and prompt template are public. The card copies ε, δ and the unit from
/// the ledger; it computes nothing from private data.
pub fn synthesize(cfg: &SynthConfig, progress: &mut dyn SynthProgress) -> Result<SynthSummary> {
    let t0 = Instant::now();
    let paths = RunPaths {
        dir: cfg.run.clone(),
    };
    if cfg.n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
    }
    if cfg.shard.is_some() && cfg.seed.is_none() {
        return Err(TrainError::Config(
            "--shard needs --seed: every shard must sample from the same seeded slots".into(),
        ));
    }
    let info: RunInfo =
        serde_json::from_str(&std::fs::read_to_string(paths.run_info()).map_err(|e| {
            TrainError::file(
                paths.run_info(),
                format!("{e}; is this a `dpsynth train` run directory?"),
            )
        })?)?;
    let props = if cfg.base_only {
        // ε = 0 control: nothing derived from the private data, not even the DP histogram.
        vec![1.0 / info.labels.len().max(1) as f64; info.labels.len()]
    } else {
        let ledger = Ledger::read(&paths.ledger())?;
        let dist = cfg
            .label_distribution
            .clone()
            .unwrap_or(info.label_distribution.clone());
        label_proportions(&info, &ledger, &dist)?
    };
    if let Some(f) = &cfg.filter {
        f.validate()?;
        if cfg.candidates.is_some_and(|c| c == 0) {
            return Err(TrainError::Config("--candidates must be at least 1".into()));
        }
    }
    let quotas = allocate(
        cfg.filter.as_ref().and(cfg.candidates).unwrap_or(cfg.n),
        &props,
    );
    let device = Device::Cpu;
    let model_path = cfg.model.clone().unwrap_or(info.model.clone());
    let (card_privacy, card_model) =
        crate::card::run_card_parts(&paths, &info, &model_path, cfg.base_only)?;
    progress.message("loading model");
    let (weights, tok) = dpsynth_lm::load_model(&model_path, &device)?;
    let adapter = if cfg.base_only {
        None
    } else {
        Some(Adapter::load(&paths.adapter(), &weights.config, &device)?)
    };
    let wf: WeightFormat = cfg.weights.parse()?;
    let generator = Generator::new(
        &weights,
        adapter.as_ref(),
        GeneratorOptions {
            batch_size: cfg.batch_size.max(1),
            weights: wf,
        },
        &device,
    )?;
    let eos = tok
        .eos_id()
        .ok_or_else(|| TrainError::Config("tokenizer has no EOS".into()))?;
    let params = SamplingParams {
        temperature: cfg.temperature,
        top_k: cfg.top_k,
        top_p: cfg.top_p,
        max_new_tokens: cfg.max_new_tokens,
        stop_tokens: vec![eos],
    };
    let prompts: Vec<Vec<u32>> = info
        .labels
        .iter()
        .map(|l| crate::format::prefix_ids(&tok, &info.template, l))
        .collect::<Result<_>>()?;
    // The base of every slot's seed: the user's, or fresh from the OS (sampling seeds have no
    // privacy effect either way).
    let base_seed = match cfg.seed {
        Some(s) => s,
        None => crate::rng::DpRng::new(crate::rng::SeedPolicy::Os, "synthesis", 0).next_u64(),
    };
    let slot_label = crate::shard::slot_labels(&quotas);
    let slots: Vec<usize> = match cfg.shard {
        Some(s) => s.slots(slot_label.len()),
        None => (0..slot_label.len()).collect(),
    };
    if cfg.filter.is_some() {
        progress.message(&format!(
            "sampling {} candidates ({})",
            slots.len(),
            if cfg.base_only {
                "base model, ε = 0 control"
            } else {
                "DP model"
            }
        ));
    }
    let mut sampled = sample_slots(
        cfg,
        &slots,
        &slot_label,
        base_seed,
        &generator,
        &tok,
        &params,
        &prompts,
        info.max_tokens,
        progress,
    )?;
    // log p(text | prefix_l) for every label's prefix, under the generator's model. A slot
    // sampled here is scored on its generated tokens (truncated to the training length), and
    // its prompted label's score is the log-probability the sampler computed (when the text
    // ended with EOS within that length), so only the other labels need a pass.
    let slot_pos: HashMap<usize, usize> = slots.iter().enumerate().map(|(j, &g)| (g, j)).collect();
    let generated = std::mem::take(&mut sampled.generated);
    let score =
        |items: &[(usize, &str)], progress: &mut dyn SynthProgress| -> Result<Vec<Vec<f64>>> {
            let mut texts = Vec::with_capacity(items.len());
            let mut known = Vec::with_capacity(items.len());
            for (slot, text) in items {
                match slot_pos.get(slot).and_then(|&j| generated[j].as_ref()) {
                    Some((ids, k)) => {
                        texts.push(ids.clone());
                        known.push(*k);
                    }
                    None => {
                        let mut ids = tok.encode(text, false)?;
                        ids.truncate(info.max_tokens);
                        texts.push(ids);
                        known.push(None);
                    }
                }
            }
            crate::filter::score_candidates_with_known(
                &generator,
                &prompts,
                &texts,
                &known,
                eos,
                |done| progress.written(done, 0.0),
            )
        };
    if let Some(spec) = cfg.shard {
        let header = crate::shard::ShardHeader::new(
            cfg,
            spec,
            base_seed,
            &info.labels,
            &props,
            slot_label.len(),
            card_privacy,
            card_model,
        )?;
        return crate::shard::write_shard(
            cfg,
            header,
            &slots,
            &slot_label,
            sampled,
            &score,
            progress,
            t0,
        );
    }
    let cands: Vec<SlotText> = slots
        .iter()
        .zip(sampled.texts)
        .map(|(&g, t)| SlotText {
            slot: g,
            label: slot_label[g],
            text: t,
        })
        .collect();
    let post = PostInput {
        out: &cfg.out,
        n: cfg.n,
        labels: &info.labels,
        props: &props,
        base_only: cfg.base_only,
        by_length: sampled.by_length,
    };
    let mut summary = match &cfg.filter {
        Some(fc) => finish_filtered(&post, fc, cands, &score, progress)?,
        None => finish_plain(&post, cands, progress)?,
    };
    summary.generated_tokens = sampled.tokens;
    summary.tokens_per_second = sampled.tokens as f64 / sampled.gen_secs.max(1e-9);
    summary.seconds = t0.elapsed().as_secs_f64();
    crate::card::write_synthesis_card(
        &cfg.out,
        card_privacy,
        card_model,
        crate::shard::generation_json(cfg, base_seed, None)?,
        &summary,
    )?;
    Ok(summary)
}

/// What [`sample_slots`] produced: one text per requested slot (`None`: every attempt failed
/// the length filter).
pub(crate) struct Sampled {
    pub texts: Vec<Option<String>>,
    /// Per slot with a text: its generated tokens (truncated to the run's training length) and,
    /// when the sequence ended with EOS within that length, `(prompted label, log p(tokens ++
    /// EOS | prefix))` as the sampler computed it.
    pub generated: Vec<Option<Generated>>,
    /// Attempts rejected by the length filter.
    pub by_length: usize,
    pub tokens: usize,
    pub gen_secs: f64,
}

/// Sample the slots `slots` (global indices): attempt `a` of slot `g` is prompted with
/// `slot_label[g]`'s prefix and seeded with [`crate::shard::slot_seed`]`(seed, g, a)`; a text
/// outside the word-count limits is rejected and its slot retried, up to `max_rounds` attempts.
#[allow(clippy::too_many_arguments)]
fn sample_slots(
    cfg: &SynthConfig,
    slots: &[usize],
    slot_label: &[usize],
    base_seed: u64,
    generator: &Generator,
    tok: &dpsynth_lm::Tokenizer,
    params: &SamplingParams,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    progress: &mut dyn SynthProgress,
) -> Result<Sampled> {
    let mut texts: Vec<Option<String>> = vec![None; slots.len()];
    let mut generated: Vec<Option<Generated>> = vec![None; slots.len()];
    let (mut by_length, mut tokens, mut gen_secs, mut done) = (0usize, 0usize, 0f64, 0usize);
    progress.start(slots.len());
    for attempt in 0..cfg.max_rounds.max(1) {
        let todo: Vec<usize> = (0..slots.len()).filter(|&j| texts[j].is_none()).collect();
        if todo.is_empty() {
            break;
        }
        let reqs: Vec<GenRequest> = todo
            .iter()
            .map(|&j| GenRequest {
                prompt_ids: prompts[slot_label[slots[j]]].clone(),
                seed: crate::shard::slot_seed(base_seed, slots[j], attempt as u32),
            })
            .collect();
        let stats = generator.generate(reqs, params, |o| {
            let j = todo[o.index];
            let text = tok.decode(&o.tokens)?.trim().to_string();
            let words = text.split_whitespace().count();
            if text.is_empty() || words < cfg.min_words || cfg.max_words.is_some_and(|m| words > m)
            {
                by_length += 1;
                return Ok(());
            }
            texts[j] = Some(text);
            let label = slot_label[slots[j]];
            let mut ids = o.tokens;
            let known = (o.stopped && ids.len() <= max_tokens).then_some((label, o.logprob));
            ids.truncate(max_tokens);
            generated[j] = Some((ids, known));
            done += 1;
            progress.written(done, 0.0);
            Ok(())
        })?;
        tokens += stats.new_tokens;
        gen_secs += stats.seconds;
        progress.written(done, tokens as f64 / gen_secs.max(1e-9));
    }
    progress.finish();
    Ok(Sampled {
        texts,
        generated,
        by_length,
        tokens,
        gen_secs,
    })
}

/// A sampled text's tokens and its known score (see [`Sampled::generated`]).
pub(crate) type Generated = (Vec<u32>, Option<(usize, f64)>);

/// One slot's outcome, in slot order for the post-processing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SlotText {
    pub slot: usize,
    /// The prompted label (index into the run's labels).
    pub label: usize,
    pub text: Option<String>,
}

/// Scores candidates `(slot, text)`: `log p(text | prefix_l)` for every label, one row per
/// candidate (reporting progress as it goes).
pub(crate) type Scorer<'a> =
    dyn Fn(&[(usize, &str)], &mut dyn SynthProgress) -> Result<Vec<Vec<f64>>> + 'a;

/// What the post-processing of a whole (merged) slot set needs besides the slots.
pub(crate) struct PostInput<'a> {
    pub out: &'a Path,
    pub n: usize,
    pub labels: &'a [String],
    pub props: &'a [f64],
    pub base_only: bool,
    pub by_length: usize,
}

/// The plain sampler's output: every slot's text in slot order, exact duplicates (same label
/// and text) after the first dropped. Writes `out`.
pub(crate) fn finish_plain(
    p: &PostInput,
    mut cands: Vec<SlotText>,
    progress: &mut dyn SynthProgress,
) -> Result<SynthSummary> {
    cands.sort_by_key(|c| c.slot);
    let k = p.labels.len();
    let mut quota = vec![0usize; k];
    let mut have = vec![0usize; k];
    let mut seen: HashSet<(usize, &str)> = HashSet::new();
    let (mut dups, mut written) = (0usize, 0usize);
    let f = std::fs::File::create(p.out).map_err(|e| TrainError::file(p.out, e))?;
    let mut w = std::io::BufWriter::new(f);
    for c in &cands {
        quota[c.label] += 1;
        let Some(text) = c.text.as_deref() else {
            continue;
        };
        if !seen.insert((c.label, text)) {
            dups += 1;
            continue;
        }
        let rec = OutRecord {
            id: crate::shard::record_id(c.slot),
            text,
            label: &p.labels[c.label],
            label_posterior: None,
        };
        serde_json::to_writer(&mut w, &rec)?;
        w.write_all(b"\n")?;
        have[c.label] += 1;
        written += 1;
    }
    w.flush()?;
    if written < p.n {
        progress.message(&format!(
            "wrote {written} of {} records: duplicates or the length filter removed the rest",
            p.n
        ));
    }
    Ok(SynthSummary {
        out: p.out.to_path_buf(),
        written,
        requested: p.n,
        per_label: p
            .labels
            .iter()
            .zip(quota.iter().zip(&have))
            .map(|(l, (&q, &h))| (l.clone(), q, h))
            .collect(),
        duplicates_removed: dups,
        filtered_by_length: p.by_length,
        generated_tokens: 0,
        tokens_per_second: 0.0,
        seconds: 0.0,
        filter: None,
    })
}

/// The filtered output: candidates in slot order, exact and near duplicates removed, each
/// remaining one scored (`score(&[(slot, text)], progress)`: log-likelihoods under every
/// label's prefix, one row per item),
/// re-labelled, balanced; writes `out` (ids `syn-<slot>`) and the filter counts.
///
/// # Privacy
/// Post-processing of the DP model and the released label proportions (see [`crate::filter`]).
pub(crate) fn finish_filtered(
    p: &PostInput,
    fc: &FilterConfig,
    mut cands: Vec<SlotText>,
    score: &Scorer,
    progress: &mut dyn SynthProgress,
) -> Result<SynthSummary> {
    cands.sort_by_key(|c| c.slot);
    let cands: Vec<(usize, &str, usize)> = cands
        .iter()
        .filter_map(|c| c.text.as_deref().map(|t| (c.slot, t, c.label)))
        .collect();
    let generated = cands.len() + p.by_length;
    // 1. Exact and near duplicates.
    let refs: Vec<&str> = cands.iter().map(|c| c.1).collect();
    let d = crate::filter::dedup(&refs, fc.near_dup_jaccard);
    let kept: Vec<&(usize, &str, usize)> = d.kept.iter().map(|&i| &cands[i]).collect();
    progress.message(&format!(
        "{} candidates: {} exact and {} near duplicates removed; scoring {} under every label's prefix",
        cands.len(),
        d.exact,
        d.near,
        kept.len()
    ));
    // 2. log p(text | prefix_l) for every label.
    let ts = Instant::now();
    progress.start(kept.len());
    let items: Vec<(usize, &str)> = kept.iter().map(|c| (c.0, c.1)).collect();
    let lls = score(&items, progress)?;
    progress.finish();
    let scoring_seconds = ts.elapsed().as_secs_f64();
    // 3. Re-label, drop, balance.
    let prompted: Vec<usize> = kept.iter().map(|c| c.2).collect();
    let sel = crate::filter::select(&lls, &prompted, p.props, Some(p.n), fc)?;
    let f = std::fs::File::create(p.out).map_err(|e| TrainError::file(p.out, e))?;
    let mut w = std::io::BufWriter::new(f);
    let mut written = 0usize;
    let mut conf_sum = 0.0;
    for (i, (slot, text, _)) in kept.iter().enumerate() {
        if let Some(l) = sel.label[i] {
            let rec = OutRecord {
                id: crate::shard::record_id(*slot),
                text,
                label: &p.labels[l],
                label_posterior: Some((sel.confidence[i] * 1e4).round() / 1e4),
            };
            serde_json::to_writer(&mut w, &rec)?;
            w.write_all(b"\n")?;
            written += 1;
            conf_sum += sel.confidence[i];
        }
    }
    w.flush()?;
    let mut prompted_count = vec![0usize; p.labels.len()];
    for &l in &prompted {
        prompted_count[l] += 1;
    }
    let counts = FilterCounts {
        model: if p.base_only {
            "base model (ε = 0 control)".into()
        } else {
            "DP model".into()
        },
        generated,
        removed_by_length: p.by_length,
        exact_duplicates: d.exact,
        near_duplicates: d.near,
        after_dedup: kept.len(),
        relabeled: sel.relabeled,
        dropped_low_confidence: sel.dropped_low_confidence,
        dropped_by_balance: sel.dropped_by_balance,
        kept: written,
        per_label: p
            .labels
            .iter()
            .enumerate()
            .map(|(l, name)| LabelFilterCounts {
                label: name.clone(),
                prompted: prompted_count[l],
                assigned: sel.per_label[l].0,
                target: sel.per_label[l].1,
                kept: sel.per_label[l].2,
            })
            .collect(),
        proportions: p.props.to_vec(),
        near_dup_jaccard: fc.near_dup_jaccard,
        min_confidence: fc.min_confidence,
        mean_confidence_kept: if written > 0 {
            conf_sum / written as f64
        } else {
            0.0
        },
        scoring_seconds,
    };
    let cp = filter_counts_path(p.out);
    std::fs::write(&cp, serde_json::to_string_pretty(&counts)?)
        .map_err(|e| TrainError::file(&cp, e))?;
    if written < p.n {
        progress.message(&format!(
            "kept {written} of {} records: too few candidates survived for some label's quota (see {})",
            p.n,
            cp.display()
        ));
    }
    Ok(SynthSummary {
        out: p.out.to_path_buf(),
        written,
        requested: p.n,
        per_label: counts
            .per_label
            .iter()
            .map(|c| (c.label.clone(), c.target, c.kept))
            .collect(),
        duplicates_removed: d.exact + d.near,
        filtered_by_length: p.by_length,
        generated_tokens: 0,
        tokens_per_second: 0.0,
        seconds: 0.0,
        filter: Some(counts),
    })
}
