//! Micro-benchmark of the packed bf16 kernels (`dpsynth_lm::kernels`) against candle's f32 matmul.
//! `cargo run --release -p dpsynth-lm --example kernel_bench [-- MxKxN,...]` (1 thread unless
//! `RAYON_NUM_THREADS` is set). Prints the CPU model, the kernel path the engine chose, and for
//! every path this CPU has, GFLOP/s (2·m·k·n per product) of the forward `x·Wᵀ` and the input
//! gradient `g·W`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use dpsynth_lm::kernels::{
    available_paths, cpu_model, kernel_description, KernelPath, PackedWeight,
};

/// CPU time of the calling thread in seconds (`CLOCK_THREAD_CPUTIME_ID`): with one thread the
/// products run on the calling thread, so this excludes time lost to other processes on a shared
/// machine.
fn thread_cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain FFI call writing into a valid timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// Runs `f` until about `budget` seconds have passed (at least 3 times) and returns the mean
/// time per call in seconds: thread CPU time with 1 thread (when available), else wall time.
fn mean_time(budget: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let use_cpu = rayon::current_num_threads() == 1 && thread_cpu_seconds().is_some();
    let now = || {
        if use_cpu {
            thread_cpu_seconds().unwrap_or(0.0)
        } else {
            START.with(|s| s.elapsed().as_secs_f64())
        }
    };
    let start = Instant::now();
    let t0 = now();
    let mut n = 0;
    while n < 3 || start.elapsed().as_secs_f64() < budget {
        f();
        n += 1;
    }
    (now() - t0) / n as f64
}

thread_local! {
    static START: Instant = Instant::now();
}

fn main() -> candle_core::Result<()> {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Before any pool exists (rayon's and candle's both read it).
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("CPU: {}", cpu_model());
    println!("kernel path: {}", kernel_description());
    let skipped: Vec<&str> = KernelPath::ALL
        .iter()
        .filter(|p| !p.available())
        .map(|p| p.name())
        .collect();
    if !skipped.is_empty() {
        println!(
            "not available on this CPU (skipped): {}",
            skipped.join(", ")
        );
    }
    println!(
        "threads: {}  ({})  load average: {}",
        rayon::current_num_threads(),
        if rayon::current_num_threads() == 1 && thread_cpu_seconds().is_some() {
            "mean thread CPU time per product"
        } else {
            "mean wall time per product"
        },
        load.trim()
    );
    println!(
        "{:>20} {:>11} {:>12} {:>12} {:>12} {:>10}",
        "m x k x n", "path", "packed fwd", "packed bwd", "candle f32", "pack (ms)"
    );
    let dev = Device::Cpu;
    // Optional argument: shapes as `MxKxN,MxKxN,...`.
    let shapes: Vec<(usize, usize, usize)> = match std::env::args().nth(1) {
        Some(a) => a
            .split(',')
            .map(|s| {
                let v: Vec<usize> = s.split('x').map(|x| x.parse().expect("MxKxN")).collect();
                (v[0], v[1], v[2])
            })
            .collect(),
        None => vec![
            (1024, 576, 1536),
            (32, 576, 1536),
            (8, 576, 49152),
            (1, 576, 49152),
            (2048, 384, 1536),
            (1024, 1536, 576),
        ],
    };
    for &(m, k, n) in &shapes {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let t = Instant::now();
        let pw = PackedWeight::for_training(&w)?;
        let pack_ms = t.elapsed().as_secs_f64() * 1e3;
        let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let gv: Vec<f32> = Tensor::randn(0f32, 1.0, (m, n), &dev)?
            .flatten_all()?
            .to_vec1()?;
        let mut y = vec![0f32; m * n];
        let mut dx = vec![0f32; m * k];
        let flop = 2.0 * (m * k * n) as f64;
        let wt = w.t()?;
        let tc = mean_time(1.0, || {
            let _ = x.matmul(&wt).unwrap();
        });
        for path in available_paths() {
            let tf = mean_time(1.0, || pw.forward_with(path, &xv, m, &mut y));
            let tb = mean_time(1.0, || {
                pw.backward_input_with(path, &gv, m, &mut dx).unwrap()
            });
            println!(
                "{:>20} {:>11} {:>10.1} G {:>10.1} G {:>10.1} G {:>10.1}",
                format!("{m} x {k} x {n}"),
                path.name(),
                flop / tf / 1e9,
                flop / tb / 1e9,
                flop / tc / 1e9,
                pack_ms
            );
        }
    }
    Ok(())
}
