//! Repeated tiny audits: `cargo run --release -p dpsynth-audit --example tiny_sweep [RUNS]`.
//! For ε ∈ {1, 8} (correct DP-SGD), no DP, and the broken trainer (no noise, claims ε = 1),
//! prints the claimed ε, the empirical lower bound, AUC and the verdict of each run.

use dpsynth_audit::tiny::{config, model_config, tiny_tokenizer, write_data};
use dpsynth_audit::{run_audit_with, Fault};
use dpsynth_lm::LlamaWeights;
use dpsynth_train::NoProgress;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let tok = tiny_tokenizer(dir.path())?;
    let w = LlamaWeights::random(&model_config(), &candle_core::Device::Cpu, 3)?;
    let data = write_data(dir.path(), 64)?;
    println!("setting,run,claimed_eps,eps_lower_bound,v/r,auc,verdict,seconds");
    let settings: [(&str, Option<f64>, bool); 4] = [
        ("dp-eps1", Some(1.0), false),
        ("dp-eps8", Some(8.0), false),
        ("no-dp", None, false),
        ("broken-claims-eps1", Some(1.0), true),
    ];
    for (name, eps, broken) in settings {
        for run in 0..runs {
            let sub = dir.path().join(format!("{name}-{run}"));
            let mut cfg = config(&sub, data.clone(), 1000 + run);
            cfg.exposure_samples = 0;
            match eps {
                Some(e) => cfg.train.epsilon = Some(e),
                None => {
                    cfg.train.no_dp = true;
                    cfg.train.clip_norm = f64::INFINITY;
                }
            }
            if broken {
                cfg.fault = Some(Fault::NoNoiseClaiming { epsilon: 1.0 });
            }
            let r = run_audit_with(&cfg, &w, &tok, &mut NoProgress)?;
            println!(
                "{name},{run},{},{:.3},{}/{},{:.3},{:?},{:.1}",
                r.claimed_epsilon
                    .map(|e| format!("{e:.3}"))
                    .unwrap_or("inf".into()),
                r.epsilon_lower_bound,
                r.bound.v,
                r.bound.r,
                r.scores.auc.unwrap_or(f64::NAN),
                r.verdict,
                r.seconds
            );
        }
    }
    Ok(())
}
