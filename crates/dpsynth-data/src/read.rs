//! Readers for user files: CSV, TSV, JSONL (streaming, optionally `.bz2`-compressed) and Parquet
//! (row groups streamed through the record API, only the needed columns decoded).

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use parquet::basic::{ConvertedType, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::{Builder, ColNames, Loaded, PosKind, RawRow, Val};
use crate::error::{DataError, Location, Pos};
use crate::validate::OnInvalid;

/// File formats of user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Tsv,
    Jsonl,
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "tsv" | "tab" => Ok(Format::Tsv),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "parquet" | "pq" => Ok(Format::Parquet),
            _ => Err(format!(
                "unknown format `{s}`; expected csv, tsv, jsonl or parquet"
            )),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        })
    }
}

impl Format {
    /// Guess from the extension (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`, `.parquet`/`.pq`), looking
    /// through a trailing `.bz2`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".bz2").unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        ext.parse().ok()
    }
}

/// Which columns hold what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    pub text: String,
    pub label: String,
    /// Groups records by user, for user-level DP.
    pub user: Option<String>,
    /// When absent, ids are the 1-based data row numbers.
    pub id: Option<String>,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            text: "text".into(),
            label: "label".into(),
            user: None,
            id: None,
        }
    }
}

impl Columns {
    fn names(&self) -> ColNames {
        ColNames {
            text: self.text.clone(),
            label: self.label.clone(),
            id: self.id.clone(),
            user: self.user.clone(),
        }
    }
}

/// Options for reading one user file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// `None`: from the extension.
    pub format: Option<Format>,
    pub columns: Columns,
    pub on_invalid: OnInvalid,
    /// Labels with fewer examples are dropped (`rare_label`); 2 by default.
    pub min_per_label: u64,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            columns: Columns::default(),
            on_invalid: OnInvalid::Drop,
            min_per_label: 2,
            progress: false,
        }
    }
}

/// A loaded file and the SHA-256 of its bytes.
#[derive(Debug)]
pub struct ReadResult {
    pub loaded: Loaded,
    pub format: Format,
    pub sha256: String,
}

pub(crate) fn bytes_bar(show: bool, len: u64, msg: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Hashes and counts the bytes that pass through.
struct Tee<R> {
    inner: R,
    hasher: Sha256,
    pb: ProgressBar,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.pb.inc(n as u64);
        Ok(n)
    }
}

type HashCache =
    std::collections::HashMap<(std::path::PathBuf, u64, Option<std::time::SystemTime>), String>;
static HASH_CACHE: std::sync::Mutex<Option<HashCache>> = std::sync::Mutex::new(None);

/// SHA-256 of a file, hex. Cached per process by (path, length, modification time) once the
/// file is a few seconds old (git's "racy clean" rule: a file modified within the same
/// timestamp tick may change again without changing length, so it is not cached).
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(&p, e))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some(h) = HASH_CACHE
        .lock()
        .ok()
        .and_then(|c| c.as_ref().and_then(|c| c.get(&key).cloned()))
    {
        return Ok(h);
    }
    let h = sha256_file_uncached(path)?;
    let settled = meta
        .modified()
        .ok()
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age.as_secs() >= 3);
    if let (true, Ok(mut c)) = (settled, HASH_CACHE.lock()) {
        c.get_or_insert_with(Default::default)
            .insert(key, h.clone());
    }
    Ok(h)
}

fn sha256_file_uncached(path: &Path) -> Result<String, DataError> {
    let p = path.display();
    let mut f = File::open(path).map_err(|e| DataError::io(&p, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| DataError::io(&p, e))?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 of a file, or of a directory: over its files sorted by relative path, each as
/// `path \0 sha256(file) \n`. The run stages' input/output hashes (`dpsynth_report::stage`) use it.
pub fn sha256_path(path: &Path) -> Result<String, DataError> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(&p, e))?;
    if !meta.is_dir() {
        return sha256_file(path);
    }
    fn collect(
        root: &Path,
        dir: &Path,
        out: &mut Vec<std::path::PathBuf>,
    ) -> Result<(), DataError> {
        let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir.display(), e))?;
        for e in rd {
            let e = e.map_err(|e| DataError::io(dir.display(), e))?;
            let q = e.path();
            if q.is_dir() {
                collect(root, &q, out)?;
            } else {
                out.push(q.strip_prefix(root).unwrap_or(&q).to_path_buf());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    collect(path, path, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in files {
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(sha256_file(&path.join(&rel))?.as_bytes());
        h.update([b'\n']);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Read and validate a user file. Bad rows are dropped and counted (or, with
/// [`OnInvalid::Error`], the first one is an error naming file, line/row and column).
pub fn read_file(path: &Path, opts: &ReadOptions) -> Result<ReadResult, DataError> {
    let p = path.display().to_string();
    let format = match opts.format {
        Some(f) => f,
        None => {
            Format::from_path(path).ok_or_else(|| DataError::UnknownFormat { path: p.clone() })?
        }
    };
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(&p, e))?;
    if meta.is_dir() {
        return Err(DataError::io(
            &p,
            std::io::Error::other("is a directory, expected a data file"),
        ));
    }
    if format == Format::Parquet {
        let sha256 = sha256_file(path)?;
        let loaded = read_parquet(path, opts)?;
        return Ok(ReadResult {
            loaded,
            format,
            sha256,
        });
    }
    let f = File::open(path).map_err(|e| DataError::io(&p, e))?;
    let pb = bytes_bar(
        opts.progress,
        meta.len(),
        &format!("reading {}", short_name(path)),
    );
    let mut tee = Tee {
        inner: f,
        hasher: Sha256::new(),
        pb: pb.clone(),
    };
    let compressed = p.to_ascii_lowercase().ends_with(".bz2");
    let loaded = {
        let reader: Box<dyn Read + '_> = if compressed {
            Box::new(bzip2::read::MultiBzDecoder::new(&mut tee))
        } else {
            Box::new(&mut tee)
        };
        let b = match format {
            Format::Csv => read_delimited(reader, b',', &p, opts)?,
            Format::Tsv => read_delimited(reader, b'\t', &p, opts)?,
            Format::Jsonl => read_jsonl_rows(reader, &p, opts)?,
            Format::Parquet => unreachable!(),
        };
        b.finish(opts.min_per_label)?
    };
    // Hash the rest too (a reader may stop before EOF, e.g. trailing bytes after the last record).
    std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| DataError::io(&p, e))?;
    pb.finish_and_clear();
    Ok(ReadResult {
        loaded,
        format,
        sha256: hex(&tee.hasher.finalize()),
    })
}

pub(crate) fn short_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn missing_column(path: &str, column: &str, flag: &'static str, available: &[String]) -> DataError {
    DataError::MissingColumn {
        path: path.to_string(),
        column: column.to_string(),
        flag,
        available: if available.is_empty() {
            "(none)".into()
        } else {
            available
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    }
}

fn csv_err(path: &str, e: csv::Error) -> DataError {
    let pos = e.position().map(|p| Pos::Line(p.line()));
    match e.into_kind() {
        csv::ErrorKind::Io(io) => DataError::io(path, io),
        other => DataError::Corrupt {
            loc: Location {
                path: path.to_string(),
                pos,
                column: None,
            },
            msg: format!("{other:?}"),
        },
    }
}

/// CSV (`,`) or TSV (`\t`) with a header row. Standard quoting (`"`, doubled to escape) is honoured
/// in both, so quoted fields may contain delimiters and newlines.
fn read_delimited<R: Read>(
    reader: R,
    delim: u8,
    path: &str,
    opts: &ReadOptions,
) -> Result<Builder, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(true)
        .flexible(false)
        .buffer_capacity(1 << 16)
        .from_reader(reader);
    let headers: Vec<String> = rdr
        .byte_headers()
        .map_err(|e| csv_err(path, e))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    if headers.is_empty() || headers.iter().all(|h| h.is_empty()) {
        return Err(DataError::Empty {
            path: path.to_string(),
        });
    }
    let find = |name: &str, flag: &'static str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| missing_column(path, name, flag, &headers))
    };
    let c = &opts.columns;
    let ti = find(&c.text, "text-col")?;
    let li = find(&c.label, "label-col")?;
    let ii = c.id.as_deref().map(|n| find(n, "id-col")).transpose()?;
    let ui = c.user.as_deref().map(|n| find(n, "user-col")).transpose()?;
    let mut b = Builder::new(path, PosKind::Line, c.names(), opts.on_invalid);
    let mut rec = csv::ByteRecord::new();
    let mut row = 0u64;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                row += 1;
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                let get = |i: usize| rec.get(i).map(Val::from_bytes).unwrap_or(Val::Missing);
                b.push(RawRow {
                    pos: line,
                    row,
                    text: get(ti),
                    label: get(li),
                    id: ii.map(get),
                    user: ui.map(get),
                })?;
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                match e.into_kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => {
                        row += 1;
                        b.malformed(
                            line,
                            format!("{len} fields, expected {expected_len} like the header (unbalanced quotes or a stray delimiter?)"),
                        )?;
                    }
                    csv::ErrorKind::Io(io) => return Err(DataError::io(path, io)),
                    other => {
                        return Err(DataError::Corrupt {
                            loc: Location::at(path, Pos::Line(line)),
                            msg: format!("{other:?}"),
                        })
                    }
                }
            }
        }
    }
    Ok(b)
}

fn json_val(v: Option<&serde_json::Value>, text: bool) -> Val<'_> {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => Val::Missing,
        Some(Value::String(s)) => Val::Str(Cow::Borrowed(s)),
        Some(Value::Number(n)) if !text => Val::Str(Cow::Owned(n.to_string())),
        Some(Value::Bool(b)) if !text => Val::Str(Cow::Owned(b.to_string())),
        Some(Value::Number(_)) => Val::WrongType("a number".into()),
        Some(Value::Bool(_)) => Val::WrongType("a boolean".into()),
        Some(Value::Array(_)) => Val::WrongType("an array".into()),
        Some(Value::Object(_)) => Val::WrongType("an object".into()),
    }
}

/// JSON Lines: one object per line; blank lines are skipped. Labels, ids and users may be strings,
/// numbers or booleans; the text must be a string.
fn read_jsonl_rows<R: Read>(
    reader: R,
    path: &str,
    opts: &ReadOptions,
) -> Result<Builder, DataError> {
    let c = &opts.columns;
    let mut b = Builder::new(path, PosKind::Line, c.names(), opts.on_invalid);
    let mut r = BufReader::with_capacity(1 << 16, reader);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut checked_columns = false;
    loop {
        buf.clear();
        let n = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let s = match std::str::from_utf8(&buf) {
            Ok(s) => s,
            Err(e) => {
                b.rows_read += 1;
                let loc = Location::at(path, Pos::Line(line));
                b.drops.drop_row(
                    b.policy,
                    loc,
                    crate::validate::DropReason::InvalidUtf8,
                    format!(
                        "line is not valid UTF-8 (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                )?;
                continue;
            }
        };
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(s) {
            Ok(v) => v,
            Err(e) => {
                // serde_json says "at line 1 column N" (line of the snippet): keep the column only.
                let msg = e.to_string();
                let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |x| x.0);
                b.malformed(
                    line,
                    format!("not valid JSON: {msg} (at column {})", e.column()),
                )?;
                continue;
            }
        };
        let Some(obj) = v.as_object() else {
            b.malformed(line, "expected a JSON object per line".into())?;
            continue;
        };
        if !checked_columns {
            // The first object fixes the schema: a column missing there is a missing column.
            checked_columns = true;
            let keys: Vec<String> = obj.keys().cloned().collect();
            for (name, flag) in [
                (Some(&c.text), "text-col"),
                (Some(&c.label), "label-col"),
                (c.id.as_ref(), "id-col"),
                (c.user.as_ref(), "user-col"),
            ] {
                if let Some(name) = name {
                    if !obj.contains_key(name) {
                        return Err(missing_column(
                            &format!("{path}: line {line}"),
                            name,
                            flag,
                            &keys,
                        ));
                    }
                }
            }
        }
        b.push(RawRow {
            pos: line,
            row: line,
            text: json_val(obj.get(&c.text), true),
            label: json_val(obj.get(&c.label), false),
            id: c.id.as_ref().map(|k| json_val(obj.get(k), false)),
            user: c.user.as_ref().map(|k| json_val(obj.get(k), false)),
        })?;
    }
    Ok(b)
}

fn parquet_type_name(t: &Type) -> String {
    if !t.is_primitive() {
        return "GROUP (nested)".into();
    }
    let ct = t.get_basic_info().converted_type();
    if ct == ConvertedType::NONE {
        format!("{}", t.get_physical_type())
    } else {
        format!("{} ({ct})", t.get_physical_type())
    }
}

fn field_val(f: &Field, text: bool) -> Val<'_> {
    match f {
        Field::Null => Val::Missing,
        Field::Str(s) => Val::Str(Cow::Borrowed(s)),
        Field::Bytes(b) => Val::from_bytes(b.data()),
        Field::Bool(b) if !text => Val::Str(Cow::Owned(b.to_string())),
        Field::Int(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        Field::Long(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        Field::Short(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        Field::Byte(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        Field::UInt(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        Field::ULong(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        Field::UShort(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        Field::UByte(i) if !text => Val::Str(Cow::Owned(i.to_string())),
        other => Val::WrongType(format!("{other:?}")),
    }
}

/// The parquet crate asserts on some corrupt metadata (e.g. a negative column offset in
/// `ColumnChunkMetaData::byte_range`) instead of returning an error; a corrupt file must be a
/// clear error naming the file, never a crash (found by `tests/fuzz_readers.rs`).
fn read_parquet(path: &Path, opts: &ReadOptions) -> Result<Loaded, DataError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_parquet_inner(path, opts)
    }))
    .unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the Parquet reader failed".into());
        Err(DataError::Corrupt {
            loc: Location::file(path.display().to_string()),
            msg: format!("cannot read Parquet (corrupt file): {msg}"),
        })
    })
}

fn read_parquet_inner(path: &Path, opts: &ReadOptions) -> Result<Loaded, DataError> {
    let p = path.display().to_string();
    let corrupt = |pos: Option<Pos>, e: parquet::errors::ParquetError| DataError::Corrupt {
        loc: Location {
            path: p.clone(),
            pos,
            column: None,
        },
        msg: format!("cannot read Parquet: {e}"),
    };
    let f = File::open(path).map_err(|e| DataError::io(&p, e))?;
    if f.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(DataError::Empty { path: p.clone() });
    }
    let reader = SerializedFileReader::new(f).map_err(|e| corrupt(None, e))?;
    let meta = reader.metadata().file_metadata();
    let schema = meta.schema();
    let fields = schema.get_fields();
    let available: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
    let c = &opts.columns;
    let mut wanted: Vec<(String, &'static str, bool)> = vec![
        (c.text.clone(), "text-col", true),
        (c.label.clone(), "label-col", false),
    ];
    if let Some(id) = &c.id {
        wanted.push((id.clone(), "id-col", false));
    }
    if let Some(u) = &c.user {
        wanted.push((u.clone(), "user-col", false));
    }
    let mut proj_fields = Vec::new();
    for (name, flag, is_text) in &wanted {
        let Some(t) = fields.iter().find(|f| f.name() == name) else {
            return Err(missing_column(&p, name, flag, &available));
        };
        let ok = t.is_primitive()
            && match t.get_physical_type() {
                PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => true,
                PhysicalType::INT32 | PhysicalType::INT64 | PhysicalType::BOOLEAN => !is_text,
                _ => false,
            };
        if !ok {
            return Err(DataError::ColumnType {
                path: p.clone(),
                column: name.clone(),
                found: parquet_type_name(t),
                expected: if *is_text {
                    "a string column (BYTE_ARRAY / UTF8)"
                } else {
                    "a string, integer or boolean column"
                },
            });
        }
        if !proj_fields
            .iter()
            .any(|f: &std::sync::Arc<Type>| f.name() == name)
        {
            proj_fields.push(t.clone());
        }
    }
    let total = meta.num_rows().max(0) as u64;
    let proj = Type::group_type_builder(schema.name())
        .with_fields(proj_fields)
        .build()
        .map_err(|e| corrupt(None, e))?;
    let pb = if opts.progress {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message(format!("reading {}", short_name(path)));
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut b = Builder::new(&p, PosKind::Row, c.names(), opts.on_invalid);
    let iter = reader
        .get_row_iter(Some(proj))
        .map_err(|e| corrupt(None, e))?;
    let mut row = 0u64;
    for r in iter {
        row += 1;
        let r = r.map_err(|e| corrupt(Some(Pos::Row(row)), e))?;
        let mut text = Val::Missing;
        let mut label = Val::Missing;
        let mut id = c.id.as_ref().map(|_| Val::Missing);
        let mut user = c.user.as_ref().map(|_| Val::Missing);
        for (name, f) in r.get_column_iter() {
            if *name == c.text {
                text = field_val(f, true);
            }
            if *name == c.label {
                label = field_val(f, false);
            }
            if c.id.as_deref() == Some(name.as_str()) {
                id = Some(field_val(f, false));
            }
            if c.user.as_deref() == Some(name.as_str()) {
                user = Some(field_val(f, false));
            }
        }
        b.push(RawRow {
            pos: row,
            row,
            text,
            label,
            id,
            user,
        })?;
        if row.is_multiple_of(4096) {
            pb.set_position(row);
        }
    }
    pb.finish_and_clear();
    b.finish(opts.min_per_label)
}
