//! SmolLM2-135M-Instruct against the transformers reference
//! (tests/fixtures/smollm2_reference.json, copied from /work/shared/reference/).
//! Skips with a message when the GGUF asset is absent.

mod common;

use candle_core::IndexOp;
use dpsynth_lm::model::{greedy_reference, top_k};
use dpsynth_lm::{forward_logits, sequence_loss};

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
