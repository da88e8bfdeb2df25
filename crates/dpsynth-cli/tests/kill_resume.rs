//! `kill -9` in the middle of DP training, then `dpsynth run` again: the run finishes with the
//! same ledger ε as an uninterrupted run and never spends budget twice.
//!
//! Uses a tiny random llama (saved as a Hugging Face directory) and a tiny word-level tokenizer,
//! so it needs no assets and runs in seconds; the pipeline stops after the train stage (`--to
//! train`), so no embedding model is needed either.
//!
//! Besides one real `kill -9` from outside, the runs are killed at named points (the
//! `DPSYNTH_KILL_AT` hook, `dpsynth_train::ledger::kill_point`, which sends the process SIGKILL
//! there): every stage boundary up to training and every point inside training where a crash
//! could lose or repeat a privacy spend, including before the first checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dpsynth"))
}

/// A tiny model directory (config.json, model.safetensors, tokenizer.json) and a data file.
fn setup(root: &Path) -> (PathBuf, PathBuf) {
    let model = root.join("tiny-model");
    std::fs::create_dir_all(&model).unwrap();
    dpsynth_audit::tiny::tiny_tokenizer(&model).unwrap();
    let w = dpsynth_lm::LlamaWeights::random(
        &dpsynth_audit::tiny::model_config(),
        &dpsynth_lm::Device::Cpu,
        5,
    )
    .unwrap();
    dpsynth_lm::adapter::save_hf_model(&w, &model).unwrap();
    let data = dpsynth_audit::tiny::write_data(root, 400).unwrap();
    (model, data)
}

fn args(dir: &Path, model: &Path, data: &Path) -> Vec<String> {
    args_steps(dir, model, data, 400)
}

fn args_steps(dir: &Path, model: &Path, data: &Path, steps: u64) -> Vec<String> {
    [
        "run",
        "--to",
        "train",
        "--dir",
        dir.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--data-path",
        data.to_str().unwrap(),
        "--epsilon",
        "3",
        "--steps",
        &steps.to_string(),
        "--batch-size",
        "16",
        "--max-seq-len",
        "16",
        "--learning-rate",
        "0.01",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_to_end(a: &[String]) {
    let out = Command::new(bin()).args(a).output().unwrap();
    assert!(
        out.status.success(),
        "dpsynth run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// (training ledger ε by PLD, steps spent, run-ledger entries, run-ledger current ε).
fn ledgers(dir: &Path) -> (f64, u64, Vec<serde_json::Value>, f64) {
    let t = json(&dir.join("train/privacy.json"));
    let r = json(&dir.join("privacy_ledger.json"));
    let entries = r["entries"].as_array().unwrap().clone();
    let current: f64 = entries
        .iter()
        .filter(|e| !e["superseded"].as_bool().unwrap())
        .map(|e| e["epsilon"].as_f64().unwrap())
        .sum();
    (
        t["epsilon_pld"].as_f64().unwrap(),
        t["dp_sgd"]["steps_spent"].as_u64().unwrap(),
        entries,
        current,
    )
}

#[test]
fn kill_9_mid_training_then_rerun_gives_the_same_ledger_and_no_double_spend() {
    let root = tempfile::tempdir().unwrap();
    let (model, data) = setup(root.path());

    // Uninterrupted reference run.
    let clean = root.path().join("clean");
    run_to_end(&args(&clean, &model, &data));
    let (eps_clean, steps_clean, entries_clean, cur_clean) = ledgers(&clean);
    assert_eq!(steps_clean, 400);
    assert_eq!(entries_clean.len(), 1, "one release: histogram + DP-SGD");
    assert!((cur_clean - eps_clean).abs() < 1e-12);
    assert!(eps_clean <= 3.0 + 1e-9 && eps_clean > 2.5, "{eps_clean}");

    // The same run, killed (SIGKILL) once training has written a checkpoint but not finished.
    let dir = root.path().join("killed");
    let a = args(&dir, &model, &data);
    let mut child = Command::new(bin())
        .args(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // state.json is written last (atomically) when a checkpoint is complete.
    let ckpt = dir.join("train/checkpoint/state.json");
    let t0 = Instant::now();
    let killed_mid_training = loop {
        if ckpt.exists() {
            // Let it run on a little past the first checkpoint, then kill it hard.
            std::thread::sleep(Duration::from_millis(50));
            child.kill().unwrap(); // SIGKILL on Unix
            break child.wait().unwrap().code().is_none();
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended ({st}) before its first checkpoint; make training longer");
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(killed_mid_training, "the process exited on its own");
    let stage = json(&dir.join("stages/train.json"));
    assert_eq!(stage["status"], "running", "killed mid-training");
    let (_, steps_at_kill, _, _) = ledgers(&dir);
    assert!(
        steps_at_kill < 400,
        "killed before the end ({steps_at_kill})"
    );

    // Re-run: resumes from the checkpoint and the same ledger.
    run_to_end(&a);
    let (eps, steps, entries, cur) = ledgers(&dir);
    assert_eq!(steps, 400, "exactly the planned steps, none spent twice");
    assert_eq!(entries.len(), 1, "the resumed attempt is the same release");
    assert!(!entries[0]["superseded"].as_bool().unwrap());
    assert!(
        (eps - eps_clean).abs() < 1e-9,
        "resumed ε {eps} vs uninterrupted {eps_clean}"
    );
    assert!((cur - eps).abs() < 1e-12, "run ledger = training ledger");
    let stage = json(&dir.join("stages/train.json"));
    assert_eq!(stage["status"], "done");
    assert_eq!(stage["attempts"], 2);
    // The run ledger holds no statistic of the private batches (the final loss is kept, marked,
    // in the stage record).
    assert!(
        entries[0]["details"].get("final_loss").is_none(),
        "{:?}",
        entries[0]
    );
    assert!(entries[0]["details"]["steps_done"].as_u64() == Some(400));
    assert!(stage["summary"]["private_not_covered_by_guarantee"]
        .get("final_loss")
        .is_some());
    // The histogram was released once, in the training ledger, with the Gaussian mechanism.
    let t = json(&dir.join("train/privacy.json"));
    assert!(t["label_histogram"]["noise_multiplier"].as_f64().unwrap() > 0.0);
    let h = json(&dir.join("histogram.json"));
    assert_eq!(h["mechanism"], "gaussian");
}

/// The label histogram as released in the training ledger (None before it is written).
fn released_histogram(dir: &Path) -> Option<serde_json::Value> {
    let p = dir.join("train/privacy.json");
    p.exists().then(|| json(&p)["label_histogram"].clone())
}

#[test]
fn kill_at_every_boundary_then_rerun_releases_one_histogram_and_the_planned_steps() {
    use std::os::unix::process::ExitStatusExt;
    let root = tempfile::tempdir().unwrap();
    let (model, data) = setup(root.path());
    let steps = 24;
    let clean = root.path().join("clean");
    run_to_end(&args_steps(&clean, &model, &data, steps));
    let (eps_clean, _, _, _) = ledgers(&clean);
    let points = [
        "stage:data:start",
        "stage:data:end",
        "stage:train:start",
        // The histogram is in train/privacy.json, no step has run, no checkpoint exists.
        "train:histogram-released",
        "train:checkpoint",
        "train:final-ledger",
        "stage:train:end",
    ];
    for point in points {
        let dir = root.path().join(point.replace(':', "-"));
        let a = args_steps(&dir, &model, &data, steps);
        let out = Command::new(bin())
            .args(&a)
            .env("DPSYNTH_KILL_AT", point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: not killed there: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = released_histogram(&dir);
        if point.starts_with("train:") {
            assert!(before.is_some(), "{point}: the histogram was released");
            assert!(
                !dir.join("train/adapter").exists(),
                "{point}: no adapter yet"
            );
        }
        run_to_end(&a);
        let (eps, steps_spent, entries, cur) = ledgers(&dir);
        assert_eq!(steps_spent, steps, "{point}: exactly the planned steps");
        assert_eq!(entries.len(), 1, "{point}: one release: {entries:?}");
        assert!(!entries[0]["superseded"].as_bool().unwrap(), "{point}");
        assert!(
            (eps - eps_clean).abs() < 1e-9,
            "{point}: ε {eps} vs uninterrupted {eps_clean}"
        );
        assert!(
            (cur - eps).abs() < 1e-12,
            "{point}: run ledger = training ledger"
        );
        let after = released_histogram(&dir).unwrap();
        if let Some(b) = before {
            assert_eq!(b, after, "{point}: the released histogram was drawn again");
        }
        // No discarded training directory holds a second histogram.
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("train.") {
                assert!(
                    !p.join("privacy.json").exists(),
                    "{point}: {name} holds a released histogram that was set aside"
                );
            }
        }
        assert_eq!(json(&dir.join("stages/train.json"))["status"], "done");
    }
}
