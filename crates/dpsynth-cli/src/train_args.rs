//! One training configuration for every command that trains.
//!
//! `dpsynth train` and `dpsynth audit` flatten [`TrainArgs`], whose flags are the `run.toml`
//! keys' flags (`--epsilon`, `--lora-rank`, `--learning-rate`, `--max-grad-norm`, ...; the old
//! spellings `--rank`, `--lr`, `--clip-norm`, `--max-tokens`, ... still parse as hidden
//! aliases); `dpsynth run` and `dpsynth sweep` take the same keys from the file and from flags
//! generated from [`dpsynth_report::config::KEYS`]. All of them resolve the settings through
//! `dpsynth_report::config` on top of the one set of defaults in `dpsynth_report::defaults`, and
//! [`train_config`] alone turns the result into the training crate's [`TrainConfig`]: the
//! commands cannot drift apart in names, defaults or meaning.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::builder::PossibleValuesParser;
use dpsynth_report::config::{self, key_spec, RunConfig, LR_SCHEDULES, METHODS};
use dpsynth_report::{defaults, Override};
use dpsynth_train::frozen::FrozenPrecision;
use dpsynth_train::optim::LrSchedule;
use dpsynth_train::plan::RegimePlan;
use dpsynth_train::{LabelDistribution, Method, TrainConfig};

const HEADING: &str =
    "Training and privacy (run.toml keys: the same names and defaults as `dpsynth run`)";
const MORE: &str = "Training (not run.toml keys)";

/// The help of a `run.toml` key's flag (one text for `run`, `train` and `audit`).
fn key_help(key: &str) -> String {
    config::flag_help(key_spec(key).unwrap_or_else(|| panic!("{key} is not a run.toml key")))
}

/// The training and privacy settings of one DP fine-tuning, as flags.
///
/// The first group are `run.toml` keys (unset = the quick preset's value, as in `dpsynth run`);
/// the second group are settings that `run.toml` does not have (unset = the training crate's
/// defaults, which `dpsynth run` uses too).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrainArgs {
    #[arg(long, value_name = "NAME", help = key_help("run.preset"), help_heading = HEADING,
          value_parser = PossibleValuesParser::new(["quick", "full"]))]
    pub preset: Option<String>,
    #[arg(long, value_name = "X", help = key_help("privacy.epsilon"), help_heading = HEADING)]
    pub epsilon: Option<f64>,
    #[arg(long, value_name = "X", help = key_help("privacy.delta"), help_heading = HEADING)]
    pub delta: Option<f64>,
    #[arg(long, value_name = "X", help = key_help("privacy.label_histogram_epsilon"),
          help_heading = HEADING)]
    pub label_histogram_epsilon: Option<f64>,
    #[arg(long, alias = "clip-norm", value_name = "X", help = key_help("privacy.max_grad_norm"),
          help_heading = HEADING)]
    pub max_grad_norm: Option<f64>,
    #[arg(long, value_name = "NAME", help = key_help("train.method"), help_heading = HEADING,
          value_parser = PossibleValuesParser::new(METHODS))]
    pub method: Option<String>,
    #[arg(long, value_name = "N", help = key_help("train.steps"), help_heading = HEADING,
          conflicts_with = "epochs")]
    pub steps: Option<u64>,
    #[arg(long, value_name = "N", help = key_help("train.batch_size"), help_heading = HEADING)]
    pub batch_size: Option<u64>,
    #[arg(long, value_name = "SECONDS", help = key_help("train.time_budget"),
          help_heading = HEADING)]
    pub time_budget: Option<f64>,
    #[arg(long, value_name = "X", help = key_help("train.throughput"), help_heading = HEADING)]
    pub throughput: Option<f64>,
    #[arg(long, value_name = "NAME", help = key_help("train.lr_schedule"), help_heading = HEADING,
          value_parser = PossibleValuesParser::new(LR_SCHEDULES))]
    pub lr_schedule: Option<String>,
    #[arg(long, alias = "lr", value_name = "X", help = key_help("train.learning_rate"),
          help_heading = HEADING)]
    pub learning_rate: Option<f64>,
    #[arg(long, alias = "max-tokens", value_name = "N", help = key_help("train.max_seq_len"),
          help_heading = HEADING)]
    pub max_seq_len: Option<u64>,
    #[arg(long, alias = "rank", value_name = "N", help = key_help("train.lora_rank"),
          help_heading = HEADING)]
    pub lora_rank: Option<u64>,
    #[arg(long, alias = "alpha", value_name = "X", help = key_help("train.lora_alpha"),
          help_heading = HEADING)]
    pub lora_alpha: Option<f64>,
    #[arg(long, alias = "targets", value_name = "A,B", value_delimiter = ',',
          help = key_help("train.lora_targets"), help_heading = HEADING)]
    pub lora_targets: Option<Vec<String>>,
    #[arg(long, alias = "virtual-tokens", value_name = "N", help = key_help("train.prompt_tokens"),
          help_heading = HEADING)]
    pub prompt_tokens: Option<u64>,
    #[arg(long, alias = "template", value_name = "TEXT",
          help = key_help("train.prompt_template"), help_heading = HEADING)]
    pub prompt_template: Option<String>,
    #[arg(long, value_name = "N", help = key_help("run.seed"), help_heading = HEADING)]
    pub seed: Option<u64>,

    /// Noise multiplier σ instead of calibrating it to --epsilon (ε is then reported, and
    /// training stops when --epsilon would be exceeded).
    #[arg(long, value_name = "SIGMA", help_heading = MORE)]
    pub noise_multiplier: Option<f64>,
    /// Train without clipping and noise: NO privacy (for comparison only); the same as
    /// --epsilon inf.
    #[arg(long, help_heading = MORE)]
    pub no_dp: bool,
    /// Passes over the data instead of --steps (steps = epochs / q).
    #[arg(long, value_name = "X", help_heading = MORE)]
    pub epochs: Option<f64>,
    /// Examples per forward/backward pass (memory vs speed; no privacy effect) [default: the
    /// expected batch, at most 8].
    #[arg(long, value_name = "N", help_heading = MORE)]
    pub physical_batch: Option<usize>,
    /// Precision of the frozen base weights for lora/prompt: bf16 (AVX-512 BF16 kernel, f32
    /// accumulation; about 2x faster, half the weight memory) or f32 [default: bf16 when this
    /// CPU has AVX-512 BF16, else f32]. Full fine-tuning always uses f32. No privacy effect:
    /// clipping bounds the sensitivity whatever gradient is computed.
    #[arg(long, value_name = "P", help_heading = MORE,
          value_parser = PossibleValuesParser::new(["f32", "bf16"]))]
    pub base_precision: Option<String>,
    /// Fraction of the steps for linear learning-rate warm-up [default: the regime planner's
    /// with --time-budget, else 0.05].
    #[arg(long, value_name = "X", help_heading = MORE)]
    pub warmup: Option<f64>,
    /// AdamW weight decay [default: 0].
    #[arg(long, value_name = "X", help_heading = MORE)]
    pub weight_decay: Option<f64>,
    /// User-level DP: sample users and clip each user's summed gradient (records need `user`).
    #[arg(long, help_heading = MORE)]
    pub user_level: bool,
    /// Records used per user with --user-level [default: 4].
    #[arg(long, value_name = "N", help_heading = MORE)]
    pub max_records_per_user: Option<usize>,
}

impl TrainArgs {
    /// The `run.toml` keys these flags set, as overrides (each names its flag in errors).
    pub fn overrides(&self) -> Vec<Override> {
        fn put<T: ToString>(out: &mut Vec<Override>, key: &str, v: &Option<T>) {
            if let Some(v) = v {
                out.push(Override::new(key, v.to_string()));
            }
        }
        let mut o = Vec::new();
        put(&mut o, "run.preset", &self.preset);
        put(&mut o, "run.seed", &self.seed);
        put(&mut o, "privacy.epsilon", &self.epsilon);
        put(&mut o, "privacy.delta", &self.delta);
        put(
            &mut o,
            "privacy.label_histogram_epsilon",
            &self.label_histogram_epsilon,
        );
        put(&mut o, "privacy.max_grad_norm", &self.max_grad_norm);
        put(&mut o, "train.method", &self.method);
        put(&mut o, "train.steps", &self.steps);
        put(&mut o, "train.batch_size", &self.batch_size);
        put(&mut o, "train.time_budget", &self.time_budget);
        put(&mut o, "train.throughput", &self.throughput);
        put(&mut o, "train.lr_schedule", &self.lr_schedule);
        put(&mut o, "train.learning_rate", &self.learning_rate);
        put(&mut o, "train.max_seq_len", &self.max_seq_len);
        put(&mut o, "train.lora_rank", &self.lora_rank);
        put(&mut o, "train.lora_alpha", &self.lora_alpha);
        put(
            &mut o,
            "train.lora_targets",
            &self.lora_targets.as_ref().map(|t| t.join(",")),
        );
        put(&mut o, "train.prompt_tokens", &self.prompt_tokens);
        put(&mut o, "train.prompt_template", &self.prompt_template);
        o
    }

    /// The settings that are not `run.toml` keys.
    pub fn extras(&self) -> anyhow::Result<TrainExtras> {
        Ok(TrainExtras {
            noise_multiplier: self.noise_multiplier,
            no_dp: self.no_dp,
            epochs: self.epochs,
            physical_batch: self.physical_batch,
            base_precision: self
                .base_precision
                .as_deref()
                .map(|p| p.parse::<FrozenPrecision>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--base-precision: {e}"))?,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            user_level: self.user_level,
            max_records_per_user: self.max_records_per_user,
            ..TrainExtras::default()
        })
    }
}

/// Where one training reads and writes.
#[derive(Debug, Clone)]
pub struct TrainIo {
    /// Prepared JSONL.
    pub data: PathBuf,
    /// Base model (GGUF file or Hugging Face folder).
    pub model: PathBuf,
    /// Training run directory.
    pub out: PathBuf,
    /// Continue the run in `out` from its ledger and last checkpoint.
    pub resume: bool,
}

/// Settings of a training that are not `run.toml` keys. `Default` is what `dpsynth run` uses
/// (apart from its label distribution for non-private runs: the exact counts).
#[derive(Debug, Clone, Default)]
pub struct TrainExtras {
    pub noise_multiplier: Option<f64>,
    /// Non-private training (also implied by ε = ∞).
    pub no_dp: bool,
    pub epochs: Option<f64>,
    /// `None`: the expected batch, at most 8.
    pub physical_batch: Option<usize>,
    /// `None`: the machine's default.
    pub base_precision: Option<FrozenPrecision>,
    /// `None`: the regime planner's, else the training crate's default.
    pub warmup: Option<f64>,
    pub weight_decay: Option<f64>,
    pub user_level: bool,
    pub max_records_per_user: Option<usize>,
    /// `None`: the DP histogram when `privacy.label_histogram_epsilon` > 0, else uniform
    /// (uniform too for non-private training).
    pub label_distribution: Option<LabelDistribution>,
    /// σ of the label histogram given directly.
    pub label_noise_multiplier: Option<f64>,
    /// The histogram's share of ε given directly (`dpsynth train --label-budget-share`, the
    /// old spelling of `privacy.label_histogram_epsilon` / `privacy.epsilon`).
    pub label_budget_share: Option<f64>,
    /// `None`: a tenth of the steps, between 1 and 50 (50 when the steps come from epochs).
    pub checkpoint_every: Option<u64>,
}

/// How the run's ε is split, decided once for the planner and the training config.
struct Budget {
    no_dp: bool,
    label_distribution: LabelDistribution,
    /// The histogram's share of ε (only meaningful with the DP histogram).
    share: f64,
    /// ε left for DP-SGD, as the planner sees it (∞ without DP).
    dp_sgd_epsilon: f64,
}

fn budget(cfg: &RunConfig, x: &TrainExtras) -> anyhow::Result<Budget> {
    let eps = cfg.train_epsilon();
    let no_dp = x.no_dp || eps.is_infinite();
    let (share, histogram_epsilon) = match x.label_budget_share {
        Some(s) if no_dp => (s, 0.0),
        Some(s) => (s, s * eps),
        None => (
            cfg.label_budget_share(),
            cfg.privacy.label_histogram_epsilon,
        ),
    };
    let label_distribution = match &x.label_distribution {
        // Non-private training releases no histogram.
        Some(LabelDistribution::Dp) | None if no_dp => LabelDistribution::Uniform,
        Some(d) => d.clone(),
        None if share > 0.0 => LabelDistribution::Dp,
        None => LabelDistribution::Uniform,
    };
    if label_distribution == LabelDistribution::Dp && x.label_noise_multiplier.is_none() {
        anyhow::ensure!(
            share > 0.0 && share < 1.0,
            "the DP label histogram needs a share of ε: set --label-histogram-epsilon between 0 \
             and --epsilon (or use --label-distribution uniform)"
        );
    }
    // The DP-SGD part of ε as the planner sees it: the run's minus the histogram's
    // (conservative: under PLD composition the histogram costs less than its own ε).
    let dp_sgd_epsilon = if no_dp {
        f64::INFINITY
    } else if label_distribution == LabelDistribution::Dp {
        eps - histogram_epsilon
    } else {
        eps
    };
    Ok(Budget {
        no_dp,
        label_distribution,
        share,
        dp_sgd_epsilon,
    })
}

/// Privacy units of a training: its records, or its users with user-level DP (their number is
/// treated as public, as in Abadi et al. 2016; it sets the sampling rate).
fn train_units(data: &Path, user_level: bool) -> anyhow::Result<usize> {
    let records = dpsynth_data::read_jsonl(data).with_context(|| {
        format!(
            "the regime planner needs the number of training records: reading {}",
            data.display()
        )
    })?;
    Ok(if user_level {
        records
            .iter()
            .filter_map(|r| r.user.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    } else {
        records.len()
    })
}

/// The regime planner's choice for a training on `data` (see `dpsynth_train::plan`): from N
/// (records, or users), the DP-SGD part of ε, δ, the time budget and a throughput
/// (`train.throughput`, else the bench constant at the full padded example length, divided by
/// the records per user with user-level DP).
///
/// # Privacy
/// Public quantities only: the number of units and the settings; nothing computed from the
/// records' contents.
pub fn regime_plan(cfg: &RunConfig, data: &Path, x: &TrainExtras) -> anyhow::Result<RegimePlan> {
    plan_with(cfg, data, x, &budget(cfg, x)?)
}

fn plan_with(
    cfg: &RunConfig,
    data: &Path,
    x: &TrainExtras,
    b: &Budget,
) -> anyhow::Result<RegimePlan> {
    use dpsynth_train::plan::{estimated_examples_per_second, plan_regime, PlanOptions};
    anyhow::ensure!(
        cfg.train.time_budget > 0.0,
        "train.steps / train.batch_size = 0 need train.time_budget > 0 (the planner chooses them)"
    );
    let n = train_units(data, x.user_level)?;
    let throughput = if cfg.train.throughput > 0.0 {
        cfg.train.throughput
    } else {
        let per_unit = if x.user_level {
            x.max_records_per_user.unwrap_or_else(|| {
                TrainConfig::new(PathBuf::new(), PathBuf::new(), PathBuf::new())
                    .max_records_per_user
            }) as f64
        } else {
            1.0
        };
        estimated_examples_per_second(
            &cfg.train.method,
            &crate::pipeline::prompt_template(cfg),
            cfg.train.max_seq_len as usize,
        ) / per_unit
    };
    let o = PlanOptions::new(
        n,
        b.dp_sgd_epsilon,
        cfg.privacy.delta,
        cfg.train.time_budget,
        throughput,
    );
    plan_regime(&o).context("choosing the DP regime (train.time_budget)")
}

/// The training crate's config for resolved settings: the one conversion behind `dpsynth
/// train`, `dpsynth audit` and `dpsynth run`. With `train.time_budget` > 0, what is not set
/// (steps and expected batch: 0 in the config) comes from the regime planner ([`regime_plan`]),
/// which is returned too.
///
/// # Privacy
/// Sets the guarantee's parameters: ε (the run's total; the training crate composes the label
/// histogram with DP-SGD under PLD), δ, the clipping norm, σ when given, the label histogram's
/// share. Reads the data only to count its units for the planner.
pub fn train_config(
    cfg: &RunConfig,
    io: TrainIo,
    x: &TrainExtras,
) -> anyhow::Result<(TrainConfig, Option<RegimePlan>)> {
    let b = budget(cfg, x)?;
    let mut t = TrainConfig::new(io.data, io.model, io.out);
    // run.toml's method is validated when the config is resolved; parse through the one parser
    // anyway so that an unknown name can never turn into another method.
    t.method = Method::from_name(
        &cfg.train.method,
        dpsynth_lm::LoraConfig {
            rank: cfg.train.lora_rank as usize,
            alpha: cfg.train.lora_alpha,
            targets: match &cfg.train.lora_targets {
                Some(t) => t.clone(),
                None => defaults::LORA_TARGETS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            },
        },
        cfg.train.prompt_tokens as usize,
    )?;
    // Text tokens only: the prompt prefix and EOS come on top (`format::make_example`).
    t.max_tokens = cfg.train.max_seq_len as usize;
    t.no_dp = b.no_dp;
    t.epsilon = (!b.no_dp).then_some(cfg.train_epsilon());
    t.delta = Some(cfg.privacy.delta);
    t.noise_multiplier = if b.no_dp { None } else { x.noise_multiplier };
    t.clip_norm = cfg.privacy.max_grad_norm;
    t.epochs = x.epochs;
    t.steps = x.epochs.is_none().then_some(cfg.train.steps);
    t.expected_batch = cfg.train.batch_size as usize;
    let planned = cfg.train.steps == 0 || cfg.train.batch_size == 0;
    let plan = if planned {
        let p = plan_with(cfg, &t.data, x, &b)?;
        if cfg.train.steps == 0 && x.epochs.is_none() {
            t.steps = Some(p.steps);
        }
        if cfg.train.batch_size == 0 {
            t.expected_batch = p.expected_batch;
        }
        t.warmup = p.warmup_fraction;
        Some(p)
    } else {
        None
    };
    if let Some(w) = x.warmup {
        t.warmup = w;
    }
    t.lr_schedule = match cfg.train.lr_schedule.as_str() {
        "auto" if planned => LrSchedule::Cosine,
        "auto" => LrSchedule::Linear,
        s => LrSchedule::parse(s)
            .with_context(|| format!("train.lr_schedule: unknown schedule {s:?}"))?,
    };
    t.physical_batch = x
        .physical_batch
        .unwrap_or_else(|| t.expected_batch.clamp(1, 8));
    if let Some(p) = x.base_precision {
        t.base_precision = p;
    }
    t.lr = cfg.train.learning_rate;
    if let Some(w) = x.weight_decay {
        t.weight_decay = w;
    }
    t.seed = cfg.run.seed;
    t.template = crate::pipeline::prompt_template(cfg);
    t.user_level = x.user_level;
    if let Some(m) = x.max_records_per_user {
        t.max_records_per_user = m;
    }
    // One mechanism, one ledger: the training crate releases the label histogram (Gaussian) and
    // composes it with DP-SGD under PLD.
    if b.label_distribution == LabelDistribution::Dp {
        t.label_budget_share = b.share;
    }
    t.label_distribution = b.label_distribution;
    t.label_noise_multiplier = x.label_noise_multiplier;
    t.checkpoint_every = x.checkpoint_every.unwrap_or(match t.steps {
        Some(s) => (s / 10).clamp(1, 50),
        None => 50,
    });
    t.resume = io.resume;
    Ok((t, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use dpsynth_report::config::{Kind, KEYS};

    fn parse(args: &[&str]) -> crate::Command {
        let mut v = vec!["dpsynth"];
        v.extend_from_slice(args);
        crate::Cli::try_parse_from(v)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    fn train_args(args: &[&str]) -> crate::cmd::train::Args {
        match parse(args) {
            crate::Command::Train(a) => a,
            _ => unreachable!(),
        }
    }

    /// A run directory with prepared data, a model file and an embedding folder (paths only:
    /// nothing is loaded).
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("run/data")).unwrap();
            let mut s = String::new();
            for i in 0..3000 {
                let label = if i % 3 == 0 { "fresh" } else { "rotten" };
                s.push_str(&format!(
                    "{{\"id\":\"r{i}\",\"text\":\"a film\",\"label\":\"{label}\"}}\n"
                ));
            }
            std::fs::write(dir.path().join("run/data/train.jsonl"), s).unwrap();
            std::fs::write(dir.path().join("model.gguf"), b"gguf").unwrap();
            std::fs::create_dir_all(dir.path().join("minilm")).unwrap();
            Fixture { dir }
        }
        fn path(&self, p: &str) -> String {
            self.dir.path().join(p).to_str().unwrap().to_string()
        }
        /// `dpsynth train` with these settings.
        fn train(&self, settings: &[&str]) -> TrainConfig {
            let (data, model, out) = (
                self.path("run/data/train.jsonl"),
                self.path("model.gguf"),
                self.path("run/train"),
            );
            let mut a = vec!["train", "--data", &data, "--model", &model, "--out", &out];
            a.extend_from_slice(settings);
            train_args(&a).to_config().unwrap().0
        }
        /// `dpsynth run` with these settings: its train stage's config.
        fn run(&self, settings: &[&str]) -> TrainConfig {
            let (dir, model, data, emb) = (
                self.path("run"),
                self.path("model.gguf"),
                self.path("run/data/train.jsonl"),
                self.path("minilm"),
            );
            let mut a = vec![
                "run",
                "--dir",
                &dir,
                "--model",
                &model,
                "--data-path",
                &data,
                "--embedding-model",
                &emb,
            ];
            a.extend_from_slice(settings);
            let crate::Command::Run(r) = parse(&a) else {
                unreachable!()
            };
            let resolved = dpsynth_report::resolve(None, &r.keys.overrides).unwrap();
            crate::pipeline::train_config(&resolved.config, Path::new(&dir), false).unwrap()
        }
    }

    #[test]
    fn train_and_run_give_the_same_training_for_the_same_settings() {
        let f = Fixture::new();
        let cases: &[&[&str]] = &[
            // Every default: the quick preset, planned by the 600 s budget.
            &[],
            &["--epsilon", "8", "--method", "prompt"],
            &[
                "--epsilon",
                "5",
                "--delta",
                "1e-6",
                "--label-histogram-epsilon",
                "0.2",
                "--max-grad-norm",
                "0.5",
                "--method",
                "lora",
                "--steps",
                "7",
                "--batch-size",
                "16",
                "--learning-rate",
                "0.01",
                "--max-seq-len",
                "20",
                "--lora-rank",
                "4",
                "--lora-alpha",
                "8",
                "--lora-targets",
                "q_proj,k_proj",
                "--prompt-tokens",
                "5",
                "--prompt-template",
                "Say {label}:\\n",
                "--lr-schedule",
                "cosine",
                "--seed",
                "3",
            ],
            // The planner with an explicit throughput, no histogram, the full preset.
            &[
                "--time-budget",
                "100",
                "--throughput",
                "50",
                "--label-histogram-epsilon",
                "0",
                "--preset",
                "full",
                "--method",
                "full",
            ],
            &[
                "--time-budget",
                "0",
                "--lr-schedule",
                "constant",
                "--epsilon",
                "0.5",
            ],
        ];
        for settings in cases {
            let (t, r) = (f.train(settings), f.run(settings));
            assert_eq!(t, r, "{settings:?}");
        }
        // The planner ran for the defaults (and both read the same data).
        let t = f.train(&[]);
        assert_eq!(t.epsilon, Some(defaults::EPSILON));
        assert_eq!(t.delta, Some(defaults::DELTA));
        assert_eq!(t.max_tokens as u64, defaults::QUICK.max_seq_len);
        assert_eq!(t.lr_schedule, LrSchedule::Cosine);
        assert!(t.steps.unwrap() > 0 && t.expected_batch > 0);
        assert_eq!(t.label_distribution, LabelDistribution::Dp);
        assert!(
            (t.label_budget_share - defaults::LABEL_HISTOGRAM_EPSILON / defaults::EPSILON).abs()
                < 1e-12
        );
        // Only the template's default differs (no recipe for `train`'s own file): with the
        // recipe's data `run` writes movie reviews, `train` the generic prefix.
        assert_eq!(t.template, dpsynth_data::prompt::DEFAULT_TEMPLATE);
        let s = f.train(&["--prompt-template", "Say {label}:\\n", "--seed", "3"]);
        assert_eq!(s.template, "Say {label}:\n");
        assert_eq!(s.seed, Some(3));
    }

    #[test]
    fn audit_trains_what_run_and_train_train_but_with_uniform_labels() {
        let f = Fixture::new();
        let toml = format!(
            "[run]\ndir = {:?}\n[data]\npath = {:?}\n[model]\npath = {:?}\nembedding = {:?}\n\
             [privacy]\nepsilon = 5\n[train]\nlora_rank = 4\nsteps = 7\n",
            f.path("run"),
            f.path("run/data/train.jsonl"),
            f.path("model.gguf"),
            f.path("minilm"),
        );
        let conf = f.path("run.toml");
        std::fs::write(&conf, toml).unwrap();
        let audit = |extra: &[&str]| {
            let mut a = vec!["audit", "--config", &conf];
            a.extend_from_slice(extra);
            let crate::Command::Audit(a) = parse(&a) else {
                unreachable!()
            };
            crate::cmd::audit::training(&a).unwrap()
        };
        let (t, dir) = audit(&["--lr", "0.02"]);
        assert_eq!(dir, Some(PathBuf::from(f.path("run"))));
        // The run's train stage with the same file and flag.
        let r = dpsynth_report::resolve(
            Some(Path::new(&conf)),
            &[Override::new("learning-rate", "0.02")],
        )
        .unwrap();
        let mut want =
            crate::pipeline::train_config(&r.config, Path::new(&f.path("run")), false).unwrap();
        assert_eq!(want.label_distribution, LabelDistribution::Dp);
        want.label_distribution = LabelDistribution::Uniform;
        want.out = PathBuf::new();
        assert_eq!(t, want);
        assert_eq!((t.lr, t.epsilon, t.steps), (0.02, Some(5.0), Some(7)));
        // A flag that changes ε does not move the run directory (which ε names by default).
        let (t, dir) = audit(&["--epsilon", "2"]);
        assert_eq!(
            (t.epsilon, dir),
            (Some(2.0), Some(PathBuf::from(f.path("run"))))
        );
        // Without --config: the defaults of `train`, uniform labels.
        let (data, out) = (f.path("run/data/train.jsonl"), f.path("audit"));
        let crate::Command::Audit(a) =
            parse(&["audit", "--data", &data, "--out", &out, "--steps", "9"])
        else {
            unreachable!()
        };
        let (t, dir) = crate::cmd::audit::training(&a).unwrap();
        let mut want = f.train(&["--steps", "9"]);
        want.label_distribution = LabelDistribution::Uniform;
        want.out = PathBuf::new();
        want.model = t.model.clone();
        assert_eq!((t, dir), (want, None));
    }

    #[test]
    fn every_training_key_is_a_train_and_audit_flag() {
        let mut cmd = crate::Cli::command();
        for sub in ["train", "audit"] {
            let c = cmd.find_subcommand_mut(sub).unwrap();
            let longs: Vec<String> = c
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect();
            for k in KEYS
                .iter()
                .filter(|k| k.key.starts_with("privacy.") || k.key.starts_with("train."))
            {
                assert!(
                    longs.iter().any(|l| l == k.flag),
                    "`dpsynth {sub}` has no --{} for {}",
                    k.flag,
                    k.key
                );
            }
        }
        // Each flag sets its key (and nothing else).
        let f = Fixture::new();
        let (data, out) = (f.path("run/data/train.jsonl"), f.path("run/train"));
        for k in KEYS.iter().filter(|k| {
            k.key.starts_with("privacy.") || k.key.starts_with("train.") || k.key == "run.seed"
        }) {
            let value = match (k.key, k.kind) {
                ("train.method", _) => "prompt",
                ("train.lr_schedule", _) => "constant",
                ("train.prompt_template", _) => "T {label}",
                ("train.lora_targets", _) => "k_proj",
                ("privacy.delta" | "privacy.label_histogram_epsilon", _) => "0.25",
                (_, Kind::Int) => "3",
                (_, Kind::Float) => "2.5",
                (key, kind) => panic!("{key}: no test value for {kind:?}"),
            };
            let flag = format!("--{}", k.flag);
            let a = train_args(&["train", "--data", &data, "--out", &out, &flag, value]);
            let o = a.train.overrides();
            assert_eq!(o.len(), 1, "{flag}: {o:?}");
            assert_eq!(o[0].key, k.key);
            let r = dpsynth_report::config::resolve_training(&o).unwrap();
            assert_eq!(r.origins[k.key], flag);
        }
    }

    #[test]
    fn old_flag_names_still_parse_to_the_same_training() {
        let f = Fixture::new();
        let old = f.train(&[
            "--rank",
            "4",
            "--alpha",
            "8",
            "--targets",
            "q_proj,o_proj",
            "--lr",
            "0.02",
            "--clip-norm",
            "2",
            "--max-tokens",
            "30",
            "--template",
            "X {label}:",
            "--steps",
            "9",
            "--batch-size",
            "12",
        ]);
        let new = f.train(&[
            "--lora-rank",
            "4",
            "--lora-alpha",
            "8",
            "--lora-targets",
            "q_proj,o_proj",
            "--learning-rate",
            "0.02",
            "--max-grad-norm",
            "2",
            "--max-seq-len",
            "30",
            "--prompt-template",
            "X {label}:",
            "--steps",
            "9",
            "--batch-size",
            "12",
        ]);
        assert_eq!(old, new);
        assert_eq!((new.lr, new.clip_norm, new.max_tokens), (0.02, 2.0, 30));
        let Method::Lora(l) = &new.method else {
            panic!("{:?}", new.method)
        };
        assert_eq!((l.rank, l.alpha), (4, 8.0));
        assert_eq!(l.targets, vec!["q_proj".to_string(), "o_proj".to_string()]);
        let p = f.train(&[
            "--method",
            "prompt",
            "--virtual-tokens",
            "11",
            "--steps",
            "9",
        ]);
        assert_eq!(p.method, Method::Prompt { virtual_tokens: 11 });
        // --label-budget-share: the histogram's share of ε, as before.
        let s = f.train(&[
            "--epsilon",
            "4",
            "--label-budget-share",
            "0.25",
            "--steps",
            "9",
        ]);
        assert_eq!(s.label_budget_share, 0.25);
        assert_eq!(s.label_distribution, LabelDistribution::Dp);
        // The audit takes the same spellings.
        let (data, out) = (f.path("run/data/train.jsonl"), f.path("audit"));
        let crate::Command::Audit(a) = parse(&[
            "audit",
            "--data",
            &data,
            "--out",
            &out,
            "--rank",
            "4",
            "--lr",
            "0.02",
            "--clip-norm",
            "2",
            "--max-tokens",
            "30",
            "--lora-targets",
            "q_proj",
        ]) else {
            unreachable!()
        };
        assert_eq!(a.train.lora_rank, Some(4));
        assert_eq!(a.train.learning_rate, Some(0.02));
        assert_eq!(a.train.max_grad_norm, Some(2.0));
        assert_eq!(a.train.max_seq_len, Some(30));
    }

    #[test]
    fn train_help_shows_the_run_toml_names() {
        let mut cmd = crate::Cli::command();
        let h = cmd
            .find_subcommand_mut("train")
            .unwrap()
            .render_long_help()
            .to_string();
        for name in [
            "--epsilon",
            "--delta",
            "--label-histogram-epsilon",
            "--max-grad-norm",
            "--lora-rank",
            "--lora-alpha",
            "--lora-targets",
            "--prompt-tokens",
            "--prompt-template",
            "--learning-rate",
            "--max-seq-len",
            "--time-budget",
            "[privacy.epsilon]",
            "[train.lora_rank]",
        ] {
            assert!(h.contains(name), "{name} missing in:\n{h}");
        }
        // The old names are hidden aliases: mentioned in the text, not listed as options.
        for old in [
            "--rank <",
            "--lr <",
            "--clip-norm <",
            "--max-tokens <",
            "--virtual-tokens <",
            "--template <",
        ] {
            assert!(!h.contains(old), "{old} listed in:\n{h}");
        }
        assert!(h.contains("Old flag names still work"), "{h}");
        // The defaults shown are those of defaults.rs.
        assert!(
            h.contains(&format!("[default: {}]", defaults::EPSILON)),
            "{h}"
        );
    }

    #[test]
    fn no_dp_and_unknown_label_settings() {
        let f = Fixture::new();
        let t = f.train(&["--no-dp", "--steps", "5"]);
        assert!(t.no_dp && t.epsilon.is_none() && t.noise_multiplier.is_none());
        assert_eq!(t.label_distribution, LabelDistribution::Uniform);
        assert_eq!(t, f.train(&["--epsilon", "inf", "--steps", "5"]));
        // An explicit dp histogram needs a share of ε.
        let (data, out) = (f.path("run/data/train.jsonl"), f.path("run/train"));
        let a = train_args(&[
            "train",
            "--data",
            &data,
            "--out",
            &out,
            "--label-histogram-epsilon",
            "0",
            "--label-distribution",
            "dp",
            "--steps",
            "5",
        ]);
        let e = a.to_config().unwrap_err();
        assert!(e.to_string().contains("--label-histogram-epsilon"), "{e}");
        // Bad values name their flag.
        let a = train_args(&["train", "--data", &data, "--out", &out, "--epsilon=-1"]);
        let e = a.to_config().unwrap_err();
        assert!(e.to_string().contains("--epsilon"), "{e}");
    }
}
