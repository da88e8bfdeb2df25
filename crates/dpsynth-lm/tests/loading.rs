//! Loading errors (truncated / foreign GGUF files, missing tokenizer) and the HF directory path.

mod common;

use std::io::{Read, Write};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::Device;
use dpsynth_lm::{load_model, LlamaConfig, LlamaWeights, Tokenizer};

fn err_of<T: std::fmt::Debug>(r: dpsynth_lm::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn missing_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_of(load_model(&dir.path().join("nope.gguf"), &Device::Cpu));
    assert!(e.contains("model not found"), "{e}");

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a gguf file").unwrap();
    let e = err_of(load_model(&junk, &Device::Cpu));
    assert!(
        e.contains("junk.gguf") && e.contains("not a readable GGUF"),
        "{e}"
    );

    // A valid GGUF of another architecture.
    let bert = dir.path().join("bert.gguf");
    let mut f = std::fs::File::create(&bert).unwrap();
    let arch = Value::String("bert".into());
    let model = Value::String("gpt2".into());
    gguf_file::write(
        &mut f,
        &[
            ("general.architecture", &arch),
            ("tokenizer.ggml.model", &model),
        ],
        &[],
    )
    .unwrap();
    drop(f);
    let e = err_of(load_model(&bert, &Device::Cpu));
    assert!(
        e.contains("bert.gguf") && e.contains("architecture is `bert`"),
        "{e}"
    );

    // A GGUF without a tokenizer.
    let notok = dir.path().join("notok.gguf");
    let mut f = std::fs::File::create(&notok).unwrap();
    let arch = Value::String("llama".into());
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[]).unwrap();
    drop(f);
    let e = err_of(Tokenizer::from_gguf(&notok));
    assert!(e.contains("no tokenizer"), "{e}");

    // A Hugging Face directory without tokenizer.json.
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    std::fs::write(
        hf.join("config.json"),
        dpsynth_lm::load::hf_config_json(&LlamaConfig::tiny()).to_string(),
    )
    .unwrap();
    let e = err_of(load_model(&hf, &Device::Cpu));
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn truncated_smollm2_gguf_is_a_clear_error() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut head = vec![0u8; 8 << 20];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::File::create(&cut)
        .unwrap()
        .write_all(&head)
        .unwrap();
    let e = err_of(load_model(&cut, &Device::Cpu));
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    let tiny = dir.path().join("tiny.gguf");
    std::fs::write(&tiny, &head[..4096]).unwrap();
    let e = err_of(load_model(&tiny, &Device::Cpu));
    assert!(e.contains("tiny.gguf") && e.contains("GGUF"), "{e}");
}

#[test]
fn hf_directory_round_trip_with_tokenizer_json() {
    // Save tiny random weights as a HF directory, add a tokenizer.json, and load it back.
    let Some(minilm_tok) = dpsynth_testkit::asset("minilm/tokenizer.json") else {
        return;
    };
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    dpsynth_lm::adapter::save_hf_model(&w, dir.path()).unwrap();
    std::fs::copy(&minilm_tok, dir.path().join("tokenizer.json")).unwrap();
    let (back, tok) = load_model(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(back.config, w.config);
    let ids = [3u32, 9, 27];
    let a = dpsynth_lm::forward_logits(&w, None, &ids).unwrap();
    let b = dpsynth_lm::forward_logits(&back, None, &ids).unwrap();
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
    let enc = tok.encode("hello world", false).unwrap();
    assert_eq!(tok.decode(&enc).unwrap(), "hello world");
}
