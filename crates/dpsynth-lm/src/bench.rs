//! Generation benchmark: tokens/s and peak memory of [`Generator`] at several batch sizes.
//! `dpsynth bench` calls [`generation_bench`] and prints [`format_table`].

use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use crate::generate::{GenRequest, Generator, GeneratorOptions, SamplingParams, WeightFormat};
use crate::Result;

/// One line of the benchmark table.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub weights: WeightFormat,
    pub batch_size: usize,
    pub sequences: usize,
    pub new_tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    /// CPU time (user + system) of the whole process during the run, seconds. With a shared
    /// CPU, `new_tokens / cpu_seconds` is a load-independent measure of work per token.
    pub cpu_seconds: Option<f64>,
    /// Peak resident memory of the process so far (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Threads of the rayon pool (set with `RAYON_NUM_THREADS`).
    pub threads: usize,
    /// Bytes of linear weights (projections and lm head) the generator streams per decode step.
    pub weight_bytes: usize,
}

/// A `/proc/self/status` field in bytes (`VmHWM` = peak RSS, `VmRSS` = current RSS). Linux only.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`. Linux only.
pub fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).
    Some((ut + st) / 100.0)
}

/// Prompts of different lengths (so batches mix prompt lengths, as in synthesis).
pub const BENCH_PROMPTS: [&str; 4] = [
    "Write a short movie review.",
    "Label: positive\nReview:",
    "Here is a news article about the economy and the central bank's latest decision on interest rates:",
    "<|im_start|>user\nWrite one sentence about a film you liked.<|im_end|>\n<|im_start|>assistant\n",
];

/// Options of [`generation_bench`].
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub batch_sizes: Vec<usize>,
    /// New tokens per sequence (stop tokens are ignored so every sequence does the same work).
    pub new_tokens: usize,
    /// Sequences per batch size = `rounds * batch_size`.
    pub rounds: usize,
    pub weights: Vec<WeightFormat>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            batch_sizes: vec![1, 8, 32],
            new_tokens: 64,
            rounds: 1,
            // The default format first (peak RSS is cumulative), then f32 for comparison.
            weights: if WeightFormat::default() == WeightFormat::F32 {
                vec![WeightFormat::F32, WeightFormat::Q8_0]
            } else {
                vec![WeightFormat::default(), WeightFormat::F32]
            },
        }
    }
}

/// Loads the model at `model_path`, then for each weight format and batch size samples
/// `rounds * batch` sequences of `new_tokens` tokens (temperature 1, top-p 0.95, as in
/// synthesis) after a short warm-up, and reports generated tokens per second.
pub fn generation_bench(model_path: &Path, opts: &BenchOptions) -> Result<Vec<BenchRow>> {
    let dev = Device::Cpu;
    let (weights, tok) = crate::load_model(model_path, &dev)?;
    let prompts: Vec<Vec<u32>> = BENCH_PROMPTS
        .iter()
        .map(|p| tok.encode(p, false))
        .collect::<Result<_>>()?;
    let params = SamplingParams {
        temperature: 1.0,
        top_k: None,
        top_p: Some(0.95),
        max_new_tokens: opts.new_tokens,
        stop_tokens: Vec::new(),
    };
    let mut rows = Vec::new();
    for &fmt in &opts.weights {
        for &bs in &opts.batch_sizes {
            let g = Generator::new(
                &weights,
                None,
                GeneratorOptions {
                    batch_size: bs,
                    weights: fmt,
                },
                &dev,
            )?;
            let reqs = |n: usize, seed: u64| -> Vec<GenRequest> {
                (0..n)
                    .map(|i| GenRequest {
                        prompt_ids: prompts[i % prompts.len()].clone(),
                        seed: seed + i as u64,
                    })
                    .collect()
            };
            // Warm-up: a few steps so thread pools and allocations are in place.
            let warm = SamplingParams {
                max_new_tokens: 4,
                ..params.clone()
            };
            g.generate(reqs(bs, 0), &warm, |_| Ok(()))?;
            let n = opts.rounds.max(1) * bs;
            let t0 = Instant::now();
            let c0 = process_cpu_seconds();
            let stats = g.generate(reqs(n, 1_000), &params, |_| Ok(()))?;
            let secs = t0.elapsed().as_secs_f64();
            rows.push(BenchRow {
                weights: fmt,
                batch_size: bs,
                sequences: n,
                new_tokens: stats.new_tokens,
                seconds: secs,
                tokens_per_second: stats.new_tokens as f64 / secs,
                cpu_seconds: c0.zip(process_cpu_seconds()).map(|(a, b)| b - a),
                peak_rss_bytes: proc_status_bytes("VmHWM:"),
                threads: rayon::current_num_threads(),
                weight_bytes: g.weight_bytes(),
            });
        }
    }
    Ok(rows)
}

/// The rows as a plain-text table.
pub fn format_table(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "weights  threads  batch  sequences  new tokens  seconds  tokens/s  CPU s  tokens/CPU-s  peak RSS  weights/step\n",
    );
    for r in rows {
        let rss = r
            .peak_rss_bytes
            .map(|b| format!("{:.2} GB", b as f64 / 1e9))
            .unwrap_or_else(|| "n/a".into());
        s.push_str(&format!(
            "{:<7}  {:>7}  {:>5}  {:>9}  {:>10}  {:>7.2}  {:>8.1}  {:>5}  {:>12}  {:>8}  {:.0} MB\n",
            r.weights.to_string(),
            r.threads,
            r.batch_size,
            r.sequences,
            r.new_tokens,
            r.seconds,
            r.tokens_per_second,
            r.cpu_seconds.map(|c| format!("{c:.1}")).unwrap_or_default(),
            r.cpu_seconds
                .map(|c| format!("{:.1}", r.new_tokens as f64 / c.max(1e-9)))
                .unwrap_or_default(),
            rss,
            r.weight_bytes as f64 / 1e6
        ));
    }
    s
}
