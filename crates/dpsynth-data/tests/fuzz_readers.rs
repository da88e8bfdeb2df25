//! Bad input at volume (issue 13, item 10): generated CSV, TSV, JSONL and Parquet files, plain
//! and `.bz2`, through `read_file` (and the normalized-JSONL reader `read_jsonl`), with proptest
//! for a bounded, deterministic number of cases. Every input must give `Ok` or an error; no
//! panic. Every error names the file, and a bad row also its line or row.
//!
//! Each test prints how many inputs it tried (`--nocapture` shows them).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use dpsynth_data::{read_file, read_jsonl, Columns, DataError, OnInvalid, ReadOptions};
use dpsynth_testkit::fuzz::{mutate, runner};
use proptest::prelude::*;

/// Cases per test (× 2 read options each).
const CASES: u32 = 384;

/// Text made of pieces that matter to the parsers: separators, quotes, line ends, BOMs, invalid
/// UTF-8, JSON punctuation and literals, header names, random bytes.
fn texty() -> impl Strategy<Value = Vec<u8>> {
    let atom = prop_oneof![
        Just(b"text".to_vec()),
        Just(b"label".to_vec()),
        Just(b"id".to_vec()),
        Just(b",".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"\xff\xfe\x00".to_vec()),
        Just(b"\xc3".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b":".to_vec()),
        Just(b"null".to_vec()),
        Just(b"true".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"-0.0".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(b"\"text\": ".to_vec()),
        Just(b"\"label\": ".to_vec()),
        Just(b"\"id\": ".to_vec()),
        Just(b"\"user\": ".to_vec()),
        Just(b"{\"text\": \"a b\", \"label\": \"x\"}\n".to_vec()),
        Just(b"\\u0000\\ud800".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
        "[a-z ]{0,12}".prop_map(String::into_bytes),
    ];
    (
        prop_oneof![
            Just(Vec::new()),
            Just(b"text,label\n".to_vec()),
            Just(b"text\tlabel\n".to_vec()),
            Just(b"id,text,label,user\n".to_vec()),
        ],
        proptest::collection::vec(atom, 0..80),
    )
        .prop_map(|(head, atoms)| [head, atoms.concat()].concat())
}

fn bz2(bytes: &[u8]) -> Vec<u8> {
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn options() -> [ReadOptions; 2] {
    [
        ReadOptions::default(),
        ReadOptions {
            on_invalid: OnInvalid::Error,
            min_per_label: 0,
            columns: Columns {
                id: Some("id".into()),
                user: Some("user".into()),
                ..Columns::default()
            },
            ..ReadOptions::default()
        },
    ]
}

/// Read `bytes` as a file named `name` with every option set; check the errors.
fn check(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    for o in options() {
        if let Err(e) = read_file(&p, &o) {
            let msg = e.to_string();
            prop_assert!(msg.contains(name), "error does not name the file: {msg}");
            if let DataError::InvalidRow { loc, .. } = &e {
                prop_assert!(loc.pos.is_some(), "a bad row without its place: {msg}");
            }
        }
    }
    if name.ends_with(".jsonl") {
        if let Err(e) = read_jsonl(&p) {
            let msg = e.to_string();
            prop_assert!(msg.contains(name), "error does not name the file: {msg}");
        }
    }
    Ok(())
}

fn run_text_format(ext: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0usize);
    let strategy = (
        texty(),
        any::<bool>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        proptest::option::of(any::<usize>()),
    );
    runner(CASES)
        .run(&strategy, |(bytes, compress, edits, cut)| {
            n.set(n.get() + 1);
            let n = n.get();
            if compress {
                let b = mutate(bz2(&bytes), &edits, None, cut);
                check(dir.path(), &format!("fuzz-{n}.{ext}.bz2"), &b)
            } else {
                check(dir.path(), &format!("fuzz-{n}.{ext}"), &bytes)
            }
        })
        .unwrap();
    eprintln!(
        "fuzz_readers {ext}: {} generated files, each read with 2 option sets",
        n.get()
    );
    n.get()
}

#[test]
fn csv_never_panics_and_errors_name_the_place() {
    assert_eq!(run_text_format("csv"), CASES as usize);
}

#[test]
fn tsv_never_panics_and_errors_name_the_place() {
    assert_eq!(run_text_format("tsv"), CASES as usize);
}

#[test]
fn jsonl_never_panics_and_errors_name_the_place() {
    assert_eq!(run_text_format("jsonl"), CASES as usize);
}

// ---- Parquet: valid files from the parquet crate, then corrupted ----

/// A Parquet file: string columns optional (every 5th value null), column 1 a required int64
/// when `int_label`.
fn parquet_bytes(schema: &str, rows: usize, int_label: bool) -> Vec<u8> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = 0;
    while let Some(mut c) = rg.next_column().unwrap() {
        if col == 1 && int_label {
            let v: Vec<i64> = (0..rows as i64).map(|i| i % 3).collect();
            c.typed::<Int64Type>().write_batch(&v, None, None).unwrap();
        } else {
            let v: Vec<ByteArray> = (0..rows)
                .map(|i| ByteArray::from(format!("value {i} of column {col}").as_str()))
                .collect();
            let def: Vec<i16> = (0..rows).map(|i| (i % 5 != 4) as i16).collect();
            let vals: Vec<ByteArray> = v
                .into_iter()
                .zip(&def)
                .filter(|(_, d)| **d == 1)
                .map(|(x, _)| x)
                .collect();
            c.typed::<ByteArrayType>()
                .write_batch(&vals, Some(&def), None)
                .unwrap();
        }
        c.close().unwrap();
        col += 1;
    }
    rg.close().unwrap();
    w.close().unwrap();
    out
}

#[test]
fn parquet_never_panics_and_errors_name_the_place() {
    let bases = [
        parquet_bytes(
            "message m { optional binary text (UTF8); required int64 label; optional binary id (UTF8); }",
            12,
            true,
        ),
        parquet_bytes(
            "message m { optional binary text (UTF8); optional binary label (UTF8); }",
            9,
            false,
        ),
    ];
    // The fixtures themselves read (sanity: mutations start from valid files).
    let dir = tempfile::tempdir().unwrap();
    for (i, b) in bases.iter().enumerate() {
        let p = dir.path().join(format!("base-{i}.parquet"));
        std::fs::write(&p, b).unwrap();
        read_file(
            &p,
            &ReadOptions {
                min_per_label: 0,
                ..ReadOptions::default()
            },
        )
        .unwrap();
    }
    let n = std::cell::Cell::new(0usize);
    let strategy = (
        0..bases.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        proptest::option::of(any::<usize>()),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    runner(CASES)
        .run(&strategy, |(which, edits, cut, compress, junk)| {
            n.set(n.get() + 1);
            let n = n.get();
            let mut b = mutate(bases[which].clone(), &edits, None, cut);
            if edits.is_empty() && cut.is_none() {
                // Random bytes with the magic number around them.
                b = [b"PAR1".to_vec(), junk, b"PAR1".to_vec()].concat();
            }
            if compress {
                check(dir.path(), &format!("fuzz-{n}.parquet.bz2"), &bz2(&b))
            } else {
                check(dir.path(), &format!("fuzz-{n}.parquet"), &b)
            }
        })
        .unwrap();
    eprintln!(
        "fuzz_readers parquet: {} generated files, each read with 2 option sets",
        n.get()
    );
    assert_eq!(n.get(), CASES as usize);
}
