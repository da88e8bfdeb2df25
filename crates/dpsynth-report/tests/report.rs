//! Rendering on fixture run directories (tests/fixtures/run-complete: a finished run written by
//! hand in the shapes the pipeline writes; partial runs are made by deleting pieces).

use std::path::{Path, PathBuf};

use dpsynth_report::report::{run_doc, write_run_report, ReportOptions, RunView, Setting};
use dpsynth_report::sweep;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

fn fixture() -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-complete");
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    copy_dir(&src, &run);
    (d, run)
}

fn render(run: &Path) -> (String, String) {
    let w = write_run_report(run, &ReportOptions::new()).unwrap();
    (
        std::fs::read_to_string(w.html).unwrap(),
        std::fs::read_to_string(w.markdown).unwrap(),
    )
}

#[test]
fn complete_run_states_the_guarantee_and_shows_every_section() {
    let (_d, run) = fixture();
    let (html, md) = render(&run);
    for text in [&html, &md] {
        assert!(text.contains("ε = 3, δ = 1e-5"), "guarantee missing");
        assert!(text.contains("add/remove one record of the private training set"));
        // One mechanism, one ledger: the histogram is Gaussian and composed by PLD.
        assert!(text.contains("Gaussian mechanism"));
        assert!(text.contains("PLD accountant"));
        assert!(!text.contains("Laplace"));
        assert!(
            !text.contains("Warning: the training ledger"),
            "run and training ledgers agree"
        );
        assert!(text.contains("Hyperparameter") || text.contains("hyperparameters"));
        assert!(text.contains("0.7412"), "synthetic accuracy");
        assert!(text.contains("0.7012"), "baseline accuracy");
        assert!(text.contains("0.8123"), "ceiling accuracy");
        assert!(text.contains("MAUVE = 0.8731"));
        assert!(
            text.contains("records_with_long_shared_ngram")
                || text.contains("records\\_with\\_long\\_shared\\_ngram")
        );
        assert!(
            !text.contains("Not run:"),
            "a complete run has no 'not run' note"
        );
    }
    // Charts: inline SVG in HTML, separate files for Markdown.
    assert!(
        html.matches("<svg").count() >= 4,
        "accuracy ×2, loss, labels"
    );
    assert!(md.contains("](report_files/loss.svg)"));
    assert!(run.join("report_files/loss.svg").is_file());
    assert!(run.join("report_files/accuracy-embedding.svg").is_file());
    // Self-contained and static: no JavaScript, no external resources.
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(!html.contains("src=\""));
    assert!(!html.contains("href=\"http"));
    assert!(!html.contains("<link"));
    // Sample texts are escaped.
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("Tedious &amp; overlong; the plot &lt;b&gt;drags&lt;/b&gt;"));
    assert!(!md.contains("<script>"));
    assert!(md.contains("&lt;b&gt;drags&lt;/b&gt; \\| nowhere"));
    // Never quote private records: string fields of the memorization summary are dropped.
    assert!(!html.contains("PRIVATE RECORD TEXT"));
    assert!(!md.contains("PRIVATE RECORD TEXT"));
    // The training ledger's numbers are shown.
    assert!(html.contains("noise_multiplier") && html.contains("0.97"));
    // The interrupted-and-resumed training shows 2 attempts.
    assert!(html.contains("<td>train</td><td>done</td><td>2</td>"));
}

#[test]
fn scores_are_classified_by_setting() {
    let (_d, run) = fixture();
    let v = RunView::load(&run);
    let find = |s: Setting, c: &str| {
        v.scores
            .iter()
            .find(|x| x.setting == s && x.classifier == c)
            .map(|x| x.accuracy)
    };
    assert_eq!(find(Setting::Synthetic, "embedding"), Some(0.7412));
    assert_eq!(find(Setting::Synthetic, "cnn"), Some(0.6625));
    assert_eq!(find(Setting::Baseline, "embedding"), Some(0.7012));
    assert_eq!(find(Setting::Ceiling, "embedding"), Some(0.8123));
    assert_eq!(v.loss.as_ref().unwrap().len(), 5);
    assert_eq!(v.train_ledger_epsilon(), Some(2.99996));
}

#[test]
fn missing_pieces_become_not_run_notes() {
    let (_d, run) = fixture();
    std::fs::remove_dir_all(run.join("eval")).unwrap();
    std::fs::remove_file(run.join("stages/evaluate.json")).unwrap();
    std::fs::remove_file(run.join("synthetic.jsonl")).unwrap();
    std::fs::remove_file(run.join("stages/synthesize.json")).unwrap();
    std::fs::remove_file(run.join("train/loss.csv")).unwrap();
    // Training was interrupted.
    let t = std::fs::read_to_string(run.join("stages/train.json")).unwrap();
    std::fs::write(
        run.join("stages/train.json"),
        t.replace("\"done\"", "\"running\""),
    )
    .unwrap();
    let (html, md) = render(&run);
    for text in [&html, &md] {
        assert!(text.contains("Not run: the evaluate stage has not run"));
        assert!(text.contains("Not run: the synthesize stage has not run"));
        assert!(text.contains("Not finished: the train stage was interrupted"));
        assert!(text.contains("Training has not finished"));
        // The guarantee of what was released so far is still stated.
        assert!(text.contains("ε = 3, δ = 1e-5"));
    }
}

#[test]
fn empty_and_garbage_directories_render_without_panicking() {
    let d = tempfile::tempdir().unwrap();
    let (html, _) = render(d.path());
    assert!(html.contains("Not run: nothing has been released"));
    assert!(html.contains("No config.toml"));
    // Corrupt files are reported as notes, not crashes.
    std::fs::create_dir_all(d.path().join("eval")).unwrap();
    std::fs::create_dir_all(d.path().join("stages")).unwrap();
    std::fs::write(d.path().join("eval/metrics.json"), "{not json").unwrap();
    std::fs::write(d.path().join("stages/train.json"), "[]").unwrap();
    std::fs::write(d.path().join("histogram.json"), "{\"labels\": 3}").unwrap();
    std::fs::write(
        d.path().join("synthetic.jsonl"),
        "garbage\n{\"text\":\"ok\",\"label\":1}\n",
    )
    .unwrap();
    std::fs::write(d.path().join("config.toml"), "this is = = not toml").unwrap();
    let (html, _) = render(d.path());
    assert!(html.contains("metrics.json could not be read"));
    assert!(html.contains("train.json"));
    assert!(html.contains("1 lines were not records"));
}

#[test]
fn non_private_and_public_reports() {
    let (_d, run) = fixture();
    let l = std::fs::read_to_string(run.join("privacy_ledger.json")).unwrap();
    std::fs::write(
        run.join("privacy_ledger.json"),
        l.replace("\"epsilon\": 2.99996", "\"epsilon\": null"),
    )
    .unwrap();
    let (html, _) = render(&run);
    assert!(html.contains("This run is NOT private (ε = ∞)"));

    // A run ledger that disagrees with the training ledger is flagged.
    let (_d3, run) = fixture();
    let l = std::fs::read_to_string(run.join("privacy_ledger.json")).unwrap();
    std::fs::write(
        run.join("privacy_ledger.json"),
        l.replace("\"epsilon\": 2.99996", "\"epsilon\": 2.5"),
    )
    .unwrap();
    let (html, _) = render(&run);
    assert!(html.contains("Warning: the training ledger (train/privacy.json) says ε = 3"));

    let (_d2, run) = fixture();
    let v = RunView::load(&run);
    let opts = ReportOptions {
        public_only: true,
        samples_per_label: 1,
    };
    let doc = run_doc(&v, &opts);
    let html = dpsynth_report::report::to_html(&doc);
    assert!(html.contains("ε = 3, δ = 1e-5"));
    assert!(!html.contains("0.7412"), "test-set metrics are left out");
    assert!(!html.contains("MAUVE ="));
    assert!(!html.contains("DP fine-tuning loss"));
    assert!(html.contains("DP label histogram"));
    assert_eq!(
        html.matches("<blockquote>").count(),
        2,
        "one sample per label"
    );
    let w = write_run_report(&run, &opts).unwrap();
    assert!(w.html.ends_with("report-public.html"));
}

#[test]
fn sweep_report_compares_methods_over_epsilon_and_notes_tuning() {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-complete");
    let mut points = Vec::new();
    for (m, e, acc) in [
        ("lora", Some(1.0), 0.61),
        ("lora", Some(3.0), 0.7412),
        ("prompt", Some(3.0), 0.65),
        ("lora", None, 0.79),
    ] {
        let rel = format!(
            "rotten-tomatoes/{m}-eps{}",
            e.map(|x: f64| x.to_string()).unwrap_or("inf".into())
        );
        let dir = d.path().join(&rel);
        copy_dir(&src, &dir);
        let mj = std::fs::read_to_string(dir.join("eval/metrics.json")).unwrap();
        std::fs::write(
            dir.join("eval/metrics.json"),
            mj.replace("0.7412", &acc.to_string()),
        )
        .unwrap();
        points.push(serde_json::json!({"dataset": "rotten-tomatoes", "method": m, "epsilon": e, "dir": rel}));
    }
    std::fs::write(
        d.path().join("sweep.json"),
        serde_json::to_string(&serde_json::json!({ "points": points })).unwrap(),
    )
    .unwrap();
    assert!(sweep::is_sweep_dir(d.path()));
    let w = sweep::write_sweep_report(d.path()).unwrap();
    let html = std::fs::read_to_string(&w.html).unwrap();
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    for text in [&html, &md] {
        assert!(text.contains("Hyperparameter tuning on private data costs privacy"));
        assert!(text.contains("0.61") && text.contains("0.79") && text.contains("0.65"));
        assert!(text.contains("synthetic (lora)") && text.contains("synthetic (prompt)"));
        // Composition over the 4 runs: 4 × 2.99996 = 11.99984.
        assert!(
            text.contains("| 11.9998 |") || text.contains("<td>11.9998</td>"),
            "composed ε"
        );
    }
    assert!(html.contains("<svg"));
    assert!(!html.contains("<script"));
    // ε order on the x axis: 1, 3, ∞; the prompt method has no ε = 1 point → "not run".
    assert!(
        html.contains("<td>1</td><td>0.61</td><td>not run</td>"),
        "{html}"
    );
}

#[test]
fn sweep_without_manifest_says_not_run() {
    let d = tempfile::tempdir().unwrap();
    let doc = sweep::sweep_doc(d.path());
    let html = dpsynth_report::report::to_html(&doc);
    assert!(html.contains("Not run"));
}

#[test]
fn loosely_shaped_metrics_are_understood_too() {
    let m = serde_json::json!({
        "synthetic": {"bert": {"accuracy": 0.7, "f1": 0.69}, "cnn": {"acc": 0.6}},
        "dp_sgd_baseline": {"embedding": {"accuracy": 0.65}},
        "ceiling": [{"classifier": "cnn", "accuracy": 0.8}],
        "mauve": 0.9
    });
    let s = dpsynth_report::report::view::extract_scores(&m);
    let get = |set: Setting, c: &str| {
        s.iter()
            .find(|x| x.setting == set && x.classifier == c)
            .map(|x| x.accuracy)
    };
    assert_eq!(get(Setting::Synthetic, "embedding"), Some(0.7));
    assert_eq!(get(Setting::Synthetic, "cnn"), Some(0.6));
    assert_eq!(get(Setting::Baseline, "embedding"), Some(0.65));
    assert_eq!(get(Setting::Ceiling, "cnn"), Some(0.8));
    assert_eq!(
        dpsynth_report::report::view::find_named_number(&m, "mauve"),
        Some(0.9)
    );
}

#[test]
fn audit_section_shows_verdict_and_bound_next_to_claim() {
    let (_d, run) = fixture();
    let (html, _) = render(&run);
    assert!(
        !html.contains("Empirical privacy audit"),
        "no audit.json, no section"
    );
    std::fs::create_dir_all(run.join("audit")).unwrap();
    // Shape of dpsynth-audit's audit.json (schema version 1, crates/dpsynth-audit/README.md).
    let audit = serde_json::json!({
        "version": 1, "verdict": "violation", "claimed_epsilon": 1.0, "delta": 1e-5,
        "epsilon_lower_bound": 2.25, "confidence": 0.95, "canaries": 128, "inserted": 61,
        "bound": {"v": 40, "r": 40},
        "scores": {"auc": 0.97, "mean_inserted": 1.5, "mean_held_out": 0.1}
    });
    std::fs::write(run.join("audit/audit.json"), audit.to_string()).unwrap();
    let (html, md) = render(&run);
    for doc in [&html, &md] {
        assert!(doc.contains("Empirical privacy audit"));
        assert!(doc.contains("violation") && doc.contains("VIOLATION"));
        assert!(doc.contains("2.25"), "lower bound shown");
        assert!(doc.contains("40 of 40"), "guesses right shown");
    }
}

/// A run directory evaluated after the public/private split: eval/metrics.json holds what the
/// guarantee covers, eval/metrics_private.json everything; plus an audit and a DP baseline
/// recorded in the run ledger as a separate release.
fn split_fixture() -> (tempfile::TempDir, PathBuf) {
    let (d, run) = fixture();
    let mut all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/metrics.json")).unwrap())
            .unwrap();
    all["covered_by_guarantee"] = false.into();
    all["stats"] = serde_json::json!({
        "train": {"n": 1024, "max_words": 4711, "vocab_size": 98765,
                  "label_counts": {"fresh": 5123, "rotten": 4987}},
        "synthetic": {"n": 200, "max_words": 61, "vocab_size": 1500, "label_counts": {}}
    });
    let rows: Vec<serde_json::Value> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["training"]["kind"] != "real_non_private")
        .cloned()
        .collect();
    let public = serde_json::json!({
        "covered_by_guarantee": true,
        "note": "Covered by the DP guarantee for the training records: synthetic-data and DP-SGD baseline results.",
        "labels": ["fresh", "rotten"],
        "rows": rows,
        "mauve": all["mauve"].clone(),
        "synthetic_stats": all["stats"]["synthetic"].clone(),
    });
    std::fs::write(run.join("eval/metrics_private.json"), all.to_string()).unwrap();
    std::fs::write(run.join("eval/metrics.json"), public.to_string()).unwrap();
    std::fs::create_dir_all(run.join("audit")).unwrap();
    let audit = serde_json::json!({
        "version": 1, "verdict": "consistent", "claimed_epsilon": 3.0, "delta": 1e-5,
        "epsilon_lower_bound": 2.2571, "confidence": 0.95, "canaries": 128, "inserted": 61,
        "bound": {"v": 40, "r": 44}, "scores": {"auc": 0.61, "mean_inserted": 1.5, "mean_held_out": 0.1}
    });
    std::fs::write(run.join("audit/audit.json"), audit.to_string()).unwrap();
    let mut l: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("privacy_ledger.json")).unwrap())
            .unwrap();
    l["entries"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "stage": "baseline:logreg", "mechanism": "DP-SGD baseline", "epsilon": 2.9876,
            "delta": 1e-5, "unix": 1764464400, "superseded": false, "separate": true, "details": {}
        }));
    std::fs::write(run.join("privacy_ledger.json"), l.to_string()).unwrap();
    (d, run)
}

#[test]
fn a_public_report_contains_none_of_the_private_numbers() {
    let (_d, run) = split_fixture();
    let opts = ReportOptions {
        public_only: true,
        samples_per_label: 1,
    };
    let w = write_run_report(&run, &opts).unwrap();
    let html = std::fs::read_to_string(&w.html).unwrap();
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    for doc in [&html, &md] {
        // Covered: the synthetic-data and DP-baseline results, MAUVE, the guarantee.
        assert!(doc.contains("ε = 3, δ = 1e-5"));
        assert!(doc.contains("0.7412"), "synthetic accuracy");
        assert!(doc.contains("0.7012"), "DP baseline accuracy");
        assert!(doc.contains("MAUVE = 0.8731"));
        // The baseline is a separate release: the report states the composed total.
        assert!(
            doc.contains("separate release"),
            "baseline row in the ledger table"
        );
        assert!(doc.contains("ε = 5.9876"), "synthetic ε + baseline ε");
        // The audit's section is left out, saying why.
        assert!(doc.contains("Left out: an empirical audit"));
        // Private: none of these numbers may appear.
        for private in [
            "0.8123", // the non-private ceiling
            "4711",   // longest training record
            "98765",  // training vocabulary
            "5123",   // exact training label count
            "3.91",   // a training loss
            "2.2571", // the audit's bound
            "records_with_long_shared_ngram",
            "long\\_shared",
            "empty_text", // data summary
            "PRIVATE RECORD TEXT",
        ] {
            assert!(!doc.contains(private), "public report shows {private}");
        }
    }
    // The data holder's report has all of it, the audit marked private.
    let (html, _) = render(&run);
    assert!(html.contains("0.8123") && html.contains("2.2571"));
    assert!(html.contains("Empirical privacy audit (private: not covered by the guarantee)"));
}

#[test]
fn a_legacy_metrics_file_is_treated_as_private() {
    // eval/metrics.json written before the split (no covered_by_guarantee mark): the public
    // report leaves the evaluation out instead of trusting it.
    let (_d, run) = fixture();
    let v = RunView::load(&run);
    assert!(v.public_metrics.is_none() && v.metrics.is_some());
    let html = dpsynth_report::report::to_html(&run_doc(
        &v,
        &ReportOptions {
            public_only: true,
            samples_per_label: 1,
        },
    ));
    assert!(html.contains("written before results were split"));
    assert!(!html.contains("0.7412") && !html.contains("0.8123"));
}
