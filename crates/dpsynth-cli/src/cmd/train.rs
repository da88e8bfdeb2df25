//! `dpsynth train`: DP fine-tuning (LoRA, prompt tuning or full) with a privacy ledger.

use std::path::PathBuf;

use anyhow::Context;
use dpsynth_lm::LoraConfig;
use dpsynth_train::{ConsoleProgress, LabelDistribution, Method, TrainConfig};

/// Fine-tune the language model on your sensitive records with DP-SGD.
///
/// Each record becomes `prefix(label) + text + EOS`; the prefix (the --template with the
/// label filled in) is context only, the text is learned. Batches are drawn by Poisson
/// sampling (rate q = expected batch / records), every example's gradient is clipped to
/// --clip-norm, Gaussian noise with σ·C is added once per step, and the privacy ledger
/// (RUN_DIR/privacy.json) records every ε spent. σ is calibrated from --epsilon/--delta and
/// the number of steps, or given with --noise-multiplier (then ε is reported, and the run
/// stops when --epsilon would be exceeded).
///
/// Writes RUN_DIR/{privacy.json, config.json, run.json, loss.csv, adapter/, checkpoint/}.
/// loss.csv and the progress bar's loss are NOT private (raw loss on private batches).
///
/// Example: dpsynth train --data train.jsonl --epsilon 8 --epochs 3 --out runs/rt-lora
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Prepared JSONL ({"id","text","label"[,"user"]} per line; see `dpsynth data prepare`).
    #[arg(long)]
    pub data: PathBuf,
    /// Base model: GGUF file or Hugging Face directory.
    #[arg(long, default_value = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Run directory for the adapter, ledger, config and logs.
    #[arg(long)]
    pub out: PathBuf,
    /// What to train: lora, prompt (prompt tuning) or full (every weight).
    #[arg(long, default_value = "lora", value_parser = ["lora", "prompt", "full"])]
    pub method: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (scaling = alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// LoRA target modules (comma-separated: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
    #[arg(long, default_value = "q_proj,v_proj", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Prompt tuning: number of virtual tokens.
    #[arg(long, default_value_t = 20)]
    pub virtual_tokens: usize,
    /// Prefix template; `{label}` is replaced by each record's label.
    #[arg(long, default_value = "Write a {label} text:\n")]
    pub template: String,
    /// Privacy budget ε (σ is calibrated to it unless --noise-multiplier is given).
    #[arg(long, default_value_t = 8.0)]
    pub epsilon: f64,
    /// δ (default 1/n^1.1 for n records or users).
    #[arg(long)]
    pub delta: Option<f64>,
    /// Noise multiplier σ instead of calibration (ε is reported; the run stops at --epsilon).
    #[arg(long)]
    pub noise_multiplier: Option<f64>,
    /// Train without clipping and noise: NO privacy (for comparison only).
    #[arg(long)]
    pub no_dp: bool,
    /// Per-example L2 clip norm C.
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Epochs (steps = epochs / q).
    #[arg(long, default_value_t = 1.0, conflicts_with = "steps")]
    pub epochs: f64,
    /// Number of logical steps (instead of --epochs).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Expected logical batch size (records, or users with --user-level) [default: 64, or
    /// planned with --time-budget].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Training time budget in seconds: the regime planner chooses the expected batch, the
    /// steps, σ and a cosine learning-rate schedule with 10% warm-up from N, ε, δ and this
    /// budget (public quantities only; see dpsynth_train::plan). --steps and --batch-size, when
    /// given, win; --epochs is then ignored.
    #[arg(long)]
    pub time_budget: Option<f64>,
    /// Examples per second the planner assumes [default: the bench constant of this project's
    /// Xeon for the method, every example at --max-tokens + prefix tokens].
    #[arg(long, requires = "time_budget")]
    pub throughput: Option<f64>,
    /// Learning-rate decay after the warm-up: linear, cosine or constant [default: linear, or
    /// cosine with --time-budget].
    #[arg(long, value_parser = ["linear", "cosine", "constant"])]
    pub lr_schedule: Option<String>,
    /// Examples per forward/backward pass (memory vs speed; no privacy effect).
    #[arg(long, default_value_t = 8)]
    pub physical_batch: usize,
    /// Precision of the frozen base weights for lora/prompt: bf16 (AVX-512 BF16 kernel,
    /// f32 accumulation; about 2x faster, half the weight memory) or f32. Default: bf16
    /// when this CPU has AVX-512 BF16, else f32. Full fine-tuning always uses f32. No
    /// privacy effect: clipping bounds the sensitivity whatever gradient is computed.
    #[arg(long, value_parser = ["f32", "bf16"])]
    pub base_precision: Option<String>,
    /// Peak learning rate (AdamW, linear warm-up then linear decay).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Fraction of steps for warm-up.
    #[arg(long, default_value_t = 0.05)]
    pub warmup: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Text tokens kept per record (truncation is per record: no privacy effect).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Seed for sampling and noise: reproducible but NOT secure (default: OS entropy).
    #[arg(long)]
    pub seed: Option<u64>,
    /// User-level DP: sample users and clip each user's summed gradient (records need `user`).
    #[arg(long)]
    pub user_level: bool,
    /// Records used per user with --user-level.
    #[arg(long, default_value_t = 4)]
    pub max_records_per_user: usize,
    /// Label distribution for synthesis: uniform, dp (Gaussian-noised histogram, costs budget) or a JSON file {"label": weight}.
    #[arg(long, default_value = "dp")]
    pub label_distribution: String,
    /// σ of the DP label histogram (default: calibrated to --label-budget-share of ε).
    #[arg(long)]
    pub label_noise_multiplier: Option<f64>,
    /// Share of ε for the DP label histogram.
    #[arg(long, default_value_t = 0.05)]
    pub label_budget_share: f64,
    /// Checkpoint (ledger first) every N steps.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
    /// Continue the run in --out from its last checkpoint (same settings required).
    #[arg(long)]
    pub resume: bool,
}

impl Args {
    pub fn to_config(&self) -> anyhow::Result<TrainConfig> {
        let method = Method::from_name(
            &self.method,
            LoraConfig {
                rank: self.rank,
                alpha: self.alpha,
                targets: self.targets.clone(),
            },
            self.virtual_tokens,
        )?;
        let label_distribution: LabelDistribution = self
            .label_distribution
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let label_distribution = if self.no_dp && label_distribution == LabelDistribution::Dp {
            LabelDistribution::Uniform
        } else {
            label_distribution
        };
        let mut c = TrainConfig::new(self.data.clone(), self.model.clone(), self.out.clone());
        c.method = method;
        c.template = self.template.replace("\\n", "\n");
        c.max_tokens = self.max_tokens;
        c.epsilon = if self.no_dp { None } else { Some(self.epsilon) };
        c.delta = self.delta;
        c.noise_multiplier = self.noise_multiplier;
        c.no_dp = self.no_dp;
        c.clip_norm = self.clip_norm;
        c.epochs = if self.steps.is_some() {
            None
        } else {
            Some(self.epochs)
        };
        c.steps = self.steps;
        c.expected_batch = self.batch_size.unwrap_or(64);
        if let Some(budget) = self.time_budget {
            let p = self.regime_plan(budget, &c)?;
            eprintln!("{}", p.describe());
            if self.steps.is_none() {
                c.steps = Some(p.steps);
                c.epochs = None;
            }
            if self.batch_size.is_none() {
                c.expected_batch = p.expected_batch;
            }
            c.warmup = p.warmup_fraction;
            c.lr_schedule = dpsynth_train::optim::LrSchedule::Cosine;
        }
        if let Some(s) = &self.lr_schedule {
            c.lr_schedule = dpsynth_train::optim::LrSchedule::parse(s)
                .with_context(|| format!("--lr-schedule {s}"))?;
        }
        c.physical_batch = self.physical_batch;
        if let Some(p) = &self.base_precision {
            c.base_precision = p.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        }
        c.lr = self.lr;
        c.warmup = self.warmup;
        c.weight_decay = self.weight_decay;
        c.seed = self.seed;
        c.user_level = self.user_level;
        c.max_records_per_user = self.max_records_per_user;
        c.label_distribution = label_distribution;
        c.label_noise_multiplier = self.label_noise_multiplier;
        c.label_budget_share = self.label_budget_share;
        c.checkpoint_every = self.checkpoint_every;
        c.resume = self.resume;
        Ok(c)
    }
}

impl Args {
    /// The regime planner's choice from public quantities: N (records, or users), ε of the
    /// DP-SGD part (ε minus the label histogram's share), δ, the budget and a throughput.
    fn regime_plan(
        &self,
        budget: f64,
        c: &TrainConfig,
    ) -> anyhow::Result<dpsynth_train::plan::RegimePlan> {
        use dpsynth_train::plan::{estimated_examples_per_second, plan_regime, PlanOptions};
        let records = dpsynth_data::read_jsonl(&self.data)
            .with_context(|| format!("reading {} to count its records", self.data.display()))?;
        let n = if self.user_level {
            records
                .iter()
                .filter_map(|r| r.user.as_deref())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        } else {
            records.len()
        };
        let eps = match c.epsilon {
            None => f64::INFINITY,
            Some(e) if c.label_distribution == LabelDistribution::Dp => {
                e * (1.0 - c.label_budget_share)
            }
            Some(e) => e,
        };
        let delta = c.delta.unwrap_or_else(|| 1.0 / (n.max(1) as f64).powf(1.1));
        let throughput = self.throughput.unwrap_or_else(|| {
            estimated_examples_per_second(&self.method, &c.template, c.max_tokens)
                / if self.user_level {
                    self.max_records_per_user as f64
                } else {
                    1.0
                }
        });
        plan_regime(&PlanOptions::new(n, eps, delta, budget, throughput))
            .context("choosing the DP regime (--time-budget)")
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
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
