//! Benchmarks for `dpsynth bench`: embedding throughput and a full evaluation.

use std::path::Path;
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

/// MiniLM sentences/s on `n` synthetic sentences of exactly `tokens` tokens (incl. [CLS]/[SEP]),
/// batch size 64, after one warm-up batch.
pub fn embedding_throughput(minilm: Option<&Path>, n: usize, tokens: usize) -> Result<BenchRow> {
    let dir =
        find_minilm_dir(minilm).ok_or_else(|| EvalError::MissingAsset("assets/minilm".into()))?;
    let m = MiniLm::load(&dir, &Device::Cpu)?;
    // token id 2023 = "this": a fixed 64-token sequence
    let seq: Vec<u32> = std::iter::once(101)
        .chain(std::iter::repeat_n(2023, tokens.saturating_sub(2)))
        .chain(std::iter::once(102))
        .collect();
    let batch: Vec<Vec<u32>> = vec![seq; 64];
    m.embed_ids(&batch)?;
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        m.embed_ids(&batch)?;
        done += batch.len();
    }
    Ok(BenchRow {
        name: format!("MiniLM embedding, {tokens} tokens, batch 64"),
        value: done as f64 / t.elapsed().as_secs_f64(),
        unit: "sentences/s".into(),
    })
}

/// Wall time of a full `evaluate` (classifiers from `cfg`), e.g. on Rotten Tomatoes with the
/// training split as the "synthetic" set. The embedding cache is disabled so embedding counts.
pub fn full_evaluation(cfg: &EvalConfig) -> Result<BenchRow> {
    let mut cfg = cfg.clone();
    cfg.cache_dir = None;
    cfg.out_dir = None;
    let t = Instant::now();
    evaluate(&cfg, &Progress::hidden())?;
    Ok(BenchRow {
        name: format!("full evaluate ({})", cfg.train.display()),
        value: t.elapsed().as_secs_f64(),
        unit: "s".into(),
    })
}

/// The rows `dpsynth bench` prints: embedding throughput, and a full evaluation when
/// `rotten_tomatoes_dir` holds `train.jsonl` and `test.jsonl`.
pub fn bench_rows(
    minilm: Option<&Path>,
    rotten_tomatoes_dir: Option<&Path>,
) -> Result<Vec<BenchRow>> {
    let mut rows = vec![embedding_throughput(minilm, 512, 64)?];
    if let Some(d) = rotten_tomatoes_dir {
        let (tr, te) = (d.join("train.jsonl"), d.join("test.jsonl"));
        if tr.is_file() && te.is_file() {
            let mut cfg = EvalConfig::new(tr.clone(), tr, te);
            cfg.minilm_dir = minilm.map(Path::to_path_buf);
            rows.push(full_evaluation(&cfg)?);
        }
    }
    Ok(rows)
}
