//! dpsynth-eval: measure a synthetic dataset.
//!
//! - [`embed`]: all-MiniLM-L6-v2 sentence embeddings on candle (mean pooling, L2 norm), batched
//!   and cached on disk by content hash.
//! - [`logreg`]: multinomial logistic regression on frozen embeddings (L-BFGS), and its DP-SGD
//!   version ([`dpsgd`]).
//! - [`cnn`]: a word-level CNN (Kim 2014) trained from scratch, non-private or with DP-SGD.
//! - [`metrics`]: accuracy, macro-F1, per-class precision/recall, confusion matrix.
//! - [`fidelity`]: label fidelity of synthetic records under a real-data classifier (a
//!   private, non-DP diagnostic).
//! - [`mauve`]: MAUVE (Pillutla et al. 2021) between two sets of embeddings.
//! - [`textstats`]: length/vocabulary/label statistics and the memorization check.
//! - [`evaluate()`]: the whole evaluation used by `dpsynth evaluate` and the pipeline.
//! - [`bench`]: embedding throughput and full-evaluation timing for `dpsynth bench`.
//!
//! Only the DP-SGD baseline touches the real training data under a privacy guarantee; the
//! synthetic→real and real→real numbers are non-private measurements made by whoever holds the
//! data (the real→real ceiling and the memorization check read the private training set, so the
//! report keeps private quotes in a separate file).

pub mod bench;
pub mod cnn;
pub mod dpsgd;
pub mod embed;
pub mod fidelity;
pub mod linalg;
pub mod logreg;
pub mod logreg_dp;
pub mod mauve;
pub mod metrics;
mod pipeline;
pub mod progress;
pub mod textstats;

pub use pipeline::files as output_files;
pub use pipeline::{
    default_cache_dir, evaluate, shared_cache_dir, ClassifierKind, ComparisonRow, EvalConfig,
    EvalReport, LabelCheck, PublicMetrics, TrainingSet, PRIVATE_CACHE_DIR,
};
pub use progress::Progress;

/// Errors of the evaluation crate.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(#[from] dpsynth_data::record::RecordError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("privacy: {0}")]
    Privacy(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{0} not found (set --minilm or DPSYNTH_ASSETS; scripts/fetch-assets.sh downloads it)"
    )]
    MissingAsset(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.display().to_string(),
        source,
    }
}
