//! The f32 reference forward pass of a llama model, with an optional adapter.
//!
//! Written from primitive candle ops only (no fused rms-norm / softmax / rope kernels), so that
//! it is differentiable and serves as the oracle for faster paths (generation, training).
//! Matches Hugging Face transformers' `LlamaForCausalLM` (see tests/reference.rs).

use std::ops::Range;

use candle_core::{DType, IndexOp, Tensor, D};

use crate::config::Activation;
use crate::{Adapter, LayerWeights, LlamaConfig, LlamaWeights, LmError, LoraAdapter, Result};

/// RMS norm from primitive ops: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let x = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    Ok(x.broadcast_mul(w)?)
}

/// Softmax over the last dimension from primitive ops.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?)
}

/// Rotary tables of layer 0 for the given positions: `(cos, sin)`, each `[positions.len(), head_dim / 2]`.
pub fn rope_tables(cfg: &LlamaConfig, positions: &Tensor) -> Result<(Tensor, Tensor)> {
    rope_tables_for_layer(cfg, 0, positions)
}

/// Rotary tables of layer `layer` (its rope base and scaling, see
/// [`LlamaConfig::rope_inv_freq`]) for the given positions.
pub fn rope_tables_for_layer(
    cfg: &LlamaConfig,
    layer: usize,
    positions: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let inv = cfg.rope_inv_freq(layer);
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), positions.device())?;
    let pos = positions.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let freqs = pos.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// RMS norm with the family's weight convention (`w`, or `1 + w` for Gemma).
pub fn family_rms_norm(cfg: &LlamaConfig, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let off = cfg.norm_weight_offset();
    if off == 0.0 {
        rms_norm(x, w, cfg.rms_norm_eps)
    } else {
        rms_norm(x, &(w + off)?, cfg.rms_norm_eps)
    }
}

/// The FFN gate activation from primitive ops (differentiable).
pub fn activation(cfg: &LlamaConfig, g: &Tensor) -> Result<Tensor> {
    Ok(match cfg.hidden_act {
        // silu: g * sigmoid(g); candle's sigmoid has a backward.
        Activation::Silu => (g * candle_nn::ops::sigmoid(g)?)?,
        // gelu, tanh approximation (transformers' `gelu_pytorch_tanh`).
        Activation::GeluPytorchTanh => {
            let c = (2.0f64 / std::f64::consts::PI).sqrt();
            let inner = ((g + (g.powf(3.0)? * 0.044715)?)? * c)?;
            ((g * 0.5)? * (inner.tanh()? + 1.0)?)?
        }
    })
}

/// Hugging Face rotate-half rope from primitive ops. `x: [b, h, t, hd]`, `cos/sin: [b, t, hd/2]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
}

/// `x @ w^T` for `x: [..., in]`, `w: [out, in]`.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_matmul(&w.t()?)?)
}

/// A linear layer with an optional LoRA delta: `x W^T + s (x A^T) B^T`.
fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    lora: Option<&LoraAdapter>,
    layer: usize,
    module: &str,
) -> Result<Tensor> {
    let y = linear(x, w)?;
    if let Some(l) = lora {
        let key = (layer, module.to_string());
        if let (Some(a), Some(b)) = (l.a.get(&key), l.b.get(&key)) {
            let d = linear(&linear(x, a)?, b)?;
            return Ok((y + (d * l.config.scaling())?)?);
        }
    }
    Ok(y)
}

/// Repeats each KV head `rep` times: `[b, kv, t, hd] -> [b, kv*rep, t, hd]` (HF `repeat_kv`).
pub fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, rep, t, hd))?
        .reshape((b, kv * rep, t, hd))?)
}

/// Adds an optional bias `[n]` to `y: [..., n]`.
fn add_bias(y: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

#[allow(clippy::too_many_arguments)]
fn layer_forward(
    cfg: &LlamaConfig,
    lw: &LayerWeights,
    li: usize,
    lora: Option<&LoraAdapter>,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let hd = cfg.head_dim();
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let h = family_rms_norm(cfg, x, &lw.attn_norm)?;
    let q = add_bias(lora_linear(&h, &lw.wq, lora, li, "q_proj")?, lw.bq.as_ref())?;
    let k = add_bias(lora_linear(&h, &lw.wk, lora, li, "k_proj")?, lw.bk.as_ref())?;
    let v = add_bias(lora_linear(&h, &lw.wv, lora, li, "v_proj")?, lw.bv.as_ref())?;
    let q = q.reshape((b, t, nh, hd))?;
    let k = k.reshape((b, t, nkv, hd))?;
    // Qwen3 / Gemma 3: RMSNorm over each head before rope.
    let q = match &lw.q_norm {
        Some(w) => family_rms_norm(cfg, &q, w)?,
        None => q,
    };
    let k = match &lw.k_norm {
        Some(w) => family_rms_norm(cfg, &k, w)?,
        None => k,
    };
    let q = q.transpose(1, 2)?.contiguous()?;
    let k = k.transpose(1, 2)?.contiguous()?;
    let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
    let q = apply_rope(&q, cos, sin)?;
    let k = apply_rope(&k, cos, sin)?;
    let k = repeat_kv(&k, nh / nkv)?.contiguous()?;
    let v = repeat_kv(&v, nh / nkv)?.contiguous()?;
    let att = (q.matmul(&k.t()?)? * cfg.attn_scale())?;
    let att = att.broadcast_add(mask)?;
    let att = softmax_last(&att)?;
    let o = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
    let o = lora_linear(&o, &lw.wo, lora, li, "o_proj")?;
    let o = match &lw.post_attn_norm {
        Some(w) => family_rms_norm(cfg, &o, w)?,
        None => o,
    };
    let x = (x + o)?;
    let h = family_rms_norm(cfg, &x, &lw.ffn_norm)?;
    let g = lora_linear(&h, &lw.w_gate, lora, li, "gate_proj")?;
    let u = lora_linear(&h, &lw.w_up, lora, li, "up_proj")?;
    let act = activation(cfg, &g)?;
    let m = lora_linear(&(act * u)?, &lw.w_down, lora, li, "down_proj")?;
    let m = match &lw.post_ffn_norm {
        Some(w) => family_rms_norm(cfg, &m, w)?,
        None => m,
    };
    Ok((x + m)?)
}

/// Value added to attention scores at masked positions (finite, so fully masked rows of
/// padding queries give a uniform distribution instead of NaN).
pub const MASK_VALUE: f32 = -1e30;

/// Logits `[b, t, vocab]` for a batch of token ids `[b, t]` (u32).
///
/// `attention_mask` (`[b, t]`, 1 for real tokens, 0 for padding; any dtype) allows left or
/// right padding: positions are counted over real tokens only (as transformers does), padding
/// keys are never attended to. Logits at padding positions are meaningless.
/// With a prompt-tuning adapter, the virtual tokens are prepended internally and their
/// logits are dropped: the output still has `t` positions.
pub fn forward_logits_batch(
    weights: &LlamaWeights,
    adapter: Option<&Adapter>,
    tokens: &Tensor,
    attention_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (w, lora, prompt) = match adapter {
        None => (weights, None, None),
        Some(Adapter::Lora(l)) => (weights, Some(l), None),
        Some(Adapter::Prompt(p)) => (weights, None, Some(&p.virtual_tokens)),
        Some(Adapter::Full(fw)) => (fw.as_ref(), None, None),
    };
    let cfg = &w.config;
    let dev = w.device();
    let (b, t) = tokens.dims2()?;
    let mask = match attention_mask {
        Some(m) => m.to_dtype(DType::F32)?,
        None => Tensor::ones((b, t), DType::F32, dev)?,
    };
    let mut x = w
        .embed
        .embedding(&tokens.flatten_all()?)?
        .reshape((b, t, cfg.hidden_size))?;
    if cfg.embed_scale() != 1.0 {
        // Gemma: token embeddings times √d (prompt-tuning vectors are inputs_embeds, unscaled).
        x = (x * cfg.embed_scale())?;
    }
    let n_virtual = match prompt {
        Some(p) => {
            let (n, d) = p.dims2()?;
            if d != cfg.hidden_size {
                return Err(LmError::Shape(format!(
                    "prompt adapter has width {d}, the model has hidden size {}",
                    cfg.hidden_size
                )));
            }
            let p = p.to_dtype(x.dtype())?.unsqueeze(0)?.expand((b, n, d))?;
            x = Tensor::cat(&[&p, &x], 1)?;
            n
        }
        None => 0,
    };
    let mask = if n_virtual > 0 {
        Tensor::cat(&[&Tensor::ones((b, n_virtual), DType::F32, dev)?, &mask], 1)?
    } else {
        mask
    };
    let tt = t + n_virtual;
    // Positions: number of real tokens before each position (0-based), as in transformers.
    let pos = (mask.cumsum(1)? - 1.0)?.relu()?;
    let (cos, sin) = rope_tables(cfg, &pos)?;
    // Additive mask [b, 1, tt, tt]: causal and key padding.
    let causal: Vec<f32> = (0..tt)
        .flat_map(|i| (0..tt).map(move |j| if j <= i { 0.0 } else { MASK_VALUE }))
        .collect();
    let causal = Tensor::from_vec(causal, (1, 1, tt, tt), dev)?;
    let keypad = ((mask.ones_like()? - &mask)? * MASK_VALUE as f64)?.reshape((b, 1, 1, tt))?;
    let add_mask = causal.broadcast_add(&keypad)?;
    for (li, lw) in w.layers.iter().enumerate() {
        match cfg.layer_window(li) {
            None if !cfg.has_layer_variants() => {
                x = layer_forward(cfg, lw, li, lora, &x, &cos, &sin, &add_mask)?;
            }
            None => {
                let (cos, sin) = rope_tables_for_layer(cfg, li, &pos)?;
                x = layer_forward(cfg, lw, li, lora, &x, &cos, &sin, &add_mask)?;
            }
            Some(win) => {
                // Sliding window: key j visible to query i iff i - win < j <= i (indices
                // count padding, which is contiguous at either end, so within real tokens
                // this is the same as counting positions).
                let local: Vec<f32> = (0..tt)
                    .flat_map(|i| (0..tt).map(move |j| if j + win <= i { MASK_VALUE } else { 0.0 }))
                    .collect();
                let local = Tensor::from_vec(local, (1, 1, tt, tt), dev)?;
                let m = add_mask.broadcast_add(&local)?;
                let (cos, sin) = rope_tables_for_layer(cfg, li, &pos)?;
                x = layer_forward(cfg, lw, li, lora, &x, &cos, &sin, &m)?;
            }
        }
    }
    let x = family_rms_norm(cfg, &x, &w.final_norm)?;
    let x = if n_virtual > 0 {
        x.narrow(1, n_virtual, t)?
    } else {
        x
    };
    linear(&x, w.lm_head())
}

/// Logits `[t, vocab]` of one sequence (no padding), with an optional adapter.
pub fn forward_logits(
    weights: &LlamaWeights,
    adapter: Option<&Adapter>,
    tokens: &[u32],
) -> Result<Tensor> {
    if tokens.is_empty() {
        return Err(LmError::Other(
            "forward_logits: empty token sequence".into(),
        ));
    }
    let ids = Tensor::new(tokens, weights.device())?.unsqueeze(0)?;
    Ok(forward_logits_batch(weights, adapter, &ids, None)?.squeeze(0)?)
}

/// Summed and mean next-token cross-entropy (natural log) over a range of target positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceLoss {
    /// Sum of `-log p(tokens[i] | tokens[..i])` over the target positions.
    pub sum: f64,
    /// Number of target positions.
    pub count: usize,
}

impl SequenceLoss {
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Log-probabilities `[t, vocab]` from logits, computed in f32 with max-subtraction.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?;
    let z = logits.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(z.broadcast_sub(&lse)?)
}

/// Next-token cross-entropy of `tokens` at target positions `targets` (each `i` in the range
/// scores `tokens[i]` given `tokens[..i]`, so the range must lie within `1..tokens.len()`).
/// `sequence_loss(w, None, &ids, 1..ids.len()).mean()` is the usual mean next-token CE.
pub fn sequence_loss(
    weights: &LlamaWeights,
    adapter: Option<&Adapter>,
    tokens: &[u32],
    targets: Range<usize>,
) -> Result<SequenceLoss> {
    if targets.start == 0 || targets.end > tokens.len() || targets.start > targets.end {
        return Err(LmError::Other(format!(
            "sequence_loss: target range {targets:?} must lie within 1..{}",
            tokens.len()
        )));
    }
    if targets.is_empty() {
        return Ok(SequenceLoss { sum: 0.0, count: 0 });
    }
    let logits = forward_logits(weights, adapter, &tokens[..targets.end])?;
    let lp = log_softmax(&logits.narrow(0, targets.start - 1, targets.len())?)?;
    let tgt = Tensor::new(&tokens[targets.clone()], logits.device())?.unsqueeze(1)?;
    let picked = lp.gather(&tgt, 1)?.to_dtype(DType::F64)?;
    let sum = -picked.sum_all()?.to_scalar::<f64>()?;
    Ok(SequenceLoss {
        sum,
        count: targets.len(),
    })
}

/// The `k` largest entries of a 1-D tensor: `(ids, values)` in decreasing order.
pub fn top_k(logits: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    let v: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    idx.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    let vals = idx.iter().map(|&i| v[i as usize]).collect();
    Ok((idx, vals))
}

/// Greedy decoding with the reference forward (recomputes the full sequence each step; slow,
/// for tests). Returns the `n` new token ids.
pub fn greedy_reference(
    weights: &LlamaWeights,
    adapter: Option<&Adapter>,
    prompt: &[u32],
    n: usize,
) -> Result<Vec<u32>> {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let logits = forward_logits(weights, adapter, &ids)?;
        let last = logits.i(ids.len() - 1)?;
        let next = last.argmax(0)?.to_scalar::<u32>()?;
        ids.push(next);
    }
    Ok(ids[prompt.len()..].to_vec())
}
