//! The llama family's variants (Qwen2, Qwen3, Gemma 3) on tiny random models:
//! - the reference forward (`forward_logits`) against a slow scalar implementation written
//!   here from each family's config semantics (Hugging Face `modeling_{llama,qwen2,qwen3,gemma3}`);
//! - the generator's greedy decoding (KV cache, batched) against the reference forward's argmax;
//! - config.json and GGUF round trips, and clear errors for unsupported architectures.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use dpsynth_lm::config::{LayerType, ModelType, RopeScaling};
use dpsynth_lm::load::{hf_config_json, load_model, permute_qk, read_hf_config};
use dpsynth_lm::model::greedy_reference;
use dpsynth_lm::{
    forward_logits, forward_logits_batch, GenRequest, Generator, GeneratorOptions, LlamaConfig,
    LlamaWeights, SamplingParams, WeightFormat,
};

const FAMILIES: [ModelType; 4] = [
    ModelType::Llama,
    ModelType::Qwen2,
    ModelType::Qwen3,
    ModelType::Gemma3Text,
];

fn err_of<T: std::fmt::Debug>(r: dpsynth_lm::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn v1(t: &Tensor) -> Vec<f64> {
    t.to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn v2(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect()
}

fn matvec(w: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    w.iter()
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

/// RMSNorm as each family defines it: llama/Qwen `x / rms(x) * w`, Gemma `x / rms(x) * (1 + w)`.
fn rms(x: &[f64], w: &[f64], eps: f64, gemma: bool) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, w)| v * r * if gemma { 1.0 + w } else { *w })
        .collect()
}

/// Rotate-half rope at position `pos` with base `base` (llama/Qwen/Gemma, HF layout).
fn rope(x: &mut [f64], pos: usize, base: f64) {
    let hd = x.len();
    for i in 0..hd / 2 {
        let theta = pos as f64 * base.powf(-2.0 * i as f64 / hd as f64);
        let (c, s) = (theta.cos(), theta.sin());
        let (a, b) = (x[i], x[i + hd / 2]);
        x[i] = a * c - b * s;
        x[i + hd / 2] = b * c + a * s;
    }
}

/// The slow reference: logits `[t][vocab]` of one unpadded sequence, in f64 scalar loops.
#[allow(clippy::needless_range_loop)]
fn slow_forward(w: &LlamaWeights, ids: &[u32]) -> Vec<Vec<f64>> {
    let c = &w.config;
    let gemma = c.model_type == ModelType::Gemma3Text;
    let (d, nh, nkv, hd) = (
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim(),
    );
    let eps = c.rms_norm_eps;
    let embed = v2(&w.embed);
    let t = ids.len();
    let mut xs: Vec<Vec<f64>> = ids
        .iter()
        .map(|&i| {
            let e = embed[i as usize].clone();
            if gemma {
                // Gemma3TextScaledWordEmbedding: times sqrt(hidden_size).
                e.iter().map(|v| v * (d as f64).sqrt()).collect()
            } else {
                e
            }
        })
        .collect();
    for (li, l) in w.layers.iter().enumerate() {
        let (wq, wk, wv, wo) = (v2(&l.wq), v2(&l.wk), v2(&l.wv), v2(&l.wo));
        let bias = |b: &Option<Tensor>, n: usize| b.as_ref().map(v1).unwrap_or(vec![0.0; n]);
        let (bq, bk, bv) = (
            bias(&l.bq, nh * hd),
            bias(&l.bk, nkv * hd),
            bias(&l.bv, nkv * hd),
        );
        let qn = l.q_norm.as_ref().map(v1);
        let kn = l.k_norm.as_ref().map(v1);
        // Gemma 3: layer_types picks sliding (local base, window) or full attention.
        let sliding = c
            .layer_types
            .as_ref()
            .is_some_and(|lt| lt[li] == LayerType::SlidingAttention);
        let base = if sliding {
            c.rope_local_base_freq.unwrap()
        } else {
            c.rope_theta
        };
        let scale = 1.0 / c.query_pre_attn_scalar.unwrap_or(hd as f64).sqrt();
        let attn_norm = v1(&l.attn_norm);
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let h = rms(x, &attn_norm, eps, gemma);
            let add = |y: Vec<f64>, b: &[f64]| -> Vec<f64> {
                y.iter().zip(b).map(|(a, b)| a + b).collect()
            };
            let q = add(matvec(&wq, &h), &bq);
            let k = add(matvec(&wk, &h), &bk);
            let v = add(matvec(&wv, &h), &bv);
            let heads = |y: Vec<f64>, n: usize, norm: &Option<Vec<f64>>| -> Vec<Vec<f64>> {
                (0..n)
                    .map(|hh| {
                        let mut s = y[hh * hd..(hh + 1) * hd].to_vec();
                        if let Some(nw) = norm {
                            s = rms(&s, nw, eps, gemma);
                        }
                        rope(&mut s, p, base);
                        s
                    })
                    .collect()
            };
            qs.push(heads(q, nh, &qn));
            ks.push(heads(k, nkv, &kn));
            vs.push(v);
        }
        let mut out = Vec::with_capacity(t);
        for i in 0..t {
            let mut o = vec![0.0; nh * hd];
            for hh in 0..nh {
                let kvh = hh / (nh / nkv);
                let visible: Vec<usize> = (0..=i)
                    .filter(|&j| !sliding || i - j < c.sliding_window.unwrap())
                    .collect();
                let sc: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        qs[i][hh]
                            .iter()
                            .zip(&ks[j][kvh])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (&j, ej) in visible.iter().zip(&e) {
                    for k in 0..hd {
                        o[hh * hd + k] += ej / z * vs[j][kvh * hd + k];
                    }
                }
            }
            let mut a = matvec(&wo, &o);
            if let Some(pn) = &l.post_attn_norm {
                a = rms(&a, &v1(pn), eps, gemma);
            }
            out.push(a);
        }
        let (wg, wu, wd) = (v2(&l.w_gate), v2(&l.w_up), v2(&l.w_down));
        let ffn_norm = v1(&l.ffn_norm);
        for (x, a) in xs.iter_mut().zip(out) {
            for (xv, av) in x.iter_mut().zip(a) {
                *xv += av;
            }
            let h = rms(x, &ffn_norm, eps, gemma);
            let g = matvec(&wg, &h);
            let u = matvec(&wu, &h);
            let act: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| {
                    let a = if gemma {
                        // gelu_pytorch_tanh
                        0.5 * g
                            * (1.0
                                + ((2.0 / std::f64::consts::PI).sqrt()
                                    * (g + 0.044715 * g * g * g))
                                    .tanh())
                    } else {
                        g / (1.0 + (-g).exp())
                    };
                    a * u
                })
                .collect();
            let mut m = matvec(&wd, &act);
            if let Some(pn) = &l.post_ffn_norm {
                m = rms(&m, &v1(pn), eps, gemma);
            }
            for (xv, mv) in x.iter_mut().zip(m) {
                *xv += mv;
            }
        }
    }
    let fnorm = v1(&w.final_norm);
    let head = v2(w.lm_head());
    xs.iter()
        .map(|x| matvec(&head, &rms(x, &fnorm, eps, gemma)))
        .collect()
}

fn max_rel_diff(a: &Tensor, b: &[Vec<f64>]) -> f64 {
    let a = v2(a);
    let mut worst = 0f64;
    for (ra, rb) in a.iter().zip(b) {
        for (x, y) in ra.iter().zip(rb) {
            worst = worst.max((x - y).abs() / (1.0 + y.abs()));
        }
    }
    worst
}

/// A prompt longer than the Gemma test window (4), so that local layers drop keys.
const IDS: [u32; 9] = [5, 17, 3, 60, 22, 9, 41, 1, 33];

#[test]
fn every_family_matches_its_slow_reference() {
    for fam in FAMILIES {
        let cfg = LlamaConfig::tiny_family(fam);
        let w = LlamaWeights::random(&cfg, &Device::Cpu, 7).unwrap();
        let fast = forward_logits(&w, None, &IDS).unwrap();
        let slow = slow_forward(&w, &IDS);
        let d = max_rel_diff(&fast, &slow);
        assert!(d < 1e-4, "{fam:?}: reference forward vs slow loops {d}");
    }
}

#[test]
fn family_features_change_the_output() {
    // The slow reference would agree with a forward that ignored a feature only if the
    // feature had no effect; check each one has.
    let base = LlamaConfig::tiny_family(ModelType::Gemma3Text);
    let w = LlamaWeights::random(&base, &Device::Cpu, 7).unwrap();
    let a = forward_logits(&w, None, &IDS).unwrap();
    let mut variants = Vec::new();
    let mut no_window = w.clone();
    no_window.config.layer_types = None;
    variants.push(("sliding window", no_window));
    let mut one_base = w.clone();
    one_base.config.rope_local_base_freq = Some(base.rope_theta);
    variants.push(("local rope base", one_base));
    let mut no_qk = w.clone();
    for l in &mut no_qk.layers {
        l.q_norm = Some(l.q_norm.as_ref().unwrap().zeros_like().unwrap());
    }
    variants.push(("q norm", no_qk));
    for (what, v) in variants {
        let b = forward_logits(&v, None, &IDS).unwrap();
        let d = max_rel_diff(&a, &v2(&b));
        assert!(d > 1e-3, "{what} has no effect ({d})");
    }
}

#[test]
fn padded_batches_equal_single_sequences_in_every_family() {
    for fam in FAMILIES {
        let w = LlamaWeights::random(&LlamaConfig::tiny_family(fam), &Device::Cpu, 3).unwrap();
        let short = [7u32, 8, 9, 10, 11, 12];
        let long = IDS;
        // Row 0 left-padded by 3, row 1 full.
        let mut row0 = vec![0u32; 3];
        row0.extend_from_slice(&short);
        row0.extend_from_slice(&long);
        let ids = Tensor::from_vec(row0, (2, 9), &Device::Cpu).unwrap();
        let mut m0 = vec![0f32; 3];
        m0.extend([1f32; 6]);
        m0.extend([1f32; 9]);
        let mask = Tensor::from_vec(m0, (2, 9), &Device::Cpu).unwrap();
        let batch = forward_logits_batch(&w, None, &ids, Some(&mask)).unwrap();
        let one = forward_logits(&w, None, &short).unwrap();
        let got = batch.get(0).unwrap().narrow(0, 3, 6).unwrap();
        let d = max_rel_diff(&got, &v2(&one));
        assert!(d < 1e-4, "{fam:?}: left-padded row vs alone {d}");
    }
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_new_tokens: n,
        ..Default::default()
    }
}

#[test]
fn generator_greedy_equals_reference_argmax_in_every_family() {
    let prompts: Vec<Vec<u32>> = vec![vec![5, 17, 3], vec![60, 22, 9, 41, 1, 33, 12], vec![8, 4]];
    for fam in FAMILIES {
        let w = LlamaWeights::random(&LlamaConfig::tiny_family(fam), &Device::Cpu, 11).unwrap();
        let g = Generator::new(
            &w,
            None,
            GeneratorOptions {
                batch_size: 2,
                weights: WeightFormat::F32,
            },
            &Device::Cpu,
        )
        .unwrap();
        // Prefill logits of every position.
        let pl = g.prompt_logits(&IDS).unwrap();
        let d = max_rel_diff(&pl, &slow_forward(&w, &IDS));
        assert!(d < 1e-4, "{fam:?}: generator prefill vs slow reference {d}");
        let reqs = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| GenRequest {
                prompt_ids: p.clone(),
                seed: i as u64,
            })
            .collect();
        let mut got = vec![Vec::new(); prompts.len()];
        g.generate(reqs, &greedy(10), |o| {
            got[o.index] = o.tokens;
            Ok(())
        })
        .unwrap();
        for (p, out) in prompts.iter().zip(&got) {
            let want = greedy_reference(&w, None, p, 10).unwrap();
            assert_eq!(out, &want, "{fam:?}: greedy continuation of {p:?}");
        }
    }
}

#[test]
fn bf16_generator_stays_close_for_gemma() {
    let w = LlamaWeights::random(
        &LlamaConfig::tiny_family(ModelType::Gemma3Text),
        &Device::Cpu,
        5,
    )
    .unwrap();
    let g = Generator::new(
        &w,
        None,
        GeneratorOptions {
            batch_size: 1,
            weights: WeightFormat::Bf16,
        },
        &Device::Cpu,
    )
    .unwrap();
    let pl = g.prompt_logits(&IDS).unwrap();
    let d = max_rel_diff(&pl, &slow_forward(&w, &IDS));
    assert!(d < 5e-2, "bf16 Gemma prefill vs slow reference {d}");
}

#[test]
fn config_json_round_trips_for_every_family() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfgs: Vec<LlamaConfig> = FAMILIES
        .iter()
        .map(|&f| LlamaConfig::tiny_family(f))
        .collect();
    let mut l3 = LlamaConfig::tiny();
    l3.rope_scaling = Some(RopeScaling::Llama3 {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    });
    cfgs.push(l3);
    for cfg in cfgs {
        let p = dir.path().join("config.json");
        std::fs::write(&p, hf_config_json(&cfg).to_string()).unwrap();
        let back = read_hf_config(&p).unwrap();
        assert_eq!(back, cfg, "{:?}", cfg.model_type);
        // Weights through Hugging Face tensor names.
        let w = LlamaWeights::random(&cfg, &Device::Cpu, 2).unwrap();
        let map = dpsynth_lm::load::weights_to_hf_tensors(&w)
            .into_iter()
            .collect();
        let back = dpsynth_lm::load::weights_from_hf_tensors(&cfg, map, &Device::Cpu).unwrap();
        let a = forward_logits(&w, None, &IDS).unwrap();
        let b = forward_logits(&back, None, &IDS).unwrap();
        assert_eq!(max_rel_diff(&a, &v2(&b)), 0.0, "{:?}", cfg.model_type);
    }
}

#[test]
fn hf_gemma3_config_with_rope_parameters_and_window_pattern() {
    // transformers 5 writes the two rope bases under `rope_parameters`; older Gemma 3 configs
    // give `sliding_window_pattern` instead of `layer_types`.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    let j = serde_json::json!({
        "model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 12, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 16, "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}
        },
        "sliding_window": 512, "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
        "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768,
        "final_logit_softcapping": null, "attn_logit_softcapping": null
    });
    std::fs::write(&p, j.to_string()).unwrap();
    let c = read_hf_config(&p).unwrap();
    assert_eq!(c.model_type, ModelType::Gemma3Text);
    assert_eq!(c.rope_theta, 1e6);
    assert_eq!(c.rope_local_base_freq, Some(1e4));
    assert_eq!(c.layer_window(4), Some(512));
    assert_eq!(c.layer_window(5), None);
    assert_eq!(c.layer_window(11), None);
    assert!(
        c.tie_word_embeddings,
        "Gemma 3 ties its embeddings by default"
    );
    assert_eq!(c.attn_scale(), 1.0 / 16.0);
}

#[test]
fn llama3_rope_scaling_keeps_high_and_divides_low_frequencies() {
    let mut c = LlamaConfig::tiny();
    c.hidden_size = 128;
    c.num_attention_heads = 2; // head_dim 64
    c.rope_theta = 500_000.0;
    let plain = c.rope_inv_freq(0);
    c.rope_scaling = Some(RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    });
    let scaled = c.rope_inv_freq(0);
    let two_pi = 2.0 * std::f64::consts::PI;
    for (p, s) in plain.iter().zip(&scaled) {
        let wavelen = two_pi / *p as f64;
        if wavelen < 8192.0 / 4.0 {
            assert_eq!(p, s, "high frequency changed");
        } else if wavelen > 8192.0 {
            assert!((p / 8.0 - s).abs() <= 1e-6 * p, "low frequency {p} -> {s}");
        } else {
            assert!(*s < *p && *s > p / 8.0, "ramp {p} -> {s}");
        }
    }
    assert_ne!(plain, scaled);
}

#[test]
fn unsupported_architectures_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    std::fs::write(
        &p,
        serde_json::json!({"model_type": "phi3", "vocab_size": 8}).to_string(),
    )
    .unwrap();
    let e = err_of(read_hf_config(&p));
    assert!(
        e.contains("config.json")
            && e.contains("`phi3`")
            && e.contains("qwen3")
            && e.contains("gemma3_text"),
        "{e}"
    );

    let g = dir.path().join("phi.gguf");
    let mut f = std::fs::File::create(&g).unwrap();
    let arch = gguf_file::Value::String("phi3".into());
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[]).unwrap();
    drop(f);
    let e = err_of(load_model(&g, &Device::Cpu));
    assert!(
        e.contains("phi.gguf")
            && e.contains("`phi3`")
            && e.contains("qwen2")
            && e.contains("gemma3"),
        "{e}"
    );

    // The multimodal Gemma 3 config says so.
    std::fs::write(
        &p,
        serde_json::json!({"model_type": "gemma3", "text_config": {}}).to_string(),
    )
    .unwrap();
    let e = err_of(read_hf_config(&p));
    assert!(e.contains("multimodal") && e.contains("gemma3_text"), "{e}");

    // Gemma 2's soft-capping is refused, not silently ignored.
    let mut c = LlamaConfig::tiny_family(ModelType::Gemma3Text);
    c.final_logit_softcapping = Some(30.0);
    assert!(err_of(c.validate()).contains("soft-capping"));
}

/// Writes `w` as a GGUF file the way llama.cpp's converter lays it out for its family.
fn write_gguf(w: &LlamaWeights, path: &std::path::Path) {
    use gguf_file::Value as V;
    let c = &w.config;
    let arch = match c.model_type {
        ModelType::Llama => "llama",
        ModelType::Qwen2 => "qwen2",
        ModelType::Qwen3 => "qwen3",
        ModelType::Gemma3Text => "gemma3",
    };
    let gemma = c.model_type == ModelType::Gemma3Text;
    let mut meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        (
            format!("{arch}.embedding_length"),
            V::U32(c.hidden_size as u32),
        ),
        (
            format!("{arch}.block_count"),
            V::U32(c.num_hidden_layers as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            V::U32(c.intermediate_size as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            V::U32(c.num_attention_heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            V::U32(c.num_key_value_heads as u32),
        ),
        (
            format!("{arch}.attention.key_length"),
            V::U32(c.head_dim() as u32),
        ),
        (
            format!("{arch}.attention.value_length"),
            V::U32(c.head_dim() as u32),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            V::F32(c.rms_norm_eps as f32),
        ),
        (
            format!("{arch}.rope.freq_base"),
            V::F32(c.rope_theta as f32),
        ),
        (
            format!("{arch}.context_length"),
            V::U32(c.max_position_embeddings as u32),
        ),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            V::Array(
                (0..c.vocab_size)
                    .map(|i| V::String(format!("t{i}")))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.merges".into(), V::Array(vec![])),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
    ];
    if let Some(sw) = c.sliding_window {
        meta.push((
            format!("{arch}.attention.sliding_window"),
            V::U32(sw as u32),
        ));
    }
    let mut tensors: Vec<(String, Tensor)> = vec![("token_embd.weight".into(), w.embed.clone())];
    let norm = |t: &Tensor| if gemma { (t + 1.0).unwrap() } else { t.clone() };
    let qk = |t: &Tensor, n: usize| {
        if c.model_type == ModelType::Llama {
            permute_qk(t, n).unwrap()
        } else {
            t.clone()
        }
    };
    for (i, l) in w.layers.iter().enumerate() {
        let p = |s: &str| format!("blk.{i}.{s}");
        tensors.push((p("attn_norm.weight"), norm(&l.attn_norm)));
        tensors.push((p("attn_q.weight"), qk(&l.wq, c.num_attention_heads)));
        tensors.push((p("attn_k.weight"), qk(&l.wk, c.num_key_value_heads)));
        tensors.push((p("attn_v.weight"), l.wv.clone()));
        tensors.push((p("attn_output.weight"), l.wo.clone()));
        tensors.push((p("ffn_norm.weight"), norm(&l.ffn_norm)));
        tensors.push((p("ffn_gate.weight"), l.w_gate.clone()));
        tensors.push((p("ffn_up.weight"), l.w_up.clone()));
        tensors.push((p("ffn_down.weight"), l.w_down.clone()));
        for (name, t, is_norm) in [
            ("attn_q.bias", &l.bq, false),
            ("attn_k.bias", &l.bk, false),
            ("attn_v.bias", &l.bv, false),
            ("attn_q_norm.weight", &l.q_norm, true),
            ("attn_k_norm.weight", &l.k_norm, true),
            ("post_attention_norm.weight", &l.post_attn_norm, true),
            ("post_ffw_norm.weight", &l.post_ffn_norm, true),
        ] {
            if let Some(t) = t {
                tensors.push((p(name), if is_norm { norm(t) } else { t.clone() }));
            }
        }
    }
    tensors.push(("output_norm.weight".into(), norm(&w.final_norm)));
    if let Some(h) = &w.lm_head {
        tensors.push(("output.weight".into(), h.clone()));
    }
    let q: Vec<(String, QTensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, QTensor::quantize(&t, GgmlDType::F32).unwrap()))
        .collect();
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &q_refs).unwrap();
}

#[test]
fn gguf_round_trips_for_every_family() {
    let dir = tempfile::tempdir().unwrap();
    for fam in FAMILIES {
        let mut cfg = LlamaConfig::tiny_family(fam);
        // GGUF stores the epsilon as f32.
        cfg.rms_norm_eps = cfg.rms_norm_eps as f32 as f64;
        if fam == ModelType::Gemma3Text {
            // What llama.cpp assumes for Gemma 3 GGUF files: every 6th layer global, local
            // rope base 10 000, scores scaled by 1/sqrt(head_dim).
            cfg.num_hidden_layers = 6;
            let mut lt = vec![LayerType::SlidingAttention; 5];
            lt.push(LayerType::FullAttention);
            cfg.layer_types = Some(lt);
            cfg.query_pre_attn_scalar = Some(cfg.head_dim() as f64);
        }
        let w = LlamaWeights::random(&cfg, &Device::Cpu, 4).unwrap();
        let p = dir.path().join(format!("{fam:?}.gguf"));
        write_gguf(&w, &p);
        let (back, tok) = load_model(&p, &Device::Cpu).unwrap();
        assert_eq!(back.config, cfg, "{fam:?}");
        assert_eq!(tok.bos_id(), Some(1));
        let a = forward_logits(&w, None, &IDS).unwrap();
        let b = forward_logits(&back, None, &IDS).unwrap();
        let d = max_rel_diff(&a, &v2(&b));
        assert!(
            d < 1e-5,
            "{fam:?}: GGUF round trip changed the logits by {d}"
        );
    }
}

#[test]
fn continuation_scores_match_the_reference_in_every_family() {
    // The synthesis filter's batched teacher-forced scoring (forward_hidden + lm head).
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = vec![
        (vec![5, 17, 3], vec![60, 22, 9, 41, 1, 33]),
        (vec![8], vec![4, 12]),
        (vec![7, 8, 9, 10, 11, 12], vec![13]),
    ];
    for fam in FAMILIES {
        let w = LlamaWeights::random(&LlamaConfig::tiny_family(fam), &Device::Cpu, 13).unwrap();
        let g = Generator::new(
            &w,
            None,
            GeneratorOptions {
                batch_size: 4,
                weights: WeightFormat::F32,
            },
            &Device::Cpu,
        )
        .unwrap();
        let refs: Vec<(&[u32], &[u32])> = pairs
            .iter()
            .map(|(p, c)| (p.as_slice(), c.as_slice()))
            .collect();
        let got = g.continuation_log_likelihoods(&refs).unwrap();
        for ((p, c), lp) in pairs.iter().zip(got) {
            let mut ids = p.clone();
            ids.extend_from_slice(c);
            let want = -dpsynth_lm::sequence_loss(&w, None, &ids, p.len()..ids.len())
                .unwrap()
                .sum;
            assert!(
                (lp - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{fam:?}: log p({c:?} | {p:?}) {lp} vs reference {want}"
            );
        }
    }
}
