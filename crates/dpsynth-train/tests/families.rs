//! Per-example gradients of the training forward (fused ops) for every model family
//! (llama, Qwen2, Qwen3, Gemma 3), against a one-example oracle: the gradient of the example's
//! mean next-token cross-entropy through `dpsynth_lm`'s reference forward (primitive candle
//! ops, itself checked against slow scalar loops per family in dpsynth-lm/tests/families.rs).

use candle_core::{Device, Tensor, Var};
use dpsynth_lm::config::ModelType;
use dpsynth_lm::model::log_softmax;
use dpsynth_lm::{
    forward_logits, Adapter, LlamaConfig, LlamaWeights, LoraAdapter, LoraConfig, PromptAdapter,
};
use dpsynth_train::model::{
    batched_per_example_grads, full_example_grad, Example, Method, Params, TrainBatch, TrainModel,
};

const FAMILIES: [ModelType; 4] = [
    ModelType::Llama,
    ModelType::Qwen2,
    ModelType::Qwen3,
    ModelType::Gemma3Text,
];

/// Examples longer than the Gemma test window (4 positions), so local layers drop keys.
fn examples() -> Vec<Example> {
    vec![
        Example {
            ids: vec![1, 5, 9, 3, 7, 11, 2],
            n_prefix: 3,
        },
        Example {
            ids: vec![1, 6, 4, 2],
            n_prefix: 2,
        },
        Example {
            ids: vec![1, 8, 10, 12, 14, 16, 18, 20, 22, 2],
            n_prefix: 3,
        },
    ]
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let n = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    n(&(a - b).unwrap()) / n(b).max(1e-12)
}

/// The example's mean next-token CE through the reference forward with `adapter`.
fn reference_loss(w: &LlamaWeights, adapter: Option<&Adapter>, e: &Example) -> Tensor {
    let logits = forward_logits(w, adapter, &e.ids).unwrap();
    let tp = e.target_positions();
    let lp = log_softmax(&logits.narrow(0, tp.start - 1, tp.len()).unwrap()).unwrap();
    let tgt = Tensor::new(&e.ids[tp.clone()], &Device::Cpu)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    (lp.gather(&tgt, 1).unwrap().sum_all().unwrap() * (-1.0 / tp.len() as f64)).unwrap()
}

/// Oracle gradients of one example with respect to `params` (as `method` uses them).
fn oracle(w: &LlamaWeights, method: &Method, params: &Params, e: &Example) -> Vec<Tensor> {
    let vars: Vec<Var> = params
        .tensors
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let p = Params {
        names: params.names.clone(),
        tensors: vars.iter().map(|v| v.as_tensor().clone()).collect(),
    };
    let adapter = match method {
        Method::Lora(c) => Adapter::Lora(p.to_lora(c).unwrap()),
        Method::Prompt { .. } => Adapter::Prompt(PromptAdapter {
            virtual_tokens: p.tensors[0].clone(),
        }),
        Method::Full => Adapter::Full(Box::new(p.to_full_weights(w).unwrap())),
    };
    let loss = reference_loss(w, Some(&adapter), e);
    let g = loss.backward().unwrap();
    vars.iter()
        .map(|v| g.get(v.as_tensor()).expect("oracle gradient").clone())
        .collect()
}

fn lora() -> Method {
    Method::Lora(LoraConfig {
        rank: 3,
        alpha: 6.0,
        targets: vec![
            "q_proj".into(),
            "k_proj".into(),
            "v_proj".into(),
            "o_proj".into(),
            "down_proj".into(),
        ],
    })
}

/// Params with a non-zero LoRA B (PEFT's B = 0 would zero every A-gradient).
fn params(method: &Method, w: &LlamaWeights) -> Params {
    let mut p = Params::init(method, w, 7).unwrap();
    for (n, t) in p.names.iter().zip(p.tensors.iter_mut()) {
        if n.ends_with("lora_B") {
            *t = t.randn_like(0.0, 0.3).unwrap().contiguous().unwrap();
        }
    }
    p
}

#[test]
fn per_example_grads_match_the_reference_forward_in_every_family() {
    for fam in FAMILIES {
        let w = LlamaWeights::random(&LlamaConfig::tiny_family(fam), &Device::Cpu, 3).unwrap();
        for method in [lora(), Method::Prompt { virtual_tokens: 2 }] {
            let p = params(&method, &w);
            let ex = examples();
            let refs: Vec<&Example> = ex.iter().collect();
            let batch = TrainBatch::new(&refs, method.virtual_tokens(), &Device::Cpu).unwrap();
            let (g, losses) =
                batched_per_example_grads(&TrainModel::new(&w), &method, &p, &batch).unwrap();
            assert_eq!(
                g.len(),
                p.tensors.len(),
                "every trainable tensor has a gradient"
            );
            for (bi, e) in ex.iter().enumerate() {
                // The loss itself first.
                let adapter = match &method {
                    Method::Lora(c) => Adapter::Lora(p.to_lora(c).unwrap()),
                    _ => Adapter::Prompt(PromptAdapter {
                        virtual_tokens: p.tensors[0].clone(),
                    }),
                };
                let want = reference_loss(&w, Some(&adapter), e)
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    (losses[bi] - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{fam:?} {}: loss {} vs reference {want}",
                    method.name(),
                    losses[bi]
                );
                let og = oracle(&w, &method, &p, e);
                for (pi, o) in og.iter().enumerate() {
                    let r = rel_err(&g[pi].get(bi).unwrap(), o);
                    assert!(
                        r <= 1e-3,
                        "{fam:?} {} example {bi} {}: rel err {r}",
                        method.name(),
                        p.names[pi]
                    );
                }
            }
        }
    }
}

#[test]
fn full_fine_tuning_grads_match_the_reference_forward_in_every_family() {
    for fam in FAMILIES {
        let w = LlamaWeights::random(&LlamaConfig::tiny_family(fam), &Device::Cpu, 5).unwrap();
        let p = Params::init(&Method::Full, &w, 0).unwrap();
        // The family's own tensors are trained too.
        let extra = p
            .names
            .iter()
            .filter(|n| n.contains("bias") || (n.contains("_norm") && n.contains("q_")))
            .count();
        match fam {
            ModelType::Llama => assert_eq!(extra, 0),
            _ => assert!(extra > 0, "{fam:?}: no family tensors among {:?}", p.names),
        }
        for e in examples().iter().take(2) {
            let (g, _) = full_example_grad(&w, &p, &[e]).unwrap();
            let og = oracle(&w, &Method::Full, &p, e);
            for (pi, o) in og.iter().enumerate() {
                let r = rel_err(&g[pi], o);
                assert!(r <= 1e-3, "{fam:?} full {}: rel err {r}", p.names[pi]);
            }
        }
    }
}

#[test]
fn lora_adapter_of_a_family_merges_for_generation() {
    // A trained adapter is applied by merging (generation) or on the fly (reference): same logits.
    let w = LlamaWeights::random(
        &LlamaConfig::tiny_family(ModelType::Gemma3Text),
        &Device::Cpu,
        9,
    )
    .unwrap();
    let m = lora();
    let p = params(&m, &w);
    let Method::Lora(c) = &m else { unreachable!() };
    let ad: LoraAdapter = p.to_lora(c).unwrap();
    let ad = Adapter::Lora(ad);
    let ids = [1u32, 5, 9, 3, 7, 11, 2, 8];
    let a = forward_logits(&w, Some(&ad), &ids).unwrap();
    let merged = ad.merged(&w).unwrap().unwrap();
    let b = forward_logits(&merged, None, &ids).unwrap();
    assert!(rel_err(&b, &a) < 1e-5);
}

#[test]
fn bf16_packed_base_grads_stay_close_to_f32_in_every_family() {
    // What `dpsynth train` runs for LoRA: frozen linears packed as bf16, f32 copies released.
    for fam in FAMILIES {
        let w = LlamaWeights::random(&LlamaConfig::tiny_family(fam), &Device::Cpu, 3).unwrap();
        let m = lora();
        let p = params(&m, &w);
        let ex = examples();
        let refs: Vec<&Example> = ex.iter().collect();
        let batch = TrainBatch::new(&refs, 0, &Device::Cpu).unwrap();
        let (g32, l32) = batched_per_example_grads(&TrainModel::new(&w), &m, &p, &batch).unwrap();
        let packed = dpsynth_train::frozen::PackedBase::new(&w).unwrap();
        let slim = dpsynth_train::frozen::release_frozen_f32(&w).unwrap();
        let (g16, l16) =
            batched_per_example_grads(&TrainModel::with_packed(&slim, &packed), &m, &p, &batch)
                .unwrap();
        for (a, b) in l32.iter().zip(&l16) {
            assert!((a - b).abs() <= 1e-2 * a.abs(), "{fam:?}: loss {a} vs {b}");
        }
        for (pi, (a, b)) in g32.iter().zip(&g16).enumerate() {
            let r = rel_err(b, a);
            // The same bound as the llama test in src/tests.rs (bf16 rounding of the base).
            assert!(
                r <= 8e-2,
                "{fam:?} {}: bf16 vs f32 rel err {r}",
                p.names[pi]
            );
        }
    }
}
