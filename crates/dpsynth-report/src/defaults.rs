//! The one documented place for dpsynth's default run numbers.
//!
//! `dpsynth run` with no flags uses [`Preset::Quick`]: it is sized so that the whole pipeline
//! (prepare Rotten Tomatoes, DP label histogram, DP-LoRA fine-tuning of SmolLM2-135M, synthesis,
//! evaluation, report) finishes in about 15 minutes on 2 CPU cores. `--preset full` is for bigger
//! machines and gives numbers closer to the paper's setting.
//!
//! | key                              | quick  | full   | why |
//! |----------------------------------|--------|--------|-----|
//! | `data.max_train` (subset size)   | 1024   | 0 (all)| private training records used |
//! | `data.max_test`                  | 400    | 0 (all)| held-out real records for evaluation |
//! | `train.steps`                    | 50     | 1000   | DP-SGD steps |
//! | `train.batch_size` (expected)    | 16     | 64     | Poisson sampling rate q = batch / n |
//! | `train.max_seq_len` (tokens)     | 64     | 128    | prompt + review tokens per example |
//! | `train.learning_rate`            | 2e-3   | 1e-3   | LoRA learning rate (Adam) |
//! | `synth.count` (synthetic records)| 200    | 5000   | records sampled from the DP model |
//! | `synth.max_new_tokens`           | 48     | 96     | tokens generated per record |
//!
//! Privacy defaults (both presets): total ε = 3, δ = 1e-5, of which ε = 0.1 is spent on the DP
//! label histogram (discrete Laplace) and the rest on DP-SGD, clipping norm C = 1.0.
//!
//! Time estimate for `quick` on 2 cores (measured numbers from the peer stack and the candle
//! prototype, `/work/shared/reference/peer_numbers.md`): one DP-LoRA step of 16 × 64 tokens costs
//! about as much as Opacus' 8 × 128 step, 4–7 s, so 50 steps ≈ 3.5–6 min; 200 records × 48
//! tokens at ~100 tokens/s batched ≈ 1.5–2 min; MiniLM embeddings of ~1,600 short texts plus the
//! classifiers and the DP-SGD baseline ≈ 2–3 min; data and model loading < 1 min.

use serde::{Deserialize, Serialize};

/// A named set of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// About 15 minutes on 2 cores (the default).
    #[default]
    Quick,
    /// Paper-like sizes for bigger machines.
    Full,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "quick" => Some(Preset::Quick),
            "full" => Some(Preset::Full),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Preset::Quick => "quick",
            Preset::Full => "full",
        }
    }
}

/// Numbers that differ between presets (see the module table).
#[derive(Debug, Clone, Copy)]
pub struct PresetNumbers {
    pub max_train: u64,
    pub max_test: u64,
    pub steps: u64,
    pub batch_size: u64,
    pub max_seq_len: u64,
    pub learning_rate: f64,
    pub synth_count: u64,
    pub max_new_tokens: u64,
}

pub const QUICK: PresetNumbers = PresetNumbers {
    max_train: 1024,
    max_test: 400,
    steps: 50,
    batch_size: 16,
    max_seq_len: 64,
    learning_rate: 2e-3,
    synth_count: 200,
    max_new_tokens: 48,
};

pub const FULL: PresetNumbers = PresetNumbers {
    max_train: 0,
    max_test: 0,
    steps: 1000,
    batch_size: 64,
    max_seq_len: 128,
    learning_rate: 1e-3,
    synth_count: 5000,
    max_new_tokens: 96,
};

/// Total ε of a run (label histogram + DP fine-tuning), both presets.
pub const EPSILON: f64 = 3.0;
/// δ of the run's (ε, δ) guarantee.
pub const DELTA: f64 = 1e-5;
/// Part of ε spent on the DP label histogram.
pub const LABEL_HISTOGRAM_EPSILON: f64 = 0.1;
/// Per-example clipping norm C.
pub const MAX_GRAD_NORM: f64 = 1.0;
/// Default dataset recipe.
pub const RECIPE: &str = "rotten-tomatoes";
/// Default fine-tuning method.
pub const METHOD: &str = "lora";
/// Default generator model, relative to the assets directory.
pub const MODEL: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Default sentence-embedding model directory, relative to the assets directory.
pub const EMBEDDING_MODEL: &str = "minilm";

impl Preset {
    pub fn numbers(self) -> PresetNumbers {
        match self {
            Preset::Quick => QUICK,
            Preset::Full => FULL,
        }
    }
}
