//! `dpsynth run`: data → DP label histogram + DP fine-tuning (one release, one PLD ledger) → synthesis → evaluation → report,
//! in one run directory, with stage records ([`dpsynth_report::stage`]) so that a re-run skips
//! finished stages, resumes an interrupted one and never spends privacy budget twice.

pub mod flags;
mod stages;
pub use stages::prompt_template;
#[cfg(test)]
pub use stages::train_config;

use std::path::{Path, PathBuf};
use std::time::Instant;

use dpsynth_report::config::{fmt_eps, Resolved, RunConfig};
use dpsynth_report::report::files;
use dpsynth_report::stage::{parse_from, Decision, Pipeline, STAGES};

/// The part of the config each stage depends on, and its input files.
pub struct StageSpec {
    pub config: toml::Table,
    pub inputs: Vec<PathBuf>,
}

/// Config sections/keys and inputs of each stage. A change in any of them re-runs the stage.
pub fn stage_spec(stage: &str, cfg: &RunConfig, dir: &Path) -> StageSpec {
    let data = dir.join(files::DATA_DIR);
    let (keys, inputs): (&[&str], Vec<PathBuf>) = match stage {
        "data" => (
            &["data", "run.seed"],
            vec![match &cfg.data.path {
                Some(p) => p.clone(),
                None => cfg.assets_dir().join("data").join(&cfg.data.recipe),
            }],
        ),
        "train" => (
            &["train", "privacy", "model.path", "run.seed"],
            vec![data.join("train.jsonl"), cfg.model_path()],
        ),
        "synthesize" => (
            &["synth", "model.path", "run.seed"],
            vec![
                dir.join(files::TRAIN_DIR),
                dir.join(files::HISTOGRAM),
                cfg.model_path(),
            ],
        ),
        "evaluate" => (
            &[
                "eval",
                "privacy",
                "model.embedding",
                "run.seed",
                "synth.control",
            ],
            {
                let mut v = vec![
                    dir.join(files::SYNTHETIC),
                    data.join("train.jsonl"),
                    data.join("test.jsonl"),
                    cfg.embedding_path(),
                ];
                if cfg.synth.control {
                    v.push(dir.join(files::CONTROL_SYNTHETIC));
                }
                v
            },
        ),
        _ => (&[], Vec::new()),
    };
    StageSpec {
        config: cfg.stage_config(keys),
        inputs,
    }
}

/// What a run did.
pub struct RunOutcome {
    pub dir: PathBuf,
    pub report: Option<PathBuf>,
}

/// Print to stderr (progress of the run; stdout is kept for the final paths).
macro_rules! say {
    ($($t:tt)*) => { eprintln!($($t)*) };
}

/// Run (or continue) the pipeline for a resolved config. `from`: re-run from this stage on.
/// `to`: stop after this stage. `only_check`: print what would run, do nothing.
pub fn run(
    resolved: &Resolved,
    from: Option<&str>,
    to: Option<&str>,
    only_check: bool,
) -> anyhow::Result<RunOutcome> {
    let cfg = &resolved.config;
    let from_idx = from.map(parse_from).transpose()?;
    let to_idx = to.map(parse_from).transpose()?;
    let dir = cfg.run_dir();
    if only_check {
        say!("config OK; run directory: {}", dir.display());
        if dir.join("stages").is_dir() {
            let p = Pipeline::open(&dir)?;
            for (i, stage) in STAGES.iter().enumerate() {
                let spec = stage_spec(stage, cfg, &dir);
                let force = from_idx.is_some_and(|f| i >= f) || *stage == "report";
                let missing = spec.inputs.iter().any(|p| !p.exists());
                let what = if missing {
                    "would run (after its inputs exist)".to_string()
                } else {
                    match p.decide(stage, &spec.config, &spec.inputs, force)? {
                        Decision::Skip(_) => "unchanged, would skip".into(),
                        Decision::Resume(_) => "interrupted, would resume".into(),
                        Decision::Run { reason } => format!("would run: {reason}"),
                    }
                };
                say!("  {stage:<11} {what}");
            }
        } else {
            say!("  every stage would run (new run directory)");
        }
        return Ok(RunOutcome { dir, report: None });
    }
    if cfg.run.threads > 0 {
        // Read by the thread pools of the numeric crates (rayon, candle) when they start.
        std::env::set_var("RAYON_NUM_THREADS", cfg.run.threads.to_string());
    }
    let p = Pipeline::open(&dir)?;
    dpsynth_report::stage::write_atomic(&dir.join(files::CONFIG), cfg.to_toml().as_bytes())?;
    say!(
        "dpsynth run: {} · {} · ε = {} (δ = {:e}) → {}",
        cfg.dataset_name(),
        cfg.train.method,
        fmt_eps(cfg.privacy.epsilon),
        cfg.privacy.delta,
        dir.display()
    );
    if cfg.run.seed.is_some() {
        say!(
            "warning: run.seed is set: noise is reproducible but NOT secure; use only for testing"
        );
    }
    let mut report = None;
    for (i, stage) in STAGES.iter().enumerate() {
        if to_idx.is_some_and(|t| i > t) {
            say!(
                "  stopped after stage {} (--to)",
                STAGES[to_idx.unwrap_or(0)]
            );
            break;
        }
        let spec = stage_spec(stage, cfg, &dir);
        let force = from_idx.is_some_and(|f| i >= f) || *stage == "report";
        for input in &spec.inputs {
            anyhow::ensure!(
                input.exists(),
                "stage {stage}: input {} is missing (an earlier stage did not produce it)",
                input.display()
            );
        }
        let decision = p.decide(stage, &spec.config, &spec.inputs, force)?;
        let resume = match decision {
            Decision::Skip(r) => {
                say!(
                    "  {stage:<11} unchanged, skipped (finished earlier in {:.0} s)",
                    r.seconds.unwrap_or(0.0)
                );
                continue;
            }
            Decision::Resume(r) => {
                say!(
                    "  {stage:<11} resuming an interrupted attempt (attempt {})",
                    r.attempts + 1
                );
                Some(r)
            }
            Decision::Run { reason } => {
                if *stage != "report" {
                    say!("  {stage:<11} running ({reason})");
                }
                None
            }
        };
        let rec = p.begin(stage, &spec.config, &spec.inputs, resume.as_ref())?;
        let t = Instant::now();
        let out = match stages::run_stage(stage, cfg, &dir, resume.is_some()) {
            Ok(o) => o,
            Err(e) => {
                // Leave a report of what did run (the failed stage shows as interrupted).
                if let Ok(w) = dpsynth_report::report::write_run_report(
                    &dir,
                    &dpsynth_report::report::ReportOptions::new(),
                ) {
                    say!("  partial report: {}", w.html.display());
                }
                return Err(e.context(format!(
                    "stage {stage} failed (run directory {}; run again to retry it, finished stages are kept)",
                    dir.display()
                )));
            }
        };
        let secs = t.elapsed().as_secs_f64();
        p.finish(rec, &out.outputs, out.summary, secs)?;
        if *stage == "report" {
            report = out.outputs.first().cloned();
        } else {
            say!("  {stage:<11} done in {secs:.1} s");
        }
    }
    if let Ok(l) = dpsynth_report::RunLedger::load(&dir) {
        let g = l.current();
        if g.epsilon.is_finite() {
            say!(
                "privacy: (ε = {:.3}, δ = {:e})-DP for {} (see the report)",
                g.epsilon,
                g.delta,
                dpsynth_report::privacy::NEIGHBORING
            );
        } else {
            say!("privacy: NOT private (ε = ∞)");
        }
    }
    Ok(RunOutcome { dir, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpsynth_report::Override;

    #[test]
    fn bad_config_fails_before_any_work() {
        let d = tempfile::tempdir().unwrap();
        let run_dir = d.path().join("run");
        let cases: Vec<(Vec<Override>, &str)> = vec![
            (
                vec![Override::new("privacy.epsilon", "0")],
                "privacy.epsilon",
            ),
            (
                vec![Override::new("privacy.epsilon", "-3")],
                "privacy.epsilon",
            ),
            (vec![Override::new("train.steps", "ten")], "train.steps"),
            (
                vec![Override::new("train.prompt_template", "Write a review:")],
                "train.prompt_template",
            ),
            (
                vec![Override::new("data.split_seed", "x")],
                "data.split_seed",
            ),
            (
                vec![Override::new(
                    "data.path",
                    d.path().join("nope.csv").to_str().unwrap(),
                )],
                "nope.csv",
            ),
        ];
        for (mut ov, needle) in cases {
            ov.push(Override::new("run.dir", run_dir.to_str().unwrap()));
            let e = dpsynth_report::resolve(None, &ov).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert!(
                !run_dir.exists(),
                "nothing may be written before the config is valid"
            );
        }
        let f = d.path().join("run.toml");
        std::fs::write(&f, "[train]\nsteps = 3\nmethodd = \"lora\"\n").unwrap();
        let e = dpsynth_report::resolve(Some(&f), &[]).unwrap_err();
        assert!(e.to_string().contains("train.methodd"), "{e}");
    }

    #[test]
    fn prompt_template_is_the_recipes_unless_set() {
        let mut cfg = dpsynth_report::config::preset_config(dpsynth_report::Preset::Quick);
        let t = stages::prompt_template(&cfg);
        assert!(t.contains("{label} movie review"), "{t}");
        cfg.data.recipe = "bbc-news".into();
        assert!(stages::prompt_template(&cfg).contains("BBC news article about {label}"));
        cfg.data.path = Some("mine.csv".into());
        assert_eq!(
            stages::prompt_template(&cfg),
            dpsynth_data::prompt::DEFAULT_TEMPLATE
        );
        // A flag cannot type a newline: `\n` is turned into one.
        cfg.train.prompt_template = Some("Topic {label}:\\n".into());
        assert_eq!(stages::prompt_template(&cfg), "Topic {label}:\n");
        // Training and synthesis get it (the training crate stores it for synthesis).
        let tc = stages::train_config(&cfg, Path::new("/tmp/x"), false).unwrap();
        assert_eq!(tc.template, "Topic {label}:\n");
        assert_eq!(tc.label_distribution, dpsynth_train::LabelDistribution::Dp);
        assert!((tc.label_budget_share - 0.1 / 3.0).abs() < 1e-12);
        cfg.privacy.label_histogram_epsilon = 0.0;
        let tc = stages::train_config(&cfg, Path::new("/tmp/x"), false).unwrap();
        assert_eq!(
            tc.label_distribution,
            dpsynth_train::LabelDistribution::Uniform
        );
    }

    #[test]
    fn max_seq_len_counts_text_tokens_and_methods_parse_once() {
        let mut cfg = dpsynth_report::config::preset_config(dpsynth_report::Preset::Quick);
        cfg.train.max_seq_len = 7;
        let tc = stages::train_config(&cfg, Path::new("/tmp/x"), false).unwrap();
        // `train.max_seq_len` is the training crate's `max_tokens`: text tokens only (the
        // prompt prefix and EOS are added on top by `format::make_example`).
        assert_eq!(tc.max_tokens, 7);
        for (name, want) in [("lora", "lora"), ("prompt", "prompt"), ("full", "full")] {
            cfg.train.method = name.into();
            let tc = stages::train_config(&cfg, Path::new("/tmp/x"), false).unwrap();
            assert_eq!(tc.method.name(), want);
        }
        // An unknown name is an error, never a silent LoRA (or full) run.
        cfg.train.method = "lroa".into();
        let e = stages::train_config(&cfg, Path::new("/tmp/x"), false).unwrap_err();
        assert!(
            e.to_string().contains("unknown fine-tuning method `lroa`"),
            "{e}"
        );
    }

    #[test]
    fn planned_regime_fills_steps_batch_and_schedule_from_the_budget() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("data")).unwrap();
        let line = "{\"id\":\"r\",\"text\":\"a film\",\"label\":\"fresh\"}\n";
        std::fs::write(d.path().join("data/train.jsonl"), line.repeat(4096)).unwrap();
        let mut cfg = dpsynth_report::config::preset_config(dpsynth_report::Preset::Quick);
        cfg.train.time_budget = 1200.0;
        cfg.train.throughput = 20.0;
        cfg.train.steps = 0;
        cfg.train.batch_size = 0;
        let p = stages::regime_plan(&cfg, d.path()).unwrap();
        let tc = stages::train_config(&cfg, d.path(), false).unwrap();
        assert_eq!(tc.steps, Some(p.steps));
        assert_eq!(tc.expected_batch, p.expected_batch);
        assert_eq!(tc.lr_schedule, dpsynth_train::optim::LrSchedule::Cosine);
        assert!((tc.warmup - p.warmup_fraction).abs() < 1e-12);
        assert_eq!(p.options.n_units, 4096);
        // The DP-SGD part of ε: the run's minus the histogram's.
        assert!((p.options.epsilon - (3.0 - 0.1)).abs() < 1e-12);
        // An explicit value wins over the plan; auto schedule is linear without a plan.
        cfg.train.steps = 33;
        assert_eq!(
            stages::train_config(&cfg, d.path(), false).unwrap().steps,
            Some(33)
        );
        cfg.train.batch_size = 16;
        let tc = stages::train_config(&cfg, d.path(), false).unwrap();
        assert_eq!(tc.lr_schedule, dpsynth_train::optim::LrSchedule::Linear);
        // No data yet: a clear error, not a silent default.
        cfg.train.steps = 0;
        let e = stages::train_config(&cfg, Path::new("/nonexistent"), false).unwrap_err();
        assert!(format!("{e:#}").contains("train.jsonl"), "{e:#}");
    }

    #[test]
    fn stage_specs_chain_outputs_to_inputs() {
        let cfg = dpsynth_report::config::preset_config(dpsynth_report::Preset::Quick);
        let dir = Path::new("/tmp/x");
        let train = stage_spec("train", &cfg, dir);
        assert!(train.inputs.contains(&dir.join("data/train.jsonl")));
        assert!(train.config.contains_key("privacy"));
        assert!(
            !train.config.contains_key("synth"),
            "synthesis settings must not retrain"
        );
        let synth = stage_spec("synthesize", &cfg, dir);
        assert!(synth.inputs.contains(&dir.join("train")));
        assert!(synth.inputs.contains(&dir.join("histogram.json")));
        assert!(!synth.config.contains_key("train"));
        let eval = stage_spec("evaluate", &cfg, dir);
        assert!(eval.inputs.contains(&dir.join("synthetic.jsonl")));
        // The ε = 0 control is an input of the evaluation when enabled.
        assert_eq!(
            eval.inputs.contains(&dir.join("synthetic_control.jsonl")),
            cfg.synth.control
        );
    }
}
