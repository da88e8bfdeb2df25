//! Unit tests on tiny random models: masks, padding, KV cache, adapters, sampling.

use candle_core::{DType, Device, IndexOp, Tensor};
use dpsynth_lm::generate::sample_token;
use dpsynth_lm::load::{permute_qk, unpermute_qk};
use dpsynth_lm::{
    forward_logits, forward_logits_batch, sequence_loss, Adapter, GenRequest, Generator,
    GeneratorOptions, LlamaConfig, LlamaWeights, LoraAdapter, LoraConfig, PromptAdapter,
    SamplingParams, WeightFormat,
};
use rand::SeedableRng;

fn tiny() -> LlamaWeights {
    LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 7).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn lora(w: &LlamaWeights, targets: &[&str], seed: u64) -> LoraAdapter {
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: targets.iter().map(|s| s.to_string()).collect(),
    };
    let mut l = LoraAdapter::init(&cfg, &w.config, seed, &Device::Cpu).unwrap();
    // Non-zero B so the adapter changes the output.
    for (i, b) in l.b.values_mut().enumerate() {
        *b = (Tensor::randn(0f32, 0.3, b.dims(), &Device::Cpu).unwrap() * (1.0 + i as f64 * 0.01))
            .unwrap();
    }
    l
}

#[test]
fn logits_shape_and_causality() {
    let w = tiny();
    let ids = [3u32, 9, 27, 4, 11];
    let full = forward_logits(&w, None, &ids).unwrap();
    assert_eq!(full.dims(), &[5, 64]);
    // A prefix's logits do not depend on later tokens.
    let prefix = forward_logits(&w, None, &ids[..3]).unwrap();
    assert!(max_abs_diff(&full.narrow(0, 0, 3).unwrap(), &prefix) < 1e-4);
}

#[test]
fn left_and_right_padded_batch_equals_individual_sequences() {
    let w = tiny();
    let a = [5u32, 8, 13, 21, 34, 55];
    let b = [7u32, 9, 11];
    let la = forward_logits(&w, None, &a).unwrap();
    let lb = forward_logits(&w, None, &b).unwrap();
    // Left padding (pad id 0).
    let toks = Tensor::new(&[a, [0, 0, 0, 7, 9, 11]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u8; 6], [0, 0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
    let out = forward_logits_batch(&w, None, &toks, Some(&mask)).unwrap();
    assert!(max_abs_diff(&out.i(0).unwrap(), &la) < 1e-4);
    assert!(max_abs_diff(&out.i(1).unwrap().narrow(0, 3, 3).unwrap(), &lb) < 1e-4);
    // Right padding.
    let toks = Tensor::new(&[a, [7, 9, 11, 0, 0, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u8; 6], [1, 1, 1, 0, 0, 0]], &Device::Cpu).unwrap();
    let out = forward_logits_batch(&w, None, &toks, Some(&mask)).unwrap();
    assert!(max_abs_diff(&out.i(1).unwrap().narrow(0, 0, 3).unwrap(), &lb) < 1e-4);
    // Without the mask the padded row differs (the mask does something).
    let out = forward_logits_batch(&w, None, &toks, None).unwrap();
    assert!(max_abs_diff(&out.i(1).unwrap().narrow(0, 0, 3).unwrap(), &lb) < 1e-4);
    let toks = Tensor::new(&[[0u32, 0, 0, 7, 9, 11]], &Device::Cpu).unwrap();
    let out = forward_logits_batch(&w, None, &toks, None).unwrap();
    assert!(max_abs_diff(&out.i(0).unwrap().narrow(0, 3, 3).unwrap(), &lb) > 1e-3);
}

#[test]
fn sequence_loss_matches_log_softmax() {
    let w = tiny();
    let ids = [3u32, 9, 27, 4, 11, 50];
    let logits = forward_logits(&w, None, &ids).unwrap();
    let lp = dpsynth_lm::model::log_softmax(&logits).unwrap();
    let lp: Vec<Vec<f32>> = lp.to_vec2().unwrap();
    let want: f64 = (2..5).map(|i| -(lp[i - 1][ids[i] as usize] as f64)).sum();
    let got = sequence_loss(&w, None, &ids, 2..5).unwrap();
    assert_eq!(got.count, 3);
    assert!((got.sum - want).abs() < 1e-4, "{} vs {want}", got.sum);
    assert!((got.mean() - want / 3.0).abs() < 1e-4);
    assert!(sequence_loss(&w, None, &ids, 0..3).is_err());
    assert!(sequence_loss(&w, None, &ids, 2..7).is_err());
}

#[test]
fn qk_permutation_round_trips_and_matches_interleaved_rope() {
    let w = tiny();
    let wq = &w.layers[0].wq;
    let nh = w.config.num_attention_heads;
    let back = unpermute_qk(&permute_qk(wq, nh).unwrap(), nh).unwrap();
    assert_eq!(max_abs_diff(wq, &back), 0.0);
    // rotate-half rope on HF rows == interleaved rope on GGUF-permuted rows (after permuting back).
    let hd = w.config.head_dim();
    let x = Tensor::randn(0f32, 1.0, (3, w.config.hidden_size), &Device::Cpu).unwrap();
    let pos = Tensor::new(&[[0f32, 1.0, 2.0]], &Device::Cpu).unwrap();
    let (cos, sin) = dpsynth_lm::model::rope_tables(&w.config, &pos).unwrap();
    let heads = |m: &Tensor| {
        x.matmul(&m.t().unwrap())
            .unwrap()
            .reshape((1, 3, nh, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let hf = dpsynth_lm::model::apply_rope(&heads(wq), &cos, &sin).unwrap();
    let gg = candle_nn::rotary_emb::rope_i(
        &heads(&permute_qk(wq, nh).unwrap()),
        &cos.squeeze(0).unwrap(),
        &sin.squeeze(0).unwrap(),
    )
    .unwrap();
    // Undo the permutation on the head dimension of the interleaved result.
    let gg = gg
        .reshape((1, nh, 3, hd / 2, 2))
        .unwrap()
        .transpose(3, 4)
        .unwrap()
        .reshape((1, nh, 3, hd))
        .unwrap();
    assert!(max_abs_diff(&hf, &gg) < 1e-5);
}

#[test]
fn lora_forward_equals_merged_weights_and_zero_b_is_identity() {
    let w = tiny();
    let ids = [3u32, 9, 27, 4, 11];
    let base = forward_logits(&w, None, &ids).unwrap();
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: ["q_proj", "v_proj", "down_proj"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let fresh = Adapter::Lora(LoraAdapter::init(&cfg, &w.config, 1, &Device::Cpu).unwrap());
    assert!(max_abs_diff(&forward_logits(&w, Some(&fresh), &ids).unwrap(), &base) < 1e-6);
    let all = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    let l = lora(&w, &all, 3);
    let a = Adapter::Lora(l.clone());
    let with = forward_logits(&w, Some(&a), &ids).unwrap();
    assert!(max_abs_diff(&with, &base) > 1e-2);
    let merged = l.merge_into(&w).unwrap();
    assert!(max_abs_diff(&forward_logits(&merged, None, &ids).unwrap(), &with) < 1e-3);
    let full = Adapter::Full(Box::new(merged));
    assert!(max_abs_diff(&forward_logits(&w, Some(&full), &ids).unwrap(), &with) < 1e-3);
}

#[test]
fn adapters_round_trip_through_disk() {
    let w = tiny();
    let ids = [3u32, 9, 27, 4, 11];
    let dir = tempfile::tempdir().unwrap();
    let adapters = [
        Adapter::Lora(lora(&w, &["q_proj", "v_proj", "up_proj"], 5)),
        Adapter::Prompt(PromptAdapter::init_from_vocab(&w, &[4, 5, 6], 3).unwrap()),
        Adapter::Full(Box::new(lora(&w, &["o_proj"], 6).merge_into(&w).unwrap())),
    ];
    for (i, a) in adapters.iter().enumerate() {
        let p = dir.path().join(format!("a{i}"));
        a.save(&p).unwrap();
        let b = Adapter::load(&p, &w.config, &Device::Cpu).unwrap();
        assert_eq!(std::mem::discriminant(a), std::mem::discriminant(&b));
        let la = forward_logits(&w, Some(a), &ids).unwrap();
        let lb = forward_logits(&w, Some(&b), &ids).unwrap();
        assert_eq!(max_abs_diff(&la, &lb), 0.0, "adapter {i}");
    }
    // PEFT layout.
    let p = dir.path().join("a0");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    let st =
        candle_core::safetensors::load(p.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(
        st["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"].dims(),
        &[4, 32]
    );
    assert_eq!(
        st["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"].dims(),
        &[48, 4]
    );
}

#[test]
fn adapter_for_another_base_model_is_a_clear_error() {
    let w = tiny();
    let dir = tempfile::tempdir().unwrap();
    Adapter::Lora(lora(&w, &["q_proj"], 1))
        .save(dir.path())
        .unwrap();
    let mut other = LlamaConfig::tiny();
    other.hidden_size = 64;
    let err = Adapter::load(dir.path(), &other, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("adapter_model.safetensors"), "{err}");
    assert!(err.contains("different base model"), "{err}");
    let mut fewer = LlamaConfig::tiny();
    fewer.num_hidden_layers = 1;
    let err = Adapter::load(dir.path(), &fewer, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 1"), "{err}");
    let err = Adapter::load(&dir.path().join("nope"), &w.config, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an adapter directory"), "{err}");
}

#[test]
fn prompt_adapter_prepends_virtual_tokens() {
    let w = tiny();
    let ids = [3u32, 9, 27];
    // Virtual tokens equal to real token embeddings == those tokens in the input.
    let p = Adapter::Prompt(PromptAdapter::init_from_vocab(&w, &[40, 41], 2).unwrap());
    let with = forward_logits(&w, Some(&p), &ids).unwrap();
    assert_eq!(with.dims(), &[3, 64]);
    let plain = forward_logits(&w, None, &[40, 41, 3, 9, 27]).unwrap();
    assert!(max_abs_diff(&with, &plain.narrow(0, 2, 3).unwrap()) < 1e-4);
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_new_tokens: n,
        ..Default::default()
    }
}

fn run(g: &Generator, reqs: Vec<GenRequest>, p: &SamplingParams) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); reqs.len()];
    let mut order = Vec::new();
    g.generate(reqs, p, |o| {
        order.push(o.index);
        out[o.index] = o.tokens;
        Ok(())
    })
    .unwrap();
    assert_eq!(order.len(), out.len());
    out
}

#[test]
fn cached_greedy_decode_equals_full_forward() {
    let w = tiny();
    let prompts: Vec<Vec<u32>> = vec![vec![3, 9, 27], vec![5, 6, 7, 8, 9, 10, 11], vec![60]];
    let reqs: Vec<GenRequest> = prompts
        .iter()
        .map(|p| GenRequest {
            prompt_ids: p.clone(),
            seed: 0,
        })
        .collect();
    for adapter in [
        None,
        Some(Adapter::Lora(lora(
            &w,
            &["q_proj", "k_proj", "gate_proj"],
            2,
        ))),
        Some(Adapter::Prompt(
            PromptAdapter::init_random(3, 32, 0.5, 1, &Device::Cpu).unwrap(),
        )),
    ] {
        let want: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| dpsynth_lm::model::greedy_reference(&w, adapter.as_ref(), p, 12).unwrap())
            .collect();
        for bs in [1, 2, 8] {
            let opts = GeneratorOptions {
                batch_size: bs,
                weights: WeightFormat::F32,
            };
            let g = Generator::new(&w, adapter.as_ref(), opts, &Device::Cpu).unwrap();
            // Cached logits equal the reference forward's last-position logits.
            let full = forward_logits(&w, adapter.as_ref(), &prompts[1]).unwrap();
            let got = g.next_token_logits(&prompts[1]).unwrap();
            assert!(max_abs_diff(&full.i(6).unwrap(), &got) < 1e-4);
            assert_eq!(run(&g, reqs.clone(), &greedy(12)), want, "batch {bs}");
        }
    }
}

#[test]
fn sampling_is_seeded_per_request_and_batch_independent() {
    let w = tiny();
    let reqs: Vec<GenRequest> = (0..5)
        .map(|i| GenRequest {
            prompt_ids: vec![3 + i as u32; 1 + i],
            seed: 100 + i as u64,
        })
        .collect();
    let p = SamplingParams {
        temperature: 1.0,
        top_k: Some(20),
        top_p: Some(0.9),
        max_new_tokens: 10,
        stop_tokens: vec![2],
    };
    let mk = |bs| {
        Generator::new(
            &w,
            None,
            GeneratorOptions {
                batch_size: bs,
                weights: WeightFormat::F32,
            },
            &Device::Cpu,
        )
        .unwrap()
    };
    let a = run(&mk(1), reqs.clone(), &p);
    let b = run(&mk(3), reqs.clone(), &p);
    assert_eq!(a, b);
    assert!(a.iter().all(|t| t.len() <= 10 && !t.contains(&2)));
    // Different seeds give different samples.
    let mut r2 = reqs.clone();
    for r in &mut r2 {
        r.seed += 1000;
    }
    assert_ne!(run(&mk(3), r2, &p), a);
}

#[test]
fn q8_generator_stays_close_to_f32() {
    let mut cfg = LlamaConfig::tiny();
    cfg.hidden_size = 64; // Q8_0 needs widths that are multiples of 32
    cfg.intermediate_size = 96;
    let w = LlamaWeights::random(&cfg, &Device::Cpu, 3).unwrap();
    let prompt = [3u32, 9, 27, 4];
    let f = forward_logits(&w, None, &prompt).unwrap().i(3).unwrap();
    let g = Generator::new(
        &w,
        None,
        GeneratorOptions {
            batch_size: 2,
            weights: WeightFormat::Q8_0,
        },
        &Device::Cpu,
    )
    .unwrap();
    let q = g.next_token_logits(&prompt).unwrap();
    let scale = f.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let d = max_abs_diff(&f, &q);
    assert!(d < 0.05 * scale, "q8 logits differ by {d} (scale {scale})");
    assert!(d > 0.0, "Q8_0 path should not be bit-identical to f32");
}

#[test]
fn bf16_generator_stays_close_to_f32() {
    // Odd widths exercise the kernel's padding (k not a multiple of 2, n not of the panel width).
    let mut cfg = LlamaConfig::tiny();
    cfg.intermediate_size = 37;
    let w = LlamaWeights::random(&cfg, &Device::Cpu, 4).unwrap();
    let prompt = [3u32, 9, 27, 4];
    let f = forward_logits(&w, None, &prompt).unwrap();
    let ad = Adapter::Lora(lora(&w, &["q_proj", "down_proj"], 2));
    let g = Generator::new(
        &w,
        Some(&ad),
        GeneratorOptions {
            batch_size: 2,
            weights: "bf16".parse().unwrap(),
        },
        &Device::Cpu,
    )
    .unwrap();
    let g0 = Generator::new(
        &w,
        None,
        GeneratorOptions {
            batch_size: 2,
            weights: WeightFormat::Bf16,
        },
        &Device::Cpu,
    )
    .unwrap();
    let all = g0.prompt_logits(&prompt).unwrap();
    assert_eq!(all.dims(), f.dims());
    let scale = f
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let d = max_abs_diff(&f, &all);
    assert!(
        d < 0.02 * scale,
        "bf16 logits differ by {d} (scale {scale})"
    );
    assert!(d > 0.0, "bf16 path should not be bit-identical to f32");
    // The LoRA delta is merged before packing: bf16 with the adapter follows the f32 reference
    // forward with the adapter (which differs from the base model).
    let la = g.next_token_logits(&prompt).unwrap();
    let fa = forward_logits(&w, Some(&ad), &prompt)
        .unwrap()
        .i(3)
        .unwrap();
    assert!(max_abs_diff(&fa, &f.i(3).unwrap()) > 0.1 * scale);
    let da = max_abs_diff(&la, &fa);
    assert!(da < 0.02 * scale, "bf16 + LoRA logits differ by {da}");
    // next_token_logits is the last row of prompt_logits.
    assert!(max_abs_diff(&g0.next_token_logits(&prompt).unwrap(), &all.i(3).unwrap()) < 1e-5);
    assert_eq!(
        "auto".parse::<WeightFormat>().unwrap(),
        WeightFormat::default()
    );
}

#[test]
fn stop_tokens_and_limits() {
    let w = tiny();
    let g = Generator::new(&w, None, GeneratorOptions::default(), &Device::Cpu).unwrap();
    let prompt = vec![3u32, 9];
    let first = run(
        &g,
        vec![GenRequest {
            prompt_ids: prompt.clone(),
            seed: 0,
        }],
        &greedy(5),
    );
    let stop = first[0][2];
    let mut p = greedy(5);
    p.stop_tokens = vec![stop];
    let mut stopped = false;
    g.generate(
        vec![GenRequest {
            prompt_ids: prompt.clone(),
            seed: 0,
        }],
        &p,
        |o| {
            stopped = o.stopped;
            assert_eq!(
                o.tokens,
                first[0][..first[0].iter().position(|&t| t == stop).unwrap()]
            );
            Ok(())
        },
    )
    .unwrap();
    assert!(stopped);
    // A prompt longer than the context is refused with a clear error.
    let long = vec![3u32; 200];
    let err = g
        .generate(
            vec![GenRequest {
                prompt_ids: long,
                seed: 0,
            }],
            &greedy(4),
            |_| Ok(()),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("context"), "{err}");
    // Generation stops at the end of the context.
    let near = vec![3u32; 120];
    let out = run(
        &g,
        vec![GenRequest {
            prompt_ids: near,
            seed: 0,
        }],
        &greedy(50),
    );
    assert!(out[0].len() <= 8, "{}", out[0].len());
}

#[test]
fn sampler_respects_top_k_top_p_and_temperature() {
    let logits: Vec<f32> = (0..100).map(|i| -(i as f32) * 0.1).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let p = |t, k, tp| SamplingParams {
        temperature: t,
        top_k: k,
        top_p: tp,
        ..Default::default()
    };
    assert_eq!(sample_token(&logits, &p(0.0, None, None), &mut rng), 0);
    for _ in 0..300 {
        assert!(sample_token(&logits, &p(1.0, Some(5), None), &mut rng) < 5);
    }
    // top_p = 0.2 over a softmax with ratio e^-0.1 per step: nucleus is the first few tokens.
    let probs: Vec<f64> = {
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        logits.iter().map(|&l| (l as f64).exp() / z).collect()
    };
    let mut mass = 0.0;
    let nucleus = probs
        .iter()
        .position(|&q| {
            mass += q;
            mass >= 0.2
        })
        .unwrap()
        + 1;
    let mut seen = vec![0usize; 100];
    for _ in 0..2000 {
        seen[sample_token(&logits, &p(1.0, None, Some(0.2)), &mut rng) as usize] += 1;
    }
    assert!(seen[nucleus..].iter().all(|&c| c == 0));
    assert!(seen[..nucleus].iter().all(|&c| c > 0));
    // Low temperature concentrates on the argmax.
    let hot = (0..500)
        .filter(|_| sample_token(&logits, &p(0.001, None, None), &mut rng) == 0)
        .count();
    assert_eq!(hot, 500);
    let _ = DType::F32;
}
