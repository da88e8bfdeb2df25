//! A tiny word-level tokenizer, data set and audit configuration for tests, examples and
//! CI smoke runs: with `LlamaWeights::random(&LlamaConfig::tiny(), ..)` an audit takes seconds.

use std::path::{Path, PathBuf};

use dpsynth_lm::{LoraConfig, Tokenizer};
use dpsynth_train::{LabelDistribution, Method, TrainConfig};
use rand::{Rng, SeedableRng};

use crate::{AuditConfig, AuditError, CanaryKind};

/// Filler words of the tiny data set.
pub const FILLER: [&str; 20] = [
    "the", "movie", "was", "good", "bad", "plot", "actor", "film", "great", "boring", "fun",
    "story", "scene", "music", "long", "short", "very", "not", "and", "it",
];

/// A word-level tokenizer.json: specials, the default template's words, labels, the
/// secret-sharer prefix, single digits, filler words and the canary word list (107 ids;
/// use [`model_config`]).
pub fn tiny_tokenizer(dir: &Path) -> crate::Result<Tokenizer> {
    let mut vocab: Vec<String> = [
        "<unk>", "<s>", "</s>", "Write", "a", "text", ":", "pos", "neg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    vocab.extend(["my", "secret", "code", "is"].iter().map(|s| s.to_string()));
    vocab.extend((0..10).map(|d| d.to_string()));
    vocab.extend(FILLER.iter().map(|s| s.to_string()));
    vocab.extend(crate::canary::WORDS.iter().map(|s| s.to_string()));
    let v: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), serde_json::json!(i)))
        .collect();
    let special = |id: usize, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let j = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Whitespace"},
            {"type": "Digits", "individual_digits": true}
        ]},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "<unk>"}
    });
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, serde_json::to_string(&j)?).map_err(|e| AuditError::file(&p, e))?;
    Ok(Tokenizer::from_file(&p)?)
}

/// `LlamaConfig::tiny()` with room for [`tiny_tokenizer`]'s 107 ids.
pub fn model_config() -> dpsynth_lm::LlamaConfig {
    let mut c = dpsynth_lm::LlamaConfig::tiny();
    c.vocab_size = 128;
    c
}

/// `n` records of six random filler words with random labels, written to `dir/data.jsonl`.
pub fn write_data(dir: &Path, n: usize) -> crate::Result<PathBuf> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let recs: Vec<dpsynth_data::Record> = (0..n)
        .map(|i| dpsynth_data::Record {
            id: format!("r{i}"),
            text: (0..6)
                .map(|_| FILLER[rng.random_range(0..FILLER.len())])
                .collect::<Vec<_>>()
                .join(" "),
            label: if rng.random_bool(0.5) { "pos" } else { "neg" }.into(),
            user: None,
        })
        .collect();
    let p = dir.join("data.jsonl");
    dpsynth_data::write_jsonl(&p, recs.iter()).map_err(|e| AuditError::file(&p, e))?;
    Ok(p)
}

/// The test audit: LoRA r = 8 on every module, 120 steps at q ≈ 48/(n + 64), lr 0.02, 128
/// random-word canaries (6 words each), δ = 1e-5, seeded (reproducible, not secure). DP settings are left to the caller.
pub fn config(dir: &Path, data: PathBuf, seed: u64) -> AuditConfig {
    let mut t = TrainConfig::new(data, PathBuf::from("tiny"), dir.join("unused"));
    t.method = Method::Lora(LoraConfig {
        rank: 8,
        alpha: 16.0,
        targets: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    });
    t.expected_batch = 48;
    t.physical_batch = 64;
    t.steps = Some(120);
    t.epochs = None;
    t.lr = 0.02;
    t.warmup = 0.0;
    t.clip_norm = 1.0;
    t.seed = Some(seed);
    t.checkpoint_every = 0;
    t.label_distribution = LabelDistribution::Uniform;
    t.delta = Some(1e-5);
    let mut a = AuditConfig::new(t, dir.join("audit"));
    a.canaries = 128;
    a.kind = CanaryKind::Words { words: 6 };
    a.exposure_samples = 15;
    a.seed = Some(seed);
    a.score_batch = 64;
    a
}
