//! `inspect`: row count, label histogram and text-length quantiles of a file or recipe, with an
//! optional token counter (e.g. the default model's tokenizer) plugged in by the caller.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::Loaded;
use crate::error::DataError;
use crate::read::{read_file, Columns, Format, ReadOptions};
use crate::recipes::{is_recipe, run_recipe};
use crate::validate::{DropSummary, OnInvalid};

/// Quantiles of a length distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub min: u64,
    pub p10: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles. `None` for an empty input.
    pub fn of(mut v: Vec<u64>) -> Option<Quantiles> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let q = |p: f64| {
            let rank = (p * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Some(Quantiles {
            min: v[0],
            p10: q(0.10),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<u64>() as f64 / v.len() as f64,
        })
    }
}

/// What `dpsynth data inspect` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectReport {
    pub source: String,
    pub rows_read: u64,
    pub records: u64,
    pub labels: BTreeMap<String, u64>,
    /// Text length in Unicode scalar values (characters).
    pub chars: Option<Quantiles>,
    /// Text length in tokens of the given tokenizer (absent without a token counter).
    pub tokens: Option<Quantiles>,
    /// Name of the tokenizer used for `tokens`.
    pub tokenizer: Option<String>,
    pub drops: DropSummary,
    /// The dataset card found beside the file or in its Parquet metadata (files only).
    #[serde(default)]
    pub card: Option<crate::card::FoundCard>,
}

/// Options for [`inspect`].
#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    pub format: Option<Format>,
    pub columns: Columns,
    pub assets_dir: Option<std::path::PathBuf>,
    pub progress: bool,
}

/// A token counter: number of tokens of a text (without special tokens).
pub type TokenCounter<'a> = &'a (dyn Fn(&str) -> Result<usize, String> + Sync);

/// Inspect a recipe (by name) or a file. Bad rows are dropped and counted (never an error), and
/// labels with a single example are kept (`min_per_label` = 1) so the histogram is complete.
pub fn inspect(
    source: &str,
    opts: &InspectOptions,
    tokens: Option<(&str, TokenCounter<'_>)>,
) -> Result<InspectReport, DataError> {
    let mut card = None;
    let loaded: Loaded = if is_recipe(source) {
        let assets = match &opts.assets_dir {
            Some(a) => a.clone(),
            None => crate::recipes::assets_dir()?,
        };
        run_recipe(source, &assets, OnInvalid::Drop, 1, opts.progress)?.loaded
    } else {
        let ro = ReadOptions {
            format: opts.format,
            columns: opts.columns.clone(),
            on_invalid: OnInvalid::Drop,
            min_per_label: 1,
            progress: opts.progress,
        };
        let loaded = read_file(Path::new(source), &ro)?.loaded;
        card = crate::card::find_card(Path::new(source), opts.format)?;
        loaded
    };
    let ds = &loaded.data;
    let chars: Vec<u64> = loaded
        .kept
        .iter()
        .map(|&i| ds.text(i as usize).chars().count() as u64)
        .collect();
    let (tok_q, tok_name) = match tokens {
        Some((name, count)) => {
            let mut v = Vec::with_capacity(loaded.kept.len());
            for &i in &loaded.kept {
                let n = count(ds.text(i as usize))
                    .map_err(|e| DataError::InvalidOption(format!("tokenizer {name}: {e}")))?;
                v.push(n as u64);
            }
            (Quantiles::of(v), Some(name.to_string()))
        }
        None => (None, None),
    };
    Ok(InspectReport {
        source: source.to_string(),
        rows_read: loaded.rows_read,
        records: loaded.kept.len() as u64,
        labels: loaded.histogram(),
        chars: Quantiles::of(chars),
        tokens: tok_q,
        tokenizer: tok_name,
        drops: loaded.drops,
        card,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let q = Quantiles::of((1..=100).collect()).unwrap();
        assert_eq!(
            (q.min, q.p10, q.p50, q.p90, q.p99, q.max),
            (1, 10, 50, 90, 99, 100)
        );
        assert!((q.mean - 50.5).abs() < 1e-12);
        assert!(Quantiles::of(vec![]).is_none());
    }
}
