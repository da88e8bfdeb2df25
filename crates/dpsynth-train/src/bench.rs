//! Speed and memory of one DP-SGD step (`dpsynth bench` calls [`run_train_bench`]).
//!
//! The workload matches the Opacus + PEFT reference in `peer_numbers.md`: batches of exactly
//! 8 sequences × 128 tokens of SmolLM2-135M, next-token cross-entropy, LoRA r = 8 on q_proj
//! and v_proj. Modes: our DP step (per-example gradients → clip → noise → AdamW) and our
//! non-private step (one backward of the batch loss with shared parameters → AdamW), for
//! LoRA, prompt tuning and full fine-tuning.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Var};
use dpsynth_lm::{LlamaConfig, LlamaWeights, LoraConfig};
use serde::Serialize;

use crate::dp::PerExampleGrads;
use crate::frozen::{FrozenPrecision, PackedBase};
use crate::model::{
    batched_per_example_grads, Example, FullVars, Method, Params, TrainBatch, TrainModel,
    Trainables,
};
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::{DpRng, SeedPolicy};
use crate::Result;

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
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchRow {
    pub method: String,
    pub mode: String,
    pub trainable_parameters: usize,
    /// Physical micro-batch size (full fine-tuning always runs one example at a time).
    pub micro_batch: usize,
    /// Frozen base precision ("f32" or "bf16"; full fine-tuning: "f32").
    pub base_precision: String,
    pub median_s_per_step: f64,
    /// Median CPU time (user + system, all threads of the process) per step: less
    /// sensitive than wall time to other processes on a shared machine.
    pub median_cpu_s_per_step: Option<f64>,
    pub examples_per_s: f64,
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

/// Run the benchmark and return one row per (method, mode).
pub fn run_train_bench(opts: &TrainBenchOptions) -> Result<Vec<TrainBenchRow>> {
    if std::env::var("DPSYNTH_DEFAULT_MALLOC").is_err() {
        crate::ops::keep_freed_memory();
    }
    let dev = Device::Cpu;
    let load = || -> Result<LlamaWeights> {
        Ok(match &opts.model {
            Some(p) if p.exists() => dpsynth_lm::load_model(p, &dev)?.0,
            _ => LlamaWeights::random(&smollm2_135m_config(), &dev, 0)?,
        })
    };
    let v = load()?.config.vocab_size as u32;
    let examples: Vec<Example> = (0..opts.batch)
        .map(|b| Example {
            ids: (0..opts.seq_len)
                .map(|i| ((i as u64 * 7919 + b as u64 * 104729) % (v as u64 - 3)) as u32 + 3)
                .collect(),
            n_prefix: 0,
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
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
                return Err(crate::TrainError::Config(format!(
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
        for (dp, mb) in [true, false]
            .into_iter()
            .flat_map(|dp| mbs.iter().map(move |&mb| (dp, mb)))
        {
            if mb == 0 {
                return Err(crate::TrainError::Config(
                    "micro-batch size must be at least 1".into(),
                ));
            }
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
            let mut rng = DpRng::new(SeedPolicy::Os, "noise", 0);
            reset_peak_rss();
            let mut times = Vec::new();
            let mut cpu = Vec::new();
            for s in 0..=opts.steps {
                let t = Instant::now();
                let c0 = dpsynth_lm::bench::process_cpu_seconds();
                let model = match &packed {
                    Some(p) => TrainModel::with_packed(&w, p),
                    None => TrainModel::new(&w),
                };
                step_once(
                    &model,
                    &method,
                    &mut params,
                    &mut opt,
                    &refs,
                    mb,
                    dp,
                    &mut rng,
                )?;
                if s > 0 {
                    times.push(t.elapsed().as_secs_f64());
                    if let (Some(a), Some(b)) = (c0, dpsynth_lm::bench::process_cpu_seconds()) {
                        cpu.push(b - a);
                    }
                }
            }
            let med = median(times);
            rows.push(TrainBenchRow {
                method: m.clone(),
                mode: if dp {
                    "DP-SGD".into()
                } else {
                    "non-private".into()
                },
                trainable_parameters: n,
                micro_batch: mb,
                base_precision: if method == Method::Full {
                    "f32".into()
                } else {
                    opts.base_precision.name().into()
                },
                median_s_per_step: med,
                median_cpu_s_per_step: (!cpu.is_empty()).then(|| median(cpu)),
                examples_per_s: opts.batch as f64 / med,
                peak_rss_gb: peak_rss_gb(),
            });
        }
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn step_once(
    model: &TrainModel,
    method: &Method,
    params: &mut Params,
    opt: &mut AdamW,
    refs: &[&Example],
    micro_batch: usize,
    dp: bool,
    rng: &mut DpRng,
) -> Result<()> {
    let w = model.base;
    let dev = w.device();
    let eb = refs.len() as f64;
    if dp {
        let shapes: Vec<Vec<usize>> = params.tensors.iter().map(|t| t.dims().to_vec()).collect();
        let mut acc = crate::dp::ClippedSum::zeros(&shapes, 1.0, dev)?;
        if matches!(method, Method::Full) {
            let fv = FullVars::new(w, params)?;
            for e in refs {
                let (g, _) = fv.unit_grad(&[*e])?;
                acc.accumulate(PerExampleGrads::single(g)?.clip_and_sum(1.0)?.0)?;
            }
        } else {
            for chunk in refs.chunks(micro_batch) {
                let batch = TrainBatch::new(chunk, method.virtual_tokens(), dev)?;
                let (g, _) = batched_per_example_grads(model, method, params, &batch)?;
                acc.accumulate(PerExampleGrads::new(g)?.clip_and_sum(1.0)?.0)?;
            }
        }
        let noisy = acc.add_noise(1.0, eb, rng)?;
        opt.step(params, noisy)?;
        return Ok(());
    }
    // Non-private: one backward of the batch loss with shared parameters.
    let vars: Vec<Var> = params
        .tensors
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<_>>()?;
    let mut sum: Option<Vec<candle_core::Tensor>> = None;
    for chunk in refs.chunks(micro_batch) {
        let b = chunk.len();
        let batch = TrainBatch::new(chunk, method.virtual_tokens(), dev)?;
        let grads = match method {
            Method::Full => {
                let vp = Params {
                    names: params.names.clone(),
                    tensors: vars.iter().map(|v| v.as_tensor().clone()).collect(),
                };
                let fw = vp.to_full_weights(w)?;
                let model = TrainModel::new(&fw);
                let (loss, _) = model.loss(&batch, &Trainables::Full(&fw))?;
                loss.backward()?
            }
            Method::Lora(c) => {
                let mut ab = BTreeMap::new();
                for (i, n) in params.names.iter().enumerate().step_by(2) {
                    let parts: Vec<&str> = n.split('.').collect();
                    let l: usize = parts[1].parse().unwrap_or(0);
                    let a = vars[i].as_tensor().unsqueeze(0)?.broadcast_as((
                        b,
                        vars[i].dims()[0],
                        vars[i].dims()[1],
                    ))?;
                    let bb = vars[i + 1].as_tensor().unsqueeze(0)?.broadcast_as((
                        b,
                        vars[i + 1].dims()[0],
                        vars[i + 1].dims()[1],
                    ))?;
                    ab.insert((l, parts[2].to_string()), (a, bb));
                }
                let (loss, _) = model.loss(
                    &batch,
                    &Trainables::Lora {
                        ab,
                        scaling: c.scaling(),
                    },
                )?;
                loss.backward()?
            }
            Method::Prompt { .. } => {
                let p = vars[0].as_tensor().unsqueeze(0)?.broadcast_as((
                    b,
                    vars[0].dims()[0],
                    vars[0].dims()[1],
                ))?;
                let (loss, _) = model.loss(&batch, &Trainables::Prompt(p))?;
                loss.backward()?
            }
        };
        let g: Vec<candle_core::Tensor> = vars
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| crate::TrainError::Other("missing grad".into()))
            })
            .collect::<Result<_>>()?;
        drop(grads);
        sum = Some(match sum {
            None => g,
            Some(s) => s
                .iter()
                .zip(&g)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?,
        });
    }
    let g = sum.ok_or_else(|| crate::TrainError::Other("empty batch".into()))?;
    let peg = PerExampleGrads::single(g)?;
    let np = peg.sum_without_privacy()?.into_gradient(eb)?;
    opt.step(params, np)?;
    Ok(())
}

/// The table as text.
pub fn format_table(rows: &[TrainBenchRow]) -> String {
    let mut s = String::from(
        "| method | mode | base | micro-batch | trainable params | median s/step | CPU s/step | examples/s | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {} |\n",
            r.method,
            r.mode,
            r.base_precision,
            r.micro_batch,
            r.trainable_parameters,
            r.median_s_per_step,
            r.median_cpu_s_per_step
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.examples_per_s,
            r.peak_rss_gb
                .map(|g| format!("{g:.2}"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    s
}
