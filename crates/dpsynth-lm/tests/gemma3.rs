//! Gemma 3 270M (GGUF Q4_K_M) against the transformers reference
//! (tests/fixtures/gemma3_270m_reference.json, copied from /work/shared/reference/; see
//! tests/fixtures/README.md). The GGUF comes from `scripts/fetch-assets.sh`
//! (`$DPSYNTH_ASSETS/gemma3/gemma-3-270m-q4_k_m.gguf`): a skip with a message when it is
//! missing, a failure under `DPSYNTH_REQUIRE_ASSETS=1`.

mod common;

use std::sync::OnceLock;

use candle_core::{Device, IndexOp};
use dpsynth_lm::config::{LayerType, ModelType};
use dpsynth_lm::model::top_k;
use dpsynth_lm::{
    forward_logits, sequence_loss, GenRequest, Generator, GeneratorOptions, LlamaWeights,
    SamplingParams, Tokenizer, WeightFormat,
};

fn gemma3() -> Option<&'static (LlamaWeights, Tokenizer)> {
    static MODEL: OnceLock<Option<(LlamaWeights, Tokenizer)>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let p = dpsynth_testkit::asset("gemma3/gemma-3-270m-q4_k_m.gguf")?;
            Some(dpsynth_lm::load_model(&p, &Device::Cpu).expect("load Gemma 3 GGUF"))
        })
        .as_ref()
}

fn greedy_run(g: &Generator, prompt: &[u32], n: usize) -> Vec<u32> {
    let p = SamplingParams {
        temperature: 0.0,
        max_new_tokens: n,
        ..Default::default()
    };
    let mut out = Vec::new();
    g.generate(
        vec![GenRequest {
            prompt_ids: prompt.to_vec(),
            seed: 0,
        }],
        &p,
        |o| {
            out = o.tokens;
            Ok(())
        },
    )
    .unwrap();
    out
}

#[test]
fn gemma3_270m_matches_transformers() {
    let Some((w, tok)) = gemma3() else {
        return;
    };
    let r = common::read_json("gemma3_270m_reference.json");
    let rc = &r["config"];
    let c = &w.config;
    assert_eq!(c.model_type, ModelType::Gemma3Text);
    assert_eq!(c.hidden_size as u64, rc["hidden_size"].as_u64().unwrap());
    assert_eq!(
        c.intermediate_size as u64,
        rc["intermediate_size"].as_u64().unwrap()
    );
    assert_eq!(
        c.num_hidden_layers as u64,
        rc["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        c.num_attention_heads as u64,
        rc["num_attention_heads"].as_u64().unwrap()
    );
    assert_eq!(
        c.num_key_value_heads as u64,
        rc["num_key_value_heads"].as_u64().unwrap()
    );
    assert_eq!(c.head_dim() as u64, rc["head_dim"].as_u64().unwrap());
    assert_eq!(c.vocab_size as u64, rc["vocab_size"].as_u64().unwrap());
    assert_eq!(
        c.sliding_window,
        rc["sliding_window"].as_u64().map(|x| x as usize)
    );
    let want_types: Vec<LayerType> = serde_json::from_value(rc["layer_types"].clone()).unwrap();
    assert_eq!(c.layer_types.as_ref(), Some(&want_types));
    let rp = &rc["rope_parameters"];
    assert_eq!(
        Some(c.rope_theta),
        rp["full_attention"]["rope_theta"].as_f64()
    );
    assert_eq!(
        c.rope_local_base_freq,
        rp["sliding_attention"]["rope_theta"].as_f64()
    );
    assert_eq!(
        c.query_pre_attn_scalar,
        rc["query_pre_attn_scalar"].as_f64()
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.eos_id(), Some(1));

    for case in r["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want_ids = common::ids(&case["token_ids"]);
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids, want_ids, "token ids of {text:?}");
        assert_eq!(
            tok.decode_skip_special(&ids).unwrap(),
            text,
            "decode of {text:?}"
        );

        let logits = forward_logits(w, None, &ids).unwrap();
        let last = logits.i(ids.len() - 1).unwrap();
        let (top, vals) = top_k(&last, 10).unwrap();
        assert_eq!(
            top,
            common::ids(&case["last_top10_ids"]),
            "top-10 of {text:?}"
        );
        for (a, b) in vals.iter().zip(common::floats(&case["last_top10_logits"])) {
            assert!(
                (a - b).abs() < 2e-2,
                "logit {a} vs reference {b} for {text:?}"
            );
        }
        let ce = sequence_loss(w, None, &ids, 1..ids.len()).unwrap().mean();
        let want = case["mean_next_token_ce"].as_f64().unwrap();
        assert!(
            (ce - want).abs() < 1e-3,
            "CE {ce} vs reference {want} for {text:?}"
        );
    }

    // Greedy continuation with the generator (f32: exact up to rounding).
    let g = &r["greedy"];
    let prompt = tok.encode(g["prompt"].as_str().unwrap(), true).unwrap();
    let gen = Generator::new(
        w,
        None,
        GeneratorOptions {
            batch_size: 1,
            weights: WeightFormat::F32,
        },
        &Device::Cpu,
    )
    .unwrap();
    let out = greedy_run(&gen, &prompt, 16);
    assert_eq!(out, common::ids(&g["greedy_16_ids"]));
    assert_eq!(
        tok.decode(&out).unwrap(),
        g["greedy_16_text"].as_str().unwrap()
    );
}

#[test]
fn gemma3_270m_bf16_generator_vs_transformers() {
    let Some((w, tok)) = gemma3() else {
        return;
    };
    let r = common::read_json("gemma3_270m_reference.json");
    let gen = Generator::new(
        w,
        None,
        GeneratorOptions {
            batch_size: 1,
            weights: WeightFormat::Bf16,
        },
        &Device::Cpu,
    )
    .unwrap();
    let mut worst = 0f32;
    for case in r["cases"].as_array().unwrap() {
        let ids = common::ids(&case["token_ids"]);
        let last = gen.next_token_logits(&ids).unwrap();
        let (top, _) = top_k(&last, 10).unwrap();
        let want = common::ids(&case["last_top10_ids"]);
        let vals: Vec<f32> = last.to_vec1().unwrap();
        for (&id, b) in want.iter().zip(common::floats(&case["last_top10_logits"])) {
            worst = worst.max((vals[id as usize] - b).abs());
        }
        let mut a = top.clone();
        let mut b = want.clone();
        a.sort_unstable();
        b.sort_unstable();
        let shared = a.iter().filter(|x| b.contains(x)).count();
        assert!(
            shared >= 8,
            "bf16 top-10 shares only {shared} ids with the reference"
        );
    }
    eprintln!("Gemma 3 270M bf16 generator: max |logit - reference| over the top-10s: {worst:.3}");
    // Measured 0.058 (Intel Xeon, AVX-512 BF16 kernel).
    assert!(worst < 0.15, "bf16 logits off by {worst}");
    let g = &r["greedy"];
    let prompt = tok.encode(g["prompt"].as_str().unwrap(), true).unwrap();
    let out = greedy_run(&gen, &prompt, 16);
    let want = common::ids(&g["greedy_16_ids"]);
    let agree = out.iter().zip(&want).take_while(|(a, b)| a == b).count();
    eprintln!(
        "bf16 greedy: {:?} ({agree}/16 tokens as the reference)",
        tok.decode(&out).unwrap()
    );
    assert!(agree >= 8, "bf16 greedy diverges after {agree} tokens");
}
