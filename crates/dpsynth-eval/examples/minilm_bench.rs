//! MiniLM embedding throughput: the engine's encoder (packed bf16 kernels, no padding) against
//! candle-transformers' f32 `BertModel` (the implementation `dpsynth-eval` used before), on the
//! same batches, plus the cosine between the two.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p dpsynth-eval --example minilm_bench [-- N TOKENS BATCH]`
//! (defaults 256 sentences of 64 tokens in batches of 32). Throughput in sentences per CPU
//! second of this process (meaningful on a shared machine) and per wall second.
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use dpsynth_eval::bench::process_cpu_seconds;
use dpsynth_eval::embed::{find_minilm_dir, MiniLm};

/// The pre-kernel implementation: candle's BertModel (f32), mean pooling, L2 norm.
fn candle_embed(model: &BertModel, batch: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
    let dev = Device::Cpu;
    let b = batch.len();
    let len = batch.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = vec![0u32; b * len];
    let mut mask = vec![0u32; b * len];
    for (i, seq) in batch.iter().enumerate() {
        ids[i * len..i * len + seq.len()].copy_from_slice(seq);
        mask[i * len..i * len + seq.len()].fill(1);
    }
    let ids = Tensor::from_vec(ids, (b, len), &dev)?;
    let mask = Tensor::from_vec(mask, (b, len), &dev)?;
    let hidden = model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
    let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let mean = hidden
        .broadcast_mul(&maskf)?
        .sum(1)?
        .broadcast_div(&maskf.sum(1)?.clamp(1e-9, f64::INFINITY)?)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    mean.broadcast_div(&norm)?.to_vec2::<f32>()
}

fn measure(n: usize, mut f: impl FnMut() -> usize) -> (f64, f64) {
    f(); // warm-up
    let c0 = process_cpu_seconds().unwrap_or(0.0);
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        done += f();
    }
    let cpu = process_cpu_seconds().unwrap_or(0.0) - c0;
    (
        done as f64 / cpu.max(1e-9),
        done as f64 / t.elapsed().as_secs_f64(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The binary's allocator policy (see `keep_freed_memory`), unless DPSYNTH_DEFAULT_MALLOC.
    if std::env::var_os("DPSYNTH_DEFAULT_MALLOC").is_none() {
        dpsynth_kernels::keep_freed_memory();
    }
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("N TOKENS BATCH"))
        .collect();
    let (n, tokens, batch) = (
        a.first().copied().unwrap_or(256),
        a.get(1).copied().unwrap_or(64),
        a.get(2).copied().unwrap_or(32),
    );
    let dir = find_minilm_dir(None).ok_or("assets/minilm not found (set DPSYNTH_ASSETS)")?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("CPU: {}", dpsynth_kernels::cpu_model());
    println!("kernel path: {}", dpsynth_kernels::kernel_description());
    println!(
        "threads: {}  load average: {}",
        rayon::current_num_threads(),
        load.trim()
    );
    let engine = MiniLm::load(&dir, &Device::Cpu)?;
    let cfg: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    // SAFETY: read-only memory map of the asset, not modified while loaded.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )?
    };
    let reference = BertModel::load(vb, &cfg)?;
    // Varied token ids (a slice of the vocabulary), [CLS] ... [SEP].
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|s| {
            std::iter::once(101)
                .chain(
                    (0..tokens.saturating_sub(2))
                        .map(|t| 2000 + ((s * 131 + t * 17) % 5000) as u32),
                )
                .chain(std::iter::once(102))
                .collect()
        })
        .collect();
    let e_new = engine.embed_ids(&ids)?;
    let e_old = candle_embed(&reference, &ids)?;
    let min_cos = e_new
        .iter()
        .zip(&e_old)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
        .fold(f32::INFINITY, f32::min);
    println!("min cosine engine vs candle f32 over the batch: {min_cos:.6}");
    let (old_cpu, old_wall) = measure(n, || {
        candle_embed(&reference, &ids).map(|v| v.len()).unwrap()
    });
    let (new_cpu, new_wall) = measure(n, || engine.embed_ids(&ids).map(|v| v.len()).unwrap());
    println!("{tokens} tokens, batch {batch}, {n} sentences:");
    println!(
        "  candle f32 BertModel (before): {old_cpu:>8.1} sentences/CPU-s {old_wall:>8.1} sentences/s"
    );
    println!(
        "  engine (packed kernels):       {new_cpu:>8.1} sentences/CPU-s {new_wall:>8.1} sentences/s"
    );
    println!("  speed-up per CPU-second: {:.2}x", new_cpu / old_cpu);
    Ok(())
}
