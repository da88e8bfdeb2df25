//! Repeated tiny audits: `cargo run --release -p dpsynth-audit --example tiny_sweep [RUNS] [CANARIES]`.
//! For correct DP-SGD at ε ∈ {1, 8} and the broken trainer (no noise; its verdict is shown for
//! ledgers claiming ε = 1 and ε = 3: the same training, two claims), prints the claimed ε, the
//! empirical lower bound, the audit's ceiling, q·T, AUC and the verdict of each run. The tiny
//! model and data are `dpsynth_audit::tiny`'s; the canary count defaults to the audit's default.

use dpsynth_audit::run::{verdict, DEFAULT_CANARIES};
use dpsynth_audit::tiny::{config, model_config, tiny_tokenizer, write_data};
use dpsynth_audit::{run_audit_with, Fault};
use dpsynth_lm::LlamaWeights;
use dpsynth_train::NoProgress;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize| std::env::args().nth(i);
    let runs: u64 = arg(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let m: usize = arg(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(DEFAULT_CANARIES);
    let dir = tempfile::tempdir()?;
    let tok = tiny_tokenizer(dir.path())?;
    let w = LlamaWeights::random(&model_config(), &candle_core::Device::Cpu, 3)?;
    let data = write_data(dir.path(), 64)?;
    println!("setting,run,claimed_eps,eps_lower_bound,ceiling,v/r,q*T,auc,verdict,seconds");
    let settings: [(&str, f64, bool); 3] = [
        ("dp-eps1", 1.0, false),
        ("dp-eps8", 8.0, false),
        ("no-noise", 1.0, true),
    ];
    for (name, eps, broken) in settings {
        for run in 0..runs {
            let sub = dir.path().join(format!("{name}-{run}"));
            let mut cfg = config(&sub, data.clone(), 1000 + run);
            cfg.canaries = m;
            cfg.exposure_samples = 0;
            cfg.train.epsilon = Some(eps);
            if broken {
                cfg.fault = Some(Fault::NoNoiseClaiming { epsilon: eps });
            }
            let r = run_audit_with(&cfg, &w, &tok, &mut NoProgress)?;
            let claims: &[f64] = if broken { &[1.0, 3.0] } else { &[eps] };
            for &claim in claims {
                let claimed = if broken {
                    claim
                } else {
                    r.claimed_epsilon.unwrap_or(f64::INFINITY)
                };
                println!(
                    "{name},{run},{claimed:.3},{:.3},{:.3},{}/{},{:.2},{:.3},{:?},{:.1}",
                    r.epsilon_lower_bound,
                    r.ceiling_epsilon,
                    r.bound.v,
                    r.bound.r,
                    r.expected_samples_per_canary,
                    r.scores.auc.unwrap_or(f64::NAN),
                    verdict(Some(claimed), r.epsilon_lower_bound, r.ceiling_epsilon),
                    r.seconds
                );
            }
        }
    }
    Ok(())
}
