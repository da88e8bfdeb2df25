//! Dataset readers, validation, built-in recipes and splits for dpsynth.
//!
//! The normalized form every later stage reads is JSONL with one [`Record`] per line:
//! `{"id": ..., "text": ..., "label": ...[, "user": ...]}`.
//!
//! Entry points: [`prepare`] (what `dpsynth data prepare` runs), [`load_recipe`], [`read_file`],
//! [`inspect()`], [`format_prefix`], [`export()`] and the dataset card of synthetic data
//! ([`card`]). Validation policy: see [`validate`].

pub mod bench;
pub mod card;
pub mod dataset;
pub mod email;
pub mod error;
pub mod export;
pub mod inspect;
pub mod prepare;
pub mod progress;
pub mod prompt;
pub mod read;
pub mod recipes;
pub mod record;
pub mod split;
pub mod validate;

pub use card::{card_paths, find_card, CardStep, DatasetCard, FoundCard};
pub use dataset::{Dataset, Loaded};
pub use error::{DataError, Location, Pos};
pub use export::{export, ExportSummary};
pub use inspect::{inspect, InspectOptions, InspectReport, Quantiles, TokenCounter};
pub use prepare::{prepare, PrepareOptions, PrepareSummary, Source};
pub use prompt::{format_prefix, try_format_prefix, validate_template, DEFAULT_TEMPLATE};
pub use read::{read_file, sha256_file, sha256_path, Columns, Format, ReadOptions, ReadResult};
pub use recipes::{
    assets_dir, find_assets_dir, is_recipe, load_recipe, run_recipe, RecipeData, RECIPES,
};
pub use record::{read_jsonl, write_jsonl, Record};
pub use split::{stratified_split, Split};
pub use validate::{DropReason, DropSummary, OnInvalid};
