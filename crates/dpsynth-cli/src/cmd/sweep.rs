//! `dpsynth sweep`: the pipeline over ε × method × dataset, compared in one report.

use std::path::PathBuf;

use crate::pipeline::{self, flags::ConfigFlags};
use dpsynth_report::sweep::{self, SweepGrid};

/// Run the pipeline over a grid (ε × method × dataset) and compare in one report.
///
/// Each point is a full `dpsynth run` in SWEEP_DIR/<dataset>/<method>-eps<ε>/ (re-running the
/// sweep skips finished points and resumes interrupted ones). The DP-SGD baseline is trained
/// once per (dataset, ε), the non-private ceiling once per dataset. SWEEP_DIR/report.html shows
/// downstream accuracy vs ε per method with both references.
///
/// Privacy: each point's report states that point's own guarantee. Picking the best point by
/// looking at results on private data is not covered by those numbers; the sweep report gives
/// the composed guarantee of releasing all points of a dataset together.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example sweep.toml:\n\n  [sweep]\n  epsilons = [1, 3, 8, inf]\n  methods = [\"lora\", \"prompt\", \"full\"]\n  datasets = [\"rotten-tomatoes\"]\n  dir = \"sweeps/rt\"\n  [train]\n  steps = 50"
)]
pub struct Args {
    /// Sweep file: a run.toml plus a [sweep] section (epsilons, methods, datasets, dir).
    #[arg(long, short = 'c', value_name = "sweep.toml")]
    pub config: Option<PathBuf>,
    /// ε values (comma-separated; inf = non-private) [default: 1,3,8,inf].
    #[arg(long, value_delimiter = ',', value_name = "E,..")]
    pub epsilons: Option<Vec<String>>,
    /// Methods (comma-separated) [default: lora,prompt,full].
    #[arg(long, value_delimiter = ',', value_name = "M,..")]
    pub methods: Option<Vec<String>>,
    /// Datasets: recipes or files (comma-separated) [default: rotten-tomatoes].
    #[arg(long, value_delimiter = ',', value_name = "D,..")]
    pub datasets: Option<Vec<String>>,
    /// Sweep directory [default: sweeps/default].
    #[arg(long, value_name = "DIR")]
    pub sweep_dir: Option<PathBuf>,
    /// Check every point's config and show the grid; run nothing.
    #[arg(long)]
    pub check: bool,
    /// Keep going when a point fails (the report shows it as not run).
    #[arg(long)]
    pub keep_going: bool,
    #[command(flatten)]
    pub keys: ConfigFlags,
}

fn parse_eps(s: &str) -> anyhow::Result<f64> {
    match s.trim().to_ascii_lowercase().as_str() {
        "inf" | "infinity" | "∞" => Ok(f64::INFINITY),
        t => t
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("--epsilons: \"{s}\" is not a number (or inf)")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let grid_override = if args.epsilons.is_some()
        || args.methods.is_some()
        || args.datasets.is_some()
        || args.sweep_dir.is_some()
    {
        let base = match &args.config {
            Some(p) => dpsynth_report::config::read_toml(p)?
                .remove("sweep")
                .map(|v| v.try_into::<SweepGrid>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("{}: [sweep]: {e}", p.display()))?
                .unwrap_or_default(),
            None => SweepGrid::default(),
        };
        Some(SweepGrid {
            epsilons: match &args.epsilons {
                Some(v) => v
                    .iter()
                    .map(|s| parse_eps(s))
                    .collect::<anyhow::Result<_>>()?,
                None => base.epsilons,
            },
            methods: args.methods.clone().unwrap_or(base.methods),
            datasets: args.datasets.clone().unwrap_or(base.datasets),
            dir: args.sweep_dir.clone().or(base.dir),
        })
    } else {
        None
    };
    let plan = sweep::plan(args.config.as_deref(), grid_override, &args.keys.overrides)?;
    eprintln!(
        "dpsynth sweep: {} runs → {}",
        plan.points.len(),
        plan.dir.display()
    );
    for (p, _) in &plan.points {
        eprintln!(
            "  {} · {} · ε = {}",
            p.dataset,
            p.method,
            p.epsilon
                .map(dpsynth_report::config::fmt_eps)
                .unwrap_or("∞".into())
        );
    }
    if args.check {
        return Ok(());
    }
    std::fs::create_dir_all(&plan.dir)?;
    plan.write_manifest()?;
    let mut failed = Vec::new();
    for (i, (p, resolved)) in plan.points.iter().enumerate() {
        eprintln!("\n[{}/{}] {}", i + 1, plan.points.len(), p.dir.display());
        if let Err(e) = pipeline::run(resolved, None, None, false) {
            if args.keep_going {
                eprintln!("error: {e:#}");
                failed.push(p.dir.display().to_string());
            } else {
                let _ = sweep::write_sweep_report(&plan.dir);
                return Err(e.context(format!("sweep point {}", p.dir.display())));
            }
        }
    }
    let w = sweep::write_sweep_report(&plan.dir)?;
    if !failed.is_empty() {
        eprintln!("{} points failed: {}", failed.len(), failed.join(", "));
    }
    eprintln!("sweep report: {}", w.html.display());
    println!("{}", w.html.display());
    Ok(())
}
