//! `dpsynth audit`: empirical privacy audit with canaries (one training run).

use std::path::PathBuf;

use anyhow::Context;
use dpsynth_audit::{AuditConfig, CanaryKind, Fault, Verdict};
use dpsynth_train::{ConsoleProgress, LabelDistribution, TrainConfig};

use crate::train_args::{train_config, TrainArgs, TrainIo};

/// Check a DP training empirically: insert random canaries, train, and lower-bound ε.
///
/// Generates --canaries random records ("my secret code is 482913" by default), inserts each
/// into a copy of the training data with probability 1/2 (only the auditor knows which),
/// trains with exactly your configuration, and scores each canary by how much the
/// fine-tuned model's loss on it dropped relative to the base model. Guessing which canaries
/// were inserted from the scores gives an ε lower bound from this one run (Steinke, Nasr &
/// Jagielski 2023) at --confidence. A lower bound above the ledger's ε is a VIOLATION: the
/// implementation is not as private as it claims (exit status 2).
///
/// The audit reports its own ceiling (the bound if every guess were right, ≈ 5 for 1024
/// canaries) and says INCONCLUSIVE when the claimed ε is at or above it: such an audit could
/// not have detected anything. A canary is only detectable if training samples it, so the
/// audit keeps your batch size, steps and δ but trains on a random subset of your records
/// such that each inserted canary is sampled --min-expected-samples times in expectation
/// (the audit run's ledger claims the ε of that run; 0 trains on all records).
///
/// The bound is a lower bound: far below the claimed ε is normal for DP-SGD (the audit sees
/// only the final model). Use it to catch bugs, not to certify a guarantee. The audit
/// trains on your data: it is a separate release with its own ledger (OUT/train/privacy.json).
///
/// Writes OUT/audit.json (schema version 2), OUT/canaries.jsonl (canaries and their coins),
/// OUT/train.jsonl (data + inserted canaries) and OUT/train/ (the audit's training run).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Training settings: the run.toml keys of `dpsynth run` under the same names, with its \
    defaults or, with --config, the file's values (flags win). One setting differs on purpose: the audit \
    trains with uniform labels, because it measures DP-SGD and the label histogram is not part of it (a \
    label-histogram ε still leaves DP-SGD the same share of ε as in the run, so the audit's steps and batch \
    are the run's). Old flag names still work: --rank, --lr, --clip-norm, --max-tokens, ...\n\n\
    Examples:\n\n  dpsynth audit --config run.toml --canaries 128\n  \
    dpsynth audit --data data/train.jsonl --epsilon 8 --steps 200 --out audit-eps8\n  \
    dpsynth audit --data data/train.jsonl --no-dp --epochs 3 --learning-rate 0.01 --out audit-nodp"
)]
pub struct Args {
    /// A run config (run.toml): audits that run's training settings on RUN_DIR/data/train.jsonl
    /// and writes into RUN_DIR/audit (flags below override it).
    #[arg(long, short = 'c', value_name = "run.toml")]
    pub config: Option<PathBuf>,
    /// Prepared training data (JSONL with id, text, label[, user]).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Base model (GGUF file or Hugging Face folder) [default: the run's or <assets>/smollm2/…gguf].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Audit directory [default: RUN_DIR/audit with --config, else ./audit].
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Number of canaries m (each inserted with probability 1/2); the audit's ceiling grows
    /// with m (128: ≈ 3.0, 1024: ≈ 5.0).
    #[arg(long, default_value_t = dpsynth_audit::run::DEFAULT_CANARIES)]
    pub canaries: usize,
    /// Expected number of times training samples each inserted canary (q·T); the audit trains
    /// on a random subset of the records to reach it (0 = all records, your q).
    #[arg(long, default_value_t = dpsynth_audit::run::DEFAULT_MIN_EXPECTED_SAMPLES)]
    pub min_expected_samples: f64,
    /// Canary format: secret[:digits] ("my secret code is 482913") or words[:n] (random words).
    #[arg(long, default_value = "secret:6")]
    pub canary_kind: String,
    /// Confidence of the ε lower bound.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Random alternative secrets per canary for the exposure estimate (0 = skip).
    #[arg(long, default_value_t = 16)]
    pub exposure_samples: usize,
    /// Estimate exposure for the first this many canaries only.
    #[arg(long, default_value_t = dpsynth_audit::run::DEFAULT_EXPOSURE_CANARIES)]
    pub exposure_canaries: usize,
    /// Synthetic dataset (JSONL) to search for canary secrets [default: RUN_DIR/synthetic.jsonl
    /// if present]. Only meaningful if it was sampled from the audit's model.
    #[arg(long)]
    pub synthetic: Option<PathBuf>,
    /// Seed for the canaries and their coins (reproducible, NOT secret from the trainer).
    #[arg(long)]
    pub canary_seed: Option<u64>,

    /// The training settings: the `run.toml` keys of `dpsynth run`, with its defaults (with
    /// --config, the file's values; flags win). The audit trains with uniform labels: it
    /// measures DP-SGD, and the label histogram is not part of it.
    #[command(flatten)]
    pub train: TrainArgs,
    /// Test the audit itself: train WITHOUT noise while claiming this ε (a deliberately
    /// broken trainer; the audit must report a violation).
    #[arg(long, hide = true, value_name = "EPS")]
    pub inject_fault_no_noise: Option<f64>,
}

/// The audit's training (the run's directory with --config): one conversion for every command
/// that trains. The run's settings (with --config) or the defaults of `dpsynth run`, the flags
/// on top, then `train_args::train_config`; uniform labels.
pub fn training(a: &Args) -> anyhow::Result<(TrainConfig, Option<PathBuf>)> {
    let overrides = a.train.overrides();
    let (cfg, run_dir, data) = match &a.config {
        Some(c) => {
            // The run's own directory, whatever the flags change (ε names the default one).
            let dir = dpsynth_report::resolve(Some(c.as_path()), &[])
                .with_context(|| format!("reading {}", c.display()))?
                .config
                .run_dir();
            let r = dpsynth_report::resolve(Some(c.as_path()), &overrides)
                .with_context(|| format!("reading {}", c.display()))?;
            let data = a
                .data
                .clone()
                .unwrap_or_else(|| dir.join("data").join("train.jsonl"));
            (r.config, Some(dir), data)
        }
        None => {
            let data = a
                .data
                .clone()
                .context("give --data (prepared JSONL) or --config run.toml")?;
            let mut overrides = overrides;
            // The data is the user's own file (no recipe): the generic template by default.
            overrides.push(dpsynth_report::Override::new(
                "data.path",
                data.to_string_lossy().into_owned(),
            ));
            let r = dpsynth_report::config::resolve_training(&overrides)?;
            (r.config, None, data)
        }
    };
    anyhow::ensure!(
        data.is_file(),
        "{}: training data not found{}",
        data.display(),
        if a.config.is_some() {
            " (run `dpsynth run --config …` up to the data stage first, or give --data)"
        } else {
            ""
        }
    );
    let io = TrainIo {
        model: a.model.clone().unwrap_or_else(|| cfg.model_path()),
        data,
        out: PathBuf::new(),
        resume: false,
    };
    let (mut t, _) = train_config(&cfg, io, &a.train.extras()?)?;
    if a.train.no_dp {
        t.clip_norm = f64::INFINITY;
    }
    // The audit measures DP-SGD; labels for synthesis are not part of it.
    t.label_distribution = LabelDistribution::Uniform;
    Ok((t, run_dir))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let kind = CanaryKind::parse(&a.canary_kind).with_context(|| {
        format!(
            "--canary-kind `{}`: use secret[:digits] or words[:n] (n ≥ 1)",
            a.canary_kind
        )
    })?;
    let (t, run_dir) = training(&a)?;
    let out = a.out.clone().unwrap_or_else(|| match &run_dir {
        Some(d) => d.join("audit"),
        None => PathBuf::from("audit"),
    });
    let mut cfg = AuditConfig::new(t, out.clone());
    cfg.canaries = a.canaries;
    cfg.kind = kind;
    cfg.confidence = a.confidence;
    cfg.exposure_samples = a.exposure_samples;
    cfg.exposure_canaries = a.exposure_canaries;
    cfg.min_expected_samples = a.min_expected_samples;
    cfg.seed = a.canary_seed;
    cfg.synthetic = a.synthetic.clone().or_else(|| {
        run_dir
            .as_ref()
            .map(|d| d.join("synthetic.jsonl"))
            .filter(|p| p.is_file())
    });
    cfg.fault = a
        .inject_fault_no_noise
        .map(|epsilon| Fault::NoNoiseClaiming { epsilon });
    if cfg.train.seed.is_some() {
        eprintln!("warning: --seed makes training's noise reproducible, NOT secure");
    }
    eprintln!(
        "auditing: {} canaries ({}), method {}, {} → {}",
        cfg.canaries,
        a.canary_kind,
        cfg.train.method.name(),
        if cfg.train.no_dp {
            "no DP".to_string()
        } else {
            match (cfg.train.epsilon, cfg.train.noise_multiplier) {
                (_, Some(s)) => format!("σ = {s}"),
                (Some(e), None) => format!("ε = {e}"),
                _ => "DP".into(),
            }
        },
        out.display()
    );
    let mut progress = ConsoleProgress::for_pipeline("train", "  ");
    let report = dpsynth_audit::run_audit(&cfg, &mut progress)?;
    print!("{}", report.summary());
    println!(
        "  written:              {}",
        out.join("audit.json").display()
    );
    if report.verdict == Verdict::Violation {
        std::process::exit(2);
    }
    Ok(())
}
