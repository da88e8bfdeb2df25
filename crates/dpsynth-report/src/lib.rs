//! dpsynth-report: the machinery behind `dpsynth run`, `dpsynth sweep` and `dpsynth report`.
//!
//! - [`config`]: `run.toml` + flags over preset defaults ([`defaults`], the one place for the
//!   default numbers), checked before any work (unknown key, wrong type, ε ≤ 0, missing path).
//! - [`stage`]: per-stage records (`RUN_DIR/stages/<stage>.json`) with config and input/output
//!   hashes; skip finished stages, resume interrupted ones, `--from` re-runs.
//! - [`privacy`]: the run's privacy ledger (one release per training attempt, ε from the
//!   training crate's PLD ledger) and the report's view of the DP label histogram.
//! - [`report`]: report.md / report.html (self-contained, inline SVG charts, no JavaScript) for a
//!   run or a sweep, robust to stages that did not run.
//! - [`sweep`]: the ε × method × dataset grid.
//! - [`machine`]: the machine description printed by `dpsynth bench`.
//!
//! This crate reads the other stages' outputs as JSON files; it does not depend on the model,
//! training or evaluation crates.

pub mod config;
pub mod defaults;
pub mod machine;
pub mod privacy;
pub mod report;
pub mod stage;
pub mod sweep;

pub use config::{resolve, ConfigError, Override, Resolved, RunConfig, KEYS};
pub use defaults::Preset;
pub use privacy::{LabelHistogram, RunLedger};
pub use stage::{Decision, Pipeline, StageRecord, STAGES};
