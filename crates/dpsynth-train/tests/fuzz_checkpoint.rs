//! Bad input at volume (issue 13, item 10): checkpoint directories written by
//! `Checkpoint::save`, then corrupted — `state.json` fields replaced with generated JSON or
//! deleted, or the whole file replaced by junk; the tensor file's header and body overwritten
//! or truncated, or removed — and loaded with `Checkpoint::load` for a bounded, deterministic
//! number of cases. No input may panic; every error names the checkpoint directory.

use candle_core::{Device, Tensor};
use dpsynth_testkit::fuzz::{copy_dir, edits, json_changes, mutate, mutate_json, runner};
use dpsynth_train::checkpoint::Checkpoint;
use dpsynth_train::rng::SeedPolicy;
use dpsynth_train::{Params, StepInfo};
use proptest::prelude::*;

const CASES: u32 = 384;

fn params() -> Params {
    let dev = Device::Cpu;
    Params {
        names: vec!["lora.0.q_proj.a".into(), "prompt".into()],
        tensors: vec![
            Tensor::full(0.5f32, (2, 3), &dev).unwrap(),
            Tensor::full(-1f32, 4, &dev).unwrap(),
        ],
    }
}

#[test]
fn checkpoint_loader_never_panics_and_errors_name_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    let p = params();
    let zeros: Vec<Tensor> = p.tensors.iter().map(|t| t.zeros_like().unwrap()).collect();
    Checkpoint {
        step: 7,
        config: serde_json::json!({"clip_norm": 1.0, "lr": 0.01}),
        params: p.clone(),
        m: zeros.clone(),
        v: zeros,
        losses: vec![StepInfo {
            step: 1,
            total: 7,
            batch: 3,
            loss: 2.5,
            epsilon: Some(0.1),
            lr: 0.01,
            seconds: 0.2,
            dropped_nonfinite: 0,
        }],
        seed_policy: SeedPolicy::Seeded { seed: 3 },
    }
    .save(&base)
    .unwrap();
    Checkpoint::load(&base, &Device::Cpu, &p).expect("the valid fixture loads");
    let tensor_file = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".safetensors"))
        .unwrap();

    let n = std::cell::Cell::new(0usize);
    let strategy = (
        json_changes(),
        edits(),
        any::<bool>(),
        0..5usize,
        proptest::collection::vec(any::<u8>(), 0..48),
    );
    runner(CASES)
        .run(
            &strategy,
            |(changes, (byte_edits, cut), header_only, remove, junk)| {
                n.set(n.get() + 1);
                let n = n.get();
                let dir = root.path().join(format!("case-{n}"));
                copy_dir(&base, &dir);
                let sp = dir.join("state.json");
                if junk.len() > 40 {
                    std::fs::write(&sp, &junk).unwrap();
                } else {
                    let v: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&sp).unwrap()).unwrap();
                    std::fs::write(&sp, mutate_json(v, &changes).to_string()).unwrap();
                }
                let tp = dir.join(&tensor_file);
                let w = std::fs::read(&tp).unwrap();
                let window = header_only.then_some(256);
                std::fs::write(&tp, mutate(w, &byte_edits, window, cut)).unwrap();
                match remove {
                    1 => std::fs::remove_file(&tp).unwrap(),
                    2 => std::fs::remove_file(&sp).unwrap(),
                    _ => {}
                }
                if let Err(e) = Checkpoint::load(&dir, &Device::Cpu, &p) {
                    let msg = e.to_string();
                    let name = format!("case-{n}");
                    prop_assert!(
                        msg.contains(&name),
                        "error does not name the checkpoint: {msg}"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "fuzz_checkpoint: {} generated checkpoint directories loaded",
        n.get()
    );
    assert_eq!(n.get(), CASES as usize);
}
