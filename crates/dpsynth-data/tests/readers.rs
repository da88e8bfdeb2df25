//! Readers and validation: every error names the place (file, line/row, column).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dpsynth_data::{read_file, Columns, DataError, DropReason, Format, OnInvalid, ReadOptions};

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, content).unwrap();
    p
}

fn opts() -> ReadOptions {
    ReadOptions::default()
}

fn strict() -> ReadOptions {
    ReadOptions {
        on_invalid: OnInvalid::Error,
        ..ReadOptions::default()
    }
}

fn err_text(r: Result<dpsynth_data::ReadResult, DataError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn csv_reads_quoted_multiline_and_generates_ids() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "a.csv",
        b"label,text,extra\npos,\"hello, world\",1\nneg,\"two\nlines\",2\npos,  padded  ,3\nneg,x,4\n",
    );
    let r = read_file(&p, &opts()).unwrap();
    assert_eq!(r.format, Format::Csv);
    let recs = r.loaded.records();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].text, "hello, world");
    assert_eq!(recs[1].text, "two\nlines");
    assert_eq!(recs[2].text, "padded");
    assert_eq!(
        recs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "4"]
    );
    assert_eq!(r.sha256, dpsynth_data::sha256_file(&p).unwrap());
    assert_eq!(r.sha256.len(), 64);
}

#[test]
fn tsv_with_id_and_user_columns() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "a.tsv",
        b"uid\twho\tlabel\ttext\na7\talice\tx\tfirst text\nb2\tbob\ty\tsecond, with comma\nc3\talice\tx\tthird\nd4\tbob\ty\tfourth\n",
    );
    let o = ReadOptions {
        columns: Columns {
            id: Some("uid".into()),
            user: Some("who".into()),
            ..Columns::default()
        },
        ..opts()
    };
    let r = read_file(&p, &o).unwrap();
    let recs = r.loaded.records();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[1].id, "b2");
    assert_eq!(recs[1].user.as_deref(), Some("bob"));
    assert_eq!(recs[1].text, "second, with comma");
}

#[test]
fn jsonl_accepts_numeric_labels_and_skips_blank_lines() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "a.jsonl",
        b"{\"text\": \"a\", \"label\": 1}\n\n{\"text\": \"b\", \"label\": 0}\r\n{\"text\": \"c\", \"label\": 1}\n{\"text\": \"d\", \"label\": 0}",
    );
    let r = read_file(&p, &opts()).unwrap();
    let recs = r.loaded.records();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].label, "1");
    // Generated ids are line numbers (blank line 2 is skipped).
    assert_eq!(recs[1].id, "3");
    assert_eq!(r.loaded.drops.total_dropped(), 0);
}

#[test]
fn bz2_csv_is_read_transparently() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    enc.write_all(b"text,label\na,x\nb,x\nc,y\nd,y\n").unwrap();
    let p = write(d.path(), "a.csv.bz2", &enc.finish().unwrap());
    let r = read_file(&p, &opts()).unwrap();
    assert_eq!(r.format, Format::Csv);
    assert_eq!(r.loaded.kept.len(), 4);
}

#[test]
fn corrupt_csv_row_is_dropped_and_counted_or_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "bad.csv",
        b"text,label\nok,a\nok too,a\nextra,field,here\nfine,b\nfine2,b\n",
    );
    let r = read_file(&p, &opts()).unwrap();
    assert_eq!(r.loaded.kept.len(), 4);
    assert_eq!(r.loaded.drops.count(DropReason::MalformedRow), 1);
    let ex = &r.loaded.drops.examples[&DropReason::MalformedRow][0];
    assert!(ex.contains("bad.csv: line 4"), "{ex}");
    let e = err_text(read_file(&p, &strict()));
    assert!(
        e.contains("bad.csv: line 4")
            && e.contains("malformed_row")
            && e.contains("3 fields, expected 2"),
        "{e}"
    );
}

#[test]
fn empty_and_non_utf8_text_name_line_and_column() {
    let d = tempfile::tempdir().unwrap();
    let mut content = b"label,body\na,fine\na,   \nb,ok\nb,caf".to_vec();
    content.push(0xe9); // Latin-1 é: not UTF-8
    content.extend_from_slice(b"\nb,more\na,again\n");
    let p = write(d.path(), "t.csv", &content);
    let o = ReadOptions {
        columns: Columns {
            text: "body".into(),
            ..Columns::default()
        },
        ..opts()
    };
    let r = read_file(&p, &o).unwrap();
    assert_eq!(r.loaded.kept.len(), 4);
    assert_eq!(r.loaded.drops.count(DropReason::EmptyText), 1);
    assert_eq!(r.loaded.drops.count(DropReason::InvalidUtf8), 1);
    let o_strict = ReadOptions {
        on_invalid: OnInvalid::Error,
        ..o
    };
    let e = err_text(read_file(&p, &o_strict));
    assert!(
        e.contains("t.csv: line 3, column `body`") && e.contains("empty_text"),
        "{e}"
    );
    // Remove the empty row: the next error is the encoding one.
    let content2 = String::from_utf8_lossy(&content).replace("a,   \n", "");
    let mut c2 = content2.into_bytes();
    let pos = c2
        .windows(3)
        .position(|w| w == "\u{fffd}".as_bytes())
        .unwrap();
    c2.splice(pos..pos + 3, [0xe9]);
    let p2 = write(d.path(), "t2.csv", &c2);
    let e = err_text(read_file(&p2, &o_strict));
    assert!(
        e.contains("t2.csv: line 4, column `body`") && e.contains("invalid_utf8"),
        "{e}"
    );
}

#[test]
fn jsonl_line_that_is_not_json_names_the_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "x.jsonl",
        b"{\"text\": \"a\", \"label\": \"p\"}\n{\"text\": \"b\", \"label\": \n{\"text\": \"c\", \"label\": \"p\"}\n",
    );
    let r = read_file(&p, &opts()).unwrap();
    assert_eq!(r.loaded.kept.len(), 2);
    assert_eq!(r.loaded.drops.count(DropReason::MalformedRow), 1);
    let e = err_text(read_file(&p, &strict()));
    assert!(
        e.contains("x.jsonl: line 2") && e.contains("not valid JSON"),
        "{e}"
    );
}

#[test]
fn jsonl_wrong_type_and_missing_field_name_the_column() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "w.jsonl",
        b"{\"text\": \"a\", \"label\": \"p\"}\n{\"text\": \"b\", \"label\": \"p\"}\n{\"text\": {\"x\": 1}, \"label\": \"p\"}\n{\"text\": \"d\"}\n",
    );
    let r = read_file(&p, &opts()).unwrap();
    assert_eq!(r.loaded.drops.count(DropReason::WrongType), 1);
    assert_eq!(r.loaded.drops.count(DropReason::MissingField), 1);
    let e = err_text(read_file(&p, &strict()));
    assert!(
        e.contains("w.jsonl: line 3, column `text`") && e.contains("an object"),
        "{e}"
    );
}

#[test]
fn missing_column_lists_available_columns() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "m.csv", b"review,label\nx,a\n");
    let e = err_text(read_file(&p, &opts()));
    assert!(
        e.contains("m.csv")
            && e.contains("column `text` not found")
            && e.contains("`review`")
            && e.contains("--text-col"),
        "{e}"
    );
    let p = write(
        d.path(),
        "m.jsonl",
        b"{\"review\": \"x\", \"label\": \"a\"}\n",
    );
    let e = err_text(read_file(&p, &opts()));
    assert!(
        e.contains("m.jsonl: line 1") && e.contains("column `text` not found"),
        "{e}"
    );
}

#[test]
fn empty_files_are_errors_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    for name in ["e.csv", "e.tsv", "e.jsonl", "e.parquet"] {
        let p = write(d.path(), name, b"");
        let e = err_text(read_file(&p, &opts()));
        assert!(
            e.contains(name) && e.contains("no data rows"),
            "{name}: {e}"
        );
    }
    // A header but no rows.
    let p = write(d.path(), "h.csv", b"text,label\n");
    let e = err_text(read_file(&p, &opts()));
    assert!(e.contains("h.csv") && e.contains("no data rows"), "{e}");
}

#[test]
fn unknown_extension_asks_for_format() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "data.txt", b"text,label\na,b\n");
    let e = err_text(read_file(&p, &opts()));
    assert!(e.contains("data.txt") && e.contains("--format"), "{e}");
    let o = ReadOptions {
        format: Some(Format::Csv),
        min_per_label: 1,
        ..opts()
    };
    assert_eq!(read_file(&p, &o).unwrap().loaded.kept.len(), 1);
}

#[test]
fn rare_labels_are_dropped_or_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "r.csv",
        b"text,label\na,x\nb,x\nc,lonely\nd,y\ne,y\n",
    );
    let r = read_file(&p, &opts()).unwrap();
    assert_eq!(r.loaded.kept.len(), 4);
    assert_eq!(r.loaded.drops.count(DropReason::RareLabel), 1);
    assert!(!r.loaded.histogram().contains_key("lonely"));
    let e = err_text(read_file(&p, &strict()));
    assert!(
        e.contains("r.csv: line 4, column `label`") && e.contains("`lonely` has only 1 example"),
        "{e}"
    );
}

#[test]
fn duplicate_ids_keep_the_first() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "d.csv",
        b"id,text,label\n1,a,x\n2,b,x\n1,c,y\n3,d,y\n4,e,y\n",
    );
    let o = ReadOptions {
        columns: Columns {
            id: Some("id".into()),
            ..Columns::default()
        },
        ..opts()
    };
    let r = read_file(&p, &o).unwrap();
    let recs = r.loaded.records();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].text, "a");
    assert!(recs.iter().all(|r| r.text != "c"));
    assert_eq!(r.loaded.drops.count(DropReason::DuplicateId), 1);
    let e = err_text(read_file(
        &p,
        &ReadOptions {
            on_invalid: OnInvalid::Error,
            ..o
        },
    ));
    assert!(
        e.contains("d.csv: line 4, column `id`")
            && e.contains("duplicate id `1` (first used at line 2)"),
        "{e}"
    );
}

// ---- Parquet (fixtures written with the parquet crate) ----

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

enum Col {
    Str(Vec<&'static str>),
    OptStr(Vec<Option<&'static str>>),
    Int(Vec<i64>),
}

fn write_parquet(path: &Path, schema: &str, cols: Vec<Col>) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let f = fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(f, schema, props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut cols = cols.into_iter();
    while let Some(mut c) = rg.next_column().unwrap() {
        match cols.next().unwrap() {
            Col::Str(v) => {
                let v: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(*s)).collect();
                c.typed::<ByteArrayType>()
                    .write_batch(&v, None, None)
                    .unwrap();
            }
            Col::OptStr(v) => {
                let def: Vec<i16> = v.iter().map(|x| x.is_some() as i16).collect();
                let vals: Vec<ByteArray> =
                    v.iter().flatten().map(|s| ByteArray::from(*s)).collect();
                c.typed::<ByteArrayType>()
                    .write_batch(&vals, Some(&def), None)
                    .unwrap();
            }
            Col::Int(v) => {
                c.typed::<Int64Type>().write_batch(&v, None, None).unwrap();
            }
        }
        c.close().unwrap();
    }
    rg.close().unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_reads_strings_ints_and_nulls() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ok.parquet");
    write_parquet(
        &p,
        "message m { REQUIRED INT64 label; OPTIONAL BYTE_ARRAY text (UTF8); REQUIRED BYTE_ARRAY other (UTF8); }",
        vec![
            Col::Int(vec![1, 1, 0, 0, 0]),
            Col::OptStr(vec![Some("a"), Some("b"), None, Some("d"), Some("e")]),
            Col::Str(vec!["x", "x", "x", "x", "x"]),
        ],
    );
    let r = read_file(&p, &opts()).unwrap();
    assert_eq!(r.format, Format::Parquet);
    let recs = r.loaded.records();
    assert_eq!(recs.len(), 4);
    assert_eq!(
        (
            recs[0].id.as_str(),
            recs[0].text.as_str(),
            recs[0].label.as_str()
        ),
        ("1", "a", "1")
    );
    assert_eq!(recs[2].id, "4");
    assert_eq!(r.loaded.drops.count(DropReason::MissingField), 1);
    let e = err_text(read_file(&p, &strict()));
    assert!(
        e.contains("ok.parquet: row 3, column `text`") && e.contains("missing_field"),
        "{e}"
    );
}

#[test]
fn parquet_wrong_column_type_names_file_and_column() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("wrong.parquet");
    write_parquet(
        &p,
        "message m { REQUIRED INT64 text; REQUIRED BYTE_ARRAY label (UTF8); }",
        vec![Col::Int(vec![1, 2]), Col::Str(vec!["a", "a"])],
    );
    let e = err_text(read_file(&p, &opts()));
    assert!(
        e.contains("wrong.parquet")
            && e.contains("column `text`")
            && e.contains("INT64")
            && e.contains("string"),
        "{e}"
    );
}

#[test]
fn parquet_missing_column_and_corrupt_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.parquet");
    write_parquet(
        &p,
        "message m { REQUIRED BYTE_ARRAY body (UTF8); REQUIRED BYTE_ARRAY label (UTF8); }",
        vec![Col::Str(vec!["a", "b"]), Col::Str(vec!["x", "x"])],
    );
    let e = err_text(read_file(&p, &opts()));
    assert!(
        e.contains("m.parquet") && e.contains("column `text` not found") && e.contains("`body`"),
        "{e}"
    );
    let p = write(d.path(), "junk.parquet", b"this is not parquet at all");
    let e = err_text(read_file(&p, &opts()));
    assert!(
        e.contains("junk.parquet") && e.contains("cannot read Parquet"),
        "{e}"
    );
}

#[test]
fn csv_with_bom_and_crlf() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "bom.csv",
        b"\xef\xbb\xbftext,label\r\nhello,a\r\nworld,a\r\n",
    );
    let r = read_file(&p, &opts()).unwrap();
    let recs = r.loaded.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[1].text.as_str(), recs[1].label.as_str()),
        ("world", "a")
    );
}

#[test]
fn inspect_plugs_in_a_token_counter() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "i.csv",
        b"text,label\none,a\ntwo words,a\nthree little words,b\nsolo,c\n",
    );
    let count = |t: &str| -> Result<usize, String> { Ok(t.split_whitespace().count()) };
    let r = dpsynth_data::inspect(
        p.to_str().unwrap(),
        &dpsynth_data::InspectOptions::default(),
        Some(("whitespace", &count)),
    )
    .unwrap();
    assert_eq!(r.records, 4);
    // inspect keeps single-example labels so the histogram is complete.
    assert_eq!(r.labels.get("c"), Some(&1));
    let c = r.chars.unwrap();
    assert_eq!((c.min, c.max), (3, 18));
    let t = r.tokens.unwrap();
    assert_eq!((t.min, t.p50, t.max), (1, 1, 3));
    assert_eq!(r.tokenizer.as_deref(), Some("whitespace"));
}
