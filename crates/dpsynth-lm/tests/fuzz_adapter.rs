//! Bad input at volume (issue 13, item 10): adapter directories (LoRA and prompt tuning in PEFT
//! layout, full fine-tunes as HF model directories) saved from tiny random models, then
//! corrupted — config fields replaced with generated JSON or deleted, config text replaced by
//! junk, safetensors headers and bodies overwritten or truncated, files removed — and loaded
//! with `Adapter::load` for a bounded, deterministic number of cases. No input may panic;
//! every error names the file (or directory) at fault.

use std::path::{Path, PathBuf};

use candle_core::Device;
use dpsynth_lm::{Adapter, LlamaConfig, LlamaWeights, LoraAdapter, LoraConfig, PromptAdapter};
use dpsynth_testkit::fuzz::{copy_dir, edits, json_changes, mutate, mutate_json, runner};
use proptest::prelude::*;

const CASES: u32 = 384;

fn bases(root: &Path) -> Vec<PathBuf> {
    let cfg = LlamaConfig::tiny();
    let dev = Device::Cpu;
    let lora = LoraAdapter::init(
        &LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
        },
        &cfg,
        1,
        &dev,
    )
    .unwrap();
    let prompt = PromptAdapter::init_random(3, cfg.hidden_size, 0.1, 2, &dev).unwrap();
    let full = LlamaWeights::random(&cfg, &dev, 3).unwrap();
    let dirs: Vec<PathBuf> = ["lora", "prompt", "full"]
        .iter()
        .map(|n| root.join(n))
        .collect();
    Adapter::Lora(lora).save(&dirs[0]).unwrap();
    Adapter::Prompt(prompt).save(&dirs[1]).unwrap();
    Adapter::Full(Box::new(full)).save(&dirs[2]).unwrap();
    for d in &dirs {
        Adapter::load(d, &cfg, &dev).expect("the valid fixture loads");
    }
    dirs
}

#[test]
fn adapter_loader_never_panics_and_errors_name_the_file() {
    let root = tempfile::tempdir().unwrap();
    let bases = bases(root.path());
    let cfg = LlamaConfig::tiny();
    let n = std::cell::Cell::new(0usize);
    let strategy = (
        0..bases.len(),
        json_changes(),
        edits(),
        any::<bool>(),
        0..4usize,
        proptest::collection::vec(any::<u8>(), 0..48),
    );
    runner(CASES)
        .run(
            &strategy,
            |(which, changes, (byte_edits, cut), header_only, remove, junk)| {
                n.set(n.get() + 1);
                let n = n.get();
                let dir = root.path().join(format!("case-{n}"));
                copy_dir(&bases[which], &dir);
                let (cfg_name, weights_name) = if which == 2 {
                    ("config.json", "model.safetensors")
                } else {
                    ("adapter_config.json", "adapter_model.safetensors")
                };
                let cp = dir.join(cfg_name);
                if junk.len() > 40 {
                    std::fs::write(&cp, &junk).unwrap();
                } else {
                    let v: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
                    std::fs::write(&cp, mutate_json(v, &changes).to_string()).unwrap();
                }
                let wp = dir.join(weights_name);
                let w = std::fs::read(&wp).unwrap();
                // The header: 8 length bytes + the JSON header (a few hundred bytes here).
                let window = header_only.then_some(256);
                std::fs::write(&wp, mutate(w, &byte_edits, window, cut)).unwrap();
                match remove {
                    1 => std::fs::remove_file(&wp).unwrap(),
                    2 => std::fs::remove_file(&cp).unwrap(),
                    _ => {}
                }
                if let Err(e) = Adapter::load(&dir, &cfg, &Device::Cpu) {
                    let msg = e.to_string();
                    let name = format!("case-{n}");
                    prop_assert!(msg.contains(&name), "error does not name the file: {msg}");
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "fuzz_adapter: {} generated adapter directories loaded",
        n.get()
    );
    assert_eq!(n.get(), CASES as usize);
}
