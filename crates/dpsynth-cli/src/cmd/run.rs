//! `dpsynth run`: the whole pipeline in one run directory.

use std::path::PathBuf;

use crate::pipeline::{self, flags::ConfigFlags};

/// Data → DP label histogram + DP fine-tuning → synthesis → evaluation → report.
///
/// With no flags: prepares Rotten Tomatoes, fine-tunes SmolLM2-135M with DP-LoRA at ε = 3 on a
/// subset sized for about 20 minutes on 2 cores, samples a synthetic dataset, evaluates
/// it and writes RUN_DIR/report.html. `--preset full` uses paper-like sizes.
///
/// Every key of the config file is also a flag (below). The config is checked completely before
/// any work starts. Each stage records its config and input hashes in RUN_DIR/stages/; running
/// again skips finished stages, resumes an interrupted one (training continues from its
/// checkpoint and privacy ledger: budget is never spent twice) and re-runs what changed.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example run.toml:\n\n  [privacy]\n  epsilon = 8\n  [train]\n  method = \"prompt\"\n  steps = 200\n\nStages: data, train (DP label histogram + DP fine-tuning, one ledger), synthesize, evaluate, report.\n\nPrivacy: choosing hyperparameters by looking at results on the private data costs privacy that no ledger counts; the defaults were fixed without looking at them (see README)."
)]
pub struct Args {
    /// Config file (TOML, sections [run] [data] [privacy] [model] [train] [synth] [eval]).
    #[arg(long, short = 'c', value_name = "run.toml")]
    pub config: Option<PathBuf>,
    /// Re-run from this stage on, even if finished (re-running train spends privacy budget
    /// again; the run's ledger counts every release).
    #[arg(long, value_name = "STAGE")]
    pub from: Option<String>,
    /// Stop after this stage (e.g. `--to train`); a later run continues from there.
    #[arg(long, value_name = "STAGE")]
    pub to: Option<String>,
    /// Check the config and show what would run; do nothing.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub keys: ConfigFlags,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let resolved = dpsynth_report::resolve(args.config.as_deref(), &args.keys.overrides)?;
    if let Some(f) = &args.from {
        dpsynth_report::stage::parse_from(f)?;
    }
    if let Some(t) = &args.to {
        dpsynth_report::stage::parse_from(t)?;
    }
    let out = pipeline::run(
        &resolved,
        args.from.as_deref(),
        args.to.as_deref(),
        args.check,
    )?;
    if args.check {
        return Ok(());
    }
    eprintln!("run directory: {}", out.dir.display());
    if let Some(r) = out.report {
        eprintln!("report: {}", r.display());
        println!("{}", r.display());
    }
    Ok(())
}
