//! The stages' work: each calls the crate that owns it and writes into the run directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dpsynth_report::config::RunConfig;
use dpsynth_report::privacy::{self, LabelCount, LabelHistogram, LedgerEntry, RunLedger};
use dpsynth_report::report::{files, write_run_report, ReportOptions};
use dpsynth_report::stage::write_atomic;
use serde_json::json;

/// A finished stage's outputs (hashed into its record) and summary.
pub struct StageOut {
    pub outputs: Vec<PathBuf>,
    pub summary: serde_json::Value,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn run_stage(
    stage: &str,
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
) -> anyhow::Result<StageOut> {
    // Crash-test hooks at the stage boundaries (the stage record says `running` at both).
    dpsynth_train::ledger::kill_point(&format!("stage:{stage}:start"));
    let out = match stage {
        "data" => data(cfg, dir),
        "train" => train(cfg, dir, resume),
        "synthesize" => synthesize(cfg, dir),
        "evaluate" => evaluate(cfg, dir),
        "report" => report(dir),
        other => anyhow::bail!("unknown stage {other}"),
    }?;
    dpsynth_train::ledger::kill_point(&format!("stage:{stage}:end"));
    Ok(out)
}

/// Read, validate and split the dataset into `data/` (train subset of `data.max_train`, test
/// subset of `data.max_test`).
fn data(cfg: &RunConfig, dir: &Path) -> anyhow::Result<StageOut> {
    use dpsynth_data::prepare::{prepare, PrepareOptions, Source};
    let out = dir.join(files::DATA_DIR);
    let source = match &cfg.data.path {
        Some(p) => Source::File {
            path: p.clone(),
            format: None,
            columns: dpsynth_data::Columns {
                text: cfg.data.text_column.clone(),
                label: cfg.data.label_column.clone(),
                ..Default::default()
            },
        },
        None => Source::Recipe(cfg.data.recipe.clone()),
    };
    let mut opts = PrepareOptions::new(&out);
    opts.test_fraction = cfg.data.test_fraction;
    // The split's randomness is not secret (it does not touch the noise); recorded for reproduction.
    opts.seed = cfg
        .data
        .split_seed
        .or(cfg.run.seed)
        .unwrap_or_else(privacy::os_seed);
    opts.max_train = (cfg.data.max_train > 0).then_some(cfg.data.max_train as usize);
    opts.assets_dir = Some(cfg.assets_dir());
    opts.progress = true;
    let summary = prepare(&source, &opts).context("preparing the dataset")?;
    let test = out.join("test.jsonl");
    if cfg.data.max_test > 0 && summary.test > cfg.data.max_test {
        // Deterministic, label-blind thinning of the test split (keeps every k-th record).
        let recs = dpsynth_data::read_jsonl(&test)?;
        let keep = cfg.data.max_test as usize;
        let stride = recs.len() as f64 / keep as f64;
        let sub: Vec<_> = (0..keep)
            .map(|i| &recs[((i as f64 * stride) as usize).min(recs.len() - 1)])
            .collect();
        dpsynth_data::write_jsonl(&test, sub)?;
    }
    Ok(StageOut {
        outputs: vec![out.join("train.jsonl"), test, out.join("summary.json")],
        summary: json!({"train": summary.train, "test": summary.test.min(if cfg.data.max_test > 0 { cfg.data.max_test } else { u64::MAX }), "labels": summary.labels.len()}),
    })
}

/// DP label histogram + DP fine-tuning, one release with one ledger. A fresh attempt moves an
/// earlier `train/` aside (its spend stays in the run ledger); a resumed one continues the
/// training crate's checkpoint and ledger.
///
/// # Privacy
/// The training crate releases the label histogram with the Gaussian mechanism (σ calibrated to
/// `privacy.label_histogram_epsilon` alone) and calibrates DP-SGD's σ so that the PLD
/// composition of both is ≤ `privacy.epsilon` (`dpsynth_train::train::plan`); its ledger
/// `train/privacy.json` is written before any step runs and before any output. The run ledger
/// records this one release at the target ε before training starts, then the ε the training
/// ledger reports; a resumed attempt updates the same entry (the same release, never a second
/// spend). `histogram.json` is a post-processed copy of the histogram in the training ledger.
fn train(cfg: &RunConfig, dir: &Path, resume: bool) -> anyhow::Result<StageOut> {
    let tdir = dir.join(files::TRAIN_DIR);
    if !resume && tdir.exists() {
        let aside = dir.join(format!("train.replaced-{}", now_unix()));
        std::fs::rename(&tdir, &aside)
            .with_context(|| format!("moving the earlier training to {}", aside.display()))?;
        eprintln!(
            "  note: an earlier training in this run directory was moved to {}; its privacy spend stays in the ledger",
            aside.display()
        );
    }
    if cfg.train.steps == 0 || cfg.train.batch_size == 0 {
        let p = regime_plan(cfg, dir)?;
        eprintln!("  {}", p.describe());
        write_atomic(&dir.join(files::PLAN), &serde_json::to_vec_pretty(&p)?)?;
    }
    let mut ledger = RunLedger::load(dir)?;
    let eps = cfg.train_epsilon();
    let mechanism = if eps.is_infinite() {
        "none: non-private fine-tuning, exact label counts".to_string()
    } else if cfg.label_budget_share() > 0.0 {
        "Gaussian label histogram + DP-SGD (Poisson-subsampled Gaussian), composed by the PLD accountant".to_string()
    } else {
        "DP-SGD (Poisson-subsampled Gaussian), PLD accountant; uniform labels (no histogram)"
            .to_string()
    };
    let entry = |epsilon: Option<f64>, details: serde_json::Value| LedgerEntry {
        stage: "train".into(),
        mechanism: mechanism.clone(),
        epsilon,
        delta: if eps.is_finite() {
            cfg.privacy.delta
        } else {
            0.0
        },
        unix: now_unix(),
        superseded: false,
        separate: false,
        details,
    };
    // # Privacy: recorded at the target ε before any step runs; a resumed attempt is the same
    // release (update in place, never a second spend).
    let planned = entry(eps.is_finite().then_some(eps), json!({"planned": true}));
    if resume {
        ledger.update_current(dir, planned)?;
    } else {
        ledger.record(dir, planned)?;
    }
    let spent = train_impl(cfg, dir, &tdir, resume)?;
    ledger.update_current(dir, entry(spent.epsilon, spent.details.clone()))?;
    let hist = label_histogram_view(cfg, dir, &tdir)?;
    let hp = dir.join(files::HISTOGRAM);
    write_atomic(&hp, &serde_json::to_vec_pretty(&hist)?)?;
    Ok(StageOut {
        outputs: vec![tdir, hp],
        summary: json!({
            "epsilon": spent.epsilon,
            "details": spent.details,
            PRIVATE_KEY: spent.private,
        }),
    })
}

/// The report's copy of the released label histogram (post-processing of the training ledger),
/// or the exact counts of a non-private run, or the uniform split when no histogram was released.
fn label_histogram_view(
    cfg: &RunConfig,
    dir: &Path,
    tdir: &Path,
) -> anyhow::Result<LabelHistogram> {
    if cfg.is_non_private() {
        let w: std::collections::BTreeMap<String, f64> = serde_json::from_slice(
            &std::fs::read(dir.join(LABEL_WEIGHTS)).context("reading label_weights.json")?,
        )?;
        return Ok(LabelHistogram {
            labels: w
                .into_iter()
                .map(|(label, c)| LabelCount {
                    label,
                    count: c as u64,
                })
                .collect(),
            epsilon: None,
            mechanism: "exact (non-private run)".into(),
            scale: None,
        });
    }
    let l = dpsynth_train::ledger::Ledger::read(&tdir.join("privacy.json"))
        .context("reading the training ledger")?;
    Ok(match &l.label_histogram {
        Some(h) => LabelHistogram {
            labels: h
                .labels
                .iter()
                .zip(&h.noisy_counts)
                .map(|(label, c)| LabelCount {
                    label: label.clone(),
                    count: c.round().max(0.0) as u64,
                })
                .collect(),
            epsilon: Some(cfg.privacy.label_histogram_epsilon),
            mechanism: "gaussian".into(),
            scale: Some(h.noise_multiplier),
        },
        None => {
            let info: serde_json::Value =
                serde_json::from_slice(&std::fs::read(tdir.join("run.json")).unwrap_or_default())
                    .unwrap_or_default();
            let labels: Vec<String> = info
                .get("labels")
                .and_then(|x| serde_json::from_value(x.clone()).ok())
                .unwrap_or_default();
            LabelHistogram {
                labels: labels
                    .into_iter()
                    .map(|label| LabelCount { label, count: 1 })
                    .collect(),
                epsilon: Some(0.0),
                mechanism: "none (uniform over labels)".into(),
                scale: None,
            }
        }
    })
}

/// What the training crate reported it spent.
pub struct Spent {
    pub epsilon: Option<f64>,
    /// The public part of the training summary (goes into the run ledger).
    pub details: serde_json::Value,
    /// The rest (the final loss, dropped-gradient counts): statistics of the private batches.
    pub private: serde_json::Value,
}

/// Key under which stage summaries keep numbers computed from the private data without noise.
pub const PRIVATE_KEY: &str = "private_not_covered_by_guarantee";

/// Fields of [`dpsynth_train::TrainSummary`] that the run ledger may show: the plan and the
/// accounting, all public or DP. Every other field (`final_loss`, `dropped_nonfinite`, and any
/// field added later) is a statistic of the private batches and stays out of the ledger.
const PUBLIC_TRAIN_FIELDS: &[&str] = &[
    "run_dir",
    "method",
    "trainable_parameters",
    "records",
    "units",
    "steps_done",
    "steps_planned",
    "noise_multiplier",
    "sampling_probability",
    "delta",
    "epsilon_pld",
    "epsilon_rdp",
    "stopped_early",
    "seconds",
];

/// Split a training summary into (public, private) JSON objects.
pub fn split_train_summary(
    s: &dpsynth_train::TrainSummary,
) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let all = serde_json::to_value(s)?;
    let (mut public, mut private) = (serde_json::Map::new(), serde_json::Map::new());
    for (k, v) in all.as_object().cloned().unwrap_or_default() {
        if PUBLIC_TRAIN_FIELDS.contains(&k.as_str()) {
            public.insert(k, v);
        } else {
            private.insert(k, v);
        }
    }
    Ok((public.into(), private.into()))
}

/// The training crate's config for this run, through the one conversion that `dpsynth train`
/// and `dpsynth audit` use too ([`crate::train_args::train_config`]). With a positive
/// `train.time_budget`, what the user did not set (steps, expected batch: 0 in the config) comes
/// from the regime planner ([`regime_plan`]), which reads only public quantities.
pub fn train_config(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
) -> anyhow::Result<dpsynth_train::TrainConfig> {
    use crate::train_args::{TrainExtras, TrainIo};
    let io = TrainIo {
        data: dir.join(files::DATA_DIR).join("train.jsonl"),
        model: cfg.model_path(),
        out: dir.join(files::TRAIN_DIR),
        resume,
    };
    // Non-private runs use the exact label counts (written by the train stage).
    let extras = TrainExtras {
        label_distribution: cfg
            .is_non_private()
            .then(|| dpsynth_train::LabelDistribution::File(dir.join(LABEL_WEIGHTS))),
        ..TrainExtras::default()
    };
    Ok(crate::train_args::train_config(cfg, io, &extras)?.0)
}

/// Privacy units of the run: the records of `data/train.jsonl` (their number is treated as
/// public, as in Abadi et al. 2016; it sets the sampling rate).
fn train_units(dir: &Path) -> anyhow::Result<usize> {
    let p = dir.join(files::DATA_DIR).join("train.jsonl");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "the regime planner needs the number of training records: reading {}",
            p.display()
        )
    })?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
}

/// The regime planner's choice for this run ([`crate::train_args::regime_plan`] on
/// `data/train.jsonl`).
///
/// # Privacy
/// Public quantities only; nothing computed from the records' contents.
pub fn regime_plan(cfg: &RunConfig, dir: &Path) -> anyhow::Result<dpsynth_train::plan::RegimePlan> {
    crate::train_args::regime_plan(
        cfg,
        &dir.join(files::DATA_DIR).join("train.jsonl"),
        &crate::train_args::TrainExtras::default(),
    )
}

/// Exact label counts of a non-private run (`privacy.epsilon = inf`), handed to training and
/// synthesis. DP runs never write it: their histogram is released by the training crate.
pub const LABEL_WEIGHTS: &str = "label_weights.json";

/// The run's prompt template: `train.prompt_template` (with `\n` written as two characters
/// turned into a newline, for flags), else the recipe's default (label names and their meaning
/// are the recipe's public schema), else the generic template for user datasets.
pub fn prompt_template(cfg: &RunConfig) -> String {
    match &cfg.train.prompt_template {
        Some(t) => t.replace("\\n", "\n"),
        None => dpsynth_data::prompt::default_template_for(
            cfg.data.path.is_none().then_some(cfg.data.recipe.as_str()),
        )
        .to_string(),
    }
}

/// Exact label counts for a non-private run (no privacy to protect: ε = ∞).
fn write_exact_label_counts(dir: &Path) -> anyhow::Result<()> {
    let mut counts: std::collections::BTreeMap<String, f64> = Default::default();
    for r in dpsynth_data::read_jsonl(&dir.join(files::DATA_DIR).join("train.jsonl"))? {
        *counts.entry(r.label).or_insert(0.0) += 1.0;
    }
    write_atomic(
        &dir.join(LABEL_WEIGHTS),
        &serde_json::to_vec_pretty(&counts)?,
    )?;
    Ok(())
}

fn train_impl(cfg: &RunConfig, _dir: &Path, tdir: &Path, resume: bool) -> anyhow::Result<Spent> {
    let dir = _dir;
    // # Privacy: a resume needs the training ledger. Once `train/privacy.json` exists, the label
    // histogram in it has been released (written to disk): the training crate resumes from it
    // (from the last checkpoint, or from step 0 when there is none yet) and never draws a second
    // histogram. Without a ledger nothing was drawn, so the same release starts over.
    let resume = resume && tdir.join("privacy.json").exists();
    if !resume && tdir.exists() {
        let aside = dir.join(format!("train.unfinished-{}", now_unix()));
        std::fs::rename(tdir, &aside)?;
        eprintln!(
            "  note: the interrupted training had not written its ledger yet (nothing was released); starting it over, old files in {}",
            aside.display()
        );
    }
    if cfg.is_non_private() {
        write_exact_label_counts(dir)?;
    }
    let tc = train_config(cfg, dir, resume)?;
    let mut bar = dpsynth_train::ConsoleProgress::for_pipeline("train", "  train: ");
    let s = dpsynth_train::train(&tc, &mut bar).context("DP fine-tuning")?;
    dpsynth_train::Progress::finish(&mut bar);
    if let Some(why) = &s.stopped_early {
        anyhow::bail!("training stopped early: {why}");
    }
    let (details, private) = split_train_summary(&s)?;
    Ok(Spent {
        epsilon: if tc.no_dp {
            None
        } else {
            s.epsilon_pld.or(s.epsilon_rdp)
        },
        details,
        private,
    })
}

/// Sample the synthetic dataset from the trained run: post-processing, no privacy cost. Labels
/// follow the training run's own label distribution (the DP histogram in its ledger, uniform,
/// or the exact counts of a non-private run). With `synth.filter`, `synth.candidates` texts are
/// sampled and post-processed ([`dpsynth_train::filter`]) and `synth.count` kept. With
/// `synth.control`, the ε = 0 control is built the same way from the public base model.
fn synthesize(cfg: &RunConfig, dir: &Path) -> anyhow::Result<StageOut> {
    use dpsynth_train::synth::{filter_counts_path, synthesize};
    let out = dir.join(files::SYNTHETIC);
    let sc = synth_config(cfg, dir, &out, false)?;
    let mut bar = dpsynth_train::ConsoleProgress::for_pipeline("synthesize", "  synthesize: ");
    let s = synthesize(&sc, &mut bar).context("synthesis")?;
    dpsynth_train::synth::SynthProgress::finish(&mut bar);
    anyhow::ensure!(
        s.written > 0,
        "synthesis wrote no records (requested {})",
        s.requested
    );
    let mut outputs = vec![out.clone()];
    if sc.filter.is_some() {
        outputs.push(filter_counts_path(&out));
    }
    // The dataset card (written by `synthesize` beside the data).
    let (card_json, card_md) = dpsynth_data::card_paths(&out);
    outputs.extend([card_json, card_md]);
    let mut summary = json!({"written": s.written, "requested": s.requested, "tokens_per_second": s.tokens_per_second, "filter": s.filter});
    if cfg.synth.control {
        let cout = dir.join(files::CONTROL_SYNTHETIC);
        let cc = synth_config(cfg, dir, &cout, true)?;
        eprintln!("  synthesize: ε = 0 control (public base model, no private data)");
        let mut bar = dpsynth_train::ConsoleProgress::for_pipeline("control", "  control: ");
        let c = synthesize(&cc, &mut bar).context("synthesis of the ε = 0 control")?;
        dpsynth_train::synth::SynthProgress::finish(&mut bar);
        anyhow::ensure!(c.written > 0, "the ε = 0 control wrote no records");
        outputs.push(cout.clone());
        if cc.filter.is_some() {
            outputs.push(filter_counts_path(&cout));
        }
        let (card_json, card_md) = dpsynth_data::card_paths(&cout);
        outputs.extend([card_json, card_md]);
        summary["control"] = json!({"written": c.written, "filter": c.filter});
    }
    Ok(StageOut { outputs, summary })
}

/// The synthesis config of this run (`control`: the ε = 0 control from the base model).
fn synth_config(
    cfg: &RunConfig,
    dir: &Path,
    out: &Path,
    control: bool,
) -> anyhow::Result<dpsynth_train::synth::SynthConfig> {
    use dpsynth_train::filter::FilterConfig;
    use dpsynth_train::synth::SynthConfig;
    let mut sc = SynthConfig::new(
        dir.join(files::TRAIN_DIR),
        cfg.synth.count as usize,
        out.to_path_buf(),
    );
    sc.label_distribution = None;
    sc.temperature = cfg.synth.temperature;
    sc.top_p = (cfg.synth.top_p < 1.0).then_some(cfg.synth.top_p);
    sc.max_new_tokens = cfg.synth.max_new_tokens as usize;
    sc.batch_size = cfg.synth.batch_size as usize;
    // A different sampling stream for the control (no privacy effect either way).
    sc.seed = cfg
        .run
        .seed
        .map(|s| if control { s ^ 0x00c0_47e0 } else { s });
    sc.model = Some(cfg.model_path());
    sc.base_only = control;
    if cfg.synth.filter {
        sc.filter = Some(FilterConfig {
            near_dup_jaccard: cfg.synth.near_dup_jaccard,
            ..FilterConfig::default()
        });
        let c = if cfg.synth.candidates > 0 {
            cfg.synth.candidates as usize
        } else {
            train_units(dir)?
        };
        sc.candidates = Some(c.max(sc.n));
    }
    Ok(sc)
}

fn evaluate(cfg: &RunConfig, dir: &Path) -> anyhow::Result<StageOut> {
    use dpsynth_eval::{ClassifierKind, EvalConfig};
    let data = dir.join(files::DATA_DIR);
    let mut ec = EvalConfig::new(
        dir.join(files::SYNTHETIC),
        data.join("train.jsonl"),
        data.join("test.jsonl"),
    );
    let out = dir.join(files::EVAL_DIR);
    ec.out_dir = Some(out.clone());
    ec.classifiers = cfg
        .eval
        .classifiers
        .iter()
        .map(|c| match c.as_str() {
            "cnn" => ClassifierKind::Cnn,
            _ => ClassifierKind::Logreg,
        })
        .collect();
    ec.minilm_dir = Some(cfg.embedding_path());
    // Private by default (eval/embeddings_private); a shared cache only when $DPSYNTH_CACHE asks.
    ec.cache_dir = dpsynth_eval::shared_cache_dir();
    // The DP-SGD baseline gets the run's whole budget: the same ε the synthetic data cost.
    ec.epsilon =
        (cfg.eval.baseline && cfg.privacy.epsilon.is_finite()).then_some(cfg.privacy.epsilon);
    ec.delta = cfg.privacy.delta;
    // # Privacy: each DP-SGD baseline is its own (ε, δ) release on the training records. It is
    // recorded (as a separate release: not an input of the synthetic data) before the
    // evaluation writes its result, then updated with the ε its accountant reports.
    let mut ledger = RunLedger::load(dir)?;
    let delta = ec.delta;
    let baseline = |kind: &str, epsilon: f64, details: serde_json::Value| {
        LedgerEntry {
        stage: format!("baseline:{kind}"),
        mechanism: format!(
            "DP-SGD baseline ({kind} classifier trained on the real training records for comparison; Poisson-subsampled Gaussian, PLD accountant)"
        ),
        epsilon: Some(epsilon),
        delta,
        unix: now_unix(),
        superseded: false,
        separate: true,
        details,
    }
    };
    if let Some(eps) = ec.epsilon {
        for c in &ec.classifiers {
            ledger.record(
                dir,
                baseline(
                    &format!("{c:?}").to_lowercase(),
                    eps,
                    json!({"planned": true}),
                ),
            )?;
        }
    }
    ec.real_baseline = cfg.eval.ceiling;
    if !cfg.eval.mauve {
        ec.mauve_max_texts = 0;
    }
    ec.dp_seed = cfg.run.seed;
    let r = dpsynth_eval::evaluate(&ec, &dpsynth_eval::Progress::stderr()).context("evaluation")?;
    for row in &r.rows {
        if let Some(plan) = &row.dp {
            let kind = format!("{:?}", row.classifier).to_lowercase();
            ledger.update_current(
                dir,
                baseline(&kind, plan.epsilon_spent, serde_json::to_value(plan)?),
            )?;
        }
    }
    use dpsynth_eval::output_files as f;
    let metrics = out.join(f::METRICS);
    if !metrics.exists() || !out.join(f::METRICS_PRIVATE).exists() {
        r.write(&out)?;
    }
    eprint!("{}", r.table());
    let mut outputs = vec![metrics, out.join(f::METRICS_PRIVATE)];
    let mut summary = json!({"rows": r.rows.len(), "seconds": r.seconds});
    if cfg.eval.label_fidelity {
        let f = label_fidelity(cfg, dir, &dir.join(files::SYNTHETIC), &out)?;
        summary["label_fidelity_private"] = json!(f.agreement);
        outputs.push(dir.join(files::LABEL_FIDELITY));
    }
    if cfg.synth.control {
        // The ε = 0 control, evaluated the same way (no baseline or ceiling: those are the
        // main evaluation's rows).
        let cdir = dir.join(files::CONTROL_EVAL_DIR);
        let mut cc = ec.clone();
        cc.synthetic = dir.join(files::CONTROL_SYNTHETIC);
        cc.out_dir = Some(cdir.clone());
        cc.epsilon = None;
        cc.real_baseline = false;
        eprintln!("  evaluate: the ε = 0 control");
        let c = dpsynth_eval::evaluate(&cc, &dpsynth_eval::Progress::stderr())
            .context("evaluating the ε = 0 control")?;
        eprint!("{}", c.table());
        outputs.push(dir.join(files::CONTROL_METRICS));
        if cfg.eval.label_fidelity {
            let f = label_fidelity(cfg, dir, &cc.synthetic, &cdir)?;
            summary["control_label_fidelity_private"] = json!(f.agreement);
            outputs.push(dir.join(files::CONTROL_LABEL_FIDELITY));
        }
    }
    Ok(StageOut { outputs, summary })
}

/// Label fidelity of `synthetic` (a NON-private diagnostic: a classifier trained on the private
/// training data; written as `label_fidelity_private.json` in `out`).
fn label_fidelity(
    cfg: &RunConfig,
    dir: &Path,
    synthetic: &Path,
    out: &Path,
) -> anyhow::Result<dpsynth_eval::fidelity::LabelFidelity> {
    use dpsynth_eval::fidelity::{label_fidelity, FidelityConfig};
    let fc = FidelityConfig {
        synthetic: synthetic.to_path_buf(),
        train: dir.join(files::DATA_DIR).join("train.jsonl"),
        minilm_dir: Some(cfg.embedding_path()),
        // The main evaluation's private cache (its train embeddings are reused), or the shared
        // cache when $DPSYNTH_CACHE asks for one: never the user's home by default.
        cache_dir: dpsynth_eval::shared_cache_dir().or_else(|| {
            Some(
                dir.join(files::EVAL_DIR)
                    .join(dpsynth_eval::PRIVATE_CACHE_DIR),
            )
        }),
        logreg: Default::default(),
        out_dir: Some(out.to_path_buf()),
    };
    let f = label_fidelity(&fc, &dpsynth_eval::Progress::stderr())
        .context("label fidelity (private diagnostic)")?;
    eprintln!(
        "  label fidelity of {} (private, not covered by the guarantee): {:.1}% ± {:.1}% agree with a real-data classifier",
        synthetic.display(),
        100.0 * f.agreement,
        100.0 * f.standard_error
    );
    Ok(f)
}

fn report(dir: &Path) -> anyhow::Result<StageOut> {
    let w = write_run_report(dir, &ReportOptions::new())?;
    Ok(StageOut {
        outputs: vec![w.html.clone(), w.markdown.clone()],
        summary: json!({"html": w.html, "markdown": w.markdown}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_gets_only_the_public_part_of_a_training_summary() {
        let s = dpsynth_train::TrainSummary {
            run_dir: "run/train".into(),
            method: "lora".into(),
            trainable_parameters: 10,
            records: 100,
            units: 100,
            steps_done: 5,
            steps_planned: 5,
            noise_multiplier: Some(1.0),
            sampling_probability: 0.1,
            delta: 1e-5,
            epsilon_pld: Some(2.9),
            epsilon_rdp: Some(3.1),
            final_loss: Some(2.345),
            dropped_nonfinite: 2,
            stopped_early: None,
            seconds: 1.0,
        };
        let (public, private) = split_train_summary(&s).unwrap();
        assert!(public.get("final_loss").is_none() && public.get("dropped_nonfinite").is_none());
        assert_eq!(public["epsilon_pld"], 2.9);
        assert_eq!(private["final_loss"], 2.345);
        assert_eq!(private["dropped_nonfinite"], 2);
        // Every field is classified: none is lost.
        let all = serde_json::to_value(&s).unwrap();
        assert_eq!(
            all.as_object().unwrap().len(),
            public.as_object().unwrap().len() + private.as_object().unwrap().len()
        );
    }
}
