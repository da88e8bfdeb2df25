//! Sanity numbers for the README: real→real and DP-SGD baselines on a recipe's stratified 80/20
//! split, stage by stage so long jobs can run in the background.
//!
//! ```text
//! sanity prepare RECIPE DIR            # DIR/train.jsonl, DIR/test.jsonl (seed 0, 20% test)
//! sanity embed DIR                     # MiniLM embeddings of both files into the cache
//! sanity logreg DIR [EPS,..]           # MiniLM+logreg real→real, then DP-SGD at each ε
//! sanity cnn DIR [EPS,..] [--no-real]  # word CNN real→real, then DP-SGD CNN at each ε
//! ```
//! δ = 1/n^1.1 (n = training records), printed with each row. Results are also appended to
//! DIR/sanity.jsonl.
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use dpsynth_data::{read_jsonl, PrepareOptions, Record, Source};
use dpsynth_eval::cnn::{CnnConfig, WordCnn};
use dpsynth_eval::embed::{find_minilm_dir, MiniLm};
use dpsynth_eval::logreg::{LogReg, LogRegConfig};
use dpsynth_eval::metrics::ClassMetrics;
use dpsynth_eval::{default_cache_dir, EvalConfig, Progress};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn run() -> R<()> {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: sanity prepare RECIPE DIR | embed DIR | logreg DIR [EPS,..] | cnn DIR [EPS,..] [--no-real]";
    let stage = a.get(1).ok_or(usage)?.as_str();
    if stage == "prepare" {
        let (recipe, dir) = (a.get(2).ok_or(usage)?, a.get(3).ok_or(usage)?);
        let s = dpsynth_data::prepare(&Source::parse(recipe), &PrepareOptions::new(dir))?;
        println!(
            "{recipe}: train {} test {} labels {:?}",
            s.train, s.test, s.labels
        );
        return Ok(());
    }
    let dir = PathBuf::from(a.get(2).ok_or(usage)?);
    let eps: Vec<f64> = a
        .get(3)
        .filter(|s| !s.starts_with("--"))
        .map(|s| s.split(',').map(|e| e.parse().unwrap()).collect())
        .unwrap_or_default();
    let no_real = a.iter().any(|s| s == "--no-real");
    let (train, test) = (
        read_jsonl(&dir.join("train.jsonl"))?,
        read_jsonl(&dir.join("test.jsonl"))?,
    );
    let mut labels: Vec<String> = train.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let y = |r: &[Record]| -> Vec<usize> {
        r.iter()
            .map(|x| labels.binary_search(&x.label).unwrap())
            .collect()
    };
    let texts = |r: &[Record]| -> Vec<String> { r.iter().map(|x| x.text.clone()).collect() };
    let (y_tr, y_te) = (y(&train), y(&test));
    let (t_tr, t_te) = (texts(&train), texts(&test));
    let k = labels.len();
    let n = train.len();
    let delta = 1.0 / (n as f64).powf(1.1);
    let defaults = EvalConfig::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
    let progress = Progress::stderr();
    let dev = Device::Cpu;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sanity.jsonl"))?;
    let mut report = |what: &str, eps: Option<f64>, pred: &[usize], secs: f64, extra: String| {
        let m = ClassMetrics::compute(&labels, &y_te, pred);
        let line = format!(
            "{} {what} eps={} delta={delta:.3e} n_train={n} n_test={} acc={:.4} macro_f1={:.4} secs={secs:.0} {extra}",
            dir.display(),
            eps.map_or("-".into(), |e| e.to_string()),
            y_te.len(),
            m.accuracy,
            m.macro_f1
        );
        println!("{line}");
        writeln!(
            out,
            "{}",
            serde_json::json!({"dir": dir.display().to_string(), "what": what, "epsilon": eps,
                "delta": delta, "accuracy": m.accuracy, "macro_f1": m.macro_f1, "seconds": secs,
                "extra": extra})
        )
        .unwrap();
    };
    match stage {
        "embed" | "logreg" => {
            let mdir = find_minilm_dir(None).ok_or("MiniLM not found")?;
            let m = MiniLm::load(&mdir, &dev)?;
            let cache = default_cache_dir();
            let t = Instant::now();
            let (e_tr, h1) = m.embed_cached(&t_tr, cache.as_deref(), &progress)?;
            let (e_te, h2) = m.embed_cached(&t_te, cache.as_deref(), &progress)?;
            println!(
                "embedded {} + {} texts in {:.0}s (cache hits: {h1} {h2})",
                t_tr.len(),
                t_te.len(),
                t.elapsed().as_secs_f64()
            );
            if stage == "embed" {
                return Ok(());
            }
            if !no_real {
                let t = Instant::now();
                let lr = LogReg::fit(&e_tr, &y_tr, k, &LogRegConfig::default());
                let secs = t.elapsed().as_secs_f64();
                report(
                    "logreg real",
                    None,
                    &lr.predict(&e_te),
                    secs,
                    format!("train_acc={:.4}", train_acc(&lr.predict(&e_tr), &y_tr)),
                );
            }
            for &e in &eps {
                let dp = dpsynth_eval::dpsgd::DpSgdConfig {
                    epsilon: e,
                    delta,
                    ..defaults.dp_logreg.clone()
                };
                let t = Instant::now();
                let (lr, plan) = dpsynth_eval::logreg_dp::fit_dp(&e_tr, &y_tr, k, &dp, &progress)?;
                report(
                    "logreg dp",
                    Some(e),
                    &lr.predict(&e_te),
                    t.elapsed().as_secs_f64(),
                    plan_str(&plan),
                );
            }
        }
        "cnn" => {
            let mut cfg = CnnConfig::default();
            if let Ok(o) = std::env::var("DP_OPT") {
                cfg.dp_optimizer = match o.as_str() {
                    "adam" => dpsynth_eval::cnn::DpOptimizer::Adam,
                    m => dpsynth_eval::cnn::DpOptimizer::Sgd {
                        momentum: m.trim_start_matches("sgd").parse().unwrap_or(0.9),
                    },
                };
            }
            if let Some(d) = env_f("DP_DROPOUT") {
                cfg.dp_dropout = d as f32;
            }
            if !no_real {
                let t = Instant::now();
                let (m, info) = WordCnn::fit(&t_tr, &y_tr, k, &cfg, &dev, &progress)?;
                report(
                    "cnn real",
                    None,
                    &m.predict(&t_te)?,
                    t.elapsed().as_secs_f64(),
                    format!(
                        "best_epoch={} val_acc={:.4} vocab={}",
                        info.best_epoch, info.best_val_accuracy, info.vocab_size
                    ),
                );
            }
            if !eps.is_empty() {
                let mdir = find_minilm_dir(None).ok_or("MiniLM not found")?;
                let emb = dpsynth_eval::cnn::PublicEmbedding::from_minilm(&mdir, cfg.embed_dim)?;
                for &e in &eps {
                    let mut dp = dpsynth_eval::dpsgd::DpSgdConfig {
                        epsilon: e,
                        delta,
                        ..defaults.dp_cnn.clone()
                    };
                    // overrides for hyperparameter experiments
                    if let Some(v) = env_f("DP_L") {
                        dp.expected_batch_size = v as usize;
                    }
                    if let Some(v) = env_f("DP_EPOCHS") {
                        dp.epochs = v as usize;
                    }
                    if let Some(v) = env_f("DP_LR") {
                        dp.learning_rate = v;
                    }
                    if let Some(v) = env_f("DP_CLIP") {
                        dp.clip = v;
                    }
                    let hp = format!(
                        "L={} epochs={} lr={} C={} opt={:?} dropout={}",
                        dp.expected_batch_size,
                        dp.epochs,
                        dp.learning_rate,
                        dp.clip,
                        cfg.dp_optimizer,
                        cfg.dp_dropout
                    );
                    let t = Instant::now();
                    let (m, plan) =
                        WordCnn::fit_dp(&t_tr, &y_tr, k, emb.clone(), &cfg, &dp, &dev, &progress)?;
                    report(
                        "cnn dp",
                        Some(e),
                        &m.predict(&t_te)?,
                        t.elapsed().as_secs_f64(),
                        format!(
                            "{hp} {} train_acc={:.4}",
                            plan_str(&plan),
                            train_acc(&m.predict(&t_tr)?, &y_tr)
                        ),
                    );
                }
            }
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

fn env_f(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn train_acc(p: &[usize], y: &[usize]) -> f64 {
    p.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len().max(1) as f64
}

fn plan_str(p: &dpsynth_eval::dpsgd::DpPlan) -> String {
    format!(
        "sigma={:.3} q={:.4} steps={} eps_spent={:.3}",
        p.noise_multiplier, p.sampling_rate, p.steps, p.epsilon_spent
    )
}
