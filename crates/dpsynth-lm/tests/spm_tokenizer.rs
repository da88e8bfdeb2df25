//! SentencePiece BPE tokenizers from GGUF metadata (`tokenizer.ggml.model = "llama"`, as in
//! TinyLlama and Gemma GGUF files) on a hand-made vocabulary whose segmentation is worked out
//! by hand below. The real Gemma 3 vocabulary is checked against transformers in tests/gemma3.rs.

use candle_core::quantized::gguf_file::{self, Value as V};
use dpsynth_lm::Tokenizer;

/// Pieces with scores (higher merges first) and token types (1 normal, 2 unknown, 3 control,
/// 4 user-defined, 6 byte).
fn vocab() -> Vec<(String, f32, i32)> {
    let mut v: Vec<(String, f32, i32)> = vec![
        ("<pad>".into(), 0.0, 3),
        ("<eos>".into(), 0.0, 3),
        ("<bos>".into(), 0.0, 3),
        ("<unk>".into(), 0.0, 2),
    ];
    for b in 0..=255u8 {
        v.push((format!("<0x{b:02X}>"), 0.0, 6));
    }
    for c in ["▁", "h", "e", "l", "o", "w", "r", "d"] {
        v.push((c.into(), -100.0, 1));
    }
    let merged = [
        "he", "ll", "llo", "hello", "▁w", "or", "ld", "▁wor", "▁world",
    ];
    for (i, m) in merged.iter().enumerate() {
        v.push((m.to_string(), -1.0 - i as f32, 1));
    }
    v.push(("\n\n".into(), 0.0, 4));
    v
}

fn tokenizer(space_prefix: bool) -> Tokenizer {
    let v = vocab();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spm.gguf");
    let meta: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("gemma3".into())),
        ("tokenizer.ggml.model", V::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            V::Array(v.iter().map(|t| V::String(t.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            V::Array(v.iter().map(|t| V::F32(t.1)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            V::Array(v.iter().map(|t| V::I32(t.2)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", V::U32(2)),
        ("tokenizer.ggml.eos_token_id", V::U32(1)),
        ("tokenizer.ggml.unknown_token_id", V::U32(3)),
        ("tokenizer.ggml.add_bos_token", V::Bool(true)),
        ("tokenizer.ggml.add_space_prefix", V::Bool(space_prefix)),
    ];
    let refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(&p).unwrap();
    gguf_file::write(&mut f, &refs, &[]).unwrap();
    drop(f);
    Tokenizer::from_gguf(&p).unwrap()
}

fn pieces(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| t.inner().id_to_token(i).unwrap())
        .collect()
}

#[test]
fn gemma_style_spm_without_space_prefix() {
    let t = tokenizer(false);
    assert_eq!(t.bos_id(), Some(2));
    assert_eq!(t.eos_id(), Some(1));
    let ids = t.encode("hello world", false).unwrap();
    assert_eq!(pieces(&t, &ids), ["hello", "▁world"]);
    assert_eq!(t.decode(&ids).unwrap(), "hello world");
    // BOS from `add_bos_token`.
    let with_bos = t.encode("hello world", true).unwrap();
    assert_eq!(with_bos[0], 2);
    assert_eq!(&with_bos[1..], &ids[..]);
    // Characters outside the vocabulary fall back to their UTF-8 bytes, and decode back.
    let ids = t.encode("hé", false).unwrap();
    assert_eq!(pieces(&t, &ids), ["h", "<0xC3>", "<0xA9>"]);
    assert_eq!(t.decode(&ids).unwrap(), "hé");
    // User-defined pieces are matched whole; control tokens are special.
    let ids = t.encode("hello\n\nworld<eos>", false).unwrap();
    assert_eq!(
        pieces(&t, &ids),
        ["hello", "\n\n", "w", "or", "ld", "<eos>"]
    );
    assert_eq!(t.decode_skip_special(&ids).unwrap(), "hello\n\nworld");
}

#[test]
fn llama_style_spm_with_space_prefix() {
    let t = tokenizer(true);
    let ids = t.encode("hello world", false).unwrap();
    assert_eq!(pieces(&t, &ids), ["▁", "hello", "▁world"]);
    // The prefix space is stripped again on decoding.
    assert_eq!(t.decode(&ids).unwrap(), "hello world");
}

#[test]
fn unknown_tokenizer_models_name_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bert.gguf");
    let m = V::String("bert".into());
    let mut f = std::fs::File::create(&p).unwrap();
    gguf_file::write(&mut f, &[("tokenizer.ggml.model", &m)], &[]).unwrap();
    drop(f);
    let e = Tokenizer::from_gguf(&p).unwrap_err().to_string();
    assert!(
        e.contains("`bert`") && e.contains("gpt2") && e.contains("llama"),
        "{e}"
    );
}
