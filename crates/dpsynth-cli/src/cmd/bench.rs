//! `dpsynth bench`: the benchmark suites the library crates expose, as one table.

use std::time::Instant;

use dpsynth_report::machine::{format_bench_table, BenchRow, Machine};

/// Benchmarks: accountant, generation, DP step, embedding; prints one table with the machine's
/// description (CPU model, cores, memory, threads, build profile).
///
/// Build with `--release` for meaningful numbers (the table says which profile ran). Suites
/// that need model assets are skipped with a note when the assets are missing.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Suites to run (comma-separated): privacy, generation, train, embedding [default: all].
    #[arg(long, value_delimiter = ',', value_name = "S,..")]
    pub only: Option<Vec<String>>,
    /// Worker threads to report/use (0 = all available).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

const SUITES: &[&str] = &["privacy", "generation", "train", "embedding"];

fn profile() -> String {
    if cfg!(debug_assertions) {
        "debug (dpsynth built without --release; numbers are not representative)".into()
    } else {
        "release".into()
    }
}

fn secs_row(suite: &str, name: String, secs: f64) -> BenchRow {
    let (value, unit) = if secs < 1e-3 {
        (format!("{:.1}", secs * 1e6), "µs")
    } else if secs < 1.0 {
        (format!("{:.1}", secs * 1e3), "ms")
    } else {
        (format!("{secs:.2}"), "s")
    };
    BenchRow {
        suite: suite.into(),
        name,
        value,
        unit: unit.into(),
        note: String::new(),
    }
}

fn skipped(suite: &str, why: &str) -> BenchRow {
    BenchRow {
        suite: suite.into(),
        name: "(skipped)".into(),
        value: "—".into(),
        unit: String::new(),
        note: why.into(),
    }
}

fn privacy_rows() -> Vec<BenchRow> {
    dpsynth_privacy::bench::bench_rows()
        .into_iter()
        .map(|(name, secs)| {
            let name = name
                .strip_prefix("privacy: ")
                .map(str::to_string)
                .unwrap_or(name);
            secs_row("privacy", name, secs)
        })
        .collect()
}

fn generation_rows() -> Vec<BenchRow> {
    let assets = dpsynth_report::config::default_assets_dir();
    let model = assets.join(dpsynth_report::defaults::MODEL);
    if !model.is_file() {
        return vec![skipped(
            "generation",
            "model asset missing (scripts/fetch-assets.sh)",
        )];
    }
    match dpsynth_lm::bench::generation_bench(&model, &dpsynth_lm::bench::BenchOptions::default()) {
        Ok(rows) => rows
            .into_iter()
            .map(|r| BenchRow {
                suite: "generation".into(),
                name: format!(
                    "{:?} weights, batch {}, {} × {} new tokens",
                    r.weights, r.batch_size, r.sequences, r.new_tokens
                ),
                value: format!("{:.1}", r.tokens_per_second),
                unit: "tokens/s".into(),
                note: r
                    .peak_rss_bytes
                    .map(|b| format!("peak RSS {:.2} GB", b as f64 / 1e9))
                    .unwrap_or_default(),
            })
            .collect(),
        Err(e) => vec![skipped("generation", &format!("failed: {e}"))],
    }
}

fn train_rows() -> Vec<BenchRow> {
    let assets = dpsynth_report::config::default_assets_dir();
    let model = assets.join(dpsynth_report::defaults::MODEL);
    if !model.is_file() {
        return vec![skipped(
            "train",
            "model asset missing (scripts/fetch-assets.sh)",
        )];
    }
    let opts = dpsynth_train::bench::TrainBenchOptions {
        model: Some(model),
        // Rotten Tomatoes' real length distribution next to the fixed 8 × 128 batches.
        real_data: assets.join("data/rotten-tomatoes").is_dir(),
        ..Default::default()
    };
    match dpsynth_train::bench::run_train_bench(&opts) {
        Ok(rows) => rows
            .into_iter()
            .map(|r| BenchRow {
                suite: "train".into(),
                name: format!(
                    "DP step {} {} ({} params, {}, {} threads)",
                    r.method, r.mode, r.trainable_parameters, r.workload, r.threads
                ),
                value: format!("{:.2}", r.median_s_per_step),
                unit: "s/step".into(),
                note: format!(
                    "{:.2} examples/s, {:.0} real tokens/s{}",
                    r.examples_per_s,
                    r.tokens_per_s,
                    r.peak_rss_gb
                        .map(|g| format!(", peak RSS {g:.2} GB"))
                        .unwrap_or_default()
                ),
            })
            .collect(),
        Err(e) => vec![skipped("train", &format!("failed: {e}"))],
    }
}

fn embedding_rows() -> Vec<BenchRow> {
    let assets = dpsynth_report::config::default_assets_dir();
    let minilm = assets.join(dpsynth_report::defaults::EMBEDDING_MODEL);
    if !minilm.is_dir() {
        return vec![skipped(
            "embedding",
            "MiniLM asset missing (scripts/fetch-assets.sh)",
        )];
    }
    match dpsynth_eval::bench::bench_rows(Some(&minilm), None) {
        Ok(rows) => rows
            .into_iter()
            .map(|r| BenchRow {
                suite: "embedding".into(),
                name: r.name,
                value: format!("{:.1}", r.value),
                unit: r.unit,
                note: String::new(),
            })
            .collect(),
        Err(e) => vec![skipped("embedding", &format!("failed: {e}"))],
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let suites: Vec<String> = match &args.only {
        Some(v) => {
            for s in v {
                anyhow::ensure!(
                    SUITES.contains(&s.as_str()),
                    "--only: unknown suite \"{s}\"; suites are {}",
                    SUITES.join(", ")
                );
            }
            v.clone()
        }
        None => SUITES.iter().map(|s| s.to_string()).collect(),
    };
    let threads = if args.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        args.threads
    };
    let machine = Machine::detect(threads, &profile());
    let t = Instant::now();
    // Which kernel the frozen-weight products run on (AMX / AVX-512 BF16 / portable), and on
    // which CPU: every figure below depends on both.
    let mut rows = vec![BenchRow {
        suite: "kernels".into(),
        name: format!("packed bf16 path on {}", dpsynth_lm::kernels::cpu_model()),
        value: dpsynth_lm::kernels::kernel_path().name().into(),
        unit: String::new(),
        note: dpsynth_lm::kernels::kernel_description(),
    }];
    eprintln!(
        "bench: CPU {}; kernel path {}",
        dpsynth_lm::kernels::cpu_model(),
        dpsynth_lm::kernels::kernel_description()
    );
    for s in &suites {
        eprintln!("bench: {s} …");
        rows.extend(match s.as_str() {
            "privacy" => privacy_rows(),
            "generation" => generation_rows(),
            "train" => train_rows(),
            "embedding" => embedding_rows(),
            _ => unreachable!("checked above"),
        });
    }
    print!("{}", format_bench_table(&machine, &rows));
    eprintln!("bench: total {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
