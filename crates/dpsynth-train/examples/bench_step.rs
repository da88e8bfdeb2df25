//! `cargo run --release -p dpsynth-train --example bench_step -- [lora,prompt,full] [steps] [micro-batches] [f32|bf16]`
//! e.g. `bench_step lora,prompt,full 2 8,4 bf16`: prints the DP-SGD step table (same as
//! `dpsynth bench`'s training rows); one row per (method, mode, physical micro-batch size).
fn main() {
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
    if let Ok(p) = std::env::var("DPSYNTH_MODEL") {
        o.model = Some(p.into());
    }
    let rows = dpsynth_train::bench::run_train_bench(&o).expect("bench");
    print!("{}", dpsynth_train::bench::format_table(&rows));
}
