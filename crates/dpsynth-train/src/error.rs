//! Errors of the training and synthesis library.

use std::path::PathBuf;

/// Everything that can go wrong while training or synthesizing. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid data: {0}")]
    Data(String),
    #[error("privacy budget: {0}")]
    Budget(String),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Lm(#[from] dpsynth_lm::LmError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        TrainError::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}
