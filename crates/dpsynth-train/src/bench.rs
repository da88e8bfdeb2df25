//! Speed and memory of one DP-SGD step (`dpsynth bench` calls [`run_train_bench`]).
//!
//! Two workloads:
//! - `8 × 128` matches the Opacus + PEFT reference in `peer_numbers.md`: batches of exactly
//!   8 sequences × 128 tokens of SmolLM2-135M, next-token cross-entropy, LoRA r = 8 on q_proj
//!   and v_proj.
//! - `rotten-tomatoes` (option `real_data`): Poisson batches (expected size
//!   `rt_expected_batch`, the quick preset's 32) drawn from the Rotten Tomatoes records,
//!   tokenized as `dpsynth train` does (default template, `rt_max_tokens` = 48 text tokens),
//!   so the step pays for the real length distribution. Reports examples/s and real
//!   tokens/s.
//!
//! Modes: our DP step and our non-private step, for LoRA, prompt tuning and full
//! fine-tuning. Both are the training loop's own step ([`crate::train::logical_step`]: the
//! micro-batch planning, the per-example gradients → clip → sum → noise → AdamW, and for
//! `--no-dp` one backward of the summed loss with shared parameters → AdamW), not a copy.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use dpsynth_lm::{LlamaConfig, LlamaWeights, LoraConfig};
use serde::Serialize;

use crate::frozen::{FrozenPrecision, PackedBase};
use crate::model::{Example, Method, Params, TrainModel};
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::{DpRng, SeedPolicy};
use crate::train::{PreparedData, TrainConfig};
use crate::{Result, TrainError};

/// Bench settings.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// GGUF model; when absent or missing, a random model of SmolLM2-135M's shape.
    pub model: Option<PathBuf>,
    pub batch: usize,
    pub seq_len: usize,
    /// Measured steps per mode (after one warm-up step).
    pub steps: usize,
    /// Methods to run: any of "lora", "prompt", "full".
    pub methods: Vec<String>,
    /// Physical micro-batch sizes to run each logical batch of `batch` examples in (one row
    /// per size; the gradient of the logical batch is the same, memory is lower).
    pub micro_batches: Vec<usize>,
    /// Precision of the frozen base in LoRA and prompt tuning (full fine-tuning: f32).
    pub base_precision: FrozenPrecision,
    /// Also run the Rotten Tomatoes workload (needs the GGUF for its tokenizer).
    pub real_data: bool,
    /// Skip the fixed `batch × seq_len` workload.
    pub skip_fixed: bool,
    /// Prepared JSONL (`dpsynth data prepare rotten-tomatoes`' train.jsonl); `None`: the
    /// `rotten-tomatoes` recipe over the assets directory (all records).
    pub rt_data: Option<PathBuf>,
    /// Expected logical batch of the Rotten Tomatoes workload.
    pub rt_expected_batch: usize,
    /// Text tokens kept per record in the Rotten Tomatoes workload.
    pub rt_max_tokens: usize,
}

impl Default for TrainBenchOptions {
    fn default() -> Self {
        Self {
            model: Some(PathBuf::from(
                "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            )),
            batch: 8,
            seq_len: 128,
            steps: 3,
            methods: vec!["lora".into(), "prompt".into(), "full".into()],
            micro_batches: vec![8],
            base_precision: FrozenPrecision::machine_default(),
            real_data: false,
            skip_fixed: false,
            rt_data: None,
            rt_expected_batch: 32,
            rt_max_tokens: 48,
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchRow {
    pub method: String,
    pub mode: String,
    /// `8 × 128` or `rotten-tomatoes (E[batch] 32)`.
    pub workload: String,
    pub trainable_parameters: usize,
    /// Physical micro-batch size (full fine-tuning always runs one example at a time); with
    /// shorter examples a micro-batch holds more of them (same padded-token budget).
    pub micro_batch: usize,
    /// Frozen base precision ("f32" or "bf16"; full fine-tuning: "f32").
    pub base_precision: String,
    /// Rayon threads (`RAYON_NUM_THREADS`).
    pub threads: usize,
    pub median_s_per_step: f64,
    /// Median CPU time (user + system, all threads of the process) per step: less
    /// sensitive than wall time to other processes on a shared machine.
    pub median_cpu_s_per_step: Option<f64>,
    /// Mean examples per measured step.
    pub examples_per_step: f64,
    /// Examples over the measured steps / their wall time.
    pub examples_per_s: f64,
    /// Real (unpadded) tokens over the measured steps / their wall time.
    pub tokens_per_s: f64,
    /// Peak resident memory during this mode (VmHWM after resetting it), GB.
    pub peak_rss_gb: Option<f64>,
}

/// The SmolLM2-135M shape (for a random stand-in when the GGUF is absent).
pub fn smollm2_135m_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        // The plain llama block (no family extras).
        ..LlamaConfig::tiny()
    }
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_gb() -> Option<f64> {
    rss_gb("VmHWM:")
}

fn rss_gb(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0 / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One workload: its data (one unit per example) and how each step samples it.
struct Workload {
    name: String,
    data: PreparedData,
    /// `None`: every step takes all units (fixed batch); `Some(q)`: Poisson rate q.
    q: Option<f64>,
    expected_batch: usize,
}

fn single_units(examples: Vec<Example>) -> PreparedData {
    let n = examples.len();
    PreparedData {
        examples,
        units: (0..n).map(|i| vec![i]).collect(),
        labels: Vec::new(),
        unit_labels: vec![Vec::new(); n],
        records: n,
    }
}

/// The Rotten Tomatoes workload, tokenized as `dpsynth train` tokenizes it.
fn rotten_tomatoes(opts: &TrainBenchOptions, tok: &dpsynth_lm::Tokenizer) -> Result<Workload> {
    let records = match &opts.rt_data {
        Some(p) => dpsynth_data::read_jsonl(p).map_err(|e| TrainError::Data(e.to_string()))?,
        None => {
            let dir =
                dpsynth_data::recipes::assets_dir().map_err(|e| TrainError::Data(e.to_string()))?;
            dpsynth_data::recipes::load_recipe("rotten-tomatoes", &dir)
                .map_err(|e| TrainError::Data(format!("rotten-tomatoes recipe: {e}")))?
                .0
        }
    };
    let mut cfg = TrainConfig::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
    cfg.max_tokens = opts.rt_max_tokens;
    let data = crate::train::prepare_data(&records, tok, &cfg)?;
    let n = data.units.len();
    let lens: Vec<usize> = data.examples.iter().map(|e| e.ids.len()).collect();
    eprintln!(
        "rotten-tomatoes: {n} records, {:.1} tokens per example on average (prefix + text + EOS; max {})",
        lens.iter().sum::<usize>() as f64 / n.max(1) as f64,
        lens.iter().max().unwrap_or(&0)
    );
    Ok(Workload {
        name: format!("rotten-tomatoes (E[batch] {})", opts.rt_expected_batch),
        data,
        q: Some((opts.rt_expected_batch as f64 / n.max(1) as f64).min(1.0)),
        expected_batch: opts.rt_expected_batch,
    })
}

/// Run the benchmark and return one row per (workload, method, mode, micro-batch).
pub fn run_train_bench(opts: &TrainBenchOptions) -> Result<Vec<TrainBenchRow>> {
    let dev = Device::Cpu;
    let gguf = opts.model.as_ref().filter(|p| p.exists());
    let load = || -> Result<LlamaWeights> {
        Ok(match gguf {
            Some(p) => dpsynth_lm::load_model(p, &dev)?.0,
            None => LlamaWeights::random(&smollm2_135m_config(), &dev, 0)?,
        })
    };
    let v = load()?.config.vocab_size as u32;
    let mut workloads = Vec::new();
    if !opts.skip_fixed {
        let examples: Vec<Example> = (0..opts.batch)
            .map(|b| Example {
                ids: (0..opts.seq_len)
                    .map(|i| ((i as u64 * 7919 + b as u64 * 104729) % (v as u64 - 3)) as u32 + 3)
                    .collect(),
                n_prefix: 0,
            })
            .collect();
        workloads.push(Workload {
            name: format!("{} × {}", opts.batch, opts.seq_len),
            data: single_units(examples),
            q: None,
            expected_batch: opts.batch,
        });
    }
    if opts.real_data {
        let Some(p) = gguf else {
            return Err(TrainError::Config(
                "the rotten-tomatoes bench needs the GGUF model (its tokenizer); set DPSYNTH_MODEL"
                    .into(),
            ));
        };
        let (_, tok) = dpsynth_lm::load_model(p, &dev)?;
        workloads.push(rotten_tomatoes(opts, &tok)?);
    }
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for m in &opts.methods {
        let method = match m.as_str() {
            "lora" => Method::Lora(LoraConfig {
                rank: 8,
                alpha: 16.0,
                targets: vec!["q_proj".into(), "v_proj".into()],
            }),
            "prompt" => Method::Prompt { virtual_tokens: 20 },
            "full" => Method::Full,
            other => {
                return Err(TrainError::Config(format!(
                    "unknown bench method `{other}` (lora, prompt, full)"
                )))
            }
        };
        // The model as `dpsynth train` holds it: f32 for full fine-tuning; with a bf16
        // base, the packed copy plus embeddings and norms (f32 linears released).
        let w = load()?;
        eprintln!(
            "{m}: model loaded, RSS {:.2} GB",
            rss_gb("VmRSS:").unwrap_or(0.0)
        );
        let packed = match (opts.base_precision, &method) {
            (FrozenPrecision::Bf16, Method::Lora(_) | Method::Prompt { .. }) => {
                Some(PackedBase::new(&w)?)
            }
            _ => None,
        };
        let w = match &packed {
            Some(p) => {
                let slim = crate::frozen::release_frozen_f32(&w)?;
                drop(w);
                eprintln!(
                    "{m}: bf16 base packed ({:.2} GB), f32 linears released, RSS {:.2} GB",
                    p.bytes() as f64 / 1e9,
                    rss_gb("VmRSS:").unwrap_or(0.0)
                );
                slim
            }
            None => w,
        };
        let mbs: Vec<usize> = if method == Method::Full {
            vec![1]
        } else {
            opts.micro_batches.clone()
        };
        for wl in &workloads {
            for (dp, mb) in [true, false]
                .into_iter()
                .flat_map(|dp| mbs.iter().map(move |&mb| (dp, mb)))
            {
                if mb == 0 {
                    return Err(TrainError::Config(
                        "micro-batch size must be at least 1".into(),
                    ));
                }
                let mut cfg = TrainConfig::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
                cfg.method = method.clone();
                cfg.physical_batch = mb;
                cfg.expected_batch = wl.expected_batch;
                cfg.clip_norm = 1.0;
                cfg.no_dp = !dp;
                let mut params = Params::init(&method, &w, 0)?;
                let n = params.numel();
                let mut opt = AdamW::new(
                    AdamWConfig {
                        lr: 1e-4,
                        beta1: 0.9,
                        beta2: 0.999,
                        eps: 1e-8,
                        weight_decay: 0.0,
                        warmup_steps: 0,
                        total_steps: 0,
                        schedule: Default::default(),
                    },
                    &params,
                )?;
                let mut noise = DpRng::new(SeedPolicy::Os, "noise", 0);
                let model = match &packed {
                    Some(p) => TrainModel::with_packed(&w, p),
                    None => TrainModel::new(&w),
                };
                reset_peak_rss();
                let (mut times, mut cpu) = (Vec::new(), Vec::new());
                let (mut ex_total, mut tok_total) = (0usize, 0usize);
                for s in 0..=opts.steps {
                    // The same batches for both modes (seeded: this is a benchmark).
                    let sampled: Vec<usize> = match wl.q {
                        None => (0..wl.data.units.len()).collect(),
                        Some(q) => DpRng::new(SeedPolicy::Seeded { seed: 7 }, "sampling", s as u64)
                            .poisson_sample(wl.data.units.len(), q),
                    };
                    let t = Instant::now();
                    let c0 = dpsynth_lm::bench::process_cpu_seconds();
                    let (_, n_ex, _) = crate::train::logical_step(
                        &model,
                        &cfg,
                        Some(1.0),
                        &mut params,
                        &mut opt,
                        &wl.data,
                        &sampled,
                        &mut noise,
                    )?;
                    if s > 0 {
                        times.push(t.elapsed().as_secs_f64());
                        if let (Some(a), Some(b)) = (c0, dpsynth_lm::bench::process_cpu_seconds()) {
                            cpu.push(b - a);
                        }
                        ex_total += n_ex;
                        tok_total += sampled
                            .iter()
                            .flat_map(|&u| &wl.data.units[u])
                            .map(|&i| wl.data.examples[i].ids.len())
                            .sum::<usize>();
                    }
                }
                let wall: f64 = times.iter().sum();
                rows.push(TrainBenchRow {
                    method: m.clone(),
                    mode: if dp {
                        "DP-SGD".into()
                    } else {
                        "non-private".into()
                    },
                    workload: wl.name.clone(),
                    trainable_parameters: n,
                    micro_batch: mb,
                    base_precision: if method == Method::Full {
                        "f32".into()
                    } else {
                        opts.base_precision.name().into()
                    },
                    threads,
                    median_s_per_step: median(times.clone()),
                    median_cpu_s_per_step: (!cpu.is_empty()).then(|| median(cpu)),
                    examples_per_step: ex_total as f64 / times.len().max(1) as f64,
                    examples_per_s: ex_total as f64 / wall.max(1e-9),
                    tokens_per_s: tok_total as f64 / wall.max(1e-9),
                    peak_rss_gb: peak_rss_gb(),
                });
            }
        }
    }
    Ok(rows)
}

/// The table as text.
pub fn format_table(rows: &[TrainBenchRow]) -> String {
    let mut s = String::from(
        "| workload | method | mode | base | micro-batch | threads | trainable params | median s/step | CPU s/step | examples/step | examples/s | real tokens/s | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {:.2} | {:.0} | {} |\n",
            r.workload,
            r.method,
            r.mode,
            r.base_precision,
            r.micro_batch,
            r.threads,
            r.trainable_parameters,
            r.median_s_per_step,
            r.median_cpu_s_per_step
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.examples_per_step,
            r.examples_per_s,
            r.tokens_per_s,
            r.peak_rss_gb
                .map(|g| format!("{g:.2}"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    s
}
