//! Run `evaluate` on JSONL files (a stand-in for `dpsynth evaluate` while developing):
//! `cargo run -p dpsynth-eval --example eval_files -- SYN TRAIN TEST [EPSILON] [logreg,cnn] [OUT]`
use std::path::PathBuf;

use dpsynth_eval::{evaluate, ClassifierKind, EvalConfig, Progress};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: eval_files SYN TRAIN TEST [EPSILON|-] [logreg,cnn] [OUT]");
        std::process::exit(2);
    }
    let mut cfg = EvalConfig::new(
        PathBuf::from(&a[1]),
        PathBuf::from(&a[2]),
        PathBuf::from(&a[3]),
    );
    cfg.epsilon = a.get(4).and_then(|e| e.parse().ok());
    if let Some(c) = a.get(5) {
        cfg.classifiers = c
            .split(',')
            .map(|s| s.parse::<ClassifierKind>().unwrap())
            .collect();
    }
    cfg.out_dir = a.get(6).map(PathBuf::from);
    if std::env::var("NO_REAL").is_ok() {
        cfg.real_baseline = false;
    }
    if let Ok(m) = std::env::var("MAUVE_TEXTS") {
        cfg.mauve_max_texts = m.parse().unwrap();
    }
    match evaluate(&cfg, &Progress::stderr()) {
        Ok(r) => {
            println!("{}", r.table());
            for row in &r.rows {
                if let Some(dp) = &row.dp {
                    println!(
                        "{} {}: σ={:.3} q={:.4} steps={} ε_spent={:.3}",
                        row.classifier,
                        row.training,
                        dp.noise_multiplier,
                        dp.sampling_rate,
                        dp.steps,
                        dp.epsilon_spent
                    );
                }
                if let Some(c) = &row.cnn {
                    println!(
                        "{} {}: {:?} ({:.0}s)",
                        row.classifier, row.training, c, row.seconds
                    );
                } else {
                    println!("{} {}: {:.0}s", row.classifier, row.training, row.seconds);
                }
            }
            println!("total {:.0}s", r.seconds);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
