//! Benchmarks for `dpsynth bench`: embedding throughput and a full evaluation.
//!
//! Thread count: candle sizes its thread pool once per process from `RAYON_NUM_THREADS`
//! (default: all cores), so compare 1 and 2 threads by running the benchmark twice, e.g.
//! `RAYON_NUM_THREADS=1 dpsynth bench --only embedding`. Each row names the thread count and
//! also reports CPU seconds (user + system of this process), which stay meaningful on a
//! shared machine where wall time does not.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::embed::{find_minilm_dir, MiniLm};
use crate::{evaluate, EvalConfig, EvalError, Progress, Result};

/// One benchmark measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRow {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere). The kernel reports it in USER_HZ = 100 ticks per second.
pub fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name: state is field 3, utime 14, stime 15
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Threads candle's CPU kernels use in this process.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// MiniLM sentences/s on `n` synthetic sentences of exactly `tokens` tokens (incl. [CLS]/[SEP]),
/// in batches of `batch`, after one warm-up batch. Returns rows for wall-clock and CPU-time
/// throughput.
pub fn embedding_throughput(
    minilm: Option<&Path>,
    n: usize,
    tokens: usize,
    batch: usize,
) -> Result<Vec<BenchRow>> {
    let dir =
        find_minilm_dir(minilm).ok_or_else(|| EvalError::MissingAsset("assets/minilm".into()))?;
    let m = MiniLm::load(&dir, &Device::Cpu)?;
    // token id 2023 = "this": a fixed sequence of `tokens` ids
    let seq: Vec<u32> = std::iter::once(101)
        .chain(std::iter::repeat_n(2023, tokens.saturating_sub(2)))
        .chain(std::iter::once(102))
        .collect();
    let ids: Vec<Vec<u32>> = vec![seq; batch.max(1)];
    m.embed_ids(&ids)?;
    let cpu0 = process_cpu_seconds();
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        m.embed_ids(&ids)?;
        done += ids.len();
    }
    let wall = t.elapsed().as_secs_f64();
    let name = format!(
        "MiniLM embedding, {tokens} tokens, batch {}, {} thread(s)",
        ids.len(),
        threads()
    );
    let mut rows = vec![BenchRow {
        name: name.clone(),
        value: done as f64 / wall,
        unit: "sentences/s".into(),
    }];
    if let (Some(a), Some(b)) = (cpu0, process_cpu_seconds()) {
        rows.push(BenchRow {
            name,
            value: done as f64 / (b - a).max(1e-9),
            unit: "sentences/CPU-s".into(),
        });
    }
    Ok(rows)
}

/// Wall and CPU time of a full `evaluate` (classifiers from `cfg`), e.g. on Rotten Tomatoes
/// with the training split as the "synthetic" set. The embedding cache is disabled so
/// embedding counts.
pub fn full_evaluation(cfg: &EvalConfig) -> Result<Vec<BenchRow>> {
    let mut cfg = cfg.clone();
    cfg.cache_dir = None;
    cfg.out_dir = None;
    let cpu0 = process_cpu_seconds();
    let t = Instant::now();
    evaluate(&cfg, &Progress::hidden())?;
    let name = format!(
        "full evaluate ({}, {} thread(s))",
        cfg.train.display(),
        threads()
    );
    let mut rows = vec![BenchRow {
        name: name.clone(),
        value: t.elapsed().as_secs_f64(),
        unit: "s wall".into(),
    }];
    if let (Some(a), Some(b)) = (cpu0, process_cpu_seconds()) {
        rows.push(BenchRow {
            name,
            value: b - a,
            unit: "s CPU".into(),
        });
    }
    Ok(rows)
}

/// Prepare the `rotten-tomatoes` recipe's stratified 80/20 split (seed 0) into `dir`
/// (reused when `dir/train.jsonl` and `dir/test.jsonl` exist). Needs the recipe's assets.
pub fn rotten_tomatoes_split(dir: &Path) -> Result<PathBuf> {
    if !(dir.join("train.jsonl").is_file() && dir.join("test.jsonl").is_file()) {
        dpsynth_data::prepare(
            &dpsynth_data::Source::Recipe("rotten-tomatoes".into()),
            &dpsynth_data::PrepareOptions::new(dir),
        )
        .map_err(|e| EvalError::Invalid(format!("preparing rotten-tomatoes: {e}")))?;
    }
    Ok(dir.to_path_buf())
}

/// The rows `dpsynth bench` prints: embedding throughput at 64 tokens, batch 32, and a full
/// evaluation when `rotten_tomatoes_dir` holds `train.jsonl` and `test.jsonl` (see
/// [`rotten_tomatoes_split`]; the default evaluation: both classifiers, synthetic = the real
/// training split, non-private ceiling, MAUVE, no DP baseline).
pub fn bench_rows(
    minilm: Option<&Path>,
    rotten_tomatoes_dir: Option<&Path>,
) -> Result<Vec<BenchRow>> {
    let mut rows = embedding_throughput(minilm, 512, 64, 32)?;
    if let Some(d) = rotten_tomatoes_dir {
        let (tr, te) = (d.join("train.jsonl"), d.join("test.jsonl"));
        if tr.is_file() && te.is_file() {
            let mut cfg = EvalConfig::new(tr.clone(), tr, te);
            cfg.minilm_dir = minilm.map(Path::to_path_buf);
            rows.extend(full_evaluation(&cfg)?);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_and_grows() {
        let Some(a) = process_cpu_seconds() else {
            eprintln!("SKIP: no /proc/self/stat");
            return;
        };
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = process_cpu_seconds().unwrap();
        assert!(b >= a && b - a > 0.01, "{a} → {b}");
    }
}
