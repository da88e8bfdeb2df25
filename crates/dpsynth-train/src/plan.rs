//! Choosing the DP-SGD regime (expected batch, steps, σ, learning-rate schedule) from public
//! quantities and a compute budget, never from results on the private data.
//!
//! # The rule
//! Inputs: the number of privacy units N (public, as in Abadi et al. 2016), the target (ε, δ) of
//! the DP-SGD part, a time budget in seconds and the training throughput in examples per second
//! (measured on public text, or the bench constant [`bench_tokens_per_second`] for this
//! project's CPU divided by the tokens of one example).
//!
//! 1. **Compute.** The budget allows `E = budget · throughput` example gradients, capped at
//!    [`PlanOptions::max_epochs`] · N (more epochs than that are not used even when compute
//!    allows them: published recipes use 3–50 epochs, Li et al. 2022; Yue et al. 2023).
//! 2. **Batch.** For each expected batch B on a geometric grid between
//!    [`PlanOptions::min_batch`] and `min(max_batch, max_q · N)`, the step count is
//!    `T = ⌊E / B⌋`, and σ(B) is calibrated to the target by the PLD accountant
//!    ([`dpsynth_privacy::calibrate_noise_multiplier`]). The plan keeps the B that maximises the
//!    signal-to-noise ratio of the summed update, `√T · B / σ` (the clipped signal adds up
//!    linearly over T steps of B examples, the noise of std σ·C per step adds up as √T), among
//!    the batches with `T ≥ min_steps`. In the large-σ (CLT) regime σ ≈ c·q·√T, so the ratio is
//!    ≈ N / c for every B: the rule then costs nothing in noise and is decided by the small-σ
//!    regime, where σ stops shrinking with q and small batches lose — which is why it prefers
//!    large expected batches (hundreds–thousands) and several epochs when the budget allows them.
//!    Among the batches within 5 % of the best ratio (noise std at most ~5 % above the best), the
//!    plan takes the one with the most steps: at equal noise, more optimiser updates are free
//!    progress, and as the budget grows the step count then grows with it.
//! 3. **Steps floor.** `min_steps` (default 100) keeps enough optimiser updates for Adam with a
//!    warm-up: a non-private LoRA fine-tuning of this model learned the label in 60 steps of
//!    batch 32 (issue 17), and the warm-up takes 10 % of the steps. When even the smallest batch
//!    cannot reach `min_steps` within the budget, the plan uses the smallest batch and the steps
//!    the budget allows, and says so ([`RegimePlan::notes`]); below 10 steps it is an error.
//! 4. **Schedule.** Linear warm-up over [`PlanOptions::warmup_fraction`] of the steps, then
//!    cosine decay to 0 ([`crate::optim::LrSchedule::Cosine`]); the peak rate is the user's.
//!
//! Explicit user settings (steps, batch, σ) override the plan: the CLI only asks for a plan
//! when they are absent.
//!
//! # Privacy
//! The plan reads only public quantities (N, ε, δ, the budget, a throughput measured on public
//! text or a bench constant): choosing hyperparameters from them spends nothing (Papernot &
//! Steinke 2022 is about choosing them from *private* results, which this never does). The σ it
//! reports is calibrated by [`dpsynth_privacy::calibrate_noise_multiplier`] for DP-SGD alone at
//! the DP-SGD part of ε; training calibrates σ again for the composed run (label histogram +
//! DP-SGD) and its ledger is what counts.

use serde::{Deserialize, Serialize};

use crate::optim::LrSchedule;
use crate::{Result, TrainError};

/// Bench throughput of one DP-SGD training step in (padded) tokens per second, per method, 1
/// thread, release build, bf16 frozen base, SmolLM2-135M, micro-batch 8 × 128 tokens
/// (`bench_step`). The constants were measured on the AMD EPYC (2026-11-30,
/// crates/dpsynth-train/REPORT.md): LoRA 1.87 s/step → 548 tokens/s; prompt tuning 2.10 s/step
/// → 488 tokens/s; full fine-tuning (f32, one example at a time) 15.32 CPU-s per 8 examples →
/// 67 tokens/s. On the `Intel(R) Xeon(R) Processor` (AMX kernel, quiet, 2026-12-02,
/// `RAYON_NUM_THREADS=1 bench_step lora 3 8 bf16 both`) DP-LoRA runs 2.95 s/step on 8 × 128
/// (347 padded tokens/s) but 10.8 examples/s on Rotten Tomatoes' real lengths, above the
/// 7.2 examples/s this constant predicts for the quick preset's padded 76-token examples, so the
/// estimate stays on the safe side there; for long-text data on that CPU pass the measured
/// throughput (`train.throughput`). On any other CPU measure with `dpsynth bench`.
pub fn bench_tokens_per_second(method: &str) -> f64 {
    match method {
        "prompt" => 488.0,
        "full" => 67.0,
        _ => 548.0,
    }
}

/// Examples per second for a method from [`bench_tokens_per_second`], with every example
/// counted at its full padded length: the prefix (estimated as one token per 3 characters of
/// the template, an over-estimate for English BPE) + `max_tokens` text tokens + EOS. Real
/// records are often shorter, so a run planned with this estimate normally finishes early.
pub fn estimated_examples_per_second(method: &str, template: &str, max_tokens: usize) -> f64 {
    let prefix = template.chars().count().div_ceil(3).max(1);
    bench_tokens_per_second(method) / (prefix + max_tokens + 1) as f64
}

/// Options of the planner (all public).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Privacy units (records, or users for user-level DP).
    pub n_units: usize,
    /// ε of the DP-SGD part (the run's ε minus what the label histogram is calibrated to);
    /// `f64::INFINITY` plans a non-private run (no noise: the largest batch that keeps
    /// `min_steps`).
    pub epsilon: f64,
    pub delta: f64,
    /// Seconds of training time the plan may use.
    pub time_budget_s: f64,
    /// Training throughput in examples (units) per second.
    pub examples_per_second: f64,
    /// Fewest optimiser steps the plan aims for (default 100, see the module docs).
    pub min_steps: u64,
    /// Epochs are capped here even when the budget allows more (default 20).
    pub max_epochs: f64,
    /// Smallest expected batch considered (default 16).
    pub min_batch: usize,
    /// Largest expected batch considered (default 4096, Yue et al. 2023).
    pub max_batch: usize,
    /// Largest sampling rate q = B / N considered (default 0.25: Poisson subsampling's
    /// amplification fades as q → 1).
    pub max_q: f64,
    /// Fraction of the steps used for linear warm-up (default 0.1).
    pub warmup_fraction: f64,
}

impl PlanOptions {
    pub fn new(
        n_units: usize,
        epsilon: f64,
        delta: f64,
        time_budget_s: f64,
        examples_per_second: f64,
    ) -> Self {
        Self {
            n_units,
            epsilon,
            delta,
            time_budget_s,
            examples_per_second,
            min_steps: 100,
            max_epochs: 20.0,
            min_batch: 16,
            max_batch: 4096,
            max_q: 0.25,
            warmup_fraction: 0.1,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("regime plan: {m}")));
        if self.n_units == 0 {
            return bad("the dataset has no records".into());
        }
        if !(self.epsilon > 0.0) {
            return bad(format!(
                "ε must be positive (inf = non-private), got {}",
                self.epsilon
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return bad(format!("δ must be in (0, 1), got {}", self.delta));
        }
        if !(self.time_budget_s > 0.0 && self.time_budget_s.is_finite()) {
            return bad(format!(
                "the time budget must be a positive number of seconds, got {}",
                self.time_budget_s
            ));
        }
        if !(self.examples_per_second > 0.0 && self.examples_per_second.is_finite()) {
            return bad(format!(
                "the throughput must be positive examples/s, got {}",
                self.examples_per_second
            ));
        }
        if self.min_steps == 0 || self.min_batch == 0 || self.max_batch < self.min_batch {
            return bad("min_steps ≥ 1 and 1 ≤ min_batch ≤ max_batch are required".into());
        }
        if !(self.max_epochs > 0.0 && self.max_q > 0.0 && self.max_q <= 1.0) {
            return bad("max_epochs > 0 and max_q in (0, 1] are required".into());
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return bad("the warm-up fraction must be in [0, 1)".into());
        }
        Ok(())
    }
}

/// One candidate of the batch grid (kept in the plan so the choice can be printed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub expected_batch: usize,
    pub steps: u64,
    pub sigma: f64,
    /// √T · B / σ.
    pub snr: f64,
}

/// The chosen regime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegimePlan {
    pub expected_batch: usize,
    pub steps: u64,
    /// q = B / N.
    pub sampling_probability: f64,
    /// σ calibrated for DP-SGD alone at the plan's ε (training re-calibrates the composed run).
    pub sigma: f64,
    pub epochs: f64,
    /// Noise std on the averaged update relative to the clip norm: σ / B.
    pub noise_per_update: f64,
    pub warmup_fraction: f64,
    pub schedule: LrSchedule,
    /// Estimated training seconds at the given throughput.
    pub estimated_seconds: f64,
    pub candidates: Vec<Candidate>,
    /// Why the plan deviates from the rule (e.g. too little budget for `min_steps`).
    pub notes: Vec<String>,
    pub options: PlanOptions,
}

impl RegimePlan {
    /// One line for the start of a run.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "regime plan: expected batch {} (q = {:.4}), {} steps ≈ {:.2} epochs, σ ≈ {:.3} (σ/B = {:.2e}), \
             warm-up {:.0}% then {} decay, ≈ {:.0} s at {:.1} examples/s (budget {:.0} s, N = {}, ε = {}, δ = {:e})",
            self.expected_batch,
            self.sampling_probability,
            self.steps,
            self.epochs,
            self.sigma,
            self.noise_per_update,
            self.warmup_fraction * 100.0,
            self.schedule.name(),
            self.estimated_seconds,
            self.options.examples_per_second,
            self.options.time_budget_s,
            self.options.n_units,
            self.options.epsilon,
            self.options.delta,
        );
        for n in &self.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }
}

/// Batches whose √T·B/σ is at least this fraction of the best are treated as equal (5 % more
/// noise std at most; a first-principles tolerance, not tuned on any data).
pub const SNR_TOLERANCE: f64 = 0.95;

fn calibrate(o: &PlanOptions, q: f64, steps: u64) -> Result<f64> {
    if o.epsilon.is_infinite() {
        return Ok(0.0);
    }
    dpsynth_privacy::calibrate_noise_multiplier(o.epsilon, o.delta, q, steps).map_err(|e| {
        TrainError::Budget(format!(
            "regime plan: no σ reaches ε = {} at q = {q:.4} over {steps} steps: {e}",
            o.epsilon
        ))
    })
}

/// Choose the regime (see the module docs for the rule).
///
/// # Privacy
/// Uses only public inputs; see the module docs.
pub fn plan_regime(o: &PlanOptions) -> Result<RegimePlan> {
    o.validate()?;
    let n = o.n_units as f64;
    let compute = (o.time_budget_s * o.examples_per_second).min(o.max_epochs * n);
    let b_max = (o.max_batch as f64)
        .min((o.max_q * n).floor())
        .max(o.min_batch.min(o.n_units) as f64) as usize;
    let b_min = o.min_batch.min(b_max);
    // Geometric grid, ×√2 per point, both ends included.
    let mut grid = Vec::new();
    let mut b = b_min as f64;
    while (b as usize) < b_max {
        grid.push(b.round() as usize);
        b *= std::f64::consts::SQRT_2;
    }
    grid.push(b_max);
    grid.dedup();
    let mut notes = Vec::new();
    let feasible: Vec<usize> = grid
        .iter()
        .copied()
        .filter(|&b| (compute / b as f64).floor() as u64 >= o.min_steps)
        .collect();
    let search = if feasible.is_empty() {
        notes.push(format!(
            "the budget allows only {:.0} example gradients: fewer than {} steps even at the smallest batch {b_min}",
            compute, o.min_steps
        ));
        vec![b_min]
    } else {
        feasible
    };
    let mut cands = Vec::new();
    for &b in &search {
        let steps = (compute / b as f64).floor() as u64;
        if steps < 10 {
            return Err(TrainError::Config(format!(
                "regime plan: a time budget of {:.0} s at {:.2} examples/s allows only {steps} steps of expected batch {b}; \
                 give a larger --time-budget (at least {:.0} s) or set --steps and --batch-size yourself",
                o.time_budget_s,
                o.examples_per_second,
                10.0 * b as f64 / o.examples_per_second
            )));
        }
        let q = (b as f64 / n).min(1.0);
        let sigma = calibrate(o, q, steps)?;
        cands.push(Candidate {
            expected_batch: b,
            steps,
            sigma,
            // Non-private (σ = 0): the noise-free ratio √T·B, largest at the largest batch.
            snr: (steps as f64).sqrt() * b as f64 / if sigma > 0.0 { sigma } else { 1.0 },
        });
    }
    let best = cands
        .iter()
        .map(|c| c.snr)
        .fold(f64::NEG_INFINITY, f64::max);
    let chosen = cands
        .iter()
        .filter(|c| c.snr >= SNR_TOLERANCE * best)
        .max_by_key(|c| (c.steps, c.expected_batch))
        .expect("at least one candidate")
        .clone();
    if compute >= o.max_epochs * n {
        notes.push(format!(
            "epochs capped at {} (the budget allows more)",
            o.max_epochs
        ));
    }
    let q = (chosen.expected_batch as f64 / n).min(1.0);
    let examples = chosen.steps as f64 * chosen.expected_batch as f64;
    Ok(RegimePlan {
        expected_batch: chosen.expected_batch,
        steps: chosen.steps,
        sampling_probability: q,
        sigma: chosen.sigma,
        epochs: examples / n,
        noise_per_update: chosen.sigma / chosen.expected_batch as f64,
        warmup_fraction: o.warmup_fraction,
        schedule: LrSchedule::Cosine,
        estimated_seconds: examples / o.examples_per_second,
        candidates: cands,
        notes,
        options: o.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpsynth_privacy::{epsilon_pld, DpEvent};

    fn opts(budget: f64) -> PlanOptions {
        PlanOptions::new(8192, 3.0, 1e-5, budget, 12.0)
    }

    #[test]
    fn plan_meets_the_target_by_the_accountant() {
        for budget in [400.0, 3600.0] {
            let p = plan_regime(&opts(budget)).unwrap();
            eprintln!("{}", p.describe());
            let e = epsilon_pld(
                &DpEvent::dp_sgd(p.sampling_probability, p.sigma, p.steps),
                1e-5,
            )
            .unwrap();
            assert!(e <= 3.0, "budget {budget}: ε = {e}");
            assert!(e > 2.9, "calibration should be tight, ε = {e}");
            assert!(p.steps >= 100, "{}", p.describe());
            assert!(p.estimated_seconds <= budget * 1.0001, "{}", p.describe());
            // The chosen candidate has the best SNR up to the tolerance.
            let best = p.candidates.iter().map(|c| c.snr).fold(0.0, f64::max);
            let c = p
                .candidates
                .iter()
                .find(|c| c.expected_batch == p.expected_batch)
                .unwrap();
            assert!(c.snr >= SNR_TOLERANCE * best);
        }
    }

    #[test]
    fn more_budget_never_fewer_examples_and_prefers_large_batches() {
        let mut last_examples = 0.0;
        let mut last_steps = 0;
        for budget in [300.0, 1200.0, 4800.0, 19200.0] {
            let p = plan_regime(&opts(budget)).unwrap();
            let ex = p.steps as f64 * p.expected_batch as f64;
            assert!(ex >= last_examples, "{}", p.describe());
            assert!(p.steps >= last_steps, "{}", p.describe());
            last_examples = ex;
            last_steps = p.steps;
        }
        // A large budget on 8,192 records: hundreds+ per batch, several epochs, less noise.
        let big = plan_regime(&opts(19200.0)).unwrap();
        assert!(big.expected_batch >= 256, "{}", big.describe());
        assert!(big.epochs >= 3.0, "{}", big.describe());
        let small = plan_regime(&opts(300.0)).unwrap();
        assert!(big.noise_per_update < small.noise_per_update);
    }

    /// The quick preset's numbers (printed with `--nocapture`): Rotten Tomatoes' template, 48
    /// tokens, 8,192 records, ε = 3 minus the histogram's 0.1, 600 s; and the full preset's 4 h.
    #[test]
    fn preset_budgets_plan() {
        let t =
            "Write a one-sentence {label} movie review (fresh = positive, rotten = negative):\n";
        for (budget, len) in [(600.0, 48), (14400.0, 128)] {
            let eps = estimated_examples_per_second("lora", t, len);
            let p = plan_regime(&PlanOptions::new(8192, 2.9, 1e-5, budget, eps)).unwrap();
            eprintln!("{}", p.describe());
            for c in &p.candidates {
                eprintln!(
                    "  B {} T {} σ {:.3} snr {:.1}",
                    c.expected_batch, c.steps, c.sigma, c.snr
                );
            }
            assert!(p.estimated_seconds <= budget);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut o = opts(600.0);
        o.epsilon = 0.0;
        assert!(plan_regime(&o).is_err());
        let mut o = opts(600.0);
        o.epsilon = f64::NAN;
        assert!(plan_regime(&o).is_err());
        let mut o = opts(600.0);
        o.delta = 1.0;
        assert!(plan_regime(&o).is_err());
        assert!(plan_regime(&opts(0.0)).is_err());
        assert!(plan_regime(&opts(f64::NAN)).is_err());
        let mut o = opts(600.0);
        o.examples_per_second = -1.0;
        assert!(plan_regime(&o).is_err());
        let mut o = opts(600.0);
        o.n_units = 0;
        assert!(plan_regime(&o).is_err());
        // Too little budget for 10 steps: a clear error naming the flag.
        let e = plan_regime(&opts(5.0)).unwrap_err().to_string();
        assert!(e.contains("--time-budget"), "{e}");
    }

    #[test]
    fn non_private_plan_takes_the_largest_batch_with_enough_steps() {
        let mut o = opts(3600.0);
        o.epsilon = f64::INFINITY;
        let p = plan_regime(&o).unwrap();
        assert_eq!(p.sigma, 0.0);
        assert!(p.steps >= 100);
        // Without noise the largest batch that keeps 100 steps wins: every candidate searched
        // keeps 100 steps, and the chosen one is the largest.
        assert!(p.candidates.iter().all(|c| c.steps >= 100));
        let largest = p.candidates.iter().map(|c| c.expected_batch).max().unwrap();
        assert_eq!(p.expected_batch, largest, "{}", p.describe());
        assert!(p.expected_batch * 2 > 3600 * 12 / 100, "{}", p.describe());
        // The estimate of examples/s counts the template and the full length.
        let e = estimated_examples_per_second("lora", "Write a {label} text:\n", 48);
        assert!((e - 548.0 / (8 + 48 + 1) as f64).abs() < 1e-9, "{e}");
        assert!(estimated_examples_per_second("full", "x", 48) < e);
    }

    #[test]
    fn a_small_budget_falls_back_to_the_smallest_batch_and_says_so() {
        let p = plan_regime(&opts(100.0)).unwrap();
        assert_eq!(p.expected_batch, 16);
        assert!(p.steps < 100 && p.steps >= 10);
        assert!(!p.notes.is_empty());
    }
}
