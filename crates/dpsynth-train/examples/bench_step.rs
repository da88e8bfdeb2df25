//! `cargo run -p dpsynth-train --example bench_step -- [lora,prompt,full] [steps]`
//! Prints the DP-SGD step table (same as `dpsynth bench`'s training rows).
fn main() {
    let mut o = dpsynth_train::bench::TrainBenchOptions::default();
    let args: Vec<String> = std::env::args().collect();
    if let Some(m) = args.get(1) {
        o.methods = m.split(',').map(String::from).collect();
    }
    if let Some(s) = args.get(2) {
        o.steps = s.parse().expect("steps");
    }
    if let Ok(p) = std::env::var("DPSYNTH_MODEL") {
        o.model = Some(p.into());
    }
    let rows = dpsynth_train::bench::run_train_bench(&o).expect("bench");
    print!("{}", dpsynth_train::bench::format_table(&rows));
}
