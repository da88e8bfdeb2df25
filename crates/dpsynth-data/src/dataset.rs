//! A compact in-memory dataset: all texts in one string arena, labels and users interned.
//!
//! Memory is the text bytes plus about 20–30 bytes per record (no per-record `String`s), so a
//! 1 GB CSV needs roughly 1 GB plus a few hundred MB for tens of millions of short rows. Records
//! are materialized only when written.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::error::{DataError, Location, Pos};
use crate::record::Record;
use crate::validate::{DropReason, DropSummary, OnInvalid};

/// Whether a dataset's positions are text lines or rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosKind {
    Line,
    Row,
}

#[derive(Debug, Default)]
struct Interner {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

#[derive(Debug)]
enum Ids {
    /// Ids generated from the source's row numbers (see [`Dataset::id`]).
    Generated(Vec<u64>),
    /// Ids from an id column, in an arena.
    Explicit { arena: String, end: Vec<usize> },
}

/// Records of one source, stored compactly. Index `i` is the i-th accepted row in source order.
#[derive(Debug)]
pub struct Dataset {
    path: String,
    pos_kind: PosKind,
    text: String,
    text_end: Vec<usize>,
    label: Vec<u32>,
    labels: Interner,
    pos: Vec<u64>,
    ids: Ids,
    user: Option<(Vec<u32>, Interner)>,
}

impl Dataset {
    pub(crate) fn new(path: &str, pos_kind: PosKind, explicit_ids: bool, users: bool) -> Self {
        Dataset {
            path: path.to_string(),
            pos_kind,
            text: String::new(),
            text_end: Vec::new(),
            label: Vec::new(),
            labels: Interner::default(),
            pos: Vec::new(),
            ids: if explicit_ids {
                Ids::Explicit {
                    arena: String::new(),
                    end: Vec::new(),
                }
            } else {
                Ids::Generated(Vec::new())
            },
            user: users.then(|| (Vec::new(), Interner::default())),
        }
    }

    /// The source name used in messages.
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn len(&self) -> usize {
        self.text_end.len()
    }
    pub fn is_empty(&self) -> bool {
        self.text_end.is_empty()
    }
    pub fn text(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.text_end[i - 1] };
        &self.text[start..self.text_end[i]]
    }
    pub fn label(&self, i: usize) -> &str {
        &self.labels.names[self.label[i] as usize]
    }
    pub(crate) fn label_index(&self, i: usize) -> u32 {
        self.label[i]
    }
    /// Distinct labels in order of first appearance.
    pub fn label_names(&self) -> &[String] {
        &self.labels.names
    }
    /// The id: the id column's value, or the generated one (the 1-based data row number:
    /// CSV/TSV rows after the header, JSONL line, Parquet row).
    pub fn id(&self, i: usize) -> Cow<'_, str> {
        match &self.ids {
            Ids::Generated(rows) => Cow::Owned(rows[i].to_string()),
            Ids::Explicit { arena, end } => {
                let start = if i == 0 { 0 } else { end[i - 1] };
                Cow::Borrowed(&arena[start..end[i]])
            }
        }
    }
    pub fn user(&self, i: usize) -> Option<&str> {
        self.user
            .as_ref()
            .map(|(u, names)| names.names[u[i] as usize].as_str())
    }
    pub fn has_users(&self) -> bool {
        self.user.is_some()
    }
    /// Where record `i` came from.
    pub fn location(&self, i: usize) -> Location {
        let n = self.pos[i];
        Location::at(
            self.path.clone(),
            match self.pos_kind {
                PosKind::Line => Pos::Line(n),
                PosKind::Row => Pos::Row(n),
            },
        )
    }
    pub fn record(&self, i: usize) -> Record {
        Record {
            id: self.id(i).into_owned(),
            text: self.text(i).to_string(),
            label: self.label(i).to_string(),
            user: self.user(i).map(str::to_string),
        }
    }
    /// Label histogram of the given records.
    pub fn histogram(&self, idx: &[u32]) -> BTreeMap<String, u64> {
        let mut counts = vec![0u64; self.labels.names.len()];
        for &i in idx {
            counts[self.label[i as usize] as usize] += 1;
        }
        self.labels
            .names
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| (n.clone(), c))
            .collect()
    }

    fn push(
        &mut self,
        pos: u64,
        row: u64,
        id: Option<&str>,
        text: &str,
        label: &str,
        user: Option<&str>,
    ) {
        self.text.push_str(text);
        self.text_end.push(self.text.len());
        let l = self.labels.intern(label);
        self.label.push(l);
        self.pos.push(pos);
        match &mut self.ids {
            Ids::Generated(rows) => rows.push(row),
            Ids::Explicit { arena, end } => {
                arena.push_str(id.unwrap_or_default());
                end.push(arena.len());
            }
        }
        if let Some((u, names)) = &mut self.user {
            u.push(names.intern(user.unwrap_or_default()));
        }
    }

    fn shrink(&mut self) {
        self.text.shrink_to_fit();
        self.text_end.shrink_to_fit();
        self.label.shrink_to_fit();
        self.pos.shrink_to_fit();
        match &mut self.ids {
            Ids::Generated(r) => r.shrink_to_fit(),
            Ids::Explicit { arena, end } => {
                arena.shrink_to_fit();
                end.shrink_to_fit();
            }
        }
        if let Some((u, _)) = &mut self.user {
            u.shrink_to_fit();
        }
    }
}

/// One field value as read from a source.
#[derive(Debug)]
pub(crate) enum Val<'a> {
    Missing,
    /// Not UTF-8; the byte offset of the first invalid byte.
    NotUtf8(usize),
    WrongType(String),
    Str(Cow<'a, str>),
}

impl<'a> Val<'a> {
    pub(crate) fn from_bytes(b: &'a [u8]) -> Val<'a> {
        match std::str::from_utf8(b) {
            Ok(s) => Val::Str(Cow::Borrowed(s)),
            Err(e) => Val::NotUtf8(e.valid_up_to()),
        }
    }
}

/// Column names, for messages.
#[derive(Debug, Clone)]
pub(crate) struct ColNames {
    pub text: String,
    pub label: String,
    pub id: Option<String>,
    pub user: Option<String>,
}

/// A row as read, before validation.
pub(crate) struct RawRow<'a> {
    /// Line (text formats) or row (Parquet) for messages.
    pub pos: u64,
    /// 1-based data row number (generated ids).
    pub row: u64,
    pub text: Val<'a>,
    pub label: Val<'a>,
    pub id: Option<Val<'a>>,
    pub user: Option<Val<'a>>,
}

/// Validates rows and collects them into a [`Dataset`].
pub(crate) struct Builder {
    pub ds: Dataset,
    pub drops: DropSummary,
    pub policy: OnInvalid,
    pub rows_read: u64,
    /// Overrides the dataset path in row messages (multi-file recipes set it per file).
    pub cur_path: Option<String>,
    cols: ColNames,
}

/// A loaded, validated dataset: `kept` are the indices of records that passed every check.
#[derive(Debug)]
pub struct Loaded {
    pub data: Dataset,
    pub kept: Vec<u32>,
    pub drops: DropSummary,
    /// Data rows seen in the source (kept + dropped + filtered).
    pub rows_read: u64,
}

impl Loaded {
    /// The kept records as owned [`Record`]s (source order).
    pub fn records(&self) -> Vec<Record> {
        self.kept
            .iter()
            .map(|&i| self.data.record(i as usize))
            .collect()
    }
    pub fn histogram(&self) -> BTreeMap<String, u64> {
        self.data.histogram(&self.kept)
    }
}

impl Builder {
    pub(crate) fn new(path: &str, pos_kind: PosKind, cols: ColNames, policy: OnInvalid) -> Self {
        Builder {
            ds: Dataset::new(path, pos_kind, cols.id.is_some(), cols.user.is_some()),
            drops: DropSummary::default(),
            policy,
            rows_read: 0,
            cur_path: None,
            cols,
        }
    }

    fn loc(&self, pos: u64, column: Option<&str>) -> Location {
        let p = match self.ds.pos_kind {
            PosKind::Line => Pos::Line(pos),
            PosKind::Row => Pos::Row(pos),
        };
        let path = self
            .cur_path
            .clone()
            .unwrap_or_else(|| self.ds.path.clone());
        let l = Location::at(path, p);
        match column {
            Some(c) => l.with_column(c),
            None => l,
        }
    }

    /// A row that cannot be parsed at all.
    pub(crate) fn malformed(&mut self, pos: u64, detail: String) -> Result<(), DataError> {
        self.rows_read += 1;
        let loc = self.loc(pos, None);
        self.drops
            .drop_row(self.policy, loc, DropReason::MalformedRow, detail)
    }

    /// A row a recipe leaves out on purpose.
    pub(crate) fn filtered(&mut self, rule: &str) {
        self.rows_read += 1;
        self.drops.filter(rule);
    }

    /// Validate one row and keep it if it passes.
    pub(crate) fn push(&mut self, r: RawRow<'_>) -> Result<(), DataError> {
        self.rows_read += 1;
        let text = match self.field(r.pos, &r.text, Which::Text)? {
            Some(t) => t,
            None => return Ok(()),
        };
        let label = match self.field(r.pos, &r.label, Which::Label)? {
            Some(t) => t,
            None => return Ok(()),
        };
        let id = match &r.id {
            Some(v) => match self.field(r.pos, v, Which::Id)? {
                Some(t) => Some(t),
                None => return Ok(()),
            },
            None => None,
        };
        let user = match &r.user {
            Some(v) => match self.field(r.pos, v, Which::User)? {
                Some(t) => Some(t),
                None => return Ok(()),
            },
            None => None,
        };
        self.ds.push(r.pos, r.row, id, text, label, user);
        Ok(())
    }

    /// The trimmed value, or `None` after recording a drop.
    fn field<'v>(
        &mut self,
        pos: u64,
        v: &'v Val<'_>,
        which: Which,
    ) -> Result<Option<&'v str>, DataError> {
        let col = match which {
            Which::Text => self.cols.text.clone(),
            Which::Label => self.cols.label.clone(),
            Which::Id => self.cols.id.clone().unwrap_or_default(),
            Which::User => self.cols.user.clone().unwrap_or_default(),
        };
        let (reason, detail) = match v {
            Val::Str(s) => {
                let t = s.trim();
                if !t.is_empty() {
                    return Ok(Some(t));
                }
                if which == Which::Text {
                    (DropReason::EmptyText, "empty text".to_string())
                } else {
                    (DropReason::EmptyValue, "empty value".to_string())
                }
            }
            Val::Missing => (DropReason::MissingField, "value is missing or null".to_string()),
            Val::NotUtf8(at) => (
                DropReason::InvalidUtf8,
                format!("not valid UTF-8 (invalid byte at offset {at} in the field); convert the file to UTF-8"),
            ),
            Val::WrongType(t) => (DropReason::WrongType, format!("expected a string, found {t}")),
        };
        let loc = self.loc(pos, Some(&col));
        self.drops.drop_row(self.policy, loc, reason, detail)?;
        Ok(None)
    }

    /// Check duplicate ids and rare labels, and return the kept indices.
    pub(crate) fn finish(mut self, min_per_label: u64) -> Result<Loaded, DataError> {
        self.ds.shrink();
        if self.rows_read == 0 {
            return Err(DataError::Empty {
                path: self.ds.path.clone(),
            });
        }
        let n = self.ds.len();
        let mut keep = vec![true; n];
        // Duplicate ids: sort indices by (id, index); in each run of equal ids keep the first.
        if let Ids::Explicit { .. } = self.ds.ids {
            let mut idx: Vec<u32> = (0..n as u32).collect();
            idx.sort_unstable_by(|&a, &b| {
                self.ds
                    .id(a as usize)
                    .cmp(&self.ds.id(b as usize))
                    .then(a.cmp(&b))
            });
            let mut dups: Vec<(u32, u32)> = Vec::new(); // (duplicate, first)
            let mut first = 0usize;
            for k in 1..idx.len() {
                if self.ds.id(idx[k] as usize) == self.ds.id(idx[first] as usize) {
                    dups.push((idx[k], idx[first]));
                } else {
                    first = k;
                }
            }
            dups.sort_unstable();
            for (d, f) in dups {
                keep[d as usize] = false;
                let col = self.cols.id.clone().unwrap_or_default();
                let loc = self.ds.location(d as usize).with_column(col);
                let first_loc = self.ds.location(f as usize);
                let detail = format!(
                    "duplicate id `{}` (first used at {})",
                    self.ds.id(d as usize),
                    first_loc
                        .pos
                        .map(|p| match p {
                            Pos::Line(n) => format!("line {n}"),
                            Pos::Row(n) => format!("row {n}"),
                        })
                        .unwrap_or_default()
                );
                self.drops
                    .drop_row(self.policy, loc, DropReason::DuplicateId, detail)?;
            }
        }
        // Rare labels.
        let nl = self.ds.labels.names.len();
        let mut counts = vec![0u64; nl];
        for i in 0..n {
            if keep[i] {
                counts[self.ds.label[i] as usize] += 1;
            }
        }
        for (i, k) in keep.iter_mut().enumerate() {
            let l = self.ds.label[i] as usize;
            if *k && counts[l] < min_per_label {
                *k = false;
                let loc = self.ds.location(i).with_column(self.cols.label.clone());
                let detail = format!(
                    "label `{}` has only {} example(s); at least {} are needed for a stratified train/test split",
                    self.ds.labels.names[l], counts[l], min_per_label
                );
                self.drops
                    .drop_row(self.policy, loc, DropReason::RareLabel, detail)?;
            }
        }
        let kept: Vec<u32> = (0..n as u32).filter(|&i| keep[i as usize]).collect();
        if kept.is_empty() {
            return Err(DataError::NothingLeft {
                path: self.ds.path.clone(),
                dropped: self.drops.total_dropped(),
                reasons: self.drops.reasons_line(),
            });
        }
        Ok(Loaded {
            data: self.ds,
            kept,
            drops: self.drops,
            rows_read: self.rows_read,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Text,
    Label,
    Id,
    User,
}
