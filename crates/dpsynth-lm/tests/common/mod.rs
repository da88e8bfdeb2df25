#![allow(dead_code)]
//! Helpers shared by the real-asset tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use dpsynth_lm::{LlamaWeights, Tokenizer};

/// `$DPSYNTH_ASSETS` or `<workspace>/assets`.
pub fn assets_dir() -> PathBuf {
    dpsynth_testkit::assets_dir()
}

/// The SmolLM2 GGUF: a skip when missing, a failure under `DPSYNTH_REQUIRE_ASSETS=1`.
pub fn smollm2_path() -> Option<PathBuf> {
    dpsynth_testkit::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The SmolLM2 model, loaded once per test binary.
pub fn smollm2() -> Option<&'static (LlamaWeights, Tokenizer)> {
    static MODEL: OnceLock<Option<(LlamaWeights, Tokenizer)>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let p = smollm2_path()?;
            Some(dpsynth_lm::load_model(&p, &Device::Cpu).expect("load SmolLM2 GGUF"))
        })
        .as_ref()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
