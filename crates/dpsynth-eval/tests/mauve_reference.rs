//! MAUVE against the reference implementation (mauve-text + faiss): features and scores copied
//! from /work/shared/reference/mauve/ into tests/fixtures (see fixtures/SOURCES.md). With the
//! reference settings (PCA 0.9, k = 40, 5 redos, 500 iterations, 25 points, c = 5), our score
//! must land inside the reference's seed spread ± 0.05.

use candle_core::Device;
use dpsynth_eval::embed::Embeddings;
use dpsynth_eval::mauve::{mauve, MauveConfig};

#[test]
fn mauve_matches_reference_spread() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let feats =
        candle_core::safetensors::load(dir.join("mauve_features.safetensors"), &Device::Cpu)
            .unwrap();
    let get = |k: &str| {
        let t = &feats[k];
        let (n, d) = t.dims2().unwrap();
        Embeddings::new(n, d, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
    };
    let refj: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/mauve_reference.json")).unwrap();
    let p = get("p");
    for q in ["q_same", "q_rotten", "q_bbc"] {
        let seeds: Vec<f64> = refj["results"][q]["mauve_seeds_1_2_3"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let lo = seeds.iter().cloned().fold(f64::INFINITY, f64::min) - 0.05;
        let hi = seeds.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 0.05;
        for seed in [1u64, 2, 3] {
            let cfg = MauveConfig {
                seed,
                ..MauveConfig::default()
            };
            let r = mauve(&p, &get(q), &cfg).unwrap();
            assert_eq!(r.num_buckets, 40);
            eprintln!(
                "{q} seed {seed}: {:.4} (reference {seeds:?}), PCA dims {}",
                r.mauve, r.pca_dims
            );
            assert!(
                r.mauve >= lo && r.mauve <= hi,
                "{q} seed {seed}: {} outside [{lo}, {hi}]",
                r.mauve
            );
        }
    }
}
