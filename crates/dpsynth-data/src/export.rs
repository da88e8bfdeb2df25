//! `dpsynth data export`: a (synthetic) dataset as JSONL, CSV or Parquet, with its dataset card
//! carried along: copied beside the output (`<out>.card.json` / `.card.md`) for every format, and
//! for Parquet also stored in the file's key-value metadata under [`crate::card::PARQUET_KEY`], so
//! the card travels with the single file.
//!
//! Nothing is written when the input cannot be read: the output is written to a temporary file
//! beside it and renamed into place once complete.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::{Deserialize, Serialize};

use crate::card::{find_card, DatasetCard, PARQUET_KEY};
use crate::error::{DataError, Location};
use crate::read::{read_file, Columns, Format, ReadOptions};
use crate::record::Record;
use crate::validate::OnInvalid;

/// What [`export`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportSummary {
    pub records: usize,
    pub format: String,
    /// Where the input's card was found (`None`: it has none; the export has none either).
    pub card_from: Option<String>,
    /// Card files written beside the output.
    pub card_files: Vec<String>,
    /// Whether the card is also in the Parquet metadata.
    pub card_in_metadata: bool,
}

/// Read the records of a dataset file (JSONL, CSV or Parquet with `id`, `text`, `label`
/// columns). Any bad row is an error naming file, line/row and column: an export must not drop
/// records silently.
pub fn read_records(path: &Path, format: Option<Format>) -> Result<Vec<Record>, DataError> {
    let ro = ReadOptions {
        format,
        columns: Columns {
            id: Some("id".into()),
            ..Columns::default()
        },
        on_invalid: OnInvalid::Error,
        min_per_label: 1,
        progress: false,
    };
    Ok(read_file(path, &ro)?.loaded.records())
}

/// Export `input` (format from `in_format` or its extension) to `out` in `format`, carrying the
/// input's dataset card along when it has one.
pub fn export(
    input: &Path,
    in_format: Option<Format>,
    out: &Path,
    format: Format,
) -> Result<ExportSummary, DataError> {
    if format == Format::Tsv {
        return Err(DataError::InvalidOption(
            "export writes jsonl, csv or parquet".into(),
        ));
    }
    if input.canonicalize().ok() == out.canonicalize().ok() && out.exists() {
        return Err(DataError::InvalidOption(format!(
            "{}: the output would overwrite the input",
            out.display()
        )));
    }
    let records = read_records(input, in_format)?;
    let found = find_card(input, in_format)?;
    let mut card = found.as_ref().map(|f| f.card.clone());
    if let Some(c) = card.as_mut() {
        c.name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    let tmp = out.with_extension(format!("{format}.tmp"));
    let res = match format {
        Format::Jsonl => crate::record::write_jsonl(&tmp, &records).map_err(DataError::from),
        Format::Csv => write_csv(&tmp, &records),
        Format::Parquet => write_parquet(&tmp, &records, card.as_ref()),
        Format::Tsv => unreachable!("rejected above"),
    };
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(|e| DataError::io(out.display(), e))?;
    let mut card_files = Vec::new();
    if let Some(c) = &card {
        let (j, m) = c.write_beside(out)?;
        card_files.push(j.display().to_string());
        card_files.push(m.display().to_string());
    }
    Ok(ExportSummary {
        records: records.len(),
        format: format.to_string(),
        card_from: found.map(|f| f.source),
        card_files,
        card_in_metadata: format == Format::Parquet && card.is_some(),
    })
}

fn write_csv(path: &Path, records: &[Record]) -> Result<(), DataError> {
    let p = path.display().to_string();
    let err = |e: csv::Error| DataError::io(&p, std::io::Error::other(e.to_string()));
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record(["id", "text", "label"]).map_err(err)?;
    for r in records {
        w.write_record([r.id.as_str(), r.text.as_str(), r.label.as_str()])
            .map_err(err)?;
    }
    w.flush().map_err(|e| DataError::io(&p, e))?;
    Ok(())
}

/// Parquet with three required UTF-8 columns `id`, `text`, `label` (Snappy), and the card JSON
/// in the key-value metadata.
fn write_parquet(
    path: &Path,
    records: &[Record],
    card: Option<&DatasetCard>,
) -> Result<(), DataError> {
    let p = path.display().to_string();
    let err = |e: parquet::errors::ParquetError| DataError::Corrupt {
        loc: Location::file(p.clone()),
        msg: format!("writing Parquet: {e}"),
    };
    let schema = Arc::new(
        parse_message_type(
            "message synthetic { REQUIRED BYTE_ARRAY id (UTF8); \
             REQUIRED BYTE_ARRAY text (UTF8); REQUIRED BYTE_ARRAY label (UTF8); }",
        )
        .map_err(err)?,
    );
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(
            card.map(|c| vec![KeyValue::new(PARQUET_KEY.to_string(), c.to_json())]),
        )
        .build();
    let f = std::fs::File::create(path).map_err(|e| DataError::io(&p, e))?;
    let mut w = SerializedFileWriter::new(f, schema, Arc::new(props)).map_err(err)?;
    let mut rg = w.next_row_group().map_err(err)?;
    let cols: [fn(&Record) -> &str; 3] = [|r| &r.id, |r| &r.text, |r| &r.label];
    let mut k = 0;
    while let Some(mut col) = rg.next_column().map_err(err)? {
        let vals: Vec<ByteArray> = records
            .iter()
            .map(|r| ByteArray::from(cols[k](r).as_bytes().to_vec()))
            .collect();
        col.typed::<ByteArrayType>()
            .write_batch(&vals, None, None)
            .map_err(err)?;
        col.close().map_err(err)?;
        k += 1;
    }
    rg.close().map_err(err)?;
    w.close().map_err(err)?;
    Ok(())
}

/// The card stored in a Parquet file's key-value metadata, if any.
pub fn parquet_card(path: &Path) -> Result<Option<DatasetCard>, DataError> {
    let p = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| DataError::io(&p, e))?;
    let r = std::panic::catch_unwind(|| SerializedFileReader::new(f))
        .map_err(|_| DataError::Corrupt {
            loc: Location::file(p.clone()),
            msg: "cannot read the Parquet footer (corrupt file)".into(),
        })?
        .map_err(|e| DataError::Corrupt {
            loc: Location::file(p.clone()),
            msg: format!("cannot read the Parquet footer: {e}"),
        })?;
    let kv = r.metadata().file_metadata().key_value_metadata();
    let Some(v) = kv
        .into_iter()
        .flatten()
        .find(|k| k.key == PARQUET_KEY)
        .and_then(|k| k.value.clone())
    else {
        return Ok(None);
    };
    DatasetCard::from_json(&v, &format!("{p} (Parquet metadata `{PARQUET_KEY}`)")).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{CardModel, CardPrivacy};

    fn card() -> DatasetCard {
        DatasetCard {
            card_version: crate::card::CARD_VERSION,
            name: "synthetic.jsonl".into(),
            created: "2026-12-02T00:00:00Z".into(),
            generator: "dpsynth test".into(),
            privacy: CardPrivacy {
                epsilon: Some(3.0),
                epsilon_rdp: Some(3.2),
                delta: 1e-5,
                unit: "record".into(),
                neighboring: "add/remove one record".into(),
                accountant: "PLD".into(),
                noise_seed: "os".into(),
                ledger_sha256: "ab".into(),
                notes: vec![],
            },
            model: CardModel {
                base: "tiny".into(),
                base_sha256: "cd".into(),
                method: "lora".into(),
                adapter_sha256: Some("ef".into()),
            },
            generation: serde_json::json!({"seed": 1}),
            records: 3,
            labels: [("neg".to_string(), 1u64), ("pos".to_string(), 2u64)].into(),
            filter: None,
            covered: vec!["the records".into()],
            not_covered: vec!["loss.csv".into()],
            steps: vec![],
        }
    }

    fn records() -> Vec<Record> {
        ["pos", "neg", "pos"]
            .iter()
            .enumerate()
            .map(|(i, l)| Record {
                id: format!("syn-{i}"),
                text: format!("text {i}, with \"quotes\"\nand a newline"),
                label: l.to_string(),
                user: None,
            })
            .collect()
    }

    #[test]
    fn every_format_round_trips_the_records_and_carries_the_card() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("synthetic.jsonl");
        crate::record::write_jsonl(&src, &records()).unwrap();
        assert!(find_card(&src, None).unwrap().is_none());
        card().write_beside(&src).unwrap();
        for (ext, fmt) in [
            ("csv", Format::Csv),
            ("parquet", Format::Parquet),
            ("jsonl", Format::Jsonl),
        ] {
            let out = d.path().join(format!("export.{ext}"));
            let s = export(&src, None, &out, fmt).unwrap();
            assert_eq!(s.records, 3);
            assert_eq!(s.card_in_metadata, fmt == Format::Parquet);
            assert_eq!(read_records(&out, None).unwrap(), records(), "{ext}");
            let found = find_card(&out, None).unwrap().expect("card");
            let mut want = card();
            want.name = format!("export.{ext}");
            assert_eq!(found.card, want, "{ext}");
            if fmt == Format::Parquet {
                assert!(found.source.contains("Parquet metadata"));
                assert_eq!(parquet_card(&out).unwrap(), Some(want));
                // The metadata alone is enough: the beside copy removed, still found.
                std::fs::remove_file(d.path().join("export.card.json")).unwrap();
                assert!(find_card(&out, None).unwrap().is_some());
            }
        }
    }

    #[test]
    fn a_bad_input_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("bad.jsonl");
        std::fs::write(&src, "{\"id\": \"a\", \"text\": \"x\"}\n").unwrap();
        let out = d.path().join("out.parquet");
        assert!(export(&src, None, &out, Format::Parquet).is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
