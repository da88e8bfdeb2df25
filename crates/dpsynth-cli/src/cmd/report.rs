//! `dpsynth report`: (re)write report.html and report.md for a run or sweep directory.

use std::path::PathBuf;

use dpsynth_report::report::{write_run_report, ReportOptions};
use dpsynth_report::sweep;

/// (Re)write report.html and report.md (self-contained, no JavaScript; charts also as
/// report_files/*.svg) for a run directory or a sweep directory.
///
/// Stages that did not run are shown as "not run". `--public` writes report-public.html/.md with
/// only what the differential-privacy guarantee covers (no test-set metrics, loss curve,
/// memorization check or data summary).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run directory (from `dpsynth run`) or sweep directory (from `dpsynth sweep`).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Only what the DP guarantee covers (for sharing beyond the data holder).
    #[arg(long)]
    pub public: bool,
    /// Synthetic samples shown per label.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.dir.is_dir(),
        "{} is not a directory (give a run directory or a sweep directory)",
        args.dir.display()
    );
    let w = if sweep::is_sweep_dir(&args.dir) {
        sweep::write_sweep_report(&args.dir)?
    } else {
        anyhow::ensure!(
            args.dir.join("stages").is_dir() || args.dir.join("config.toml").is_file(),
            "{} does not look like a run directory (no stages/ or config.toml) nor a sweep directory (no sweep.json)",
            args.dir.display()
        );
        write_run_report(
            &args.dir,
            &ReportOptions {
                public_only: args.public,
                samples_per_label: args.samples,
            },
        )?
    };
    eprintln!("wrote {} and {}", w.html.display(), w.markdown.display());
    println!("{}", w.html.display());
    Ok(())
}
