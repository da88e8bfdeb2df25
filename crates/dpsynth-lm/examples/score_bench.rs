//! Teacher-forced scoring benchmark (the synthesis filter's cost): `N` (prefix, continuation)
//! pairs through [`Generator::continuation_log_likelihoods`], tokens/s and tokens per CPU second.
//! `cargo run --release -p dpsynth-lm --example score_bench -- [MODEL] [PAIRS] [CONT_TOKENS]`

use std::time::Instant;

use candle_core::Device;
use dpsynth_lm::{Generator, GeneratorOptions, WeightFormat};

fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() -> dpsynth_lm::Result<()> {
    // The binary's allocator policy (see `keep_freed_memory`), unless DPSYNTH_DEFAULT_MALLOC.
    if std::env::var_os("DPSYNTH_DEFAULT_MALLOC").is_none() {
        dpsynth_lm::kernels::keep_freed_memory();
    }
    let a: Vec<String> = std::env::args().collect();
    let model = a
        .get(1)
        .cloned()
        .unwrap_or_else(|| "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let n: usize = a.get(2).map(|s| s.parse().unwrap()).unwrap_or(256);
    let cont: usize = a.get(3).map(|s| s.parse().unwrap()).unwrap_or(28);
    let (w, _tok) = dpsynth_lm::load_model(model.as_ref(), &Device::Cpu)?;
    let g = Generator::new(
        &w,
        None,
        GeneratorOptions {
            batch_size: 8,
            weights: WeightFormat::Bf16,
        },
        &Device::Cpu,
    )?;
    let prefix: Vec<u32> = vec![1, 7351, 253, 5560, 2595, 42, 198];
    let conts: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            let l = cont / 2 + (i * 7919) % cont;
            (0..l)
                .map(|j| 300 + ((i * 31 + j * 17) % 20000) as u32)
                .collect()
        })
        .collect();
    let pairs: Vec<(&[u32], &[u32])> = conts
        .iter()
        .map(|c| (prefix.as_slice(), c.as_slice()))
        .collect();
    let tokens: usize = conts.iter().map(|c| c.len() + prefix.len()).sum();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let ll = g.continuation_log_likelihoods(&pairs)?;
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    println!(
        "cpu {}\n{n} pairs, {tokens} tokens: {wall:.2} s wall, {cpu:.2} CPU s, {:.0} tokens/s, {:.0} tokens/CPU-s (mean ll {:.2})",
        dpsynth_lm::kernels::cpu_model(),
        tokens as f64 / wall,
        tokens as f64 / cpu,
        ll.iter().sum::<f64>() / n as f64
    );
    Ok(())
}
