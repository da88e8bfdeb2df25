//! Errors of the audit library.

use std::path::PathBuf;

/// Everything that can go wrong during an audit. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("invalid audit configuration: {0}")]
    Config(String),
    #[error("invalid data: {0}")]
    Data(String),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("training the audit model failed: {0}")]
    Train(#[from] dpsynth_train::TrainError),
    #[error("audit statistics: {0}")]
    Privacy(#[from] dpsynth_privacy::PrivacyError),
    #[error(transparent)]
    Lm(#[from] dpsynth_lm::LmError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, AuditError>;

impl AuditError {
    pub(crate) fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        AuditError::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}
