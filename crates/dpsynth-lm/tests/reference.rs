//! SmolLM2-135M-Instruct against the transformers reference
//! (tests/fixtures/smollm2_reference.json, copied from /work/shared/reference/).
//! Skips with a message when the GGUF asset is absent.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use dpsynth_lm::model::{greedy_reference, log_softmax, top_k};
use dpsynth_lm::{
    forward_logits, sequence_loss, GenRequest, Generator, GeneratorOptions, SamplingParams,
    WeightFormat,
};

#[test]
fn smollm2_matches_transformers() {
    let Some((w, tok)) = common::smollm2() else {
        return;
    };
    let r = common::read_json("smollm2_reference.json");
    assert_eq!(w.config.num_hidden_layers, 30);
    assert_eq!(w.config.num_key_value_heads, 3);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    for case in r["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want_ids = common::ids(&case["token_ids"]);
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(ids, want_ids, "token ids of {text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), case["decoded"].as_str().unwrap());

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
    let g = &r["greedy"];
    let prompt = tok.encode(g["prompt"].as_str().unwrap(), false).unwrap();
    let out = greedy_reference(w, None, &prompt, 16).unwrap();
    assert_eq!(out, common::ids(&g["greedy_16_ids"]));
    assert_eq!(
        tok.decode(&out).unwrap(),
        g["greedy_16_text"].as_str().unwrap()
    );
}

/// The bf16 generator (packed bf16 weights, bf16-rounded activations, f32 accumulation) against
/// the same transformers reference. It is a quantized path, so the bounds are looser than the f32
/// test's; they were set from the measured errors (printed; run with `--nocapture`) with about
/// 2x headroom. Measured (4 reference prompts): top-10 order identical on 3 prompts (6/10 on the
/// emoji prompt, whose 10th and 11th tokens are a near-tie that swaps with float-level changes),
/// max |logit - reference| on the reference top-10 0.05-0.11, |mean CE - reference| at most
/// 0.021 nats (2-token "The movie was"; relative 2e-3), greedy 16/16.
/// Bounds: top-1 identical, the reference top-5 within our top-10, logits within 0.25, mean CE
/// within 0.05 nats, and the 16-token greedy continuation identical.
#[test]
fn smollm2_bf16_generator_vs_transformers() {
    let Some((w, tok)) = common::smollm2() else {
        return;
    };
    let r = common::read_json("smollm2_reference.json");
    let g = Generator::new(
        w,
        None,
        GeneratorOptions {
            batch_size: 1,
            weights: WeightFormat::Bf16,
        },
        &Device::Cpu,
    )
    .unwrap();
    let mut failures = Vec::new();
    for case in r["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text, false).unwrap();
        let logits = g.prompt_logits(&ids).unwrap();
        let last = logits.i(ids.len() - 1).unwrap();
        let (top, vals) = top_k(&last, 10).unwrap();
        let want_top = common::ids(&case["last_top10_ids"]);
        let want_vals = common::floats(&case["last_top10_logits"]);
        // Logit error on the reference's top-10 ids (whatever our order).
        let lastv: Vec<f32> = last.to_vec1().unwrap();
        let max_err = want_top
            .iter()
            .zip(&want_vals)
            .map(|(&i, &v)| (lastv[i as usize] - v).abs())
            .fold(0f32, f32::max);
        let same_prefix = top
            .iter()
            .zip(&want_top)
            .take_while(|(a, b)| a == b)
            .count();
        let lp = log_softmax(&logits.narrow(0, 0, ids.len() - 1).unwrap()).unwrap();
        let tgt = Tensor::new(&ids[1..], &Device::Cpu)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let ce = -lp
            .gather(&tgt, 1)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let want_ce = case["mean_next_token_ce"].as_f64().unwrap();
        println!(
            "bf16 {text:?}: top-10 identical prefix {same_prefix}/10, same set {}, max |logit - ref| \
             on ref top-10 {max_err:.4} (top-1 {:.4}), CE {ce:.5} vs {want_ce:.5} (diff {:.2e})",
            want_top.iter().all(|i| top.contains(i)),
            (vals[0] - want_vals[0]).abs(),
            (ce - want_ce).abs()
        );
        if top[0] != want_top[0] {
            failures.push(format!("top-1 of {text:?}: {} vs {}", top[0], want_top[0]));
        }
        // Near-ties deeper in the list may swap (the 10th and 11th reference logits can be
        // closer than the bf16 noise), so only the reference top-5 must stay in our top-10.
        if !want_top[..5].iter().all(|i| top.contains(i)) {
            failures.push(format!(
                "top-5 of {text:?} not in our top-10: {top:?} vs {want_top:?}"
            ));
        }
        if max_err >= 0.25 {
            failures.push(format!("logits off by {max_err} for {text:?}"));
        }
        if (ce - want_ce).abs() >= 0.05 {
            failures.push(format!("CE {ce} vs {want_ce} for {text:?}"));
        }
    }
    let gr = &r["greedy"];
    let prompt = tok.encode(gr["prompt"].as_str().unwrap(), false).unwrap();
    let mut out = Vec::new();
    g.generate(
        vec![GenRequest {
            prompt_ids: prompt,
            seed: 0,
        }],
        &SamplingParams {
            temperature: 0.0,
            max_new_tokens: 16,
            ..Default::default()
        },
        |o| {
            out = o.tokens;
            Ok(())
        },
    )
    .unwrap();
    let want = common::ids(&gr["greedy_16_ids"]);
    let agree = out.iter().zip(&want).take_while(|(a, b)| a == b).count();
    println!(
        "bf16 greedy 16: {agree}/16 tokens identical: {:?}",
        tok.decode(&out).unwrap()
    );
    if out != want {
        failures.push(format!("greedy continuation {out:?} vs {want:?}"));
    }
    assert!(
        failures.is_empty(),
        "bf16 generator vs reference: {failures:#?}"
    );
}
