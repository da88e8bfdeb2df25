//! `dpsynth account`: privacy accounting for DP-SGD from the command line.

use anyhow::{bail, Context};
use dpsynth_privacy::{
    calibrate_noise_multiplier_for, calibrate_run, epsilon_pld, epsilon_rdp, max_steps, DpEvent,
    Neighboring,
};

const HELP: &str = "\
How it works: DP-SGD with Poisson sampling includes each training example in a step's batch
independently with probability q (the sampling rate), clips per-example gradients to norm C
and adds Gaussian noise with standard deviation σ·C (σ = noise multiplier). Give q
(--sampling-rate, or --batch-size and --dataset-size), the run length (--steps, or --epochs =
steps × q) and δ, plus --noise-multiplier (prints ε) or --epsilon (prints the smallest σ that
meets it). With both, it also prints how many steps σ affords within --epsilon.

A dpsynth run also releases a DP label histogram (Gaussian noise calibrated to its own ε,
`privacy.label_histogram_epsilon`, 0.1 by default) and composes it with DP-SGD under PLD. Give
--label-histogram-epsilon to account for that whole release: `dpsynth account` then prints the
same σ that `dpsynth train`/`run` use for the same plan (one calibration serves all three).

ε is reported by two accountants: the privacy-loss-distribution (PLD) accountant is tight and
is the number to quote; the Rényi-DP (RDP) accountant is a looser cross-check (its optimal order
α is shown).

Examples:
  dpsynth account --batch-size 256 --dataset-size 25000 -s 1.0 --epochs 3 --delta 1e-5
  dpsynth account --sampling-rate 0.01 --epsilon 3 --steps 1000 --json
  dpsynth account -q 0.01 -s 1.0 --epsilon 3 --steps 1000   # ε, and steps affordable at ε=3
  dpsynth account --batch-size 32 --dataset-size 8192 --steps 160 -e 3 --label-histogram-epsilon 0.1";

/// Compute the (ε, δ) guarantee of a DP-SGD run, or the noise it needs for a target ε.
#[derive(clap::Args, Debug)]
#[command(after_help = HELP)]
pub struct Args {
    /// Poisson sampling rate q in (0, 1]: the probability that each example is in a step's batch.
    #[arg(long, short = 'q', conflicts_with_all = ["batch_size", "dataset_size"])]
    pub sampling_rate: Option<f64>,
    /// Expected batch size (with --dataset-size: q = batch size / dataset size).
    #[arg(long, requires = "dataset_size")]
    pub batch_size: Option<u64>,
    /// Number of training examples (or users, with --user-level).
    #[arg(long, requires = "batch_size")]
    pub dataset_size: Option<u64>,
    /// Noise multiplier σ (noise std / clipping norm). Prints ε.
    #[arg(long, short = 's')]
    pub noise_multiplier: Option<f64>,
    /// Target ε. Without --noise-multiplier: prints the smallest σ meeting it.
    /// With it: also prints how many steps fit in this budget.
    #[arg(long, short = 'e')]
    pub epsilon: Option<f64>,
    /// Number of DP-SGD steps.
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Number of epochs (steps = ceil(epochs / q)).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// δ: the probability mass the guarantee may fail on; choose well below 1 / dataset size.
    #[arg(long, short = 'd', default_value_t = 1e-5)]
    pub delta: f64,
    /// ε of a DP label histogram released with the run (as `dpsynth run`'s
    /// `privacy.label_histogram_epsilon`): its Gaussian noise is calibrated to this ε alone and
    /// composed with DP-SGD under PLD. Default: no histogram (DP-SGD only).
    #[arg(long)]
    pub label_histogram_epsilon: Option<f64>,
    /// Protect users rather than records (sample users; q = users per step / number of users).
    #[arg(long)]
    pub user_level: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    neighboring: String,
    sampling_rate: f64,
    steps: u64,
    delta: f64,
    noise_multiplier: f64,
    noise_multiplier_calibrated: bool,
    epsilon_pld: f64,
    epsilon_rdp: f64,
    rdp_order: f64,
    rdp_order_on_grid_edge: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    label_histogram_noise_multiplier: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_epsilon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_steps_within_target: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let q = match (args.sampling_rate, args.batch_size, args.dataset_size) {
        (Some(q), _, _) => q,
        (None, Some(b), Some(n)) => {
            if n == 0 {
                bail!("--dataset-size must be at least 1");
            }
            if b == 0 || b > n {
                bail!("--batch-size must be between 1 and --dataset-size ({n}), got {b}");
            }
            b as f64 / n as f64
        }
        _ => bail!("give the sampling rate: --sampling-rate Q, or --batch-size B --dataset-size N"),
    };
    if !(q > 0.0 && q <= 1.0) {
        bail!("the sampling rate must be in (0, 1], got {q}");
    }
    let steps = match (args.steps, args.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => {
            if !(e > 0.0 && e.is_finite()) {
                bail!("--epochs must be > 0, got {e}");
            }
            (e / q).ceil() as u64
        }
        _ => bail!("give the run length: --steps T or --epochs E"),
    };
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let neighboring = if args.user_level {
        Neighboring::AddRemoveUser
    } else {
        Neighboring::AddRemoveRecord
    };
    let label_sigma = match args.label_histogram_epsilon {
        None => None,
        Some(el) => {
            if !(el > 0.0 && el.is_finite()) {
                bail!("--label-histogram-epsilon must be > 0, got {el}");
            }
            if let Some(e) = args.epsilon {
                if el >= e {
                    bail!("--label-histogram-epsilon ({el}) must be smaller than --epsilon ({e})");
                }
            }
            Some(
                calibrate_noise_multiplier_for(el, args.delta, DpEvent::gaussian)
                    .with_context(|| format!("calibrating the label histogram's σ for ε = {el}"))?,
            )
        }
    };
    let (sigma, calibrated) = match (args.noise_multiplier, args.epsilon) {
        (Some(s), _) => (s, false),
        (None, Some(e)) => {
            let share = args.label_histogram_epsilon.map(|el| el / e);
            let run = calibrate_run(e, args.delta, q, steps, share)
                .with_context(|| format!("calibrating σ for ε = {e}"))?;
            (run.sigma, true)
        }
        (None, None) => bail!("give --noise-multiplier σ (to get ε) or --epsilon ε (to get σ)"),
    };
    let event = DpEvent::dpsynth_run(label_sigma, q, sigma, steps);
    let eps_pld = epsilon_pld(&event, args.delta).context("PLD accountant")?;
    let rdp = epsilon_rdp(&event, args.delta).context("RDP accountant")?;
    let max_steps_within_target = match (args.noise_multiplier, args.epsilon) {
        (Some(s), Some(e)) if label_sigma.is_none() => Some(
            max_steps(s, q, args.delta, e)
                .with_context(|| format!("steps affordable within ε = {e}"))?,
        ),
        _ => None,
    };
    let report = Report {
        neighboring: neighboring.to_string(),
        sampling_rate: q,
        steps,
        delta: args.delta,
        noise_multiplier: sigma,
        noise_multiplier_calibrated: calibrated,
        label_histogram_noise_multiplier: label_sigma,
        epsilon_pld: eps_pld,
        epsilon_rdp: rdp.epsilon,
        rdp_order: rdp.order,
        rdp_order_on_grid_edge: rdp.order_on_grid_edge,
        target_epsilon: args.epsilon,
        max_steps_within_target,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "DP-SGD, Poisson sampling, neighbors: {}",
        report.neighboring
    );
    println!("  sampling rate q    {q}");
    println!(
        "  steps              {steps}  (≈ {:.2} epochs)",
        steps as f64 * q
    );
    println!("  δ                  {:e}", args.delta);
    if calibrated {
        println!(
            "  noise multiplier σ {sigma:.4}  (smallest σ with ε ≤ {} by the PLD accountant)",
            args.epsilon.unwrap_or_default()
        );
    } else {
        println!("  noise multiplier σ {sigma}");
    }
    if let (Some(ls), Some(el)) = (label_sigma, args.label_histogram_epsilon) {
        println!(
            "  label histogram σ  {ls:.4}  (Gaussian, ε = {el} on its own; composed with DP-SGD)"
        );
    }
    println!("ε (PLD, tight)       {eps_pld:.4}");
    println!(
        "ε (RDP, cross-check) {:.4}  at order α = {}{}",
        rdp.epsilon,
        rdp.order,
        if rdp.order_on_grid_edge {
            "  (on the edge of the order grid)"
        } else {
            ""
        }
    );
    if let (Some(t), Some(e)) = (max_steps_within_target, args.epsilon) {
        println!("steps affordable within ε = {e}: {t}");
    }
    Ok(())
}
