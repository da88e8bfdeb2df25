//! The evaluation benchmarks `dpsynth bench` prints, standalone:
//! `RAYON_NUM_THREADS=1 cargo run --release -p dpsynth-eval --example eval_bench [-- RT_DIR]`
//! RT_DIR: a prepared rotten-tomatoes split (train.jsonl, test.jsonl) for the full-evaluation
//! timing; `--prepare RT_DIR` writes it first from the recipe.
use std::path::PathBuf;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let prepare = a.iter().any(|s| s == "--prepare");
    let rt = a.iter().find(|s| !s.starts_with("--")).map(PathBuf::from);
    if let (true, Some(d)) = (prepare, &rt) {
        dpsynth_eval::bench::rotten_tomatoes_split(d).expect("prepare rotten-tomatoes");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    match dpsynth_eval::bench::bench_rows(None, rt.as_deref()) {
        Ok(rows) => {
            for r in rows {
                println!("{:<70} {:>10.1} {}", r.name, r.value, r.unit);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}
