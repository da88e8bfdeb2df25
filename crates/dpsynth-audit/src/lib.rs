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
//! # Power: an audit that can fail
//! An audit can only report what its size allows. With m canaries, G guess sizes (union
//! bound) and every guess right, the bound is at most the *ceiling*
//! ([`dpsynth_privacy::audit::audit_ceiling`], reported in `audit.json` as `ceiling_epsilon`);
//! the 2mδ term of the theorem caps it further. At the defaults (1,024 canaries, δ = 1e-5 of
//! `dpsynth run`) the ceiling is 4.83; with the earlier 128 canaries it was 3.00 — equal to
//! the default claim, so no trainer, however broken, could be flagged. When the claimed ε is
//! at or above the ceiling the verdict is [`Verdict::Inconclusive`], never "consistent".
//!
//! A canary is only detectable if training samples it: [`plan`] keeps the user's batch size,
//! steps and δ but trains on a random subset of the user's records so that each inserted
//! canary is sampled ≥ 4 times in expectation (the quick preset at the user's q: 0.62 times,
//! 54% never). `audit.json` reports `expected_samples_per_canary` and `p_never_sampled`.
//!
//! What is repeated to check this (`tests/repeated_audits.rs`, in the normal test suite): 10
//! audits each on simulated score distributions ([`simulate`]: white-box Dirac canaries, the
//! exact release of DP-SGD; fresh coins, Poisson sampling and noise in every repetition) at
//! the defaults for the quick preset's training (8,192 records, batch 32, 160 steps): a
//! trainer with noise disabled is flagged for ledgers claiming ε = 1 and ε = 3 in ≥ 9 of 10
//! audits (observed: 10 of 10), and correct DP-SGD at ε = 1 and ε = 8 stays below its claim in
//! all 10 (ε = 8 is above the ceiling: inconclusive). `examples/tiny_sweep.rs` repeats the
//! whole audit, training included, on the tiny random model.
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
pub mod plan;
pub mod run;
pub mod score;
pub mod simulate;
pub mod tiny;

pub use bound::{bound_from_scores, AuditResult};
pub use canary::{generate_canaries, Canary, CanaryKind};
pub use error::{AuditError, Result};
pub use plan::{audit_plan, AuditPlan};
pub use run::{
    run_audit, run_audit_with, AuditConfig, AuditReport, CanaryResult, Fault, Verdict, AUDIT_JSON,
    AUDIT_SCHEMA_VERSION,
};
