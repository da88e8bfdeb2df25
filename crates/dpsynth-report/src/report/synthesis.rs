//! The report's section on synthesis post-processing (how many candidates each filter kept),
//! the ε = 0 control and the label-fidelity diagnostic.
//!
//! Filter counts are post-processing of DP outputs (public). The control's scores on the real
//! test set follow the other test-set scores (not in `--public`). Label fidelity reads the
//! private training data without privacy: shown only in the private report.

use std::path::Path;

use serde_json::Value;

use super::doc::Doc;
use super::view::{extract_scores, files, fmt_num, Setting};

fn read(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

fn u(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_u64)
        .map(|x| x.to_string())
        .unwrap_or_else(|| "–".into())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Rows of the filter table for one `*.filter.json`.
fn filter_rows(name: &str, f: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        name.to_string(),
        u(f, "generated"),
        u(f, "removed_by_length"),
        u(f, "exact_duplicates"),
        u(f, "near_duplicates"),
        u(f, "after_dedup"),
        u(f, "relabeled"),
        u(f, "dropped_low_confidence"),
        u(f, "dropped_by_balance"),
        u(f, "kept"),
    ]];
    if let Some(per) = f.get("per_label").and_then(Value::as_array) {
        let cell = |l: &Value| {
            format!(
                "{}: prompted {}, assigned {}, kept {} of {}",
                l.get("label").and_then(Value::as_str).unwrap_or("?"),
                u(l, "prompted"),
                u(l, "assigned"),
                u(l, "kept"),
                u(l, "target"),
            )
        };
        rows[0].push(per.iter().map(cell).collect::<Vec<_>>().join("; "));
    }
    rows
}

/// Append the section.
pub fn synthesis_section(doc: &mut Doc, dir: &Path, public_only: bool) {
    let dp = read(&dir.join(files::SYNTHETIC_FILTER));
    let ctl = read(&dir.join(files::CONTROL_FILTER));
    if dp.is_none() && ctl.is_none() {
        return;
    }
    doc.h2("Synthesis filters (post-processing, no ε)");
    doc.p("Candidates sampled from the model, exact and near duplicates removed (character 5-gram Jaccard), each scored under the model with every label's prompt prefix, re-labelled to the most likely label (posterior with the DP label proportions as prior) and kept per label up to the DP histogram's quota, most confident first. Uses only the model and the synthetic texts: free under post-processing.");
    let mut rows = Vec::new();
    if let Some(f) = &dp {
        rows.extend(filter_rows("DP model", f));
    }
    if let Some(f) = &ctl {
        rows.extend(filter_rows("ε = 0 control (base model)", f));
    }
    doc.table(
        &[
            "data",
            "generated",
            "length filter",
            "exact dup.",
            "near dup.",
            "after dedup",
            "re-labelled",
            "low confidence",
            "over quota",
            "kept",
            "per label",
        ],
        rows,
    );
    if let Some(c) = dp
        .as_ref()
        .and_then(|f| f.get("mean_confidence_kept"))
        .and_then(Value::as_f64)
    {
        doc.note(format!(
            "Mean posterior of the kept DP records' labels under the DP model: {}.",
            fmt_num(c)
        ));
    }
    if public_only {
        return;
    }
    // The control's test-set scores next to the DP data's.
    let main = read(&dir.join(files::METRICS));
    let control = read(&dir.join(files::CONTROL_METRICS));
    if let Some(cm) = &control {
        doc.h2("ε = 0 control vs DP synthetic data");
        doc.p("The ε = 0 control samples from the public base model with the same template and filters and uniform labels: no private data. The gap to the DP synthetic data is what DP fine-tuning adds.");
        let syn = |m: &Value| {
            extract_scores(m)
                .into_iter()
                .filter(|s| s.setting == Setting::Synthetic)
                .collect::<Vec<_>>()
        };
        let mut rows = Vec::new();
        for (name, m) in [("DP synthetic", main.as_ref()), ("ε = 0 control", Some(cm))] {
            if let Some(m) = m {
                for s in syn(m) {
                    rows.push(vec![
                        name.to_string(),
                        s.classifier.clone(),
                        pct(s.accuracy),
                        s.macro_f1.map(pct).unwrap_or_else(|| "–".into()),
                    ]);
                }
            }
        }
        doc.table(
            &[
                "trained on → real test",
                "classifier",
                "accuracy",
                "macro-F1",
            ],
            rows,
        );
    }
    let fid = read(&dir.join(files::LABEL_FIDELITY));
    let cfid = read(&dir.join(files::CONTROL_LABEL_FIDELITY));
    if fid.is_some() || cfid.is_some() {
        doc.h2("Label fidelity (private diagnostic)");
        doc.note("NOT covered by the privacy guarantee: a classifier trained on the private training data without privacy (MiniLM + logistic regression, as the real→real ceiling) labels each synthetic record; this is how often it agrees with the record's label. For the data holder only; `--public` leaves it out.");
        let mut rows = Vec::new();
        for (name, f) in [("DP synthetic", &fid), ("ε = 0 control", &cfid)] {
            if let Some(f) = f {
                let a = f.get("agreement").and_then(Value::as_f64);
                let se = f.get("standard_error").and_then(Value::as_f64);
                let maj = f.get("majority_share").and_then(Value::as_f64);
                rows.push(vec![
                    name.to_string(),
                    u(f, "synthetic_records"),
                    match (a, se) {
                        (Some(a), Some(se)) => format!("{} ± {}", pct(a), pct(se)),
                        _ => "–".into(),
                    },
                    maj.map(pct).unwrap_or_else(|| "–".into()),
                ]);
            }
        }
        doc.table(
            &[
                "synthetic data",
                "records",
                "agreement ± s.e.",
                "majority label share",
            ],
            rows,
        );
    }
}
