use std::path::PathBuf;

/// Errors of the language-model runtime.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, LmError>;
