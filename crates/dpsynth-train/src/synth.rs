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

use std::collections::HashSet;
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
/// # Privacy
/// Post-processing of the DP adapter and the DP label histogram (Dwork & Roth 2014, Prop.
/// 2.1): no additional cost. The run's ledger must exist (it is written before the adapter),
/// and the base model and prompt template are public.
pub fn synthesize(cfg: &SynthConfig, progress: &mut dyn SynthProgress) -> Result<SynthSummary> {
    let t0 = Instant::now();
    let paths = RunPaths {
        dir: cfg.run.clone(),
    };
    if cfg.n == 0 {
        return Err(TrainError::Config("--n must be at least 1".into()));
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
    let mut seed_rng = match cfg.seed {
        Some(s) => {
            crate::rng::DpRng::new(crate::rng::SeedPolicy::Seeded { seed: s }, "synthesis", 0)
        }
        None => crate::rng::DpRng::new(crate::rng::SeedPolicy::Os, "synthesis", 0),
    };
    if let Some(fc) = &cfg.filter {
        return synthesize_filtered(
            cfg,
            fc,
            &info,
            &props,
            &quotas,
            &generator,
            &tok,
            &params,
            &prompts,
            &mut seed_rng,
            progress,
            t0,
        );
    }
    let f = std::fs::File::create(&cfg.out).map_err(|e| TrainError::file(&cfg.out, e))?;
    let mut w = std::io::BufWriter::new(f);
    let mut have = vec![0usize; quotas.len()];
    let mut seen: HashSet<String> = HashSet::new();
    let (mut dups, mut filtered, mut written, mut tokens) = (0usize, 0usize, 0usize, 0usize);
    let mut gen_secs = 0f64;
    progress.start(cfg.n);
    for round in 0..cfg.max_rounds.max(1) {
        let mut reqs = Vec::new();
        let mut req_label = Vec::new();
        for (li, (&q, &h)) in quotas.iter().zip(&have).enumerate() {
            let missing = q.saturating_sub(h);
            // Later rounds over-generate a little to absorb duplicates and filtered texts.
            let k = if round == 0 {
                missing
            } else {
                missing + missing.div_ceil(4)
            };
            for _ in 0..k {
                reqs.push(GenRequest {
                    prompt_ids: prompts[li].clone(),
                    seed: seed_rng.next_u64(),
                });
                req_label.push(li);
            }
        }
        if reqs.is_empty() {
            break;
        }
        let stats = generator.generate(reqs, &params, |o| {
            let li = req_label[o.index];
            if have[li] >= quotas[li] {
                return Ok(());
            }
            let text = tok.decode(&o.tokens)?.trim().to_string();
            let words = text.split_whitespace().count();
            if text.is_empty() || words < cfg.min_words || cfg.max_words.is_some_and(|m| words > m)
            {
                filtered += 1;
                return Ok(());
            }
            if !seen.insert(format!("{li}\u{0}{text}")) {
                dups += 1;
                return Ok(());
            }
            let rec = OutRecord {
                id: format!("syn-{written}"),
                text: &text,
                label: &info.labels[li],
                label_posterior: None,
            };
            serde_json::to_writer(&mut w, &rec)
                .map_err(|e| dpsynth_lm::LmError::Other(e.to_string()))?;
            w.write_all(b"\n")?;
            w.flush()?;
            have[li] += 1;
            written += 1;
            progress.written(written, 0.0);
            Ok(())
        })?;
        tokens += stats.new_tokens;
        gen_secs += stats.seconds;
        progress.written(written, tokens as f64 / gen_secs.max(1e-9));
    }
    w.flush()?;
    progress.finish();
    if written < cfg.n {
        progress.message(&format!(
            "wrote {written} of {} records: duplicates or the length filter removed the rest",
            cfg.n
        ));
    }
    Ok(SynthSummary {
        out: cfg.out.clone(),
        written,
        requested: cfg.n,
        per_label: info
            .labels
            .iter()
            .zip(quotas.iter().zip(&have))
            .map(|(l, (&q, &h))| (l.clone(), q, h))
            .collect(),
        duplicates_removed: dups,
        filtered_by_length: filtered,
        generated_tokens: tokens,
        tokens_per_second: tokens as f64 / gen_secs.max(1e-9),
        seconds: t0.elapsed().as_secs_f64(),
        filter: None,
    })
}

/// Sample `quotas` candidates per prompted label, remove duplicates, score, re-label, balance
/// and write `cfg.n` records plus the filter counts.
///
/// # Privacy
/// Post-processing of the DP model and the released label proportions (see [`crate::filter`]).
#[allow(clippy::too_many_arguments)]
fn synthesize_filtered(
    cfg: &SynthConfig,
    fc: &FilterConfig,
    info: &RunInfo,
    props: &[f64],
    quotas: &[usize],
    generator: &Generator,
    tok: &dpsynth_lm::Tokenizer,
    params: &SamplingParams,
    prompts: &[Vec<u32>],
    seed_rng: &mut crate::rng::DpRng,
    progress: &mut dyn SynthProgress,
    t0: Instant,
) -> Result<SynthSummary> {
    let eos = params.stop_tokens[0];
    let total: usize = quotas.iter().sum();
    // 1. Candidates (length filter only; duplicates are handled below, across labels), with the
    // generated tokens (what is scored) and, when the whole sequence ended with EOS within
    // the scoring length, its log-probability under its own label's prefix, computed while
    // sampling (so that pair is not scored again).
    let mut cands: Vec<(String, usize)> = Vec::with_capacity(total);
    let mut cand_tokens: Vec<(Vec<u32>, Option<(usize, f64)>)> = Vec::with_capacity(total);
    let mut have = vec![0usize; quotas.len()];
    let (mut by_length, mut tokens, mut gen_secs) = (0usize, 0usize, 0f64);
    progress.message(&format!(
        "sampling {total} candidates ({})",
        if cfg.base_only {
            "base model, ε = 0 control"
        } else {
            "DP model"
        }
    ));
    progress.start(total);
    for round in 0..cfg.max_rounds.max(1) {
        let mut reqs = Vec::new();
        let mut req_label = Vec::new();
        for (li, (&q, &h)) in quotas.iter().zip(&have).enumerate() {
            let missing = q.saturating_sub(h);
            let k = if round == 0 {
                missing
            } else {
                missing + missing.div_ceil(4)
            };
            for _ in 0..k {
                reqs.push(GenRequest {
                    prompt_ids: prompts[li].clone(),
                    seed: seed_rng.next_u64(),
                });
                req_label.push(li);
            }
        }
        if reqs.is_empty() {
            break;
        }
        let stats = generator.generate(reqs, params, |o| {
            let li = req_label[o.index];
            if have[li] >= quotas[li] {
                return Ok(());
            }
            let text = tok.decode(&o.tokens)?.trim().to_string();
            let words = text.split_whitespace().count();
            if text.is_empty() || words < cfg.min_words || cfg.max_words.is_some_and(|m| words > m)
            {
                by_length += 1;
                return Ok(());
            }
            cands.push((text, li));
            let mut ids = o.tokens;
            let known = (o.stopped && ids.len() <= info.max_tokens).then_some((li, o.logprob));
            ids.truncate(info.max_tokens);
            cand_tokens.push((ids, known));
            have[li] += 1;
            progress.written(cands.len(), 0.0);
            Ok(())
        })?;
        tokens += stats.new_tokens;
        gen_secs += stats.seconds;
        progress.written(cands.len(), tokens as f64 / gen_secs.max(1e-9));
    }
    progress.finish();
    let generated = cands.len() + by_length;
    // 2. Exact and near duplicates.
    let refs: Vec<&str> = cands.iter().map(|(t, _)| t.as_str()).collect();
    let d = crate::filter::dedup(&refs, fc.near_dup_jaccard);
    let kept: Vec<&(String, usize)> = d.kept.iter().map(|&i| &cands[i]).collect();
    progress.message(&format!(
        "{} candidates: {} exact and {} near duplicates removed; scoring {} under every label's prefix",
        cands.len(),
        d.exact,
        d.near,
        kept.len()
    ));
    // 3. log p(text | prefix_l) for every label.
    let ts = Instant::now();
    progress.start(kept.len());
    let texts: Vec<Vec<u32>> = d.kept.iter().map(|&i| cand_tokens[i].0.clone()).collect();
    let known: Vec<Option<(usize, f64)>> = d.kept.iter().map(|&i| cand_tokens[i].1).collect();
    let lls = crate::filter::score_candidates_with_known(
        generator,
        prompts,
        &texts,
        &known,
        eos,
        |done| progress.written(done, 0.0),
    )?;
    progress.finish();
    let scoring_seconds = ts.elapsed().as_secs_f64();
    // 4. Re-label, drop, balance.
    let prompted: Vec<usize> = kept.iter().map(|(_, l)| *l).collect();
    let sel = crate::filter::select(&lls, &prompted, props, Some(cfg.n), fc)?;
    let f = std::fs::File::create(&cfg.out).map_err(|e| TrainError::file(&cfg.out, e))?;
    let mut w = std::io::BufWriter::new(f);
    let mut written = 0usize;
    let mut conf_sum = 0.0;
    for (i, (text, _)) in kept.iter().enumerate() {
        if let Some(l) = sel.label[i] {
            let rec = OutRecord {
                id: format!("syn-{written}"),
                text,
                label: &info.labels[l],
                label_posterior: Some((sel.confidence[i] * 1e4).round() / 1e4),
            };
            serde_json::to_writer(&mut w, &rec)?;
            w.write_all(b"\n")?;
            written += 1;
            conf_sum += sel.confidence[i];
        }
    }
    w.flush()?;
    let mut prompted_count = vec![0usize; info.labels.len()];
    for &p in &prompted {
        prompted_count[p] += 1;
    }
    let counts = FilterCounts {
        model: if cfg.base_only {
            "base model (ε = 0 control)".into()
        } else {
            "DP model".into()
        },
        generated,
        removed_by_length: by_length,
        exact_duplicates: d.exact,
        near_duplicates: d.near,
        after_dedup: kept.len(),
        relabeled: sel.relabeled,
        dropped_low_confidence: sel.dropped_low_confidence,
        dropped_by_balance: sel.dropped_by_balance,
        kept: written,
        per_label: info
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
        proportions: props.to_vec(),
        near_dup_jaccard: fc.near_dup_jaccard,
        min_confidence: fc.min_confidence,
        mean_confidence_kept: if written > 0 {
            conf_sum / written as f64
        } else {
            0.0
        },
        scoring_seconds,
    };
    let cp = filter_counts_path(&cfg.out);
    std::fs::write(&cp, serde_json::to_string_pretty(&counts)?)
        .map_err(|e| TrainError::file(&cp, e))?;
    if written < cfg.n {
        progress.message(&format!(
            "kept {written} of {} records: too few candidates survived for some label's quota (see {})",
            cfg.n,
            cp.display()
        ));
    }
    Ok(SynthSummary {
        out: cfg.out.clone(),
        written,
        requested: cfg.n,
        per_label: counts
            .per_label
            .iter()
            .map(|c| (c.label.clone(), c.target, c.kept))
            .collect(),
        duplicates_removed: d.exact + d.near,
        filtered_by_length: by_length,
        generated_tokens: tokens,
        tokens_per_second: tokens as f64 / gen_secs.max(1e-9),
        seconds: t0.elapsed().as_secs_f64(),
        filter: Some(counts),
    })
}
