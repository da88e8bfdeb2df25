//! Errors of the data crate. Every error about a row names the place: file, line (text formats)
//! or row (Parquet), and column.

use std::fmt;

use crate::record::RecordError;
use crate::validate::DropReason;

/// Where in a source a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or recipe file) the row came from.
    pub path: String,
    /// Line (CSV/TSV/JSONL: 1-based physical line where the record starts) or row (Parquet: 1-based).
    pub pos: Option<Pos>,
    /// The column (CSV header name, JSON key or Parquet column), when one column is at fault.
    pub column: Option<String>,
}

/// A position inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    /// 1-based line number of a text file (CSV, TSV, JSONL).
    Line(u64),
    /// 1-based row number (Parquet, or data rows of a recipe).
    Row(u64),
}

impl Location {
    pub fn file(path: impl Into<String>) -> Self {
        Location {
            path: path.into(),
            pos: None,
            column: None,
        }
    }
    pub fn at(path: impl Into<String>, pos: Pos) -> Self {
        Location {
            path: path.into(),
            pos: Some(pos),
            column: None,
        }
    }
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        match self.pos {
            Some(Pos::Line(n)) => write!(f, ": line {n}")?,
            Some(Pos::Row(n)) => write!(f, ": row {n}")?,
            None => {}
        }
        if let Some(c) = &self.column {
            write!(f, ", column `{c}`")?;
        }
        Ok(())
    }
}

/// Errors reading, validating, splitting or writing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// (`err` is shown in the message, so it is deliberately not a `#[source]`: error chains
    /// printed with `{:#}` would repeat it.)
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    /// A required column is not in the file's header / schema.
    #[error("{path}: column `{column}` not found (use --{flag} to choose another); columns in the file: {available}")]
    MissingColumn {
        path: String,
        column: String,
        flag: &'static str,
        available: String,
    },
    /// A Parquet column has a type that cannot hold the requested field.
    #[error("{path}: column `{column}` has Parquet type {found} (all rows); expected {expected}")]
    ColumnType {
        path: String,
        column: String,
        found: String,
        expected: &'static str,
    },
    /// A bad row while `--on-invalid error` is in effect.
    #[error("{loc}: {reason}: {detail} (use --on-invalid drop to drop such rows and count them instead)")]
    InvalidRow {
        loc: Location,
        reason: DropReason,
        detail: String,
    },
    /// A file that cannot be parsed at all (Parquet footer, bzip2 stream, ...).
    #[error("{loc}: {msg}")]
    Corrupt { loc: Location, msg: String },
    #[error("{path}: the file has no data rows")]
    Empty { path: String },
    #[error("{path}: no records left after validation ({dropped} dropped: {reasons})")]
    NothingLeft {
        path: String,
        dropped: u64,
        reasons: String,
    },
    #[error(
        "{path}: cannot tell the format from the extension; pass --format csv|tsv|jsonl|parquet"
    )]
    UnknownFormat { path: String },
    #[error("unknown recipe `{0}`; built-in recipes: rotten-tomatoes, bbc-news, spamassassin (or pass a CSV/TSV/JSONL/Parquet file)")]
    UnknownRecipe(String),
    #[error("asset not found: {path}. Run scripts/fetch-assets.sh to download the datasets and models (or set DPSYNTH_ASSETS to the assets directory)")]
    MissingAsset { path: String },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("invalid prompt template {template:?}: {msg}")]
    Template { template: String, msg: String },
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl DataError {
    pub(crate) fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_string(),
            err: source,
        }
    }
}
