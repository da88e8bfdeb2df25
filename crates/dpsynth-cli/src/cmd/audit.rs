//! `dpsynth audit`: empirical privacy audit with canaries (one training run).

use std::path::PathBuf;

use anyhow::Context;
use dpsynth_audit::{AuditConfig, CanaryKind, Fault, Verdict};
use dpsynth_train::{LabelDistribution, Method, Progress, StepInfo, TrainConfig};

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
    after_help = "Examples:\n\n  dpsynth audit --config run.toml --canaries 128\n  \
    dpsynth audit --data data/train.jsonl --epsilon 8 --steps 200 --out audit-eps8\n  \
    dpsynth audit --data data/train.jsonl --no-dp --epochs 3 --lr 0.01 --out audit-nodp"
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

    /// Fine-tuning method: lora, prompt or full.
    #[arg(long)]
    pub method: Option<String>,
    #[arg(long)]
    pub lora_rank: Option<usize>,
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA target modules, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
    /// Virtual tokens for prompt tuning.
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    /// Target ε of the DP fine-tuning (σ is calibrated to it).
    #[arg(long)]
    pub epsilon: Option<f64>,
    #[arg(long)]
    pub delta: Option<f64>,
    /// Noise multiplier σ (instead of calibrating to --epsilon).
    #[arg(long)]
    pub noise_multiplier: Option<f64>,
    /// Train without clipping and noise: the audit then measures the leak (no guarantee).
    #[arg(long)]
    pub no_dp: bool,
    /// Per-example clip norm C.
    #[arg(long)]
    pub clip_norm: Option<f64>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub steps: Option<u64>,
    /// Expected logical batch size (q = batch / n).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Examples per forward/backward pass.
    #[arg(long)]
    pub physical_batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Text tokens kept per record.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Prefix template containing {label}.
    #[arg(long)]
    pub template: Option<String>,
    /// Seed for training's sampling and noise (reproducible, NOT secure).
    #[arg(long)]
    pub seed: Option<u64>,
    /// User-level DP (records need a `user`).
    #[arg(long)]
    pub user_level: bool,
    /// Test the audit itself: train WITHOUT noise while claiming this ε (a deliberately
    /// broken trainer; the audit must report a violation).
    #[arg(long, hide = true, value_name = "EPS")]
    pub inject_fault_no_noise: Option<f64>,
}

struct Bar {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress for Bar {
    fn start(&mut self, total: u64, done: u64) {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "  train {bar:30} {pos}/{len} steps  loss {msg}  [{elapsed_precise} < {eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_position(done);
        self.bar = Some(b);
    }
    fn step(&mut self, info: &StepInfo) {
        if let Some(b) = &self.bar {
            b.set_position(info.step);
            b.set_message(format!("{:.3}", info.loss));
        }
    }
    fn message(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("  {msg}")),
            None => eprintln!("  {msg}"),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn method(
    name: &str,
    rank: usize,
    alpha: f64,
    targets: Vec<String>,
    prompt: usize,
) -> anyhow::Result<Method> {
    Ok(Method::from_name(
        name,
        dpsynth_lm::LoraConfig {
            rank,
            alpha,
            targets,
        },
        prompt,
    )?)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let kind = CanaryKind::parse(&a.canary_kind).with_context(|| {
        format!(
            "--canary-kind `{}`: use secret[:digits] or words[:n] (n ≥ 1)",
            a.canary_kind
        )
    })?;
    // Start from the run config (if any), then apply flags.
    let (mut t, run_dir) = match &a.config {
        Some(c) => {
            let r = dpsynth_report::resolve(Some(c.as_path()), &[])
                .with_context(|| format!("reading {}", c.display()))?;
            let rc = r.config;
            let dir = rc.run_dir();
            let data = a
                .data
                .clone()
                .unwrap_or_else(|| dir.join("data").join("train.jsonl"));
            // The run's own training configuration (method, label-histogram share, template,
            // clip norm, steps, ...), so the audit trains exactly what `dpsynth run` trains.
            let mut t = crate::pipeline::train_config(&rc, &dir, false)?;
            t.data = data;
            t.out = PathBuf::new();
            if t.no_dp {
                // The run's exact label counts live in its directory; the audit does not need them.
                t.label_distribution = dpsynth_train::LabelDistribution::Uniform;
            }
            (t, Some(dir))
        }
        None => {
            let data = a
                .data
                .clone()
                .context("give --data (prepared JSONL) or --config run.toml")?;
            let model = a.model.clone().unwrap_or_else(|| {
                dpsynth_report::config::default_assets_dir()
                    .join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            });
            (TrainConfig::new(data, model, PathBuf::new()), None)
        }
    };
    if let Some(m) = &a.model {
        t.model = m.clone();
    }
    if let Some(d) = &a.data {
        t.data = d.clone();
    }
    let (rank, alpha, targets, prompt) = match &t.method {
        Method::Lora(c) => (c.rank, c.alpha, c.targets.clone(), 20),
        Method::Prompt { virtual_tokens } => (
            8,
            16.0,
            vec!["q_proj".into(), "v_proj".into()],
            *virtual_tokens,
        ),
        Method::Full => (8, 16.0, vec!["q_proj".into(), "v_proj".into()], 20),
    };
    let name = a
        .method
        .clone()
        .unwrap_or_else(|| t.method.name().to_string());
    t.method = method(
        &name,
        a.lora_rank.unwrap_or(rank),
        a.lora_alpha.unwrap_or(alpha),
        a.lora_targets.clone().unwrap_or(targets),
        a.prompt_tokens.unwrap_or(prompt),
    )?;
    if let Some(e) = a.epsilon {
        t.epsilon = Some(e);
        t.no_dp = false;
    }
    if a.delta.is_some() {
        t.delta = a.delta;
    }
    if a.noise_multiplier.is_some() {
        t.noise_multiplier = a.noise_multiplier;
    }
    if let Some(c) = a.clip_norm {
        t.clip_norm = c;
    }
    if a.no_dp {
        t.no_dp = true;
        t.epsilon = None;
        t.noise_multiplier = None;
        t.clip_norm = f64::INFINITY;
    }
    if let Some(e) = a.epochs {
        t.epochs = Some(e);
        t.steps = None;
    }
    if a.steps.is_some() {
        t.steps = a.steps;
    }
    if let Some(b) = a.batch_size {
        t.expected_batch = b;
    }
    if let Some(b) = a.physical_batch {
        t.physical_batch = b;
    }
    if let Some(l) = a.lr {
        t.lr = l;
    }
    if let Some(m) = a.max_tokens {
        t.max_tokens = m;
    }
    if let Some(s) = &a.template {
        t.template = s.clone();
    }
    if a.seed.is_some() {
        t.seed = a.seed;
    }
    t.user_level |= a.user_level;
    // The audit measures DP-SGD; labels for synthesis are not part of it.
    t.label_distribution = LabelDistribution::Uniform;
    anyhow::ensure!(
        t.data.is_file(),
        "{}: training data not found{}",
        t.data.display(),
        if a.config.is_some() {
            " (run `dpsynth run --config …` up to the data stage first, or give --data)"
        } else {
            ""
        }
    );
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
    let report = dpsynth_audit::run_audit(&cfg, &mut Bar { bar: None })?;
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
