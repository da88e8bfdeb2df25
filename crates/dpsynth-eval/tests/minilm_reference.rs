//! all-MiniLM-L6-v2 against the Python reference (tests/fixtures/minilm_reference.json, copied
//! from /work/shared/reference/minilm_reference.json): token ids identical, cosine ≥ 0.9999,
//! including the empty string and a text past the 256-token limit. Skips without the assets.

use candle_core::Device;
use dpsynth_eval::embed::{find_minilm_dir, MiniLm};
use dpsynth_eval::Progress;

#[test]
fn minilm_matches_reference() {
    let Some(dir) = dpsynth_testkit::found("assets/minilm", find_minilm_dir(None)) else {
        return;
    };
    let model = MiniLm::load(&dir, &Device::Cpu).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts.iter().any(String::is_empty),
        "fixture covers the empty string"
    );
    // batch of mixed lengths: padding must not change any embedding
    let emb = model.embed(&texts, 8, &Progress::hidden()).unwrap();
    let mut saw_truncated = false;
    for (i, c) in cases.iter().enumerate() {
        let want_ids: Vec<u32> = c["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = model.tokenize(&texts[i]).unwrap();
        assert_eq!(ids, want_ids, "token ids of case {i}");
        saw_truncated |= ids.len() == 256;
        let want: Vec<f32> = c["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = emb.row(i);
        let dot: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let na: f64 = got.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (na * nb);
        assert!(cos >= 0.9999, "case {i}: cosine {cos}");
        assert!((na - 1.0).abs() < 1e-4, "L2-normalized");
        // one-at-a-time equals batched
        let single = model.embed(&texts[i..=i], 1, &Progress::hidden()).unwrap();
        let d: f32 = single
            .row(0)
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-4, "case {i}: batched vs single differ by {d}");
    }
    assert!(saw_truncated, "fixture covers truncation at 256 tokens");
}

#[test]
fn embedding_cache_roundtrip() {
    let Some(dir) = dpsynth_testkit::found("assets/minilm", find_minilm_dir(None)) else {
        return;
    };
    let model = MiniLm::load(&dir, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let texts = vec!["a fine film".to_string(), "dull".to_string()];
    let (a, hit_a) = model
        .embed_cached(&texts, Some(tmp.path()), &Progress::hidden())
        .unwrap();
    let (b, hit_b) = model
        .embed_cached(&texts, Some(tmp.path()), &Progress::hidden())
        .unwrap();
    assert!(!hit_a && hit_b, "second call reads the cache");
    assert_eq!(a, b);
    let other = vec!["a fine film".to_string(), "dull!".to_string()];
    assert_ne!(model.cache_key(&texts), model.cache_key(&other));
}
