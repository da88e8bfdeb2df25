//! Dataset readers, validation, built-in recipes and splits for dpsynth.
//!
//! The normalized form every later stage reads is JSONL with one [`Record`] per line:
//! `{"id": ..., "text": ..., "label": ...[, "user": ...]}`.

pub mod record;

pub use record::{read_jsonl, write_jsonl, Record};
