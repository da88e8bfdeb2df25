//! The training forward pass of a llama block stack, written from primitive candle ops that
//! all have a backward (no fused `rms_norm`, `softmax_last_dim`, `rope` or `sdpa`, which
//! silently drop gradients), and the batched per-example gradient computation.
//!
//! Per-example gradients: every example of a micro-batch gets its *own copy* of the
//! trainable parameters (LoRA `A: [B, r, in]`, `B: [B, out, r]`; prompt embeddings
//! `[B, n, d]`). Example `b` only ever touches copy `b`, so the gradient of the *summed*
//! loss with respect to copy `b` is exactly example `b`'s gradient — one backward pass
//! gives all of them. Frozen base weights go through [`crate::frozen::frozen_linear`],
//! whose backward computes only the input gradient. Full fine-tuning has no such trick at
//! bounded memory; it runs one example (or one user) at a time instead.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};
use dpsynth_lm::config::Activation;
use dpsynth_lm::{LlamaConfig, LlamaWeights, LoraAdapter, LoraConfig};
use serde::{Deserialize, Serialize};

use crate::frozen::{frozen_linear, PackedBase};
use crate::ops;
use crate::{Result, TrainError};

/// What is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Method {
    /// LoRA on the listed modules (PEFT semantics, `scaling = alpha / rank`).
    Lora(LoraConfig),
    /// Prompt tuning: `virtual_tokens` trainable embeddings prepended to every input.
    Prompt { virtual_tokens: usize },
    /// Every weight of the model.
    Full,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Lora(_) => "lora",
            Method::Prompt { .. } => "prompt",
            Method::Full => "full",
        }
    }
    pub fn virtual_tokens(&self) -> usize {
        match self {
            Method::Prompt { virtual_tokens } => *virtual_tokens,
            _ => 0,
        }
    }
}

/// One tokenized training example: `ids = prefix ++ text ++ [eos]`; the first `n_prefix`
/// tokens are context only (zero loss weight), the rest are predicted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub ids: Vec<u32>,
    pub n_prefix: usize,
}

impl Example {
    /// Indices `j` of `ids` that are predicted (from position `j - 1`).
    pub fn target_positions(&self) -> std::ops::Range<usize> {
        self.n_prefix.max(1)..self.ids.len()
    }
}

/// The trainable parameters, in a fixed order with stable names.
#[derive(Debug, Clone)]
pub struct Params {
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
}

impl Params {
    /// Number of scalar parameters.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.elem_count()).sum()
    }

    /// Initial trainable parameters for `method` (LoRA: PEFT init, `A` uniform in
    /// `±1/sqrt(in)`, `B = 0`; prompt: embeddings of random vocabulary tokens, as PEFT's
    /// "random" init; full: the base weights).
    pub fn init(method: &Method, w: &LlamaWeights, seed: u64) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let dev = w.device();
        let mut names = Vec::new();
        let mut tensors = Vec::new();
        match method {
            Method::Lora(cfg) => {
                validate_lora(cfg)?;
                for (l, layer) in w.layers.iter().enumerate() {
                    for m in &cfg.targets {
                        let lin = layer.linear(m).expect("validated");
                        let (out, inn) = lin.dims2()?;
                        let bound = 1.0 / (inn as f32).sqrt();
                        let a: Vec<f32> = (0..cfg.rank * inn)
                            .map(|_| rng.random_range(-bound..bound))
                            .collect();
                        names.push(lora_name(l, m, 'A'));
                        tensors.push(Tensor::from_vec(a, (cfg.rank, inn), dev)?);
                        names.push(lora_name(l, m, 'B'));
                        tensors.push(Tensor::zeros((out, cfg.rank), DType::F32, dev)?);
                    }
                }
            }
            Method::Prompt { virtual_tokens } => {
                if *virtual_tokens == 0 {
                    return Err(TrainError::Config(
                        "prompt tuning needs at least one virtual token".into(),
                    ));
                }
                let v = w.config.vocab_size as u32;
                let ids: Vec<u32> = (0..*virtual_tokens)
                    .map(|_| rng.random_range(0..v))
                    .collect();
                let ids = Tensor::new(ids, dev)?;
                names.push("prompt.virtual_tokens".into());
                // As the model embeds tokens (Gemma scales by √d; 1 elsewhere, exact).
                let e = (w.embed.index_select(&ids, 0)? * w.config.embed_scale())?;
                tensors.push(e.contiguous()?);
            }
            Method::Full => {
                let (n, t) = full_params(w);
                names = n;
                tensors = t.into_iter().cloned().collect();
            }
        }
        Ok(Self { names, tensors })
    }

    /// Parameters for LoRA from an existing adapter (e.g. to compare with PEFT).
    pub fn from_lora(adapter: &LoraAdapter, num_layers: usize) -> Result<Self> {
        let mut names = Vec::new();
        let mut tensors = Vec::new();
        for l in 0..num_layers {
            for m in &adapter.config.targets {
                let key = (l, m.clone());
                let a = adapter.a.get(&key);
                let b = adapter.b.get(&key);
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(TrainError::Config(format!(
                        "adapter has no LoRA weights for layer {l} {m}"
                    )));
                };
                names.push(lora_name(l, m, 'A'));
                tensors.push(a.clone());
                names.push(lora_name(l, m, 'B'));
                tensors.push(b.clone());
            }
        }
        Ok(Self { names, tensors })
    }

    /// The LoRA adapter these parameters represent.
    pub fn to_lora(&self, cfg: &LoraConfig) -> Result<LoraAdapter> {
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        for (n, t) in self.names.iter().zip(&self.tensors) {
            let (l, m, which) = parse_lora_name(n)
                .ok_or_else(|| TrainError::Other(format!("not a LoRA parameter: {n}")))?;
            if which == 'A' {
                a.insert((l, m), t.clone());
            } else {
                b.insert((l, m), t.clone());
            }
        }
        Ok(LoraAdapter {
            config: cfg.clone(),
            a,
            b,
        })
    }

    /// For full fine-tuning: the base weights with these parameters substituted.
    pub fn to_full_weights(&self, base: &LlamaWeights) -> Result<LlamaWeights> {
        let mut w = base.clone();
        {
            let (names, slots) = full_params_mut(&mut w);
            if names != self.names {
                return Err(TrainError::Other(
                    "full fine-tuning parameters do not match the model".into(),
                ));
            }
            for (slot, t) in slots.into_iter().zip(&self.tensors) {
                *slot = t.clone();
            }
        }
        Ok(w)
    }
}

pub(crate) fn validate_lora(cfg: &LoraConfig) -> Result<()> {
    if cfg.rank == 0 {
        return Err(TrainError::Config("LoRA rank must be at least 1".into()));
    }
    if cfg.targets.is_empty() {
        return Err(TrainError::Config(
            "LoRA needs at least one target module".into(),
        ));
    }
    for m in &cfg.targets {
        if !dpsynth_lm::weights::LINEAR_MODULES.contains(&m.as_str()) {
            return Err(TrainError::Config(format!(
                "unknown LoRA target `{m}`; use any of {}",
                dpsynth_lm::weights::LINEAR_MODULES.join(", ")
            )));
        }
    }
    Ok(())
}

fn lora_name(l: usize, m: &str, which: char) -> String {
    format!("layers.{l}.{m}.lora_{which}")
}

fn parse_lora_name(n: &str) -> Option<(usize, String, char)> {
    let rest = n.strip_prefix("layers.")?;
    let mut it = rest.splitn(3, '.');
    let l = it.next()?.parse().ok()?;
    let m = it.next()?.to_string();
    let w = it.next()?.strip_prefix("lora_")?.chars().next()?;
    Some((l, m, w))
}

const LAYER_FIELDS: [&str; 9] = [
    "attn_norm",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "ffn_norm",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The family's optional per-layer tensors (Qwen2 biases, q/k norms, Gemma's post norms),
/// trained in full fine-tuning when present.
const EXTRA_LAYER_FIELDS: [&str; 7] = [
    "q_bias",
    "k_bias",
    "v_bias",
    "q_norm",
    "k_norm",
    "post_attn_norm",
    "post_ffn_norm",
];

fn full_params(w: &LlamaWeights) -> (Vec<String>, Vec<&Tensor>) {
    let mut n = vec!["embed".to_string()];
    let mut t = vec![&w.embed];
    for (l, lw) in w.layers.iter().enumerate() {
        let fields = [
            &lw.attn_norm,
            &lw.wq,
            &lw.wk,
            &lw.wv,
            &lw.wo,
            &lw.ffn_norm,
            &lw.w_gate,
            &lw.w_up,
            &lw.w_down,
        ];
        for (name, f) in LAYER_FIELDS.iter().zip(fields) {
            n.push(format!("layers.{l}.{name}"));
            t.push(f);
        }
        let extra = [
            &lw.bq,
            &lw.bk,
            &lw.bv,
            &lw.q_norm,
            &lw.k_norm,
            &lw.post_attn_norm,
            &lw.post_ffn_norm,
        ];
        for (name, f) in EXTRA_LAYER_FIELDS.iter().zip(extra) {
            if let Some(f) = f {
                n.push(format!("layers.{l}.{name}"));
                t.push(f);
            }
        }
    }
    n.push("final_norm".into());
    t.push(&w.final_norm);
    if let Some(h) = &w.lm_head {
        n.push("lm_head".into());
        t.push(h);
    }
    (n, t)
}

fn full_params_mut(w: &mut LlamaWeights) -> (Vec<String>, Vec<&mut Tensor>) {
    let mut n = vec!["embed".to_string()];
    let mut t = vec![&mut w.embed];
    for (l, lw) in w.layers.iter_mut().enumerate() {
        let fields = [
            &mut lw.attn_norm,
            &mut lw.wq,
            &mut lw.wk,
            &mut lw.wv,
            &mut lw.wo,
            &mut lw.ffn_norm,
            &mut lw.w_gate,
            &mut lw.w_up,
            &mut lw.w_down,
        ];
        for (name, f) in LAYER_FIELDS.iter().zip(fields) {
            n.push(format!("layers.{l}.{name}"));
            t.push(f);
        }
        let extra = [
            &mut lw.bq,
            &mut lw.bk,
            &mut lw.bv,
            &mut lw.q_norm,
            &mut lw.k_norm,
            &mut lw.post_attn_norm,
            &mut lw.post_ffn_norm,
        ];
        for (name, f) in EXTRA_LAYER_FIELDS.iter().zip(extra) {
            if let Some(f) = f {
                n.push(format!("layers.{l}.{name}"));
                t.push(f);
            }
        }
    }
    n.push("final_norm".into());
    t.push(&mut w.final_norm);
    if let Some(h) = &mut w.lm_head {
        n.push("lm_head".into());
        t.push(h);
    }
    (n, t)
}

/// A right-padded micro-batch ready for the forward pass.
#[derive(Debug)]
pub struct TrainBatch {
    /// `[B, T]` token ids (padding = 0).
    pub ids: Tensor,
    /// `[B, 1, 1, T', T']` additive attention mask (causal + key padding), `T' = n_virtual + T`.
    pub mask: Tensor,
    /// Flat indices into `[B * T']` of the positions whose next token is predicted.
    pub sel: Tensor,
    /// `[M, 1]` next-token targets of the selected positions.
    pub targets: Tensor,
    /// `[M]` loss weight of each selected position (`1 / #targets of its example`).
    pub weights: Tensor,
    /// Example index of each selected position.
    pub owner: Vec<usize>,
    /// The targets of `targets` as a plain vector.
    pub target_ids: Vec<u32>,
    /// Number of valid (non-padding) positions of each example, virtual tokens included.
    pub lens: Vec<usize>,
    pub batch: usize,
    pub seq: usize,
    pub n_virtual: usize,
}

impl TrainBatch {
    pub fn new(examples: &[&Example], n_virtual: usize, device: &Device) -> Result<Self> {
        let b = examples.len();
        if b == 0 {
            return Err(TrainError::Other("empty micro-batch".into()));
        }
        let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if t == 0 {
            return Err(TrainError::Data("an example has no tokens".into()));
        }
        let tt = t + n_virtual;
        let mut ids = vec![0u32; b * t];
        let mut mask = vec![0f32; b * tt * tt];
        let mut sel = Vec::new();
        let mut targets = Vec::new();
        let mut weights = Vec::new();
        let mut owner = Vec::new();
        let mut lens = Vec::with_capacity(b);
        for (i, e) in examples.iter().enumerate() {
            ids[i * t..i * t + e.ids.len()].copy_from_slice(&e.ids);
            let len = e.ids.len() + n_virtual;
            lens.push(len);
            for q in 0..tt {
                for k in 0..tt {
                    if k > q || k >= len {
                        mask[(i * tt + q) * tt + k] = -1e9;
                    }
                }
            }
            let tp = e.target_positions();
            let n = tp.len();
            for j in tp {
                sel.push((i * tt + n_virtual + j - 1) as u32);
                targets.push(e.ids[j]);
                weights.push(1.0 / n as f32);
                owner.push(i);
            }
        }
        let m = targets.len();
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, 1, 1, tt, tt), device)?,
            sel: Tensor::from_vec(sel, m, device)?,
            targets: Tensor::from_slice(&targets, (m, 1), device)?,
            target_ids: targets,
            lens,
            weights: Tensor::from_vec(weights, m, device)?,
            owner,
            batch: b,
            seq: t,
            n_virtual,
        })
    }
}

/// Rotary tables `[T, head_dim]` of layer 0 (rotate-half layout: the frequencies repeated twice).
pub fn rope_tables(cfg: &LlamaConfig, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    rope_tables_for_layer(cfg, 0, len, device)
}

/// Rotary tables `[T, head_dim]` of layer `layer` (its rope base and scaling:
/// [`LlamaConfig::rope_inv_freq`]).
pub fn rope_tables_for_layer(
    cfg: &LlamaConfig,
    layer: usize,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim();
    let half = hd / 2;
    let inv_freq = cfg.rope_inv_freq_f64(layer);
    let mut cos = vec![0f32; len * hd];
    let mut sin = vec![0f32; len * hd];
    for p in 0..len {
        for (i, inv) in inv_freq.iter().enumerate() {
            let a = p as f64 * inv;
            for j in [i, i + half] {
                cos[p * hd + j] = a.cos() as f32;
                sin[p * hd + j] = a.sin() as f32;
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (len, hd), device)?,
        Tensor::from_vec(sin, (len, hd), device)?,
    ))
}

/// Trainable tensors as seen by one forward pass.
pub enum Trainables<'a> {
    /// Per-example LoRA copies: `(layer, module) -> (A [B, r, in], B [B, out, r])`.
    Lora {
        ab: BTreeMap<(usize, String), (Tensor, Tensor)>,
        scaling: f64,
    },
    /// Per-example prompt copies `[B, n, d]`.
    Prompt(Tensor),
    /// Full fine-tuning: these weights (variables) replace the base.
    Full(&'a LlamaWeights),
}

/// RMSNorm from primitive ops: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(x.broadcast_div(&r)?.broadcast_mul(w)?)
}

/// Softmax over the last dim from primitive ops (the max is subtracted as a constant).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Rotate-half rope from primitive ops; `x: [B, H, T, hd]`, tables `[T, hd]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}

/// The training model: frozen base weights, optionally packed as bf16 (LoRA and prompt
/// tuning only; see [`crate::frozen::FrozenPrecision`]).
pub struct TrainModel<'a> {
    pub base: &'a LlamaWeights,
    pub packed: Option<&'a PackedBase>,
}

impl<'a> TrainModel<'a> {
    /// f32 frozen weights.
    pub fn new(base: &'a LlamaWeights) -> Self {
        Self { base, packed: None }
    }

    /// Frozen base linears and head from `packed` (bf16); `base` still provides the
    /// embeddings and norms.
    pub fn with_packed(base: &'a LlamaWeights, packed: &'a PackedBase) -> Self {
        Self {
            base,
            packed: Some(packed),
        }
    }

    /// The frozen output head (tied embeddings or `lm_head`).
    fn head(&self) -> Result<ops::Head> {
        match self.packed {
            Some(p) => Ok(ops::Head::Packed(p.head().clone())),
            None if crate::frozen::is_released(self.base.lm_head()) => Err(TrainError::Other(
                "internal error: the f32 output head was released and no packed copy is given"
                    .into(),
            )),
            None => Ok(ops::Head::F32(self.base.lm_head().clone())),
        }
    }

    /// `x @ Wᵀ` with a frozen base weight (packed bf16 or f32).
    fn frozen(&self, x: &Tensor, layer: usize, module: &str) -> Result<Tensor> {
        if let Some(p) = self.packed {
            if let Some(w) = p.linear(layer, module) {
                return Ok(dpsynth_lm::kernels::packed_linear(x, w)?);
            }
        }
        let wt = self.base.layers[layer]
            .linear(module)
            .expect("known module");
        if crate::frozen::is_released(wt) {
            return Err(TrainError::Other(format!(
                "internal error: the f32 weight of layer {layer} {module} was released and no packed copy is given"
            )));
        }
        Ok(frozen_linear(x, wt)?)
    }

    fn linear(&self, x: &Tensor, layer: usize, module: &str, tr: &Trainables) -> Result<Tensor> {
        match tr {
            Trainables::Full(w) => {
                let wt = w.layers[layer].linear(module).expect("known module");
                Ok(x.broadcast_matmul(&wt.t()?)?)
            }
            Trainables::Lora { ab, scaling } => {
                let y = self.frozen(x, layer, module)?;
                match ab.get(&(layer, module.to_string())) {
                    Some((a, b)) => {
                        // x [B,T,in] @ (s·A)^T [B,in,r] -> [B,T,r] @ B^T [B,r,out]
                        // (scaling folded into the small A copy: one less [B,T,out] tensor)
                        let z = x.matmul(&(a * *scaling)?.t()?)?.matmul(&b.t()?)?;
                        Ok((y + z)?)
                    }
                    None => Ok(y),
                }
            }
            Trainables::Prompt(_) => self.frozen(x, layer, module),
        }
    }

    /// Forward + loss of a micro-batch. Returns the summed per-example loss (each example's
    /// loss is its mean next-token cross-entropy over its target positions) and the
    /// per-example losses.
    pub fn loss(&self, batch: &TrainBatch, tr: &Trainables) -> Result<(Tensor, Vec<f32>)> {
        let cfg = &self.base.config;
        let w: &LlamaWeights = match tr {
            Trainables::Full(w) => w,
            _ => self.base,
        };
        let (b, t) = (batch.batch, batch.seq);
        let d = cfg.hidden_size;
        let hd = cfg.head_dim();
        let nh = cfg.num_attention_heads;
        let nkv = cfg.num_key_value_heads;
        let rep = nh / nkv;
        let dev = w.device();
        let ids = batch.ids.flatten_all()?;
        let mut x = w.embed.index_select(&ids, 0)?.reshape((b, t, d))?;
        if cfg.embed_scale() != 1.0 {
            // Gemma: token embeddings times √d (prompt vectors are inputs_embeds, unscaled).
            x = (x * cfg.embed_scale())?;
        }
        if let Trainables::Prompt(p) = tr {
            x = Tensor::cat(&[p, &x], 1)?;
        }
        let tt = t + batch.n_virtual;
        // Rope tables per distinct layer setting (Gemma 3: local and global bases).
        let mut tables: Vec<(Vec<f32>, ops::RopeTables)> = Vec::new();
        for l in 0..w.layers.len() {
            let inv = cfg.rope_inv_freq(l);
            if !tables.iter().any(|(f, _)| *f == inv) {
                let (cos, sin) = rope_tables_for_layer(cfg, l, tt, dev)?;
                tables.push((inv, ops::RopeTables::new(cos, sin)?));
            }
        }
        let scale = cfg.attn_scale();
        let eps = cfg.rms_norm_eps;
        let off = cfg.norm_weight_offset();
        // The family's RMSNorm (Gemma's multiplier is 1 + w).
        let norm = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            Ok(if off == 0.0 {
                ops::rms_norm(x, w, eps)?
            } else {
                ops::rms_norm(x, &(w + off)?, eps)?
            })
        };
        let bias = |y: Tensor, bv: &Option<Tensor>| -> Result<Tensor> {
            Ok(match bv {
                Some(bv) => y.broadcast_add(bv)?,
                None => y,
            })
        };
        // RMSNorm over each head of `y: [B, T, heads * hd]` (Qwen3, Gemma 3).
        let head_norm = |y: Tensor, heads: usize, nw: &Option<Tensor>| -> Result<Tensor> {
            Ok(match nw {
                Some(nw) => {
                    norm(&y.reshape((b, tt, heads, hd))?, nw)?.reshape((b, tt, heads * hd))?
                }
                None => y,
            })
        };
        for (l, lw) in w.layers.iter().enumerate() {
            let inv = cfg.rope_inv_freq(l);
            let rt = &tables
                .iter()
                .find(|(f, _)| *f == inv)
                .expect("built above")
                .1;
            let h = norm(&x, &lw.attn_norm)?;
            let q = bias(self.linear(&h, l, "q_proj", tr)?, &lw.bq)?;
            let k = bias(self.linear(&h, l, "k_proj", tr)?, &lw.bk)?;
            let v = bias(self.linear(&h, l, "v_proj", tr)?, &lw.bv)?;
            drop(h);
            let q = head_norm(q, nh, &lw.q_norm)?;
            let k = head_norm(k, nkv, &lw.k_norm)?;
            // [B, T, H*hd] -> [B, H, T, hd] (+ rope for q and k), fused.
            let q = ops::heads(&q, nh, hd, rt, true)?;
            let k = ops::heads(&k, nkv, hd, rt, true)?;
            let v = ops::heads(&v, nkv, hd, rt, false)?;
            // GQA: query head h uses kv head h / rep; group the rep query heads of a kv head.
            let qg = q.reshape((b, nkv, rep * tt, hd))?;
            let s = qg.matmul(&k.t()?)?;
            let p = ops::attention_probs(&s, scale, &batch.mask, &batch.lens, cfg.layer_window(l))?;
            let o = p.matmul(&v)?.reshape((b, nh, tt, hd))?;
            let o = o.transpose(1, 2)?.contiguous()?.reshape((b, tt, nh * hd))?;
            let o = self.linear(&o, l, "o_proj", tr)?;
            let o = match &lw.post_attn_norm {
                Some(pn) => norm(&o, pn)?,
                None => o,
            };
            x = (x + o)?;
            let h = norm(&x, &lw.ffn_norm)?;
            let g = self.linear(&h, l, "gate_proj", tr)?;
            let u = self.linear(&h, l, "up_proj", tr)?;
            let m = match cfg.hidden_act {
                Activation::Silu => ops::swiglu(&g, &u)?,
                // GELU (tanh approximation: candle's `gelu`, which has a backward).
                Activation::GeluPytorchTanh => (g.gelu()? * u)?,
            };
            let m = self.linear(&m, l, "down_proj", tr)?;
            let m = match &lw.post_ffn_norm {
                Some(pn) => norm(&m, pn)?,
                None => m,
            };
            x = (x + m)?;
        }
        let x = norm(&x, &w.final_norm)?;
        let xs = x.reshape((b * tt, d))?.index_select(&batch.sel, 0)?;
        let nll = match tr {
            Trainables::Full(w) => cross_entropy(&xs.matmul(&w.lm_head().t()?)?, &batch.targets)?,
            _ => ops::head_cross_entropy(&xs, &self.head()?, &batch.target_ids)?,
        };
        let wl = (nll * &batch.weights)?;
        let total = wl.sum_all()?;
        let wv = wl.to_vec1::<f32>()?;
        let mut per = vec![0f32; b];
        for (v, &o) in wv.iter().zip(&batch.owner) {
            per[o] += v;
        }
        Ok((total, per))
    }
}

/// Per-row negative log-likelihood `[M]` of `targets: [M, 1]` under `logits: [M, V]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let z = logits.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = z.gather(targets, D::Minus1)?;
    Ok((lse - picked)?.squeeze(D::Minus1)?)
}

/// Per-example gradients of a micro-batch: for each trainable parameter, `[B, ...shape]`.
///
/// LoRA and prompt tuning: one batched backward over per-example parameter copies.
/// Full fine-tuning: not supported here (see [`full_example_grad`]).
pub fn batched_per_example_grads(
    model: &TrainModel,
    method: &Method,
    params: &Params,
    batch: &TrainBatch,
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    let b = batch.batch;
    let copies: Vec<Var> = params
        .tensors
        .iter()
        .map(|p| {
            let mut shape = vec![b];
            shape.extend_from_slice(p.dims());
            let t = p.unsqueeze(0)?.broadcast_as(shape)?.contiguous()?;
            Var::from_tensor(&t)
        })
        .collect::<candle_core::Result<_>>()?;
    let tr = match method {
        Method::Lora(cfg) => {
            let mut ab = BTreeMap::new();
            for (i, n) in params.names.iter().enumerate() {
                let (l, m, which) = parse_lora_name(n)
                    .ok_or_else(|| TrainError::Other(format!("not a LoRA parameter: {n}")))?;
                if which == 'A' {
                    ab.insert(
                        (l, m),
                        (
                            copies[i].as_tensor().clone(),
                            copies[i + 1].as_tensor().clone(),
                        ),
                    );
                }
            }
            Trainables::Lora {
                ab,
                scaling: cfg.scaling(),
            }
        }
        Method::Prompt { .. } => Trainables::Prompt(copies[0].as_tensor().clone()),
        Method::Full => {
            return Err(TrainError::Other(
                "full fine-tuning computes per-example gradients one example at a time".into(),
            ))
        }
    };
    let (loss, per) = model.loss(batch, &tr)?;
    let grads = loss.backward()?;
    let mut out = Vec::with_capacity(copies.len());
    for (v, n) in copies.iter().zip(&params.names) {
        let g = grads.get(v.as_tensor()).ok_or_else(|| {
            TrainError::Other(format!("internal error: no gradient reached `{n}`"))
        })?;
        out.push(g.clone());
    }
    Ok((out, per))
}

/// Padded token positions a micro-batch of `examples` occupies (`len × longest`, virtual
/// tokens included): what its forward and backward cost and hold in memory.
pub fn padded_tokens(examples: &[&Example], n_virtual: usize) -> usize {
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    examples.len() * (longest + n_virtual)
}

/// Split `examples` (best sorted by length) into at most `parts` contiguous, non-empty shards
/// of about equal real-token cost (attention is quadratic but small next to the linears).
pub fn balanced_shards<'e, 'a>(
    examples: &'a [&'e Example],
    n_virtual: usize,
    parts: usize,
) -> Vec<&'a [&'e Example]> {
    let parts = parts.clamp(1, examples.len().max(1));
    if parts == 1 {
        return vec![examples];
    }
    let cost = |e: &Example| (e.ids.len() + n_virtual) as f64;
    let total: f64 = examples.iter().map(|e| cost(e)).sum();
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut acc) = (0usize, 0f64);
    for (i, e) in examples.iter().enumerate() {
        acc += cost(e);
        let left = examples.len() - (i + 1);
        let shards_left = parts - out.len() - 1;
        // Close the shard at its share of the cost, keeping one example for each later shard.
        if shards_left > 0
            && (acc >= total * (out.len() + 1) as f64 / parts as f64 || left == shards_left)
        {
            out.push(&examples[start..=i]);
            start = i + 1;
        }
    }
    if start < examples.len() {
        out.push(&examples[start..]);
    }
    out
}

/// Run `f` on each shard, the shards in parallel on rayon's pool (`RAYON_NUM_THREADS`),
/// results in shard order.
fn par_shards<'e, T: Send>(
    shards: &[&[&'e Example]],
    f: impl Fn(&[&'e Example]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    use rayon::prelude::*;
    if shards.len() == 1 {
        return Ok(vec![f(shards[0])?]);
    }
    shards.par_iter().map(|s| f(s)).collect()
}

/// Per-example gradients of one micro-batch (LoRA and prompt tuning): for each trainable
/// parameter `[B, ...shape]`, rows in the order of `examples`, and the per-example losses.
///
/// The examples are split into one contiguous shard per thread of rayon's pool, of about
/// equal token cost; each shard is its own [`TrainBatch`] (padded to its own longest
/// example) and its own batched backward ([`batched_per_example_grads`]), and the shards
/// run at the same time. Each example's gradient depends only on that example (padding
/// is masked out of attention and carries no loss), so the result equals one batched
/// backward of the whole micro-batch; memory is that of one micro-batch of the same
/// padded size.
pub fn per_example_grads(
    model: &TrainModel,
    method: &Method,
    params: &Params,
    examples: &[&Example],
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    if examples.is_empty() {
        return Err(TrainError::Other("empty micro-batch".into()));
    }
    let nv = method.virtual_tokens();
    let dev = model.base.device();
    let shards = balanced_shards(examples, nv, rayon::current_num_threads());
    let parts = par_shards(&shards, |s| {
        let batch = TrainBatch::new(s, nv, dev)?;
        batched_per_example_grads(model, method, params, &batch)
    })?;
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one shard"));
    }
    let mut losses = Vec::with_capacity(examples.len());
    let mut cols: Vec<Vec<Tensor>> = vec![Vec::with_capacity(parts.len()); params.tensors.len()];
    for (g, l) in parts {
        losses.extend(l);
        for (c, t) in cols.iter_mut().zip(g) {
            c.push(t);
        }
    }
    let grads = cols
        .iter()
        .map(|c| Tensor::cat(c, 0))
        .collect::<candle_core::Result<_>>()?;
    Ok((grads, losses))
}

/// The non-private gradient of a micro-batch (LoRA and prompt tuning): the gradient of the
/// summed per-example loss with respect to *shared* parameters (one copy broadcast over
/// the batch), i.e. the sum of the per-example gradients, computed with one backward per
/// shard and no per-example copies. This is the step of `dpsynth train --no-dp` and the
/// benchmark's non-private baseline. Shards run in parallel as in [`per_example_grads`].
pub fn summed_grads(
    model: &TrainModel,
    method: &Method,
    params: &Params,
    examples: &[&Example],
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    if examples.is_empty() {
        return Err(TrainError::Other("empty micro-batch".into()));
    }
    let nv = method.virtual_tokens();
    let dev = model.base.device();
    let shards = balanced_shards(examples, nv, rayon::current_num_threads());
    let parts = par_shards(&shards, |s| {
        let batch = TrainBatch::new(s, nv, dev)?;
        shared_param_grads(model, method, params, &batch)
    })?;
    let mut losses = Vec::with_capacity(examples.len());
    let mut sum: Option<Vec<Tensor>> = None;
    for (g, l) in parts {
        losses.extend(l);
        sum = Some(match sum {
            None => g,
            Some(s) => s
                .iter()
                .zip(&g)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?,
        });
    }
    Ok((sum.expect("at least one shard"), losses))
}

/// One backward of a batch's summed loss with the parameters shared by all its examples.
fn shared_param_grads(
    model: &TrainModel,
    method: &Method,
    params: &Params,
    batch: &TrainBatch,
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    let b = batch.batch;
    let vars: Vec<Var> = params
        .tensors
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<_>>()?;
    let bcast = |v: &Var| -> candle_core::Result<Tensor> {
        let mut shape = vec![b];
        shape.extend_from_slice(v.dims());
        v.as_tensor().unsqueeze(0)?.broadcast_as(shape)
    };
    let tr = match method {
        Method::Lora(cfg) => {
            let mut ab = BTreeMap::new();
            for (i, n) in params.names.iter().enumerate() {
                let (l, m, which) = parse_lora_name(n)
                    .ok_or_else(|| TrainError::Other(format!("not a LoRA parameter: {n}")))?;
                if which == 'A' {
                    ab.insert((l, m), (bcast(&vars[i])?, bcast(&vars[i + 1])?));
                }
            }
            Trainables::Lora {
                ab,
                scaling: cfg.scaling(),
            }
        }
        Method::Prompt { .. } => Trainables::Prompt(bcast(&vars[0])?),
        Method::Full => {
            return Err(TrainError::Other(
                "full fine-tuning computes gradients one example at a time (FullVars)".into(),
            ))
        }
    };
    let (loss, per) = model.loss(batch, &tr)?;
    let grads = loss.backward()?;
    let mut out = Vec::with_capacity(vars.len());
    for (v, n) in vars.iter().zip(&params.names) {
        let g = grads.get(v.as_tensor()).ok_or_else(|| {
            TrainError::Other(format!("internal error: no gradient reached `{n}`"))
        })?;
        out.push(g.clone());
    }
    Ok((out, per))
}

/// Full fine-tuning state for one logical step: every weight a variable (created once per
/// step, shared by all units of the step).
pub struct FullVars {
    vars: Vec<Var>,
    names: Vec<String>,
    weights: LlamaWeights,
}

impl FullVars {
    pub fn new(base: &LlamaWeights, params: &Params) -> Result<Self> {
        let vars: Vec<Var> = params
            .tensors
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<_>>()?;
        let vp = Params {
            names: params.names.clone(),
            tensors: vars.iter().map(|v| v.as_tensor().clone()).collect(),
        };
        let weights = vp.to_full_weights(base)?;
        Ok(Self {
            vars,
            names: params.names.clone(),
            weights,
        })
    }

    /// The gradient of one training unit (one example, or the sum over one user's
    /// examples), one example at a time. Memory: one copy of the gradients.
    pub fn unit_grad(&self, examples: &[&Example]) -> Result<(Vec<Tensor>, Vec<f32>)> {
        let model = TrainModel::new(&self.weights);
        let mut sum: Option<Vec<Tensor>> = None;
        let mut losses = Vec::new();
        for e in examples {
            let batch = TrainBatch::new(&[*e], 0, self.weights.device())?;
            let (loss, per) = model.loss(&batch, &Trainables::Full(&self.weights))?;
            losses.extend(per);
            let grads = loss.backward()?;
            let mut g = Vec::with_capacity(self.vars.len());
            for (v, n) in self.vars.iter().zip(&self.names) {
                match grads.get(v.as_tensor()) {
                    Some(t) => g.push(t.clone()),
                    None => {
                        return Err(TrainError::Other(format!(
                            "internal error: no gradient reached `{n}`"
                        )))
                    }
                }
            }
            drop(grads);
            sum = Some(match sum {
                None => g,
                Some(s) => s
                    .iter()
                    .zip(&g)
                    .map(|(a, b)| a + b)
                    .collect::<candle_core::Result<_>>()?,
            });
        }
        let sum = sum.ok_or_else(|| TrainError::Other("no examples".into()))?;
        Ok((sum, losses))
    }
}

/// The gradient of one unit under full fine-tuning (see [`FullVars::unit_grad`]).
pub fn full_example_grad(
    base: &LlamaWeights,
    params: &Params,
    examples: &[&Example],
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    FullVars::new(base, params)?.unit_grad(examples)
}
