//! `dpsynth`: turn a sensitive labeled text dataset into a differentially private
//! synthetic dataset (DP fine-tuning of a pretrained LM, then sampling), and measure it.

use clap::{Parser, Subcommand};

mod cmd;
mod pipeline;
mod train_args;

/// dpsynth — differentially private synthetic text.
///
/// The method (Google Research, "Harnessing large-language models to generate private
/// synthetic text"): fine-tune a public pretrained language model on your sensitive labeled
/// data with DP-SGD, sample a labeled synthetic dataset from it, and check its worth by
/// training classifiers on the synthetic data and testing them on held-out real data.
/// Only the fine-tuning touches private data; everything after it is post-processing and
/// keeps the (ε, δ) guarantee recorded in the run's privacy ledger.
#[derive(Parser)]
#[command(
    name = "dpsynth",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// More logging (-v info, -vv debug); or set RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Step 0: read, validate and split a dataset (a built-in recipe or your CSV/TSV/JSONL/Parquet file).
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Privacy accounting: ε spent by DP-SGD for given sampling rate, noise and steps, or the noise needed for a target ε.
    Account(cmd::account::Args),
    /// Quick look at the language model: generate text from a prompt, optionally with a trained adapter.
    Generate(cmd::generate::Args),
    /// Step 1: fine-tune the language model on the sensitive data with DP-SGD (LoRA, prompt tuning or full).
    Train(cmd::train::Args),
    /// Step 2: sample a labeled synthetic dataset from a trained run (post-processing: no extra privacy cost).
    Synthesize(cmd::synthesize::Args),
    /// Step 3: train classifiers on synthetic data, test on real data, compare with a DP-SGD baseline.
    Evaluate(cmd::evaluate::Args),
    /// All steps in one run directory: data, DP label histogram, DP fine-tuning, synthesis, evaluation, report.
    Run(cmd::run::Args),
    /// Run the pipeline over a grid (ε × method × dataset) and compare in one report.
    Sweep(cmd::sweep::Args),
    /// (Re)write report.html and report.md for a run or sweep directory.
    Report(cmd::report::Args),
    /// Empirical privacy audit: insert canaries, train, and lower-bound ε from one run.
    Audit(cmd::audit::Args),
    /// Benchmarks: accountant, generation, DP step, embedding; prints one table.
    Bench(cmd::bench::Args),
}

fn main() {
    let cli = Cli::parse();
    // Allocator policy (process-wide, so set here, not by a library): keep freed tensor memory
    // for reuse; `DPSYNTH_DEFAULT_MALLOC=1` keeps glibc's defaults (for comparisons).
    if std::env::var_os("DPSYNTH_DEFAULT_MALLOC").is_none() {
        dpsynth_lm::kernels::keep_freed_memory();
    }
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Data(c) => cmd::data::run(c),
        Command::Account(a) => cmd::account::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Synthesize(a) => cmd::synthesize::run(a),
        Command::Evaluate(a) => cmd::evaluate::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Audit(a) => cmd::audit::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
