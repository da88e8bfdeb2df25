//! Sharded synthesis and sharing, through the built binary on a tiny random model:
//! 4 `dpsynth synthesize --shard i/4` processes run at once, `dpsynth synthesize merge` joins
//! them, and the merged records equal one single-process run with the same seed byte for
//! byte (plain sampler and `--filter`). Bad shard specs and bad merges are clear errors that
//! write nothing. The merged data's dataset card carries the ledger's ε; `dpsynth data export`
//! carries it to CSV/Parquet and `dpsynth data inspect` shows it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dpsynth"))
}

fn dpsynth(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = dpsynth(args);
    assert!(
        o.status.success(),
        "dpsynth {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and must fail; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = dpsynth(args);
    assert!(!o.status.success(), "dpsynth {args:?} should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny trained run (a few DP-SGD steps of LoRA through the library, as `dpsynth train` runs
/// them; no assets needed); returns its directory.
fn train_run(root: &Path, name: &str, steps: u64) -> PathBuf {
    let model = root.join("tiny-model");
    if !model.exists() {
        std::fs::create_dir_all(&model).unwrap();
        dpsynth_audit::tiny::tiny_tokenizer(&model).unwrap();
        let w = dpsynth_lm::LlamaWeights::random(
            &dpsynth_audit::tiny::model_config(),
            &dpsynth_lm::Device::Cpu,
            5,
        )
        .unwrap();
        dpsynth_lm::adapter::save_hf_model(&w, &model).unwrap();
        dpsynth_audit::tiny::write_data(root, 200).unwrap();
    }
    let out = root.join(name);
    let mut t = dpsynth_train::TrainConfig::new(root.join("data.jsonl"), model, out.clone());
    t.method = dpsynth_train::Method::Lora(dpsynth_lm::LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
    });
    t.max_tokens = 12;
    t.steps = Some(steps);
    t.epochs = None;
    t.expected_batch = 16;
    t.physical_batch = 16;
    t.epsilon = Some(3.0);
    t.seed = Some(1);
    t.checkpoint_every = 0;
    t.label_distribution = dpsynth_train::LabelDistribution::Dp;
    dpsynth_train::train(&t, &mut dpsynth_train::NoProgress).unwrap();
    out
}

/// The common synthesis flags.
fn synth_args<'a>(run: &'a Path, out: &'a Path, seed: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "synthesize",
        "--run",
        s(run),
        "--n",
        "24",
        "--out",
        s(out),
        "--seed",
        seed,
        "--weights",
        "f32",
        "--max-new-tokens",
        "10",
        "--min-words",
        "2",
        "--batch-size",
        "4",
    ];
    v.extend_from_slice(extra);
    v
}

/// 4 shard processes at once; returns the shard files.
fn run_shards(run: &Path, root: &Path, tag: &str, seed: &str, extra: &[&str]) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = (0..4)
        .map(|i| root.join(format!("{tag}-shard-{i}.jsonl")))
        .collect();
    let procs: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let spec = format!("{i}/4");
            let mut a = synth_args(run, f, seed, extra);
            a.extend_from_slice(&["--shard", &spec]);
            Command::new(bin())
                .args(&a)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in procs {
        let o = p.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "shard failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    files
}

#[test]
fn four_shard_processes_merge_to_the_single_process_output() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let run = train_run(root, "run", 3);
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("privacy.json")).unwrap()).unwrap();
    let eps = ledger["epsilon_pld"].as_f64().unwrap();

    for (tag, extra) in [
        ("plain", vec![]),
        ("filter", vec!["--filter", "--candidates", "32"]),
    ] {
        let single = root.join(format!("{tag}-single.jsonl"));
        ok(&synth_args(&run, &single, "11", &extra));
        let shards = run_shards(&run, root, tag, "11", &extra);
        let merged = root.join(format!("{tag}-merged.jsonl"));
        let mut m = vec!["synthesize", "merge", s(&merged)];
        // Any order.
        for f in shards.iter().rev() {
            m.push(s(f));
        }
        ok(&m);
        let a = std::fs::read(&single).unwrap();
        let b = std::fs::read(&merged).unwrap();
        assert!(!a.is_empty(), "{tag}: the single run wrote nothing");
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "{tag}: merged shards differ from the single-process run"
        );
        // Record ids are the slot indices; shards hold disjoint slots.
        let recs = dpsynth_data::read_jsonl(&merged).unwrap();
        assert!(recs.iter().all(|r| r.id.starts_with("syn-")));
        // Both carry a card with the ledger's ε; the merged one says 4 shards.
        for (f, shards) in [(&single, 1), (&merged, 4)] {
            let card = dpsynth_data::find_card(f, None).unwrap().expect("card");
            assert_eq!(card.card.privacy.epsilon, Some(eps), "{tag}");
            assert_eq!(card.card.privacy.unit, "record");
            assert_eq!(card.card.records as usize, recs.len());
            assert_eq!(card.card.generation["shards"], shards);
            assert_eq!(card.card.filter.is_some(), tag == "filter");
            assert!(dpsynth_data::card_paths(f).1.is_file());
        }
        if tag == "filter" {
            // Same filter counts, apart from timing.
            let fc = |p: &Path| {
                let mut v: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(p.with_extension("filter.json")).unwrap(),
                )
                .unwrap();
                v["scoring_seconds"] = serde_json::json!(0);
                v
            };
            assert_eq!(fc(&single), fc(&merged));
        }
    }

    // A different seed gives different records (the seed matters).
    let other = root.join("seed12.jsonl");
    ok(&synth_args(&run, &other, "12", &[]));
    assert_ne!(
        std::fs::read(&other).unwrap(),
        std::fs::read(root.join("plain-single.jsonl")).unwrap()
    );

    // Bad shard specs.
    let x = root.join("x.jsonl");
    for (spec, want) in [("5/4", "not below"), ("0/0", "at least 1"), ("1", "i/n")] {
        let mut a = synth_args(&run, &x, "11", &[]);
        a.extend_from_slice(&["--shard", spec]);
        let e = fails(&a);
        assert!(e.contains(want), "{spec}: {e}");
        assert!(!x.exists());
    }
    let e = fails(&[
        "synthesize",
        "--run",
        s(&run),
        "--n",
        "4",
        "--out",
        s(&x),
        "--shard",
        "0/2",
    ]);
    assert!(e.contains("--seed"), "{e}");
    assert!(!x.exists());

    // Bad merges write nothing.
    let sh: Vec<PathBuf> = (0..4)
        .map(|i| root.join(format!("plain-shard-{i}.jsonl")))
        .collect();
    let out = root.join("bad-merge.jsonl");
    let merge = |files: &[&Path]| {
        let mut m = vec!["synthesize", "merge", s(&out)];
        m.extend(files.iter().map(|f| s(f)));
        let e = fails(&m);
        assert!(!out.exists(), "a failed merge wrote {}", out.display());
        assert!(!dpsynth_data::card_paths(&out).0.exists());
        e
    };
    let e = merge(&[&sh[0], &sh[1], &sh[3]]);
    assert!(e.contains("missing shard 2/4"), "{e}");
    let e = merge(&[&sh[0], &sh[1], &sh[2], &sh[3], &sh[1]]);
    assert!(e.contains("given twice"), "{e}");
    // Shard 0 of another seed.
    let s12 = root.join("seed12-shard-0.jsonl");
    let mut a = synth_args(&run, &s12, "12", &[]);
    a.extend_from_slice(&["--shard", "0/4"]);
    ok(&a);
    let e = merge(&[&s12, &sh[1], &sh[2], &sh[3]]);
    assert!(e.contains("different seeds"), "{e}");
    // Shard 0 of another run (another ledger and adapter).
    let run2 = train_run(root, "run2", 2);
    let r2 = root.join("run2-shard-0.jsonl");
    let mut a = synth_args(&run2, &r2, "11", &[]);
    a.extend_from_slice(&["--shard", "0/4"]);
    ok(&a);
    let e = merge(&[&r2, &sh[1], &sh[2], &sh[3]]);
    assert!(e.contains("different runs"), "{e}");
    // Shards of the filtered and the plain sampler.
    let f0 = root.join("filter-shard-0.jsonl");
    let e = merge(&[&f0, &sh[1], &sh[2], &sh[3]]);
    assert!(e.contains("different settings"), "{e}");
    // A truncated shard file.
    let cut = root.join("cut-shard-2.jsonl");
    let text = std::fs::read_to_string(&sh[2]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n")).unwrap();
    let e = merge(&[&sh[0], &sh[1], &cut, &sh[3]]);
    assert!(e.contains("incomplete"), "{e}");
    // Not a shard file.
    let e = merge(&[&root.join("plain-single.jsonl")]);
    assert!(e.contains("not a shard file"), "{e}");
}

#[test]
fn export_carries_the_card_and_inspect_shows_it() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let run = train_run(root, "run", 2);
    let syn = root.join("synthetic.jsonl");
    ok(&synth_args(&run, &syn, "3", &[]));
    let shown = ok(&["data", "inspect", s(&syn), "--no-tokens"]);
    assert!(shown.contains("dataset card ("), "{shown}");
    assert!(shown.contains("privacy unit: record"), "{shown}");
    for fmt in ["csv", "parquet", "jsonl"] {
        let out = root.join(format!("export/synthetic.{fmt}"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let said = ok(&["data", "export", s(&syn), "--format", fmt, "--out", s(&out)]);
        assert!(said.contains("card copied to"), "{said}");
        assert_eq!(
            dpsynth_data::export::read_records(&out, None).unwrap(),
            dpsynth_data::read_jsonl(&syn).unwrap(),
            "{fmt}"
        );
        let shown = ok(&["data", "inspect", s(&out), "--no-tokens"]);
        assert!(shown.contains("dataset card ("), "{fmt}: {shown}");
        if fmt == "parquet" {
            // The card travels inside the Parquet file too.
            std::fs::remove_file(dpsynth_data::card_paths(&out).0).unwrap();
            let shown = ok(&["data", "inspect", s(&out), "--no-tokens"]);
            assert!(shown.contains("Parquet metadata"), "{shown}");
        }
    }
    // A file without a card says so.
    let bare = root.join("bare.jsonl");
    std::fs::copy(&syn, &bare).unwrap();
    let shown = ok(&["data", "inspect", s(&bare), "--no-tokens"]);
    assert!(shown.contains("dataset card: none found"), "{shown}");
}
