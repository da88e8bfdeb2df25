//! Row validation policy and the drop summary.
//!
//! Policy (documented in `dpsynth data prepare --help`): by default a bad row is **dropped and
//! counted** under its reason, with the first few locations kept as examples so it can be found;
//! `--on-invalid error` makes the first bad row an error that names file, line/row and column.
//! Text, label, id and user values are trimmed of surrounding whitespace; non-UTF-8 text is never
//! repaired silently (the row is dropped as `invalid_utf8`, or the run fails). Built-in recipes may
//! repair a known encoding (see `repaired` in the summary).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};

/// Why a row was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The row cannot be parsed (CSV: wrong number of fields; JSONL: not JSON or not an object).
    MalformedRow,
    /// A required field is absent or null.
    MissingField,
    /// The field has a type that cannot be read as text (e.g. a JSON object as text).
    WrongType,
    /// The field is not valid UTF-8.
    InvalidUtf8,
    /// The text is empty or only whitespace.
    EmptyText,
    /// The label (or id / user when those columns are used) is empty.
    EmptyValue,
    /// The id was already used by an earlier row (the first occurrence is kept).
    DuplicateId,
    /// The label has fewer examples than the minimum (2 by default): it cannot be split stratified.
    RareLabel,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MalformedRow => "malformed_row",
            DropReason::MissingField => "missing_field",
            DropReason::WrongType => "wrong_type",
            DropReason::InvalidUtf8 => "invalid_utf8",
            DropReason::EmptyText => "empty_text",
            DropReason::EmptyValue => "empty_value",
            DropReason::DuplicateId => "duplicate_id",
            DropReason::RareLabel => "rare_label",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Drop the row and count it in the summary (default).
    #[default]
    Drop,
    /// Stop with an error naming file, line/row and column.
    Error,
}

impl std::str::FromStr for OnInvalid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(OnInvalid::Drop),
            "error" => Ok(OnInvalid::Error),
            _ => Err(format!("expected `drop` or `error`, got `{s}`")),
        }
    }
}

/// How many examples of each reason's locations are kept.
pub const MAX_EXAMPLES: usize = 5;

/// Counts of dropped rows by reason (with example locations), rows filtered on purpose by a
/// recipe, and values repaired by a recipe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DropSummary {
    /// Bad rows dropped, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// First few locations (with detail) per reason.
    pub examples: BTreeMap<DropReason, Vec<String>>,
    /// Rows a recipe leaves out on purpose (e.g. rotten-tomatoes `plot` rows), by rule.
    pub filtered: BTreeMap<String, u64>,
    /// Values a recipe repaired (e.g. a Latin-1 file decoded as such), by rule.
    pub repaired: BTreeMap<String, u64>,
}

impl DropSummary {
    pub fn total_dropped(&self) -> u64 {
        self.dropped.values().sum()
    }
    pub fn total_filtered(&self) -> u64 {
        self.filtered.values().sum()
    }
    pub fn count(&self, r: DropReason) -> u64 {
        self.dropped.get(&r).copied().unwrap_or(0)
    }
    /// Record a drop. Returns the error to raise instead when the policy is `Error`.
    pub(crate) fn drop_row(
        &mut self,
        policy: OnInvalid,
        loc: Location,
        reason: DropReason,
        detail: String,
    ) -> Result<(), DataError> {
        if policy == OnInvalid::Error {
            return Err(DataError::InvalidRow {
                loc,
                reason,
                detail,
            });
        }
        *self.dropped.entry(reason).or_default() += 1;
        let ex = self.examples.entry(reason).or_default();
        if ex.len() < MAX_EXAMPLES {
            ex.push(format!("{loc}: {detail}"));
        }
        Ok(())
    }
    pub(crate) fn filter(&mut self, rule: &str) {
        *self.filtered.entry(rule.to_string()).or_default() += 1;
    }
    pub(crate) fn repair(&mut self, rule: &str) {
        *self.repaired.entry(rule.to_string()).or_default() += 1;
    }
    /// One line such as `empty_text: 3, invalid_utf8: 1`.
    pub fn reasons_line(&self) -> String {
        if self.dropped.is_empty() {
            return "none".into();
        }
        self.dropped
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
