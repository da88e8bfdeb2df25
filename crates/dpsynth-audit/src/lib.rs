//! dpsynth-audit: an empirical check of a DP-SGD training's privacy guarantee.
//!
//! A DP guarantee is a proof about an implementation that can have bugs. The audit inserts
//! `m` random canaries into the training data, each independently with probability 1/2
//! ([`canary`]), trains with exactly the user's configuration, scores every canary by how
//! much the fine-tuned model's loss dropped relative to the base model ([`score`]), and turns
//! the auditor's guesses into an ε lower bound from this one run (Steinke, Nasr & Jagielski
//! 2023; the statistics are `dpsynth_privacy::audit`'s, see [`bound`]). A lower bound above the ledger's claimed ε is a [`Verdict::Violation`]:
//! with the stated confidence, the implementation is not as private as it claims.
//!
//! Entry points: [`run_audit`] (loads the model) and [`run_audit_with`] (a loaded model);
//! both write `audit.json` ([`AuditReport`], schema version [`AUDIT_SCHEMA_VERSION`]).
//!
//! # Privacy
//! The audit trains on the user's private data plus canaries. Its outputs (`audit.json`,
//! `train/`) are covered by the audit run's own ledger (`train/privacy.json`), like any
//! training run, and spend budget of their own if the data are the real private data.

pub mod bound;
pub mod canary;
pub mod error;
pub mod run;
pub mod score;
pub mod tiny;

pub use bound::{bound_from_scores, AuditResult};
pub use canary::{generate_canaries, Canary, CanaryKind};
pub use error::{AuditError, Result};
pub use run::{
    run_audit, run_audit_with, AuditConfig, AuditReport, CanaryResult, Fault, Verdict, AUDIT_JSON,
    AUDIT_SCHEMA_VERSION,
};
