//! End-to-end `evaluate` on tiny JSONL files: label mismatches and a one-class synthetic set are
//! reported (no crash), empty texts give clear messages, private quotes stay out of metrics.json.

use std::path::Path;

use dpsynth_data::{write_jsonl, Record};
use dpsynth_eval::cnn::CnnConfig;
use dpsynth_eval::embed::find_minilm_dir;
use dpsynth_eval::{evaluate, ClassifierKind, EvalConfig, Progress, TrainingSet};

fn rec(id: usize, text: &str, label: &str) -> Record {
    Record {
        id: format!("r{id}"),
        text: text.into(),
        label: label.into(),
        user: None,
    }
}

fn corpus(n: usize, offset: usize) -> Vec<Record> {
    let pos = [
        "a great and moving film",
        "wonderful acting and a fun story",
        "i loved this great movie",
        "fun , smart and moving",
    ];
    let neg = [
        "a dull and boring film",
        "awful acting and a boring story",
        "i hated this dull movie",
        "boring , dumb and slow",
    ];
    (0..n)
        .map(|i| {
            let j = i + offset;
            if i % 2 == 0 {
                rec(j, &format!("{} {}", pos[j % 4], j), "pos")
            } else {
                rec(j, &format!("{} {}", neg[j % 4], j), "neg")
            }
        })
        .collect()
}

fn write(dir: &Path, name: &str, r: &[Record]) -> std::path::PathBuf {
    let p = dir.join(name);
    write_jsonl(&p, r).unwrap();
    p
}

fn cnn_only(syn: std::path::PathBuf, tr: std::path::PathBuf, te: std::path::PathBuf) -> EvalConfig {
    let mut cfg = EvalConfig::new(syn, tr, te);
    cfg.classifiers = vec![ClassifierKind::Cnn];
    cfg.mauve_max_texts = 0; // no MiniLM needed
    cfg.cache_dir = None;
    cfg.cnn = CnnConfig {
        embed_dim: 8,
        filters: 8,
        max_epochs: 10,
        batch_size: 8,
        min_count: 1,
        ..CnnConfig::default()
    };
    cfg
}

#[test]
fn cnn_pipeline_without_assets_and_private_file_separation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut train = corpus(80, 0);
    // A distinctive training record, so the verbatim copy is the single worst memorization case
    // (template records tie at 5 shared words and may fill the worst-k list in any order).
    train[3].text = "boring , dumb and slow 3 with a distinctive tail nobody else shares".into();
    let test = corpus(40, 1000);
    // synthetic: one verbatim training record + others
    let mut syn = corpus(40, 2000);
    syn.push(train[3].clone());
    let (s, tr, te) = (
        write(tmp.path(), "s.jsonl", &syn),
        write(tmp.path(), "tr.jsonl", &train),
        write(tmp.path(), "te.jsonl", &test),
    );
    let mut cfg = cnn_only(s, tr, te);
    cfg.out_dir = Some(tmp.path().join("out"));
    let rep = evaluate(&cfg, &Progress::hidden()).unwrap();
    assert_eq!(rep.rows.len(), 2);
    assert_eq!(rep.rows[0].training, TrainingSet::Synthetic);
    assert_eq!(rep.rows[1].training, TrainingSet::RealNonPrivate);
    for r in &rep.rows {
        assert!(r.metrics.accuracy > 0.9, "{:?}", r.metrics);
        assert_eq!(r.metrics.n, 40);
    }
    assert_eq!(rep.memorization.exact_duplicates, 1);
    assert!(rep.memorization.max_longest_shared_ngram >= 5);
    let metrics = std::fs::read_to_string(tmp.path().join("out/metrics.json")).unwrap();
    let private =
        std::fs::read_to_string(tmp.path().join("out/memorization_private.json")).unwrap();
    assert!(private.contains(&train[3].text) && private.contains("PRIVATE"));
    assert!(
        !metrics.contains(&train[3].text),
        "metrics.json must not quote training records"
    );
    assert!(rep.table().contains("synthetic → real test"));
    // metrics.json holds only what the guarantee covers; everything else is in the marked
    // private file.
    let public: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    assert_eq!(public["covered_by_guarantee"], true);
    let rows = public["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        1,
        "only the synthetic row (no DP baseline asked)"
    );
    assert_eq!(rows[0]["training"]["kind"], "synthetic");
    for private_key in [
        "real_non_private",
        "memorization",
        "\"train\"",
        "exact_duplicates",
    ] {
        assert!(
            !metrics.contains(private_key),
            "metrics.json holds {private_key}: {metrics}"
        );
    }
    let all: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("out/metrics_private.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(all["covered_by_guarantee"], false);
    assert!(all["note"].as_str().unwrap().starts_with("PRIVATE"));
    assert_eq!(all["memorization"]["exact_duplicates"], 1);
    assert_eq!(all["rows"].as_array().unwrap().len(), 2);
}

#[test]
fn label_mismatch_single_class_and_empty_texts_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let train = corpus(40, 0);
    let test = corpus(20, 500);
    let mut syn: Vec<Record> = corpus(20, 900)
        .into_iter()
        .filter(|r| r.label == "pos")
        .collect();
    syn.push(rec(9999, "   ", "pos"));
    syn.push(rec(9998, "an odd one", "neutral"));
    let (s, tr, te) = (
        write(tmp.path(), "s.jsonl", &syn),
        write(tmp.path(), "tr.jsonl", &train),
        write(tmp.path(), "te.jsonl", &test),
    );
    let mut cfg = cnn_only(s, tr, te);
    cfg.real_baseline = false;
    let rep = evaluate(&cfg, &Progress::hidden()).unwrap();
    assert_eq!(rep.labels.missing_in_synthetic, vec!["neg".to_string()]);
    assert_eq!(rep.labels.only_in_synthetic, vec!["neutral".to_string()]);
    assert!(
        rep.warnings.iter().any(|w| w.contains("empty text")),
        "{:?}",
        rep.warnings
    );
    assert_eq!(rep.labels.labels.len(), 3);
    // "neg" test examples can never be right
    assert!(rep.rows[0].metrics.accuracy <= 0.5 + 1e-9);

    // one class only
    let syn1: Vec<Record> = corpus(20, 900)
        .into_iter()
        .filter(|r| r.label == "pos")
        .collect();
    let s1 = write(tmp.path(), "s1.jsonl", &syn1);
    let mut cfg1 = cnn_only(s1, cfg.train.clone(), cfg.test.clone());
    cfg1.real_baseline = false;
    let rep1 = evaluate(&cfg1, &Progress::hidden()).unwrap();
    assert!(rep1.labels.synthetic_single_class);
    assert!(rep1.warnings.iter().any(|w| w.contains("single class")));

    // all-empty synthetic file: a clear error
    let s2 = write(
        tmp.path(),
        "s2.jsonl",
        &[rec(1, "", "pos"), rec(2, " ", "neg")],
    );
    let err = evaluate(
        &cnn_only(s2, cfg.train.clone(), cfg.test.clone()),
        &Progress::hidden(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("empty text"), "{err}");
    // empty file
    let s3 = write(tmp.path(), "s3.jsonl", &[]);
    let err = evaluate(
        &cnn_only(s3, cfg.train.clone(), cfg.test.clone()),
        &Progress::hidden(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no records"), "{err}");
}

#[test]
fn logreg_mauve_and_dp_baseline_with_real_minilm() {
    let Some(_) = dpsynth_testkit::found("assets/minilm", find_minilm_dir(None)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let train = corpus(120, 0);
    let test = corpus(40, 1000);
    let syn = corpus(60, 3000);
    let (s, tr, te) = (
        write(tmp.path(), "s.jsonl", &syn),
        write(tmp.path(), "tr.jsonl", &train),
        write(tmp.path(), "te.jsonl", &test),
    );
    let mut cfg = EvalConfig::new(s, tr, te);
    cfg.classifiers = vec![ClassifierKind::Logreg];
    cfg.cache_dir = Some(tmp.path().join("cache"));
    cfg.epsilon = Some(8.0);
    cfg.dp_seed = Some(1);
    cfg.dp_logreg.expected_batch_size = 32;
    cfg.dp_logreg.epochs = 20;
    let rep = evaluate(&cfg, &Progress::hidden()).unwrap();
    assert_eq!(rep.rows.len(), 3);
    assert!(
        rep.rows[0].metrics.accuracy > 0.9,
        "synthetic→real {:?}",
        rep.rows[0].metrics
    );
    assert!(rep.rows[1].metrics.accuracy > 0.9);
    let dp = rep.rows[2].dp.as_ref().unwrap();
    assert!(dp.epsilon_spent <= 8.0);
    assert!(
        rep.rows[2].metrics.accuracy > 0.7,
        "DP ε=8 {:?}",
        rep.rows[2].metrics
    );
    let m = rep.mauve.as_ref().unwrap();
    assert!(
        m.mauve > 0.5,
        "similar corpora give high MAUVE: {}",
        m.mauve
    );
    assert_eq!(rep.embedding_cache_hits, 0);
    let rep2 = evaluate(&cfg, &Progress::hidden()).unwrap();
    assert_eq!(
        rep2.embedding_cache_hits, 3,
        "second evaluation reads the cache"
    );
}

#[test]
fn test_set_missing_a_label_is_reported_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut train = corpus(40, 0);
    train.push(rec(7000, "a neutral remark about the film", "neutral"));
    train.push(rec(7001, "another neutral remark", "neutral"));
    let test = corpus(20, 500);
    let syn = corpus(20, 900);
    let (s, tr, te) = (
        write(tmp.path(), "s.jsonl", &syn),
        write(tmp.path(), "tr.jsonl", &train),
        write(tmp.path(), "te.jsonl", &test),
    );
    let rep = evaluate(&cnn_only(s, tr, te), &Progress::hidden()).unwrap();
    assert_eq!(rep.labels.missing_in_test, vec!["neutral".to_string()]);
    assert_eq!(rep.labels.missing_in_synthetic, vec!["neutral".to_string()]);
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("test set has no examples")),
        "{:?}",
        rep.warnings
    );
    assert_eq!(rep.rows.len(), 2);
    assert!(rep.rows.iter().all(|r| r.metrics.n == 20));
}

#[test]
fn dp_cnn_baseline_uses_the_public_embedding_and_stays_in_budget() {
    let Some(_) = dpsynth_testkit::found("assets/minilm", find_minilm_dir(None)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (s, tr, te) = (
        write(tmp.path(), "s.jsonl", &corpus(40, 3000)),
        write(tmp.path(), "tr.jsonl", &corpus(200, 0)),
        write(tmp.path(), "te.jsonl", &corpus(40, 1000)),
    );
    let mut cfg = cnn_only(s, tr, te);
    cfg.real_baseline = false;
    cfg.epsilon = Some(8.0);
    cfg.dp_seed = Some(5);
    cfg.dp_cnn.expected_batch_size = 50;
    cfg.dp_cnn.epochs = 10;
    let rep = evaluate(&cfg, &Progress::hidden()).unwrap();
    assert_eq!(rep.rows.len(), 2);
    let row = &rep.rows[1];
    assert_eq!(
        row.training,
        TrainingSet::RealDpSgd {
            epsilon: 8.0,
            delta: 1e-5
        }
    );
    let dp = row.dp.as_ref().unwrap();
    assert!(dp.epsilon_spent <= 8.0 && dp.epsilon_spent > 7.0, "{dp:?}");
    // L = 50 capped to 16 (power of two ≥ 200/16): q = 0.08, 10 epochs
    assert!((dp.sampling_rate - 0.08).abs() < 1e-12, "{dp:?}");
    assert_eq!(dp.steps, 125);
    assert_eq!(row.metrics.n, 40);
    let table = rep.table();
    assert!(
        table.contains("DP-SGD word CNN: q = 0.0800, 125 steps") && table.contains("NOT secure"),
        "{table}"
    );
}
