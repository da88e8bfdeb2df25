//! `cargo run --release -p dpsynth-train --example bench_step -- [lora,prompt,full] [steps] [micro-batches] [f32|bf16] [fixed|rt|both]`
//! e.g. `bench_step lora,prompt,full 2 8,4 bf16`: prints the DP-SGD step table (same as
//! `dpsynth bench`'s training rows); one row per (workload, method, mode, physical
//! micro-batch size). Workloads: `fixed` = 8 × 128 (default), `rt` = Poisson batches from
//! Rotten Tomatoes (`DPSYNTH_BENCH_DATA`: a prepared train.jsonl, else the recipe over
//! `DPSYNTH_ASSETS`; `DPSYNTH_BENCH_RT_BATCH`: expected batch, default 32), `both`.
//! Threads: `RAYON_NUM_THREADS`.
fn main() {
    // The binary's allocator policy (see `keep_freed_memory`), unless DPSYNTH_DEFAULT_MALLOC.
    if std::env::var_os("DPSYNTH_DEFAULT_MALLOC").is_none() {
        dpsynth_lm::kernels::keep_freed_memory();
    }
    let mut o = dpsynth_train::bench::TrainBenchOptions::default();
    let args: Vec<String> = std::env::args().collect();
    if let Some(m) = args.get(1) {
        o.methods = m.split(',').map(String::from).collect();
    }
    if let Some(s) = args.get(2) {
        o.steps = s.parse().expect("steps");
    }
    if let Some(s) = args.get(3) {
        o.micro_batches = s
            .split(',')
            .map(|v| v.parse().expect("micro-batch sizes, e.g. 8,4"))
            .collect();
    }
    if let Some(p) = args.get(4) {
        o.base_precision = p.parse().expect("base precision f32 or bf16");
    }
    match args.get(5).map(String::as_str) {
        None | Some("fixed") => {}
        Some("rt") => {
            o.real_data = true;
            o.skip_fixed = true;
        }
        Some("both") => o.real_data = true,
        Some(other) => panic!("workload `{other}`: use fixed, rt or both"),
    }
    if let Ok(p) = std::env::var("DPSYNTH_MODEL") {
        o.model = Some(p.into());
    }
    if let Ok(p) = std::env::var("DPSYNTH_BENCH_DATA") {
        o.rt_data = Some(p.into());
    }
    if let Ok(b) = std::env::var("DPSYNTH_BENCH_RT_BATCH") {
        o.rt_expected_batch = b.parse().expect("DPSYNTH_BENCH_RT_BATCH: a number");
    }
    eprintln!(
        "CPU: {}; load average: {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string()))
            .unwrap_or_else(|| "unknown".into()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let rows = dpsynth_train::bench::run_train_bench(&o).expect("bench");
    print!("{}", dpsynth_train::bench::format_table(&rows));
}
