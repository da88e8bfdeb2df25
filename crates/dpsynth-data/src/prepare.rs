//! `prepare`: read (recipe or file) → validate → stratified split → write
//! `DIR/train.jsonl`, `DIR/test.jsonl` and `DIR/summary.json`.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::read::{read_file, Columns, Format, ReadOptions};
use crate::recipes::{is_recipe, run_recipe};
use crate::split::stratified_split;
use crate::validate::{DropSummary, OnInvalid};

/// What to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A built-in recipe (`rotten-tomatoes`, `bbc-news`, `spamassassin`).
    Recipe(String),
    /// A user file; `format: None` guesses from the extension.
    File {
        path: PathBuf,
        format: Option<Format>,
        columns: Columns,
    },
}

impl Source {
    /// A recipe name if `s` is one, else a file path with default columns (`text`, `label`).
    pub fn parse(s: &str) -> Source {
        if is_recipe(s) {
            Source::Recipe(s.to_string())
        } else {
            Source::File {
                path: PathBuf::from(s),
                format: None,
                columns: Columns::default(),
            }
        }
    }
}

/// Options of [`prepare`].
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub out_dir: PathBuf,
    /// Fraction of each label held out for test (default 0.2).
    pub test_fraction: f64,
    pub seed: u64,
    /// Keep at most this many training records (stratified subsample).
    pub max_train: Option<usize>,
    pub on_invalid: OnInvalid,
    /// Labels with fewer examples are dropped (`rare_label`); default 2.
    pub min_per_label: u64,
    /// For recipes; `None`: [`crate::assets_dir`].
    pub assets_dir: Option<PathBuf>,
    pub progress: bool,
}

impl PrepareOptions {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        PrepareOptions {
            out_dir: out_dir.into(),
            test_fraction: 0.2,
            seed: 0,
            max_train: None,
            on_invalid: OnInvalid::Drop,
            min_per_label: 2,
            assets_dir: None,
            progress: false,
        }
    }
}

/// Contents of `summary.json`.
///
/// # Privacy
/// This summary holds exact counts of the private data (label histograms, drop counts). It is
/// **not** differentially private: keep it with the private data, do not publish it. Released
/// label statistics must come from the DP label histogram of the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareSummary {
    /// Recipe name or file path.
    pub source: String,
    /// `recipe` or the file format.
    pub format: String,
    /// SHA-256 of the source file (recipes: of all raw files, see [`crate::RecipeData::sha256`]).
    pub source_sha256: String,
    pub description: String,
    pub columns: Option<Columns>,
    /// Data rows seen in the source.
    pub rows_read: u64,
    /// Records that passed validation (before the split).
    pub records: u64,
    pub train: u64,
    pub test: u64,
    /// Training records left out by `max_train`.
    pub subsampled_out: u64,
    pub labels: BTreeMap<String, u64>,
    pub train_labels: BTreeMap<String, u64>,
    pub test_labels: BTreeMap<String, u64>,
    pub users: Option<u64>,
    pub drops: DropSummary,
    pub test_fraction: f64,
    pub seed: u64,
    pub max_train: Option<usize>,
    pub on_invalid: OnInvalid,
    pub train_file: String,
    pub test_file: String,
    pub dpsynth_version: String,
    pub privacy_note: String,
}

/// Read, validate, split and write. See the module docs.
pub fn prepare(source: &Source, opts: &PrepareOptions) -> Result<PrepareSummary, DataError> {
    let (loaded, format, sha, description, columns, name) = match source {
        Source::Recipe(r) => {
            let assets = match &opts.assets_dir {
                Some(a) => a.clone(),
                None => crate::recipes::assets_dir()?,
            };
            let d = run_recipe(
                r,
                &assets,
                opts.on_invalid,
                opts.min_per_label,
                opts.progress,
            )?;
            (
                d.loaded,
                "recipe".to_string(),
                d.sha256,
                d.description,
                None,
                r.clone(),
            )
        }
        Source::File {
            path,
            format,
            columns,
        } => {
            let ro = ReadOptions {
                format: *format,
                columns: columns.clone(),
                on_invalid: opts.on_invalid,
                min_per_label: opts.min_per_label,
                progress: opts.progress,
            };
            let r = read_file(path, &ro)?;
            (
                r.loaded,
                r.format.to_string(),
                r.sha256,
                format!(
                    "user file, columns text=`{}` label=`{}`",
                    columns.text, columns.label
                ),
                Some(columns.clone()),
                path.display().to_string(),
            )
        }
    };
    let split = stratified_split(
        &loaded.data,
        &loaded.kept,
        opts.test_fraction,
        opts.seed,
        opts.max_train,
    )?;
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out.display(), e))?;
    let train_path = out.join("train.jsonl");
    let test_path = out.join("test.jsonl");
    write_indices(&train_path, &loaded.data, &split.train)?;
    write_indices(&test_path, &loaded.data, &split.test)?;
    let users = loaded.data.has_users().then(|| {
        let mut u: Vec<&str> = loaded
            .kept
            .iter()
            .filter_map(|&i| loaded.data.user(i as usize))
            .collect();
        u.sort_unstable();
        u.dedup();
        u.len() as u64
    });
    let summary = PrepareSummary {
        source: name,
        format,
        source_sha256: sha,
        description,
        columns,
        rows_read: loaded.rows_read,
        records: loaded.kept.len() as u64,
        train: split.train.len() as u64,
        test: split.test.len() as u64,
        subsampled_out: split.subsampled_out,
        labels: loaded.histogram(),
        train_labels: loaded.data.histogram(&split.train),
        test_labels: loaded.data.histogram(&split.test),
        users,
        drops: loaded.drops.clone(),
        test_fraction: opts.test_fraction,
        seed: opts.seed,
        max_train: opts.max_train,
        on_invalid: opts.on_invalid,
        train_file: "train.jsonl".into(),
        test_file: "test.jsonl".into(),
        dpsynth_version: env!("CARGO_PKG_VERSION").into(),
        privacy_note: "exact (non-private) statistics of the sensitive data: do not publish".into(),
    };
    let sp = out.join("summary.json");
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| DataError::io(sp.display(), e.into()))?;
    std::fs::write(&sp, json + "\n").map_err(|e| DataError::io(sp.display(), e))?;
    Ok(summary)
}

/// Write records `idx` of `ds` as normalized JSONL (streamed; one record alive at a time).
pub fn write_indices(path: &Path, ds: &Dataset, idx: &[u32]) -> Result<(), DataError> {
    let p = path.display().to_string();
    let io = |e: std::io::Error| DataError::io(&p, e);
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 16, f);
    for &i in idx {
        let r = ds.record(i as usize);
        serde_json::to_writer(&mut w, &r).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
    }
    w.flush().map_err(io)
}
