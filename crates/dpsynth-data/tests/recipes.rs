//! Built-in recipes on the real assets (skipped with a message when assets are absent, a failure
//! under `DPSYNTH_REQUIRE_ASSETS=1`), and
//! `prepare` end to end on a small file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dpsynth_data::{prepare, read_jsonl, run_recipe, Columns, OnInvalid, PrepareOptions, Source};

/// The assets directory if it holds `sub`; a skip, or a failure under
/// `DPSYNTH_REQUIRE_ASSETS=1`, otherwise (`dpsynth_testkit::found`).
fn assets(sub: &str) -> Option<PathBuf> {
    dpsynth_testkit::found(
        &format!("assets/{sub}"),
        dpsynth_data::find_assets_dir().filter(|a| a.join(sub).exists()),
    )
}

fn hist(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn rotten_tomatoes_counts() {
    let Some(a) = assets("data/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2") else {
        return;
    };
    let r = run_recipe("rotten-tomatoes", &a, OnInvalid::Error, 2, false).unwrap();
    assert_eq!(
        r.loaded.histogram(),
        hist(&[("fresh", 7403), ("rotten", 5405)])
    );
    assert_eq!(r.loaded.drops.total_filtered(), 1097);
    assert_eq!(r.loaded.rows_read, 13905);
}

#[test]
fn bbc_news_counts() {
    let Some(a) = assets("data/bbc-news") else {
        return;
    };
    let r = run_recipe("bbc-news", &a, OnInvalid::Error, 2, false).unwrap();
    assert_eq!(
        r.loaded.histogram(),
        hist(&[
            ("business", 510),
            ("entertainment", 386),
            ("politics", 417),
            ("sports", 511),
            ("tech", 401)
        ])
    );
    let recs = r.loaded.records();
    let first = recs.iter().find(|r| r.id == "business/001").unwrap();
    assert!(
        first
            .text
            .starts_with("Ad sales boost Time Warner profit\n\nQuarterly profits"),
        "{}",
        &first.text[..80]
    );
    // The one Latin-1 file is repaired, not dropped: its pound sign survives.
    assert_eq!(r.loaded.drops.repaired.values().sum::<u64>(), 1);
    let s199 = recs.iter().find(|r| r.id == "sports/199").unwrap();
    assert!(s199.text.contains("£15.8m"));
}

#[test]
fn spamassassin_counts_and_cleaning() {
    let Some(a) = assets("data/spamassassin/easy-ham-1") else {
        return;
    };
    let r = run_recipe("spamassassin", &a, OnInvalid::Error, 2, false).unwrap();
    assert_eq!(r.loaded.histogram(), hist(&[("ham", 4150), ("spam", 1896)]));
    let recs = r.loaded.records();
    // Headers are gone (a few bodies quote whole messages, headers included: allow those).
    let with_headers = recs
        .iter()
        .filter(|r| r.text.contains("\nReceived: "))
        .count();
    assert!(
        with_headers < 30,
        "{with_headers} records contain `Received:` lines"
    );
    let first = recs
        .iter()
        .find(|r| r.id.starts_with("easy-ham-1/00001."))
        .unwrap();
    assert!(
        first.text.starts_with("Re: New Sequences Window\n\n"),
        "{}",
        &first.text[..60]
    );
    for rec in &recs {
        // Line 1 is the subject (which may start with `>`); the body has no quoted lines.
        assert!(
            !rec.text
                .lines()
                .skip(1)
                .any(|l| l.trim_start().starts_with('>')),
            "{}: quoted line left",
            rec.id
        );
    }
    let html_left = recs
        .iter()
        .filter(|r| r.text.contains("</p>") || r.text.contains("<br>"))
        .count();
    assert!(
        html_left < 40,
        "{html_left} records still contain HTML tags"
    );
}

#[test]
fn prepare_splits_stratified_and_deterministic() {
    let d = tempfile::tempdir().unwrap();
    let mut csv = String::from("text,label,who\n");
    for i in 0..100 {
        let label = if i % 4 == 0 { "rare" } else { "common" };
        csv.push_str(&format!("text number {i},{label},u{}\n", i % 7));
    }
    let src = d.path().join("data.csv");
    std::fs::write(&src, csv).unwrap();
    let source = Source::File {
        path: src.clone(),
        format: None,
        columns: Columns {
            user: Some("who".into()),
            ..Columns::default()
        },
    };
    let run = |out: &str, seed: u64, max_train: Option<usize>| {
        let mut o = PrepareOptions::new(d.path().join(out));
        o.seed = seed;
        o.max_train = max_train;
        let s = prepare(&source, &o).unwrap();
        let tr = read_jsonl(&d.path().join(out).join("train.jsonl")).unwrap();
        let te = read_jsonl(&d.path().join(out).join("test.jsonl")).unwrap();
        (s, tr, te)
    };
    let (s, tr, te) = run("a", 1, None);
    assert_eq!((s.records, s.train, s.test), (100, 80, 20));
    assert_eq!(s.test_labels, hist(&[("common", 15), ("rare", 5)]));
    assert_eq!(s.users, Some(7));
    assert_eq!(tr.len() + te.len(), 100);
    let mut ids: Vec<&str> = tr.iter().chain(&te).map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "train and test overlap or lose records");
    assert!(tr[0].user.is_some());
    let (_, tr2, te2) = run("b", 1, None);
    assert_eq!(
        (tr.clone(), te.clone()),
        (tr2, te2),
        "same seed, same split"
    );
    let (_, _, te3) = run("c", 2, None);
    assert_ne!(te, te3, "another seed, another split");
    let (s4, tr4, te4) = run("d", 1, Some(40));
    assert_eq!(tr4.len(), 40);
    assert_eq!(s4.train_labels, hist(&[("common", 30), ("rare", 10)]));
    assert_eq!(s4.subsampled_out, 40);
    assert_eq!(te4, te, "--max-train does not change the test set");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("a/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["source_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(summary["labels"]["rare"], 25);
}

#[test]
fn unknown_recipe_and_missing_asset_errors() {
    let d = tempfile::tempdir().unwrap();
    let e = run_recipe("imdb", d.path(), OnInvalid::Drop, 2, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown recipe `imdb`"), "{e}");
    let e = run_recipe("bbc-news", d.path(), OnInvalid::Drop, 2, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("scripts/fetch-assets.sh") && e.contains("bbc-news"),
        "{e}"
    );
}
