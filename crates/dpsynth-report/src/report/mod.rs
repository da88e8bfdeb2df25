//! report.html and report.md for a run directory (and, in [`crate::sweep`], for a sweep).
//!
//! The report never crashes on a partial run: every section whose stage did not run says so.
//! It never quotes private records: sample texts come only from the synthetic data (DP
//! post-processing), and the memorization section shows numbers only.

pub mod charts;
pub mod doc;
pub mod synthesis;
pub mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use doc::{to_html, to_markdown, Block, Doc};
pub use view::{files, RunView, Score, Setting};

use crate::config::fmt_eps;
use crate::privacy::NEIGHBORING;
use crate::stage::{write_atomic, StageError, STAGES};
use view::{find_named_number, find_named_object, fmt_num, numeric_leaves};

/// What to include.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportOptions {
    /// Only what the DP guarantee covers (the guarantee, DP label histogram, synthetic samples,
    /// and the synthetic-data and DP-baseline results of `eval/metrics.json`): no non-private
    /// ceiling, statistics of the private data, loss curve, memorization, data summary or audit.
    /// For sharing with people who may not see the private data's statistics.
    pub public_only: bool,
    /// Synthetic samples shown per label.
    pub samples_per_label: usize,
}

impl ReportOptions {
    pub fn new() -> Self {
        ReportOptions {
            public_only: false,
            samples_per_label: 3,
        }
    }
}

fn fmt_delta(d: f64) -> String {
    if d == 0.0 {
        "0".into()
    } else {
        format!("{d:.0e}").replace("e-", "e-")
    }
}

/// Truncate to `n` characters with an ellipsis.
pub fn truncate(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn not_run(doc: &mut Doc, v: &RunView, stage: &str, what: &str) {
    let status = v.stage_status(stage);
    let msg = match status {
        "not run" => format!(
            "Not run: the {stage} stage has not run in this run directory, so there is no {what} yet."
        ),
        "done" => format!("The {stage} stage finished but produced no {what} (see the notes below)."),
        _ => format!(
            "Not finished: the {stage} stage was interrupted (or is still running); re-run `dpsynth run` with the same config to resume it."
        ),
    };
    doc.note(msg);
}

/// The privacy-guarantee section, shared by run reports.
pub fn privacy_section(doc: &mut Doc, v: &RunView) {
    doc.h2("Privacy guarantee");
    let Some(ledger) = v.ledger.as_ref().filter(|l| !l.entries.is_empty()) else {
        doc.note("Not run: nothing has been released from the private data yet (the train stage, which releases the label histogram and the adapter, has no ledger entry), so there is no guarantee to state.");
        return;
    };
    let g = ledger.current();
    let training_done = v.stage_status("train") == "done";
    if g.epsilon.is_infinite() {
        doc.note("This run is NOT private (ε = ∞): the model was fine-tuned and the label histogram computed without noise. Treat the synthetic data as if it were the private data.");
    } else {
        doc.p(format!(
            "Guarantee: (ε = {}, δ = {})-differential privacy, neighboring relation: {NEIGHBORING}.",
            fmt_num(g.epsilon),
            fmt_delta(g.delta)
        ));
        doc.p(format!(
            "In words: for any one record of the private training set, whether it was included changes the probability of any outcome of the released artifacts (the fine-tuned adapter, the DP label histogram, and everything computed from them alone, including the synthetic dataset) by at most a factor e^ε ≈ {}, except with probability at most δ = {}.",
            fmt_num(g.epsilon.exp()),
            fmt_delta(g.delta)
        ));
        if !training_done {
            doc.note("Training has not finished: this is the budget spent so far, not the guarantee of a finished run.");
        } else if let Some(te) = v.train_ledger_epsilon() {
            // The run ledger copies the training ledger's PLD ε when training finishes; a
            // mismatch means one of the files was edited or is stale.
            let one_release = ledger
                .entries
                .iter()
                .filter(|e| !e.superseded && !e.separate)
                .count()
                == 1;
            if one_release && (te - g.epsilon).abs() > 1e-9 {
                doc.note(format!(
                    "Warning: the training ledger (train/privacy.json) says ε = {}, the run ledger says ε = {}; trust the larger until the run is repeated.",
                    fmt_num(te),
                    fmt_num(g.epsilon)
                ));
            }
        }
    }
    let rows = ledger
        .entries
        .iter()
        .map(|e| {
            vec![
                e.stage.clone(),
                e.mechanism.clone(),
                e.epsilon.map(fmt_num).unwrap_or_else(|| "∞".into()),
                fmt_delta(e.delta),
                if e.superseded {
                    "superseded (still counted in the directory total)".into()
                } else if e.separate {
                    "separate release (not an input of the synthetic data)".into()
                } else {
                    "current".into()
                },
            ]
        })
        .collect();
    doc.table(&["release", "mechanism", "ε", "δ", "status"], rows);
    doc.p("One release per training attempt: the DP label histogram (Gaussian mechanism) and the DP-SGD fine-tuning, composed by the PLD accountant in the training ledger (train/privacy.json); the ε above is that ledger's. Only separate attempts in the same directory (superseded rows) are added up, by basic sequential composition (Dwork & Roth 2014, Thm 3.16), which never understates ε.");
    let reported = ledger.reported();
    if ledger.separate_releases().next().is_some() && g.epsilon.is_finite() {
        doc.p(format!(
            "The evaluation also trained DP-SGD baselines directly on the same training records (the `baseline:` rows): each is its own (ε, δ)-DP release, not an input of the synthetic data. The synthetic data, the adapter and the label histogram are (ε = {}, δ = {})-DP; everything this report shows together, baseline results included, is (ε = {}, δ = {})-DP by basic sequential composition (Dwork & Roth 2014, Thm 3.16).",
            fmt_num(g.epsilon),
            fmt_delta(g.delta),
            fmt_num(reported.epsilon),
            fmt_delta(reported.delta)
        ));
    }
    let all = ledger.spent_in_directory();
    if all.epsilon > reported.epsilon + 1e-12 {
        doc.note(format!(
            "This run directory released from the private data more than once (a stage was re-run). If earlier outputs were seen by anyone, the total spent is ε = {}, δ = {}.",
            fmt_num(all.epsilon),
            fmt_delta(all.delta)
        ));
    }
    if let Some(tl) = &v.train_ledger {
        let mut rows: Vec<Vec<String>> = Vec::new();
        fn scalar(x: &serde_json::Value) -> Option<String> {
            match x {
                serde_json::Value::Number(n) => Some(fmt_num(n.as_f64().unwrap_or(f64::NAN))),
                serde_json::Value::String(s) if s.len() < 100 => Some(s.clone()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }
        if let Some(m) = tl.as_object() {
            for (k, x) in m {
                if let Some(s) = scalar(x) {
                    rows.push(vec![k.clone(), s]);
                } else if let (Some(o), false) = (x.as_object(), k.contains("histogram")) {
                    // One level of nesting (dp_sgd.noise_multiplier, seed_policy.policy).
                    for (k2, y) in o {
                        if let Some(s) = scalar(y) {
                            rows.push(vec![format!("{k}.{k2}"), s]);
                        }
                    }
                }
            }
        }
        if !rows.is_empty() {
            doc.h3("DP fine-tuning (training ledger)");
            doc.table(&["field", "value"], rows);
        }
    }
    doc.h3("What is protected, and what is not");
    let mut protected = vec![
        "Protected: the text and label of each individual training record, against anyone who sees the synthetic data, the adapter or the DP label histogram — whatever they know otherwise.".to_string(),
    ];
    protected.push("Not protected: people who contributed several records. The unit is one record; someone with k records gets the weaker group guarantee (kε, k·e^{(k−1)ε}·δ).".into());
    protected.push("Not protected: the number of training records and the set of label names, which are treated as public (they set the sampling rate and the histogram's domain).".into());
    protected.push("Not protected: the held-out real test set. The accuracies and MAUVE are measured on it; those of classifiers trained on the synthetic data or with DP-SGD are covered for the training records (they are in `dpsynth report --public`), but they are statistics of the test records.".into());
    protected.push("Not covered, private (only in the data holder's report, never in `--public`): the non-private real-data ceiling, statistics of the training and test data (eval/metrics_private.json), the training loss curve, the memorization check, the data summary and the empirical audit (a second training run on the private records whose cost this ε does not include).".into());
    protected.push("Not protected: choices made by looking at private data (hyperparameters, which run of a sweep to keep) unless their own cost is accounted for.".into());
    protected.push("Not covered: the public pretraining data of the base model, and anything that leaks through side channels (timing, memory).".into());
    if v.config_value("run.seed").is_some() {
        protected.push("Warning: this run set run.seed, so its noise is reproducible from the config and NOT secure; use it only for testing.".into());
    }
    doc.list(protected);
}

/// Accuracy table rows and chart for one run's scores.
fn scores_section(doc: &mut Doc, v: &RunView, chart_name: &str, public_only: bool) {
    doc.h2("Downstream utility: train on synthetic, test on real");
    let (metrics, scores) = if public_only {
        (&v.public_metrics, &v.public_scores)
    } else {
        (&v.metrics, &v.scores)
    };
    if metrics.is_none() {
        if public_only && v.metrics.is_some() {
            doc.note("Left out: this run's evaluation was written before results were split by what the guarantee covers (eval/metrics.json has no `covered_by_guarantee` mark); re-run the evaluate stage to get a shareable eval/metrics.json.");
        } else {
            not_run(doc, v, "evaluate", "evaluation");
        }
        return;
    }
    if scores.is_empty() {
        doc.note("The evaluation wrote its metrics but no accuracy was found in them.");
        return;
    }
    if public_only {
        doc.p("Classifiers trained on the synthetic data and tested on held-out real data, compared with a classifier trained with DP-SGD directly on the real training data at the same ε (the baseline; a separate release, see the privacy section). Both are covered by the guarantee for the training records; they are measured on the test records.");
    } else {
        doc.p("Classifiers trained on the synthetic data and tested on held-out real data, compared with a classifier trained with DP-SGD directly on the real data at the same ε (the baseline) and one trained on the real data without privacy (the ceiling). The ceiling is NOT covered by the guarantee (private report only).");
    }
    let rows = scores
        .iter()
        .map(|s| {
            vec![
                s.setting.describe(),
                s.classifier.clone(),
                Score::with_se(s.accuracy, s.accuracy_se),
                s.macro_f1
                    .map(|f| Score::with_se(f, s.macro_f1_se))
                    .unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    doc.table(
        &[
            "trained on",
            "classifier",
            "accuracy (± bootstrap SE)",
            "macro-F1 (± SE)",
        ],
        rows,
    );
    let eps = v.target_epsilon().unwrap_or(f64::NAN);
    let method = v
        .config_str("train.method")
        .unwrap_or_else(|| "method".into());
    let classifiers: Vec<String> = {
        let mut c: Vec<String> = scores.iter().map(|s| s.classifier.clone()).collect();
        c.sort();
        c.dedup();
        c
    };
    for c in classifiers {
        let pick = |set: Setting| {
            scores
                .iter()
                .find(|s| s.setting == set && s.classifier == c)
                .map(|s| s.accuracy)
        };
        let methods: Vec<charts::Series> = pick(Setting::Synthetic)
            .map(|a| charts::Series {
                name: method.clone(),
                points: vec![(0, a)],
            })
            .into_iter()
            .collect();
        let baseline = pick(Setting::Baseline).map(|a| charts::Series {
            name: "DP-SGD on real data (baseline)".into(),
            points: vec![(0, a)],
        });
        match charts::accuracy_vs_epsilon(
            &format!("{c} classifier"),
            &[fmt_eps(eps)],
            &methods,
            baseline.as_ref(),
            pick(Setting::Ceiling),
        ) {
            Ok(svg) => doc.push(Block::Chart {
                name: format!("{chart_name}-{c}"),
                alt: format!("accuracy vs ε, {c} classifier"),
                svg,
            }),
            Err(e) => doc.note(format!("chart failed: {e}")),
        }
    }
}

/// Build the document of one run.
/// The empirical privacy audit (`RUN_DIR/audit/audit.json`, written by `dpsynth audit`), if any.
/// Aggregates only: canary texts are random strings, but per-canary rows are left to audit.json.
///
/// # Privacy
/// The audit is a second DP training run on the same private records (plus canaries); its
/// cost is in no ledger of this run, so its results are not covered by the run's guarantee:
/// the section is marked private and a public report leaves it out (saying so).
fn audit_section(doc: &mut Doc, v: &RunView, public_only: bool) {
    let Some(a) = &v.audit else { return };
    if public_only {
        doc.h2("Empirical privacy audit");
        doc.note("Left out: an empirical audit (`dpsynth audit`) was run on this run's data. It is a second training run on the same private records whose privacy cost is not part of this report's ε, so its results are private.");
        return;
    }
    let num = |path: &[&str]| -> Option<f64> {
        let mut x = a;
        for k in path {
            x = x.get(*k)?;
        }
        x.as_f64()
    };
    let show = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "—".into());
    doc.h2("Empirical privacy audit (private: not covered by the guarantee)");
    doc.note("PRIVATE: the audit is a second DP training run on the same private records (plus canaries). Its privacy cost is NOT in this run's ledger or ε, so these results are not covered by the guarantee above; `dpsynth report --public` leaves them out.");
    let verdict = a.get("verdict").and_then(|x| x.as_str()).unwrap_or("?");
    let claimed = match num(&["claimed_epsilon"]) {
        Some(e) => fmt_num(e),
        None => "none (no DP)".into(),
    };
    doc.table(
        &[
            "verdict",
            "claimed ε",
            "empirical ε lower bound",
            "confidence",
            "guesses right",
        ],
        vec![vec![
            verdict.to_string(),
            claimed,
            show(num(&["epsilon_lower_bound"])),
            show(num(&["confidence"])),
            format!(
                "{} of {}",
                show(num(&["bound", "v"])),
                show(num(&["bound", "r"]))
            ),
        ]],
    );
    doc.table(
        &[
            "canaries",
            "inserted",
            "AUC",
            "mean score inserted",
            "mean score held out",
        ],
        vec![vec![
            show(num(&["canaries"])),
            show(num(&["inserted"])),
            show(num(&["scores", "auc"])),
            show(num(&["scores", "mean_inserted"])),
            show(num(&["scores", "mean_held_out"])),
        ]],
    );
    if verdict == "violation" {
        doc.note("VIOLATION: the measured lower bound exceeds the claimed ε. The implementation or configuration does not deliver its guarantee; do not release this run's outputs.");
    }
    doc.p("One-run audit (Steinke, Nasr & Jagielski 2023): canaries inserted with probability 1/2, scored by the drop in loss from the base model. A lower bound below the claimed ε is consistent with the guarantee but does not prove it; the guarantee is the ledger.");
}

pub fn run_doc(v: &RunView, opts: &ReportOptions) -> Doc {
    let dataset = v
        .config_str("data.recipe")
        .or_else(|| v.config_str("data.path"))
        .unwrap_or_else(|| "dataset".into());
    let method = v.config_str("train.method").unwrap_or_else(|| "?".into());
    let eps = v
        .target_epsilon()
        .map(fmt_eps)
        .unwrap_or_else(|| "?".into());
    let mut doc = Doc::new(format!("dpsynth report — {dataset}, {method}, ε = {eps}"));
    if opts.public_only {
        doc.note("Public version: only what the differential-privacy guarantee covers.");
    }
    doc.table(
        &["run directory", "dataset", "method", "target ε"],
        vec![vec![
            v.dir.display().to_string(),
            dataset.clone(),
            method.clone(),
            eps.clone(),
        ]],
    );
    privacy_section(&mut doc, v);
    audit_section(&mut doc, v, opts.public_only);
    synthesis::synthesis_section(&mut doc, &v.dir, opts.public_only);
    scores_section(&mut doc, v, "accuracy", opts.public_only);
    if !opts.public_only {
        doc.h2("DP fine-tuning loss");
        match &v.loss {
            Some(pts) if !pts.is_empty() => match charts::loss_curve(pts) {
                Ok(svg) => {
                    doc.push(Block::Chart {
                        name: "loss".into(),
                        alt: "training loss per step".into(),
                        svg,
                    });
                    let last = pts.last().expect("non-empty");
                    doc.p(format!(
                        "{} steps logged; first loss {}, last {} (at step {}). Losses are means over private Poisson batches: a non-private training statistic.",
                        pts.len(),
                        fmt_num(pts[0].1),
                        fmt_num(last.1),
                        fmt_num(last.0)
                    ));
                }
                Err(e) => doc.note(format!("loss chart failed: {e}")),
            },
            _ => not_run(&mut doc, v, "train", "loss curve"),
        }
    }
    // Label histograms: the DP-released one and the synthetic data's.
    doc.h2("Label histograms");
    let synth_counts: Option<BTreeMap<String, u64>> = v.synthetic.as_ref().map(|s| {
        let mut m = BTreeMap::new();
        for (l, _) in s {
            *m.entry(l.clone()).or_insert(0) += 1;
        }
        m
    });
    match (&v.histogram, &synth_counts) {
        (None, None) => not_run(&mut doc, v, "train", "label histogram"),
        (h, s) => {
            let mut labels: Vec<String> = Vec::new();
            if let Some(h) = h {
                labels.extend(h.labels.iter().map(|l| l.label.clone()));
            }
            if let Some(s) = s {
                for l in s.keys() {
                    if !labels.contains(l) {
                        labels.push(l.clone());
                    }
                }
            }
            let share = |counts: Vec<u64>| {
                let t: u64 = counts.iter().sum();
                counts
                    .iter()
                    .map(|&c| if t == 0 { 0.0 } else { c as f64 / t as f64 })
                    .collect::<Vec<f64>>()
            };
            let mut groups = Vec::new();
            let mut rows: Vec<Vec<String>> = labels.iter().map(|l| vec![l.clone()]).collect();
            if let Some(h) = h {
                let c: Vec<u64> = labels
                    .iter()
                    .map(|l| {
                        h.labels
                            .iter()
                            .find(|x| &x.label == l)
                            .map(|x| x.count)
                            .unwrap_or(0)
                    })
                    .collect();
                for (r, x) in rows.iter_mut().zip(&c) {
                    r.push(x.to_string());
                }
                groups.push((format!("DP label histogram ({})", h.mechanism), share(c)));
                doc.p(match h.epsilon {
                    Some(e) if e > 0.0 => format!(
                        "Released by the Gaussian mechanism (σ = {} per count, calibrated to ε = {} on its own) and composed with DP-SGD in the training ledger by the PLD accountant, so the run's total ε already includes it; then used to split the synthetic records over labels.",
                        h.scale.map(fmt_num).unwrap_or_default(),
                        fmt_num(e)
                    ),
                    Some(_) => "No budget was spent on labels: synthetic records are split uniformly.".to_string(),
                    None => "Exact label counts (non-private run).".to_string(),
                });
            } else {
                for r in rows.iter_mut() {
                    r.push("—".into());
                }
                not_run(&mut doc, v, "train", "DP label histogram");
            }
            if let Some(s) = s {
                let c: Vec<u64> = labels
                    .iter()
                    .map(|l| s.get(l).copied().unwrap_or(0))
                    .collect();
                for (r, x) in rows.iter_mut().zip(&c) {
                    r.push(x.to_string());
                }
                groups.push(("synthetic data".to_string(), share(c)));
            } else {
                for r in rows.iter_mut() {
                    r.push("—".into());
                }
            }
            doc.table(&["label", "DP histogram count", "synthetic records"], rows);
            match charts::grouped_bars("Label shares", &labels, &groups) {
                Ok(svg) => doc.push(Block::Chart {
                    name: "labels".into(),
                    alt: "label shares: DP histogram and synthetic data".into(),
                    svg,
                }),
                Err(e) => doc.note(format!("label chart failed: {e}")),
            }
        }
    }
    doc.h2("MAUVE (synthetic vs real test texts)");
    let mauve_src = if opts.public_only {
        &v.public_metrics
    } else {
        &v.metrics
    };
    match mauve_src.as_ref().and_then(|m| find_named_number(m, "mauve")) {
        Some(x) => doc.p(format!(
            "MAUVE = {} (1 = indistinguishable distributions, near 0 = very different; computed on sentence embeddings of the synthetic and real test texts).",
            fmt_num(x)
        )),
        None if mauve_src.is_some() => doc.note("Not computed: the metrics have no MAUVE score (eval.mauve = false?)."),
        None if opts.public_only && v.metrics.is_some() => doc.note("Left out: this run's evaluation predates the public/private split of its metrics."),
        None => not_run(&mut doc, v, "evaluate", "MAUVE score"),
    }
    if !opts.public_only {
        doc.h2("Memorization check (private: not covered by the guarantee)");
        match v
            .metrics
            .as_ref()
            .and_then(|m| find_named_object(m, "memoriz"))
        {
            Some(m) => {
                let rows: Vec<Vec<String>> = numeric_leaves(m)
                    .into_iter()
                    .map(|(k, x)| vec![k, x])
                    .collect();
                doc.p("How much of the synthetic data copies training records (numbers only; this report never quotes private records).");
                if rows.is_empty() {
                    doc.note("The memorization summary has no numbers.");
                } else {
                    doc.table(&["measure", "value"], rows);
                }
            }
            None if v.metrics.is_some() => {
                doc.note("Not computed: metrics.json has no memorization summary.")
            }
            None => not_run(&mut doc, v, "evaluate", "memorization check"),
        }
    }
    doc.h2("Sample synthetic records");
    match &v.synthetic {
        Some(s) if !s.is_empty() => {
            doc.p(format!(
                "{} synthetic records; up to {} per label (synthetic data is DP post-processing and safe to show).",
                s.len(),
                opts.samples_per_label
            ));
            let mut by_label: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (l, t) in s {
                let e = by_label.entry(l.as_str()).or_default();
                if e.len() < opts.samples_per_label {
                    e.push(t.as_str());
                }
            }
            for (l, ts) in by_label {
                for t in ts {
                    doc.push(Block::Quote {
                        label: l.to_string(),
                        text: truncate(t, 400),
                    });
                }
            }
        }
        Some(_) => doc.note("The synthesis stage wrote an empty synthetic dataset."),
        None => not_run(&mut doc, v, "synthesize", "synthetic data"),
    }
    doc.h2("Stages");
    let rows = STAGES
        .iter()
        .filter(|s| **s != "report")
        .map(|s| {
            let r = v.stages.get(*s);
            vec![
                s.to_string(),
                v.stage_status(s).to_string(),
                r.map(|r| r.attempts.to_string()).unwrap_or_default(),
                r.and_then(|r| r.seconds)
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_default(),
                r.map(|r| r.config_hash.chars().take(12).collect())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    doc.table(
        &["stage", "status", "attempts", "seconds", "config hash"],
        rows,
    );
    if !opts.public_only {
        if let Some(ds) = &v.data_summary {
            let rows: Vec<Vec<String>> = numeric_leaves(ds)
                .into_iter()
                .map(|(k, x)| vec![k, x])
                .collect();
            if !rows.is_empty() {
                doc.h3("Data summary (not covered by the guarantee)");
                doc.table(&["field", "value"], rows);
            }
        }
    }
    doc.h2("Configuration");
    match &v.config_text {
        Some(t) => doc.push(Block::Pre(t.clone())),
        None => doc.note("No config.toml in this run directory."),
    }
    if !v.notes.is_empty() {
        doc.h2("Notes");
        doc.list(v.notes.clone());
    }
    doc
}

/// Where the report files went.
#[derive(Debug, Clone)]
pub struct Written {
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub charts: Vec<PathBuf>,
}

/// Write `report.html`, `report.md` and `report_files/*.svg` for a document into `dir`.
pub fn write_doc(dir: &Path, doc: &Doc, stem: &str) -> Result<Written, StageError> {
    let html = dir.join(format!("{stem}.html"));
    let md = dir.join(format!("{stem}.md"));
    let files_dir = format!("{stem}_files");
    let mut charts = Vec::new();
    for (name, svg) in doc.charts() {
        let p = dir.join(&files_dir).join(name);
        write_atomic(&p, svg.as_bytes())?;
        charts.push(p);
    }
    write_atomic(&html, to_html(doc).as_bytes())?;
    write_atomic(&md, to_markdown(doc, &files_dir).as_bytes())?;
    Ok(Written {
        html,
        markdown: md,
        charts,
    })
}

/// Load a run directory and write its report (report.html, report.md, report_files/).
pub fn write_run_report(dir: &Path, opts: &ReportOptions) -> Result<Written, StageError> {
    let v = RunView::load(dir);
    let doc = run_doc(&v, opts);
    write_doc(
        dir,
        &doc,
        if opts.public_only {
            "report-public"
        } else {
            "report"
        },
    )
}
