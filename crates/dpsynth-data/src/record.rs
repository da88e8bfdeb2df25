use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One labeled text record in dpsynth's normalized form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub text: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Errors reading or writing normalized JSONL.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// (`err` is in the message, so it is not a `#[source]`: `{:#}` chains would repeat it.)
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{path}:{line}: not a valid record ({msg}); expected {{\"id\", \"text\", \"label\"[, \"user\"]}}")]
    Parse {
        path: String,
        line: usize,
        msg: String,
    },
}

/// Read a normalized JSONL file (as written by `dpsynth data prepare`). Blank lines are skipped.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>, RecordError> {
    let p = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|err| RecordError::Io {
        path: p.clone(),
        err,
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|err| RecordError::Io {
            path: p.clone(),
            err,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(&line).map_err(|e| RecordError::Parse {
            path: p.clone(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Write records as normalized JSONL (one object per line).
pub fn write_jsonl<'a>(
    path: &Path,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<(), RecordError> {
    let p = path.display().to_string();
    let io = |err| RecordError::Io {
        path: p.clone(),
        err,
    };
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = BufWriter::new(f);
    for r in records {
        serde_json::to_writer(&mut w, r).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}
