//! End-to-end audits on a tiny random model with a tiny word-level tokenizer (seconds).
//!
//! * A trainer whose noise is disabled while its ledger claims ε = 1 is flagged (Violation).
//! * The same run without the false claim is reported as leaking (NoGuarantee, bound ≫ 0,
//!   high exposure of inserted canaries).
//! * A correct DP-SGD run at ε = 1 stays consistent (bound ≤ claimed ε).

use std::path::PathBuf;

use dpsynth_audit::tiny::{config, model_config, tiny_tokenizer, write_data};
use dpsynth_audit::{run_audit_with, Fault, Verdict};
use dpsynth_lm::{LlamaWeights, Tokenizer};
use dpsynth_train::NoProgress;

fn setup() -> (tempfile::TempDir, LlamaWeights, Tokenizer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(dir.path()).unwrap();
    // Digits split one per token, template words known.
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(
        tok.encode("code is 407", false).unwrap(),
        vec![11, 12, 17, 13, 20]
    );
    let w = LlamaWeights::random(&model_config(), &candle_core::Device::Cpu, 3).unwrap();
    let data = write_data(dir.path(), 64).unwrap();
    (dir, w, tok, data)
}

#[test]
fn broken_trainer_is_flagged_and_no_dp_leak_is_measured() {
    let (dir, w, tok, data) = setup();
    let mut cfg = config(dir.path(), data, 1);
    cfg.train.no_dp = false;
    cfg.train.epsilon = Some(1.0);
    cfg.fault = Some(Fault::NoNoiseClaiming { epsilon: 1.0 });
    let synth = dir.path().join("synth.jsonl");
    cfg.synthetic = Some(synth.clone());
    // Synthetic data: generated below from the canaries file is not possible before the
    // audit, so use a file with one fixed text (no secret found).
    dpsynth_data::write_jsonl(
        &synth,
        [dpsynth_data::Record {
            id: "s0".into(),
            text: "the movie was good".into(),
            label: "pos".into(),
            user: None,
        }]
        .iter(),
    )
    .unwrap();
    let r = run_audit_with(&cfg, &w, &tok, &mut NoProgress).unwrap();
    eprintln!("{}", r.summary());
    assert_eq!(r.claimed_epsilon, Some(1.0));
    assert!(r.training.no_dp, "the fault trains without noise");
    assert_eq!(r.verdict, Verdict::Violation, "{}", r.summary());
    assert!(r.epsilon_lower_bound > 2.0, "{}", r.summary());
    // The attack separates inserted from held-out canaries.
    assert!(r.scores.auc.unwrap() > 0.95, "AUC {:?}", r.scores.auc);
    let e = r.exposure.as_ref().unwrap();
    assert!(
        e.mean_inserted.unwrap() > e.mean_held_out.unwrap() + 1.5,
        "{e:?}"
    );
    assert!(e.inserted_at_max * 2 > r.inserted, "{e:?}");
    let sy = r.synthetic.as_ref().unwrap();
    assert_eq!(
        (sy.inserted_found, sy.held_out_found, sy.records),
        (0, 0, 1)
    );
    // audit.json round-trips and the canary file lists every canary.
    let back = dpsynth_audit::AuditReport::read(&cfg.out.join("audit.json")).unwrap();
    assert_eq!(
        (back.verdict, back.canaries, back.inserted),
        (r.verdict, r.canaries, r.inserted)
    );
    assert!((back.epsilon_lower_bound - r.epsilon_lower_bound).abs() < 1e-12);
    assert_eq!(back.per_canary.len(), 128);
    let lines = std::fs::read_to_string(cfg.out.join("canaries.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 128);
    // The training data holds the user's records plus exactly the inserted canaries.
    let train = dpsynth_data::read_jsonl(&cfg.out.join("train.jsonl")).unwrap();
    assert_eq!(train.len(), 64 + r.inserted);
    // A second audit into the same directory is refused (canaries must be fresh).
    assert!(run_audit_with(&cfg, &w, &tok, &mut NoProgress).is_err());
}

#[test]
fn no_dp_run_reports_no_guarantee_and_a_clear_leak() {
    let (dir, w, tok, data) = setup();
    let mut cfg = config(dir.path(), data, 2);
    cfg.train.no_dp = true;
    cfg.train.clip_norm = f64::INFINITY;
    cfg.exposure_samples = 0;
    let r = run_audit_with(&cfg, &w, &tok, &mut NoProgress).unwrap();
    eprintln!("{}", r.summary());
    assert_eq!(r.verdict, Verdict::NoGuarantee);
    assert_eq!(r.claimed_epsilon, None);
    assert!(r.epsilon_lower_bound > 2.0, "{}", r.summary());
    assert!(r.exposure.is_none());
}

#[test]
fn correct_dp_at_epsilon_one_is_consistent() {
    let (dir, w, tok, data) = setup();
    let mut cfg = config(dir.path(), data, 3);
    cfg.train.no_dp = false;
    cfg.train.epsilon = Some(1.0);
    cfg.exposure_samples = 0;
    let r = run_audit_with(&cfg, &w, &tok, &mut NoProgress).unwrap();
    eprintln!("{}", r.summary());
    let claimed = r.claimed_epsilon.unwrap();
    assert!(claimed <= 1.0 + 1e-9 && claimed > 0.5, "ledger ε {claimed}");
    assert!(r.training.noise_multiplier.unwrap() > 0.0);
    assert_eq!(r.verdict, Verdict::Consistent, "{}", r.summary());
    assert!(r.epsilon_lower_bound <= claimed);
}
