//! dpsynth-train: DP-SGD fine-tuning of a llama-family model (LoRA, prompt tuning, full
//! fine-tuning) with exact per-example clipping, Poisson sampling, a privacy ledger and
//! checkpoints; and sampling of a labeled synthetic dataset from the trained model.
//!
//! Pipeline of one logical step (types enforce the order, see [`dp`]):
//! Poisson sample ([`rng::DpRng::poisson_sample`]) → length-bucketed physical micro-batches
//! ([`train::plan_microbatches`]) → per-example gradients, each micro-batch's examples split
//! across threads ([`model::per_example_grads`] over [`model::batched_per_example_grads`];
//! full fine-tuning: [`model::FullVars`]) → [`dp::PerExampleGrads`] →
//! clip and sum → [`dp::ClippedSum`] → noise → [`dp::NoisyGradient`] → [`optim::AdamW`].

// Validation is written as `!(x > 0.0)` on purpose: unlike `x <= 0.0` it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod adapter_io;
pub mod bench;
pub mod card;
pub mod checkpoint;
pub mod dp;
pub mod error;
pub mod filter;
pub mod format;
pub mod frozen;
pub mod labels;
pub mod ledger;
mod method;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod progress;
pub mod rng;
pub mod shard;
pub mod synth;
pub mod train;

pub use error::{Result, TrainError};
pub use labels::LabelDistribution;
pub use model::{Example, Method, Params};
pub use progress::ConsoleProgress;
pub use train::{train, NoProgress, Progress, StepInfo, TrainConfig, TrainSummary};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dp;
#[cfg(test)]
mod tests_synth;
