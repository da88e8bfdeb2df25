//! Resume and the ledger: a crash before the first checkpoint reuses the released label
//! histogram, and a resumed run refuses a plan other than the one its ledger accounts.

use candle_core::Device;
use dpsynth_lm::{LlamaConfig, LlamaWeights};

use crate::ledger::Ledger;
use crate::tests_dp::{tiny_cfg, tiny_data, StopAt};
use crate::train::*;

/// A run killed after its ledger (with the label histogram) was written and before its first
/// checkpoint: the ledger as written before step 1, no checkpoint, no adapter.
fn killed_before_first_checkpoint(dir: &std::path::Path, cfg: &TrainConfig) -> Ledger {
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 1).unwrap();
    let s = train_prepared(cfg, &w, &tiny_data(48), &mut StopAt(1, 0)).unwrap();
    assert_eq!(s.steps_done, 1);
    // What was on disk at the kill: the ledger as written before step 1, the config and run
    // info; no checkpoint, no adapter, no loss log.
    for d in ["checkpoint", "adapter"] {
        std::fs::remove_dir_all(dir.join(d)).unwrap();
    }
    std::fs::remove_file(dir.join("loss.csv")).unwrap();
    let mut l = Ledger::read(&dir.join("privacy.json")).unwrap();
    l.dp_sgd.as_mut().unwrap().steps_spent = 0;
    l.refresh().unwrap();
    l.write(&dir.join("privacy.json")).unwrap();
    l
}

#[test]
fn resume_before_the_first_checkpoint_reuses_the_released_histogram() {
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 1).unwrap();
    let data = tiny_data(48);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_cfg(dir.path());
    // OS entropy: a second draw would give other counts.
    cfg.seed = None;
    let released = killed_before_first_checkpoint(dir.path(), &cfg);
    let h = released.label_histogram.clone().unwrap();
    let mut rc = cfg.clone();
    rc.resume = true;
    let s = train_prepared(&rc, &w, &data, &mut NoProgress).unwrap();
    assert_eq!(s.steps_done, 6);
    let l = Ledger::read(&dir.path().join("privacy.json")).unwrap();
    assert_eq!(
        l.label_histogram.as_ref(),
        Some(&h),
        "histogram drawn again"
    );
    assert_eq!(l.dp_sgd.as_ref().unwrap().steps_spent, 6);
    // The same ε as an uninterrupted run with the same plan.
    let other = tempfile::tempdir().unwrap();
    let mut oc = tiny_cfg(other.path());
    oc.seed = None;
    train_prepared(&oc, &w, &data, &mut NoProgress).unwrap();
    let lo = Ledger::read(&other.path().join("privacy.json")).unwrap();
    assert_eq!(l.epsilon_pld, lo.epsilon_pld);
    assert!(dir
        .path()
        .join("adapter/adapter_model.safetensors")
        .exists());
}

#[test]
fn resume_refuses_a_plan_other_than_the_ledgers() {
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cfg(dir.path());
    let mut rc = cfg.clone();
    rc.resume = true;
    let resume_err = |data: &PreparedData| {
        train_prepared(&rc, &w, data, &mut NoProgress)
            .unwrap_err()
            .to_string()
    };
    // With a checkpoint (stopped at step 3) and without one.
    let s = train_prepared(&cfg, &w, &tiny_data(48), &mut StopAt(3, 0)).unwrap();
    assert_eq!(s.steps_done, 3);
    let before = std::fs::read(dir.path().join("privacy.json")).unwrap();
    // The data file changed: 40 records instead of 48, so q = 8/40 instead of 8/48.
    let e = resume_err(&tiny_data(40));
    assert!(
        e.contains("refused") && e.contains("sampling rate q") && e.contains("units"),
        "{e}"
    );
    assert!(e.contains("privacy.json"), "names the ledger: {e}");
    // A calibration change (an upgrade computing another σ for the same plan).
    let mut l = Ledger::read(&dir.path().join("privacy.json")).unwrap();
    l.dp_sgd.as_mut().unwrap().noise_multiplier *= 1.01;
    l.write(&dir.path().join("privacy.json")).unwrap();
    let e = resume_err(&tiny_data(48));
    assert!(e.contains("noise multiplier σ"), "{e}");
    // The label histogram's σ.
    let mut l: Ledger = serde_json::from_slice(&before).unwrap();
    l.label_histogram.as_mut().unwrap().noise_multiplier *= 2.0;
    l.write(&dir.path().join("privacy.json")).unwrap();
    assert!(resume_err(&tiny_data(48)).contains("label histogram σ"));
    // A clip norm recorded otherwise than configured (config.json agrees with the config).
    let mut l: Ledger = serde_json::from_slice(&before).unwrap();
    l.dp_sgd.as_mut().unwrap().clip_norm = 0.5;
    l.write(&dir.path().join("privacy.json")).unwrap();
    assert!(resume_err(&tiny_data(48)).contains("clip norm C"));
    // Nothing was trained or spent by the refused attempts.
    std::fs::write(dir.path().join("privacy.json"), &before).unwrap();
    let s = train_prepared(&rc, &w, &tiny_data(48), &mut NoProgress).unwrap();
    assert_eq!(s.steps_done, 6);

    // Without a checkpoint: the same check applies.
    let d2 = tempfile::tempdir().unwrap();
    let cfg2 = tiny_cfg(d2.path());
    killed_before_first_checkpoint(d2.path(), &cfg2);
    let mut rc2 = cfg2.clone();
    rc2.resume = true;
    let e = train_prepared(&rc2, &w, &tiny_data(40), &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sampling rate q"), "{e}");
    // And resuming where nothing was released is refused too (no ledger).
    let d3 = tempfile::tempdir().unwrap();
    let mut rc3 = tiny_cfg(d3.path());
    rc3.resume = true;
    let e = train_prepared(&rc3, &w, &tiny_data(48), &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to resume"), "{e}");
}

#[test]
fn record_level_training_on_data_with_user_ids_warns() {
    let rec = |id: &str, user: Option<&str>| dpsynth_data::Record {
        id: id.into(),
        text: "t".into(),
        label: "a".into(),
        user: user.map(String::from),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_cfg(dir.path());
    let with_users = vec![rec("1", Some("alice")), rec("2", Some("alice"))];
    let w = user_ids_warning(&with_users, &cfg).expect("a warning");
    assert!(
        w.contains("record-level") && w.contains("group privacy"),
        "{w}"
    );
    assert!(user_ids_warning(&[rec("1", None)], &cfg).is_none());
    cfg.user_level = true;
    assert!(user_ids_warning(&with_users, &cfg).is_none());
}
