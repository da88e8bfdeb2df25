//! `dpsynth train`: DP fine-tuning (LoRA, prompt tuning or full) with a privacy ledger.

use std::path::PathBuf;

use anyhow::Context;
use dpsynth_report::Override;
use dpsynth_train::plan::RegimePlan;
use dpsynth_train::{ConsoleProgress, LabelDistribution, TrainConfig};

use crate::train_args::{train_config, TrainArgs, TrainIo};

/// Fine-tune the language model on your sensitive records with DP-SGD.
///
/// Each record becomes `prefix(label) + text + EOS`; the prefix (--prompt-template with the
/// label filled in) is context only, the text is learned. Batches are drawn by Poisson
/// sampling (rate q = expected batch / records), every example's gradient is clipped to
/// --max-grad-norm, Gaussian noise with σ·C is added once per step, and the privacy ledger
/// (RUN_DIR/privacy.json) records every ε spent. σ is calibrated from --epsilon/--delta and
/// the number of steps, or given with --noise-multiplier (then ε is reported, and the run
/// stops when --epsilon would be exceeded).
///
/// Writes RUN_DIR/{privacy.json, config.json, run.json, loss.csv, adapter/, checkpoint/}.
/// loss.csv and the progress bar's loss are NOT private (raw loss on private batches).
///
/// Example: dpsynth train --data train.jsonl --epsilon 8 --steps 200 --out runs/rt-lora
#[derive(clap::Args, Debug)]
#[command(
    verbatim_doc_comment,
    after_help = "Defaults: the training settings are the run.toml keys of `dpsynth run`, with the same names and \
    defaults (quick preset: ε = 3 in total, the DP label histogram's 0.1 included; δ = 1e-5; a 600 s time \
    budget from which the regime planner picks the expected batch and the steps), so `dpsynth train` trains \
    what the train stage of `dpsynth run` trains. One default differs, because this command reads your own \
    file and has no dataset recipe: the prompt template is \"Write a {label} text:\\n\" unless \
    --prompt-template is given.\n\nOld flag names still work: --rank, --alpha, --targets, --virtual-tokens, \
    --template, --lr, --clip-norm, --max-tokens, --label-budget-share.\n\nExample: dpsynth train --data \
    train.jsonl --epsilon 8 --steps 200 --out runs/rt-lora"
)]
pub struct Args {
    /// Prepared JSONL ({"id","text","label"[,"user"]} per line; see `dpsynth data prepare`).
    #[arg(long)]
    pub data: PathBuf,
    /// Base model: GGUF file or Hugging Face directory [default: <assets>/smollm2/…gguf, as
    /// `dpsynth run`].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Run directory for the adapter, ledger, config and logs.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Label distribution for synthesis: dp (Gaussian-noised histogram, calibrated to
    /// --label-histogram-epsilon and composed with DP-SGD), uniform, or a JSON file
    /// {"label": weight} [default: dp, or uniform when --label-histogram-epsilon is 0 or
    /// without DP].
    #[arg(long, value_name = "dp|uniform|FILE")]
    pub label_distribution: Option<String>,
    /// σ of the DP label histogram instead of calibrating it to --label-histogram-epsilon.
    #[arg(long, value_name = "SIGMA")]
    pub label_noise_multiplier: Option<f64>,
    /// Old spelling of the histogram's budget as a share of ε (--label-histogram-epsilon is
    /// that share times --epsilon).
    #[arg(long, hide = true, conflicts_with = "label_histogram_epsilon")]
    pub label_budget_share: Option<f64>,
    /// Checkpoint (ledger first) every N steps [default: a tenth of the steps, 1 to 50].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue the run in --out from its last checkpoint (same settings required).
    #[arg(long)]
    pub resume: bool,
}

impl Args {
    /// The resolved training settings and the training crate's config (with the regime
    /// planner's choice, if it made one), through the conversion `dpsynth run` uses.
    pub fn to_config(&self) -> anyhow::Result<(TrainConfig, Option<RegimePlan>)> {
        let mut overrides = self.train.overrides();
        // The data is the user's own file (no recipe): the generic template by default.
        overrides.push(Override::new(
            "data.path",
            self.data.to_string_lossy().into_owned(),
        ));
        let resolved = dpsynth_report::config::resolve_training(&overrides)?;
        let cfg = resolved.config;
        let mut extras = self.train.extras()?;
        extras.label_distribution = self
            .label_distribution
            .as_deref()
            .map(|s| s.parse::<LabelDistribution>())
            .transpose()
            .map_err(|e| anyhow::anyhow!("--label-distribution: {e}"))?;
        extras.label_noise_multiplier = self.label_noise_multiplier;
        extras.label_budget_share = self.label_budget_share;
        extras.checkpoint_every = self.checkpoint_every;
        let io = TrainIo {
            data: self.data.clone(),
            model: self.model.clone().unwrap_or_else(|| cfg.model_path()),
            out: self.out.clone(),
            resume: self.resume,
        };
        train_config(&cfg, io, &extras)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (cfg, plan) = args.to_config()?;
    if let Some(p) = plan {
        eprintln!("{}", p.describe());
    }
    if cfg.seed.is_some() {
        eprintln!("warning: --seed makes sampling and noise reproducible but NOT secure");
    }
    let s = dpsynth_train::train(&cfg, &mut ConsoleProgress::new("train"))
        .context("training failed")?;
    println!("run directory    {}", s.run_dir.display());
    println!(
        "method           {} ({} trainable parameters)",
        s.method, s.trainable_parameters
    );
    println!("records / units  {} / {}", s.records, s.units);
    println!("steps            {} of {}", s.steps_done, s.steps_planned);
    println!("sampling rate q  {:.5}", s.sampling_probability);
    match (s.noise_multiplier, s.epsilon_pld) {
        (Some(sig), Some(e)) => {
            println!("noise σ          {sig:.4}");
            println!(
                "privacy          ε = {e:.4} (PLD), ε = {:.4} (RDP) at δ = {:.3e}",
                s.epsilon_rdp.unwrap_or(f64::NAN),
                s.delta
            );
        }
        _ => println!("privacy          NONE (--no-dp)"),
    }
    if let Some(l) = s.final_loss {
        println!("final loss       {l:.4} (mean of the last steps)");
    }
    if let Some(m) = &s.stopped_early {
        println!("note             {m}");
    }
    println!("time             {:.1} s", s.seconds);
    Ok(())
}
