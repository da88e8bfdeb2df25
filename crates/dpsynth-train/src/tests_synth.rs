//! End-to-end synthesis with the free post-processing, on a tiny random model with a
//! word-level tokenizer: train a few DP steps, then sample candidates, de-duplicate, score,
//! re-label and balance; and the ε = 0 control from the base model.

use std::path::{Path, PathBuf};

use candle_core::Device;
use dpsynth_lm::{LlamaConfig, LlamaWeights, LoraConfig};

use crate::filter::{FilterConfig, FilterCounts};
use crate::synth::{filter_counts_path, synthesize, NoSynthProgress, SynthConfig};
use crate::{LabelDistribution, Method, NoProgress, TrainConfig};

const WORDS: [&str; 24] = [
    "the", "movie", "was", "good", "bad", "plot", "actor", "film", "great", "boring", "fun",
    "story", "scene", "music", "long", "short", "very", "not", "and", "it", "sad", "funny", "slow",
    "bright",
];

/// A tiny model directory (config.json, model.safetensors, word-level tokenizer.json) and a
/// data file of random records.
fn setup(root: &Path) -> (PathBuf, PathBuf) {
    let model = root.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let mut vocab: Vec<&str> = vec![
        "<unk>", "<s>", "</s>", "Write", "a", "text", ":", "pos", "neg",
    ];
    vocab.extend(WORDS);
    let v: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let special = |id: usize, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let j = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "<unk>"}
    });
    std::fs::write(model.join("tokenizer.json"), j.to_string()).unwrap();
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 5).unwrap();
    dpsynth_lm::adapter::save_hf_model(&w, &model).unwrap();
    let mut s = 17u64;
    let mut next = |m: usize| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as usize) % m
    };
    let recs: Vec<dpsynth_data::Record> = (0..64)
        .map(|i| dpsynth_data::Record {
            id: format!("r{i}"),
            text: (0..5)
                .map(|_| WORDS[next(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" "),
            label: if next(3) == 0 { "neg" } else { "pos" }.into(),
            user: None,
        })
        .collect();
    let data = root.join("data.jsonl");
    dpsynth_data::write_jsonl(&data, recs.iter()).unwrap();
    (model, data)
}

fn train_tiny(root: &Path) -> PathBuf {
    let (model, data) = setup(root);
    let out = root.join("run");
    let mut t = TrainConfig::new(data, model, out.clone());
    t.method = Method::Lora(LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
    });
    t.max_tokens = 8;
    t.steps = Some(3);
    t.epochs = None;
    t.expected_batch = 8;
    t.physical_batch = 8;
    t.epsilon = Some(8.0);
    t.seed = Some(1);
    t.checkpoint_every = 0;
    t.label_distribution = LabelDistribution::Dp;
    t.lr_schedule = crate::optim::LrSchedule::Cosine;
    crate::train(&t, &mut NoProgress).unwrap();
    out
}

fn check_counts(c: &FilterCounts, file: &Path, n: usize) {
    // Every candidate is accounted for exactly once.
    assert_eq!(
        c.generated,
        c.removed_by_length + c.exact_duplicates + c.near_duplicates + c.after_dedup,
        "{c:?}"
    );
    assert_eq!(
        c.after_dedup,
        c.kept + c.dropped_low_confidence + c.dropped_by_balance,
        "{c:?}"
    );
    assert!(c.kept <= n);
    assert_eq!(c.per_label.iter().map(|l| l.kept).sum::<usize>(), c.kept);
    assert_eq!(
        c.per_label.iter().map(|l| l.assigned).sum::<usize>(),
        c.after_dedup - c.dropped_low_confidence
    );
    for l in &c.per_label {
        assert!(l.kept <= l.target, "{l:?}");
    }
    // The output holds exactly the kept records, with trained labels only.
    let recs = dpsynth_data::read_jsonl(file).unwrap();
    assert_eq!(recs.len(), c.kept);
    for r in &recs {
        assert!(r.label == "pos" || r.label == "neg", "{}", r.label);
    }
    // The counts file next to the data is the same struct.
    let on_disk: FilterCounts =
        serde_json::from_str(&std::fs::read_to_string(filter_counts_path(file)).unwrap()).unwrap();
    // Floats go through decimal text (serde_json may round the last bit): compare them within
    // 1e-12, everything else exactly.
    let mut same = c.clone();
    assert!((on_disk.mean_confidence_kept - c.mean_confidence_kept).abs() < 1e-12);
    same.mean_confidence_kept = on_disk.mean_confidence_kept;
    assert_eq!(on_disk.proportions.len(), c.proportions.len());
    for (a, b) in on_disk.proportions.iter().zip(&c.proportions) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    same.proportions = on_disk.proportions.clone();
    same.scoring_seconds = on_disk.scoring_seconds;
    assert_eq!(on_disk, same);
}

#[test]
fn filtered_synthesis_and_the_epsilon_zero_control() {
    let d = tempfile::tempdir().unwrap();
    let run = train_tiny(d.path());
    let ledger = crate::ledger::Ledger::read(&run.join("privacy.json")).unwrap();
    let hist = ledger
        .label_histogram
        .clone()
        .expect("DP histogram released");

    let out = d.path().join("syn.jsonl");
    let mut sc = SynthConfig::new(run.clone(), 10, out.clone());
    sc.filter = Some(FilterConfig::default());
    sc.candidates = Some(40);
    sc.seed = Some(3);
    sc.max_new_tokens = 8;
    sc.weights = "f32".into();
    let s = synthesize(&sc, &mut NoSynthProgress).unwrap();
    let c = s.filter.clone().expect("filter counts");
    assert!(c.generated >= 40 - c.removed_by_length.min(40));
    check_counts(&c, &out, 10);
    assert_eq!(c.model, "DP model");
    // The prior and quotas are the released DP proportions (no new access to the data).
    assert_eq!(c.proportions, hist.proportions);
    assert_eq!(s.written, c.kept);

    // ε = 0 control: no adapter, uniform labels, same filters.
    let cout = d.path().join("control.jsonl");
    let mut cc = sc.clone();
    cc.out = cout.clone();
    cc.base_only = true;
    // The control must not read the ledger: remove it to prove it.
    std::fs::rename(run.join("privacy.json"), d.path().join("moved.json")).unwrap();
    let cs = synthesize(&cc, &mut NoSynthProgress).unwrap();
    let ccounts = cs.filter.clone().unwrap();
    check_counts(&ccounts, &cout, 10);
    assert!(ccounts.model.contains("control"));
    assert_eq!(ccounts.proportions, vec![0.5, 0.5]);
    // Without the ledger, the DP synthesis refuses (it needs the released histogram).
    assert!(synthesize(&sc, &mut NoSynthProgress).is_err());
    // Bad settings are errors.
    let mut bad = cc.clone();
    bad.candidates = Some(0);
    assert!(synthesize(&bad, &mut NoSynthProgress).is_err());
    let mut bad = cc;
    bad.filter = Some(FilterConfig {
        min_confidence: 2.0,
        ..Default::default()
    });
    assert!(synthesize(&bad, &mut NoSynthProgress).is_err());
}
