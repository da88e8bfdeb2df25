//! Batched sampling with a KV cache, for synthetic data generation.
//!
//! The generator keeps `batch_size` slots. Each slot holds one sequence with its own KV cache
//! rows, its own rope positions and its own random generator (seeded per request, so a request's
//! output does not depend on which slot or batch it ran in, up to floating-point rounding of the
//! batched matmuls). A new prompt is prefilled into a free slot, then all busy slots decode one
//! token per step in one batched forward pass with an attention mask over their cache lengths.
//! A finished sequence is handed to the caller at once and its slot is refilled, so a batch
//! never waits for its longest member.
//!
//! Weights are packed bf16 (default on CPUs with AVX-512 BF16; fastest, see
//! [`WeightFormat::Bf16`]), f32 (exact: greedy decoding reproduces the reference forward; the
//! default elsewhere) or requantized to Q8_0 (see [`WeightFormat::Q8_0`]). A LoRA or
//! full adapter is merged into the weights before conversion; a prompt-tuning adapter is
//! prepended at prefill.

use std::collections::VecDeque;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use rand::{Rng, SeedableRng};
use std::sync::Arc;

use crate::kernels::fast_exp;
use crate::kernels::{packed_linear, PackedWeight};

use crate::config::Activation;
use crate::{Adapter, LlamaConfig, LlamaWeights, LmError, Result};

/// How the generator stores the linear weights.
///
/// The default is [`WeightFormat::Bf16`] on CPUs with AVX-512 BF16 (see
/// [`crate::kernels::bf16_kernel_available`]) and [`WeightFormat::F32`] elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// f32 (exact, 4 bytes per weight): matches the reference forward.
    F32,
    /// Q8_0 blocks (8-bit, one scale per 32 weights; 1.06 bytes per weight). candle's Q8_0
    /// matmul also rounds the activations to Q8_0, which costs accuracy on this model family
    /// (SmolLM2-135M: KL(f32 || q8_0) of the next-token distribution 3e-3 to 1e-2 nats, max
    /// logit difference about 1); it is 2-3x faster than f32 at batch 1 and no faster at batch 8+.
    Q8_0,
    /// bf16 weights packed for the AVX-512 BF16 kernel ([`crate::kernels::PackedWeight`], 2 bytes
    /// per weight); activations are rounded to bf16 at each product, accumulation is f32.
    /// SmolLM2-135M vs the transformers f32 reference: same top-10 set on every reference
    /// prompt, logits within 0.11, mean CE within 0.021 nats, greedy continuation identical
    /// (tests/reference.rs). On machines without AVX-512 BF16 it runs on a
    /// portable kernel (same numbers, slower); on a non-CPU device the weights are kept as
    /// bf16-rounded f32 tensors.
    Bf16,
}

impl Default for WeightFormat {
    /// [`WeightFormat::Bf16`] when the AVX-512 BF16 kernel is available, else [`WeightFormat::F32`].
    fn default() -> Self {
        if crate::kernels::bf16_kernel_available() {
            Self::Bf16
        } else {
            Self::F32
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = LmError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "bf16" => Ok(Self::Bf16),
            "auto" | "default" => Ok(Self::default()),
            _ => Err(LmError::Config(format!(
                "unknown weight format `{s}` (expected auto, bf16, f32 or q8_0)"
            ))),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Q8_0 => "q8_0",
            Self::Bf16 => "bf16",
        })
    }
}

/// Sampling settings shared by all requests of a [`Generator::generate`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (None or 0: no limit).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens with total probability >= `top_p` (None or 1.0: no limit).
    pub top_p: Option<f64>,
    pub max_new_tokens: usize,
    /// Stop a sequence when it produces one of these ids (usually the model's EOS).
    pub stop_tokens: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            max_new_tokens: 64,
            stop_tokens: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(LmError::Config("temperature must be >= 0".into()));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(LmError::Config("top_p must be in (0, 1]".into()));
            }
        }
        if self.max_new_tokens == 0 {
            return Err(LmError::Config("max_new_tokens must be positive".into()));
        }
        Ok(())
    }
}

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt_ids: Vec<u32>,
    /// Seed of this sequence's sampler (ChaCha8).
    pub seed: u64,
}

/// A finished sequence, handed to the caller as soon as it is done.
#[derive(Debug, Clone)]
pub struct GenOutput {
    /// Index of the request in the input vector.
    pub index: usize,
    /// The new tokens (without the prompt; the stop token, if any, is not included).
    pub tokens: Vec<u32>,
    /// True when the sequence ended with a stop token, false when it hit a length limit.
    pub stopped: bool,
    /// Natural-log probability of the sampled tokens (the stop token included when `stopped`)
    /// under the model's own next-token distribution, before temperature, top-k and top-p: the
    /// teacher-forced `log p(tokens | prompt)` of [`Generator::continuation_log_likelihoods`],
    /// computed while sampling (up to the rounding of the batched products).
    pub logprob: f64,
}

/// Throughput of a [`Generator::generate`] call.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenStats {
    pub sequences: usize,
    pub prompt_tokens: usize,
    /// Generated tokens (stop tokens included), the usual numerator of tokens/s.
    pub new_tokens: usize,
    pub seconds: f64,
}

impl GenStats {
    pub fn tokens_per_second(&self) -> f64 {
        self.new_tokens as f64 / self.seconds.max(1e-9)
    }
}

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    /// Sequences decoded together.
    pub batch_size: usize,
    pub weights: WeightFormat,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            weights: WeightFormat::default(),
        }
    }
}

enum Lin {
    F32(Tensor),
    Q(QMatMul),
    Packed(Arc<PackedWeight>),
}

impl Lin {
    fn new(w: &Tensor, fmt: WeightFormat) -> Result<Self> {
        if fmt == WeightFormat::Bf16 {
            if w.device().is_cpu() {
                return Ok(Lin::Packed(Arc::new(PackedWeight::for_forward(w)?)));
            }
            // No device kernel: keep the bf16-rounded weight as f32 (same weight numerics).
            let w = w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
            return Ok(Lin::F32(w.t()?.contiguous()?));
        }
        let w = w.to_dtype(DType::F32)?.contiguous()?;
        Ok(match fmt {
            // Stored transposed (`[in, out]`, row-major): gemm then streams the weight without
            // repacking it on every call (measured: repacking a transposed rhs cost ~60% of decode).
            WeightFormat::F32 | WeightFormat::Bf16 => Lin::F32(w.t()?.contiguous()?),
            WeightFormat::Q8_0 => {
                if w.dim(1)? % GgmlDType::Q8_0.block_size() != 0 {
                    Lin::F32(w.t()?.contiguous()?)
                } else {
                    Lin::Q(QMatMul::from_qtensor(QTensor::quantize(
                        &w,
                        GgmlDType::Q8_0,
                    )?)?)
                }
            }
        })
    }

    /// Bytes of weight data.
    fn bytes(&self) -> usize {
        match self {
            Lin::F32(w) => w.elem_count() * 4,
            // Q8_0: 32 int8 values and one f16 scale per block.
            Lin::Q(q) => match q {
                QMatMul::QTensor(t) => t.storage_size_in_bytes(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => {
                    t.elem_count() * t.dtype().size_in_bytes()
                }
            },
            Lin::Packed(p) => p.bytes(),
        }
    }

    /// `x: [n, in]` contiguous -> `[n, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Lin::F32(w) => x.matmul(w)?,
            Lin::Q(q) => q.forward(x)?,
            Lin::Packed(p) => packed_linear(x, p)?,
        })
    }
}

struct FastLayer {
    /// Norm multipliers (the family's offset already added: Gemma's `1 + w`).
    attn_norm: Tensor,
    ffn_norm: Tensor,
    qkv: Lin,
    /// `[bq | bk | bv]` (Qwen2).
    qkv_bias: Option<Tensor>,
    /// Per-head RMSNorm multipliers of q and k, `[head_dim]` (Qwen3, Gemma 3).
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    /// Norms of the attention and FFN outputs (Gemma 3).
    post_attn_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
    o: Lin,
    gate_up: Lin,
    down: Lin,
    /// Sliding attention window (Gemma 3 local layers), `None` for global attention.
    window: Option<usize>,
    /// Index into [`FastModel::inv_freq`] (layers share identical rope tables).
    rope: usize,
}

/// Inference-only model with fused projections (q|k|v and gate|up) and fast kernels.
struct FastModel {
    cfg: LlamaConfig,
    /// Token embeddings, times the family's embedding scale (Gemma: √d).
    embed: Tensor,
    layers: Vec<FastLayer>,
    final_norm: Tensor,
    lm_head: Lin,
    /// Distinct rope inverse-frequency tables `[1, hd/2]` (Gemma 3: local and global).
    inv_freq: Vec<Tensor>,
    virtual_tokens: Option<Tensor>,
}

impl FastModel {
    fn new(w: &LlamaWeights, prompt: Option<&Tensor>, fmt: WeightFormat) -> Result<Self> {
        let cfg = w.config.clone();
        let off = cfg.norm_weight_offset();
        let norm = |t: &Tensor| -> Result<Tensor> {
            let t = t.to_dtype(DType::F32)?;
            Ok(if off == 0.0 { t } else { (t + off)? })
        };
        let opt_norm = |t: &Option<Tensor>| t.as_ref().map(norm).transpose();
        let hd = cfg.head_dim();
        let mut tables: Vec<Vec<f32>> = Vec::new();
        let mut layers = Vec::with_capacity(w.layers.len());
        for (li, l) in w.layers.iter().enumerate() {
            let inv = cfg.rope_inv_freq(li);
            let rope = match tables.iter().position(|t| *t == inv) {
                Some(i) => i,
                None => {
                    tables.push(inv);
                    tables.len() - 1
                }
            };
            let qkv_bias = match (&l.bq, &l.bk, &l.bv) {
                (None, None, None) => None,
                (Some(q), Some(k), Some(v)) => {
                    Some(Tensor::cat(&[q, k, v], 0)?.to_dtype(DType::F32)?)
                }
                _ => {
                    return Err(LmError::Shape(format!(
                        "layer {li}: q/k/v biases must be all present or all absent"
                    )))
                }
            };
            layers.push(FastLayer {
                attn_norm: norm(&l.attn_norm)?,
                ffn_norm: norm(&l.ffn_norm)?,
                qkv: Lin::new(&Tensor::cat(&[&l.wq, &l.wk, &l.wv], 0)?, fmt)?,
                qkv_bias,
                q_norm: opt_norm(&l.q_norm)?,
                k_norm: opt_norm(&l.k_norm)?,
                post_attn_norm: opt_norm(&l.post_attn_norm)?,
                post_ffn_norm: opt_norm(&l.post_ffn_norm)?,
                o: Lin::new(&l.wo, fmt)?,
                gate_up: Lin::new(&Tensor::cat(&[&l.w_gate, &l.w_up], 0)?, fmt)?,
                down: Lin::new(&l.w_down, fmt)?,
                window: cfg.layer_window(li),
                rope,
            });
        }
        let inv_freq = tables
            .into_iter()
            .map(|t| Tensor::from_vec(t, (1, hd / 2), w.device()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let embed = w.embed.to_dtype(DType::F32)?;
        let embed = if cfg.embed_scale() != 1.0 {
            (embed * cfg.embed_scale())?
        } else {
            embed
        };
        Ok(Self {
            embed,
            layers,
            final_norm: norm(&w.final_norm)?,
            lm_head: Lin::new(w.lm_head(), fmt)?,
            inv_freq,
            virtual_tokens: prompt.map(|p| p.to_dtype(DType::F32)).transpose()?,
            cfg,
        })
    }

    fn n_virtual(&self) -> usize {
        self.virtual_tokens
            .as_ref()
            .map(|v| v.dims()[0])
            .unwrap_or(0)
    }

    /// cos/sin `[b, t, hd/2]` of rope table `table` for positions `[b, t]` (f32).
    fn rope(&self, table: usize, pos: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = pos
            .unsqueeze(D::Minus1)?
            .broadcast_mul(&self.inv_freq[table])?;
        Ok((f.cos()?.contiguous()?, f.sin()?.contiguous()?))
    }
}

/// Per-layer KV cache: `[slots * kv_heads * cap, head_dim]`, viewed as `[slots, kv, cap, hd]`.
struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    slots: usize,
    cap: usize,
}

impl KvCache {
    fn new(cfg: &LlamaConfig, slots: usize, cap: usize, dev: &Device) -> Result<Self> {
        let kv = cfg.num_key_value_heads;
        let hd = cfg.head_dim();
        let mk = || Tensor::zeros((slots * kv * cap, hd), DType::F32, dev);
        let mut k = Vec::new();
        let mut v = Vec::new();
        for _ in 0..cfg.num_hidden_layers {
            k.push(mk()?);
            v.push(mk()?);
        }
        Ok(Self { k, v, slots, cap })
    }

    /// Row indices for writing `[b, kv, t]` entries: slot `slots[i]`, positions `pos[i] + j`.
    fn rows(
        &self,
        kv: usize,
        hd: usize,
        slots: &[usize],
        starts: &[usize],
        t: usize,
        dev: &Device,
    ) -> Result<Tensor> {
        let mut idx = Vec::with_capacity(slots.len() * kv * t * hd);
        for (s, p0) in slots.iter().zip(starts) {
            for h in 0..kv {
                for j in 0..t {
                    let row = ((s * kv + h) * self.cap + p0 + j) as u32;
                    idx.extend(std::iter::repeat_n(row, hd));
                }
            }
        }
        Ok(Tensor::from_vec(idx, (slots.len() * kv * t, hd), dev)?)
    }
}

/// One forward pass over `[b, t]` new tokens (or embeddings) of `b` slots.
/// `k`/`v` of the new tokens are written into the cache at rows `starts[i]..starts[i]+t`;
/// attention covers cache positions `0..=start+j` of each slot.
/// Returns the logits `[b, vocab]` of each row's position `last[i]` (default: the last position
/// `t - 1`), or with `all_positions` every position's `[b * t, vocab]`.
#[allow(clippy::too_many_arguments)]
fn forward_step(
    m: &FastModel,
    cache: &KvCache,
    x: Tensor,
    slots: &[usize],
    starts: &[usize],
    last: Option<&[usize]>,
    all_positions: bool,
) -> Result<Tensor> {
    let rows = if all_positions {
        Rows::All
    } else {
        Rows::Last(last)
    };
    let h = forward_hidden(m, cache, x, slots, starts, rows)?;
    m.lm_head.forward(&h)
}

/// Which positions' final hidden states [`forward_hidden`] returns.
enum Rows<'a> {
    /// One row per slot: position `last[i]` (default `t - 1`).
    Last(Option<&'a [usize]>),
    /// Every position, `[b * t, d]`.
    All,
    /// These flat indices `i * t + j` into the `[b * t]` positions.
    Flat(&'a [u32]),
}

/// The decoder stack of [`forward_step`] up to the final norm: the normed hidden states of the
/// selected positions (the lm head is applied by the caller, possibly in chunks).
fn forward_hidden(
    m: &FastModel,
    cache: &KvCache,
    x: Tensor,
    slots: &[usize],
    starts: &[usize],
    rows: Rows<'_>,
) -> Result<Tensor> {
    let cfg = &m.cfg;
    let dev = x.device().clone();
    let (b, t, d) = x.dims3()?;
    let hd = cfg.head_dim();
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let rep = nh / nkv;
    let eps = cfg.rms_norm_eps as f32;
    let len = starts.iter().max().copied().unwrap_or(0) + t; // attended cache length
    let pos: Vec<f32> = starts
        .iter()
        .flat_map(|&s| (0..t).map(move |j| (s + j) as f32))
        .collect();
    let pos = Tensor::from_vec(pos, (b, t), &dev)?;
    let ropes = (0..m.inv_freq.len())
        .map(|i| m.rope(i, &pos))
        .collect::<Result<Vec<_>>>()?;
    // Additive mask [b, 1, t, len]: key j visible to query i of slot s iff j <= starts[s] + i
    // (and, with a sliding window w, starts[s] + i - j < w).
    let make_mask = |window: Option<usize>| -> Result<Tensor> {
        let mut mask = Vec::with_capacity(b * t * len);
        for &s in starts {
            for i in 0..t {
                mask.extend((0..len).map(|j| {
                    let visible = j <= s + i && window.is_none_or(|w| j + w > s + i);
                    if visible {
                        0f32
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
            }
        }
        Ok(Tensor::from_vec(mask, (b, 1, t, len), &dev)?)
    };
    let mask = make_mask(None)?;
    let mut local_masks: Vec<(usize, Tensor)> = Vec::new();
    for l in &m.layers {
        if let Some(w) = l.window {
            if !local_masks.iter().any(|(x, _)| *x == w) {
                local_masks.push((w, make_mask(Some(w))?));
            }
        }
    }
    // On the CPU, SwiGLU runs as a fused kernel (crate::cpu_ops); elsewhere as candle ops.
    let cpu = dev.is_cpu();
    let cache_rows = cache.rows(nkv, hd, slots, starts, t, &dev)?;
    let contiguous = slots.iter().enumerate().all(|(i, &s)| s == slots[0] + i);
    let slot_idx = Tensor::from_vec(slots.iter().map(|&s| s as u32).collect::<Vec<_>>(), b, &dev)?;
    let scale = cfg.attn_scale();
    // RMSNorm over each head (`[rows, heads * hd]` -> same shape).
    let head_norm = |y: Tensor, heads: usize, w: &Option<Tensor>| -> Result<Tensor> {
        Ok(match w {
            Some(w) => {
                candle_nn::ops::rms_norm(&y.contiguous()?.reshape((b * t * heads, hd))?, w, eps)?
                    .reshape((b * t, heads * hd))?
            }
            None => y,
        })
    };

    let mut x = x.reshape((b * t, d))?;
    for (li, l) in m.layers.iter().enumerate() {
        let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps)?;
        let qkv = l.qkv.forward(&h)?;
        let qkv = match &l.qkv_bias {
            Some(bias) => qkv.broadcast_add(bias)?,
            None => qkv,
        };
        let q = qkv.narrow(1, 0, nh * hd)?;
        let k = qkv.narrow(1, nh * hd, nkv * hd)?;
        let v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd)?;
        let q = head_norm(q, nh, &l.q_norm)?;
        let k = head_norm(k, nkv, &l.k_norm)?;
        let (cos, sin) = &ropes[l.rope];
        let mask = match l.window {
            Some(w) => {
                &local_masks
                    .iter()
                    .find(|(x, _)| *x == w)
                    .expect("built above")
                    .1
            }
            None => &mask,
        };
        let q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        cache.k[li].scatter_set(&cache_rows, &k.reshape((b * nkv * t, hd))?, 0)?;
        cache.v[li].scatter_set(&cache_rows, &v.reshape((b * nkv * t, hd))?, 0)?;
        let view = |c: &Tensor| -> Result<Tensor> {
            let c = c.reshape((cache.slots, nkv, cache.cap, hd))?;
            let c = if contiguous {
                c.narrow(0, slots[0], b)?
            } else {
                c.index_select(&slot_idx, 0)?
            };
            Ok(c.narrow(2, 0, len)?)
        };
        let kc = view(&cache.k[li])?; // [b, kv, len, hd]
        let vc = view(&cache.v[li])?;
        // Grouped-query attention without copying K/V: [b, kv, rep*t, hd] queries.
        let q = q.reshape((b, nkv, rep * t, hd))?;
        let att = (q.matmul(&kc.t()?)? * scale)?; // [b, kv, rep*t, len]
        let att = att.reshape((b, nkv * rep, t, len))?.broadcast_add(mask)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let att = att.reshape((b, nkv, rep * t, len))?;
        let o = att.matmul(&vc.contiguous()?)?; // [b, kv, rep*t, hd]
        let o = o
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b * t, nh * hd))?;
        let o = l.o.forward(&o.contiguous()?)?;
        let o = match &l.post_attn_norm {
            Some(w) => candle_nn::ops::rms_norm(&o, w, eps)?,
            None => o,
        };
        x = (x + o)?;
        let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
        let gu = l.gate_up.forward(&h)?;
        let ff = cfg.intermediate_size;
        let a = match cfg.hidden_act {
            Activation::Silu if cpu => crate::cpu_ops::swiglu(&gu, ff)?,
            Activation::Silu => {
                let g = gu.narrow(1, 0, ff)?;
                let u = gu.narrow(1, ff, ff)?;
                (candle_nn::ops::silu(&g)? * u)?
            }
            Activation::GeluPytorchTanh => {
                // candle's `gelu` is the tanh approximation.
                let g = gu.narrow(1, 0, ff)?;
                let u = gu.narrow(1, ff, ff)?;
                (g.gelu()? * u)?
            }
        };
        let y = l.down.forward(&a.contiguous()?)?;
        let y = match &l.post_ffn_norm {
            Some(w) => candle_nn::ops::rms_norm(&y, w, eps)?,
            None => y,
        };
        x = (x + y)?;
    }
    let last = match rows {
        Rows::All => x,
        Rows::Flat(idx) => x.index_select(&Tensor::from_vec(idx.to_vec(), idx.len(), &dev)?, 0)?,
        Rows::Last(Some(lp)) if t > 1 => {
            let rows: Vec<u32> = lp
                .iter()
                .enumerate()
                .map(|(i, &p)| (i * t + p.min(t - 1)) as u32)
                .collect();
            x.index_select(&Tensor::from_vec(rows, b, &dev)?, 0)?
        }
        Rows::Last(_) => x.reshape((b, t, d))?.narrow(1, t - 1, 1)?.reshape((b, d))?,
    };
    Ok(candle_nn::ops::rms_norm(
        &last.contiguous()?,
        &m.final_norm,
        eps,
    )?)
}

/// Index of the entry of `w` (non-negative weights) where the running sum passes `u`.
fn walk(w: &[f32], mut u: f64) -> usize {
    for (j, &x) in w.iter().enumerate() {
        u -= x as f64;
        if u < 0.0 {
            return j;
        }
    }
    // Rounding: the last entry with positive weight.
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
}

/// Logit-gap bins of the nucleus search: `BINS_PER_NAT` bins per nat of `(max - logit) / T`.
const NUCLEUS_BINS: usize = 1024;
const BINS_PER_NAT: f32 = 16.0;

thread_local! {
    /// Sampler scratch (weights, bins, ids), reused across calls to avoid page-faulting a
    /// vocabulary-sized allocation per token.
    static SAMPLER_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<u16>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Draws the next token from `logits` (one row).
///
/// Temperature 0 (or top-k 1) is argmax. Otherwise the candidates are the top-k tokens (all if
/// no top-k), weighted by `exp((logit - max) / T)`; with top-p, only the shortest prefix of
/// the candidates sorted by decreasing logit (ties: lower id first) whose probability mass
/// reaches `top_p`. The nucleus is found without sorting the vocabulary: the weights are
/// binned by logit gap, the bin where the cumulative mass crosses `top_p` is located, and only
/// that bin's tokens are sorted.
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i as u32)
            .unwrap_or(0)
    };
    if p.temperature == 0.0 || p.top_k == Some(1) || logits.is_empty() {
        return argmax();
    }
    SAMPLER_SCRATCH.with(|s| {
        let mut guard = s.borrow_mut();
        let (ew, bins, ids) = &mut *guard;
        sample_with(logits, p, rng, ew, bins, ids)
    })
}

fn sample_with(
    logits: &[f32],
    p: &SamplingParams,
    rng: &mut impl Rng,
    ew: &mut Vec<f32>,
    bins: &mut Vec<u16>,
    ids: &mut Vec<u32>,
) -> u32 {
    let inv_t = 1.0 / p.temperature as f32;
    let n = logits.len();
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    // Candidate set: the top-k ids, or all (then `ids` stays empty and j is the id).
    ids.clear();
    if let Some(k) = p.top_k.filter(|&k| k > 0 && k < n) {
        ids.extend(0..n as u32);
        ids.select_nth_unstable_by(k - 1, by_logit);
        ids.truncate(k);
    }
    let all = ids.is_empty();
    let logit_of = |j: usize| {
        if all {
            logits[j]
        } else {
            logits[ids[j] as usize]
        }
    };
    let len = if all { n } else { ids.len() };
    let max = (0..len).map(logit_of).fold(f32::NEG_INFINITY, f32::max);
    ew.clear();
    if all {
        ew.extend(logits.iter().map(|&l| fast_exp((l - max) * inv_t)));
    } else {
        ew.extend(
            ids.iter()
                .map(|&i| fast_exp((logits[i as usize] - max) * inv_t)),
        );
    }
    let id_of = |j: usize| if all { j as u32 } else { ids[j] };
    let Some(tp) = p.top_p.filter(|&x| x < 1.0) else {
        let total: f64 = ew.iter().map(|&x| x as f64).sum();
        return id_of(walk(ew, rng.random::<f64>() * total));
    };
    let (nucleus, weights) = nucleus(logits, ids, inv_t, max, tp, ew, bins);
    let total: f64 = weights.iter().map(|&x| x as f64).sum();
    nucleus[walk(&weights, rng.random::<f64>() * total)]
}

/// The top-p nucleus of the candidates `j < ew.len()` (id `ids[j]`, or `j` when `ids` is
/// empty; weight `ew[j]`; `max` is their largest logit): ids and weights. See [`sample_token`].
fn nucleus(
    logits: &[f32],
    ids: &[u32],
    inv_t: f32,
    max: f32,
    tp: f64,
    ew: &[f32],
    bins: &mut Vec<u16>,
) -> (Vec<u32>, Vec<f32>) {
    let len = ew.len();
    let all = ids.is_empty();
    let id_of = |j: usize| if all { j as u32 } else { ids[j] };
    let logit_of = |j: usize| logits[id_of(j) as usize];
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let z: f64 = ew.iter().map(|&x| x as f64).sum();
    let target = tp * z;
    // Pre-filter: the candidates with weight below `c` hold less than `len * c = (1 - tp) z`
    // in total, so the heavier ones alone reach the target and the nucleus (a prefix of the
    // sorted order) contains only tokens with weight >= c. One cheap pass drops the long tail.
    let c = ((1.0 - tp) * z / len as f64) as f32;
    let heavy: Vec<u32> = (0..len as u32).filter(|&j| ew[j as usize] >= c).collect();
    // Bin the heavy candidates by logit gap (monotone in the sort order).
    bins.clear();
    bins.extend(heavy.iter().map(|&j| {
        let gap = (max - logit_of(j as usize)) * inv_t * BINS_PER_NAT;
        // NaN and huge gaps go to the last bin.
        if gap < (NUCLEUS_BINS - 1) as f32 {
            gap.max(0.0) as u16
        } else {
            (NUCLEUS_BINS - 1) as u16
        }
    }));
    let mut mass = vec![0f64; NUCLEUS_BINS];
    for (&j, &b) in heavy.iter().zip(bins.iter()) {
        mass[b as usize] += ew[j as usize] as f64;
    }
    // The crossing bin: where the cumulative mass reaches the target.
    let mut cum = 0.0;
    let mut cross = NUCLEUS_BINS - 1;
    for (b, &m) in mass.iter().enumerate() {
        if cum + m >= target {
            cross = b;
            break;
        }
        cum += m;
    }
    // The nucleus: every heavy candidate in a bin before `cross`, then the crossing bin's
    // candidates in sorted order until the mass reaches the target.
    let mut nucleus: Vec<u32> = Vec::new();
    let mut weights: Vec<f32> = Vec::new();
    let mut crossing: Vec<u32> = Vec::new();
    for (&j, &b) in heavy.iter().zip(bins.iter()) {
        let b = b as usize;
        if b < cross {
            nucleus.push(id_of(j as usize));
            weights.push(ew[j as usize]);
        } else if b == cross {
            crossing.push(j);
        }
    }
    crossing.sort_unstable_by(|&a, &b| by_logit(&id_of(a as usize), &id_of(b as usize)));
    for &j in &crossing {
        nucleus.push(id_of(j as usize));
        weights.push(ew[j as usize]);
        cum += ew[j as usize] as f64;
        if cum >= target {
            break;
        }
    }
    (nucleus, weights)
}

struct Slot {
    index: usize,
    tokens: Vec<u32>,
    /// Cache length (positions written so far, virtual tokens and prompt included).
    len: usize,
    /// Last sampled token, fed at the next step.
    next: u32,
    rng: rand_chacha::ChaCha8Rng,
    max_len: usize,
    logprob: f64,
}

/// Most pairs per batched scoring pass ([`Generator::continuation_log_likelihoods`]).
const SCORE_BATCH: usize = 32;
/// Most padded positions per scoring pass.
const SCORE_TOKENS: usize = 2048;
/// Rows per lm-head product when scoring (a [rows, vocab] f32 block each).
const HEAD_CHUNK: usize = 256;

/// Batched sampler over a fixed set of weights (and optional adapter).
pub struct Generator {
    model: FastModel,
    opts: GeneratorOptions,
    device: Device,
}

impl Generator {
    /// Builds the generator: merges a LoRA/full adapter into the weights, then converts them
    /// to `opts.weights` (f32 or Q8_0) on `device`.
    pub fn new(
        weights: &LlamaWeights,
        adapter: Option<&Adapter>,
        opts: GeneratorOptions,
        device: &Device,
    ) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(LmError::Config("batch_size must be positive".into()));
        }
        let merged;
        let (w, prompt) = match adapter {
            None => (weights, None),
            Some(Adapter::Prompt(p)) => {
                if p.virtual_tokens.dims().get(1) != Some(&weights.config.hidden_size) {
                    return Err(LmError::Shape(format!(
                        "prompt adapter has shape {:?}, the model needs [n, {}]",
                        p.virtual_tokens.dims(),
                        weights.config.hidden_size
                    )));
                }
                (weights, Some(&p.virtual_tokens))
            }
            Some(a) => {
                merged = a.merged(weights)?.expect("LoRA/full adapters merge");
                (&merged, None)
            }
        };
        let w = if w.device().same_device(device) {
            w.clone()
        } else {
            to_device(w, device)?
        };
        let model = FastModel::new(
            &w,
            prompt.map(|p| p.to_device(device)).transpose()?.as_ref(),
            opts.weights,
        )?;
        Ok(Self {
            model,
            opts,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.model.cfg
    }

    /// Bytes of the linear weights (projections and lm head) in their generation format: what a
    /// decode step reads from memory, at least once.
    pub fn weight_bytes(&self) -> usize {
        let m = &self.model;
        m.lm_head.bytes()
            + m.layers
                .iter()
                .map(|l| l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes())
                .sum::<usize>()
    }

    /// Logits of the next token after `prompt` (one prefill), `[vocab]`; for quality checks.
    pub fn next_token_logits(&self, prompt: &[u32]) -> Result<Tensor> {
        let nv = self.model.n_virtual();
        let cache = KvCache::new(&self.model.cfg, 1, prompt.len() + nv, &self.device)?;
        let x = self.embed_prompt(prompt)?;
        Ok(forward_step(&self.model, &cache, x, &[0], &[0], None, false)?.squeeze(0)?)
    }

    /// Logits of every position of `prompt` (one prefill), `[prompt.len(), vocab]`: row `i`
    /// predicts token `i + 1`. For quality checks (e.g. cross-entropy) of the generator's weights.
    pub fn prompt_logits(&self, prompt: &[u32]) -> Result<Tensor> {
        if prompt.is_empty() {
            return Err(LmError::Other("prompt_logits: empty prompt".into()));
        }
        let nv = self.model.n_virtual();
        let cache = KvCache::new(&self.model.cfg, 1, prompt.len() + nv, &self.device)?;
        let x = self.embed_prompt(prompt)?;
        let all = forward_step(&self.model, &cache, x, &[0], &[0], None, true)?;
        Ok(all.narrow(0, nv, prompt.len())?)
    }

    /// `log p(continuation | prefix)` (natural log, summed over the continuation's tokens) of
    /// every `(prefix, continuation)` pair under the generator's weights (base + adapter):
    /// teacher-forced, no sampling. Pairs of similar length share one batched forward pass
    /// (right-padded; padding is never attended to by a real token), and only the rows that
    /// predict a continuation token go through the lm head. Each result equals the one-pair
    /// computation up to the rounding of the batched products (bf16 kernels are row-invariant).
    pub fn continuation_log_likelihoods(&self, pairs: &[(&[u32], &[u32])]) -> Result<Vec<f64>> {
        let cfg = &self.model.cfg;
        let nv = self.model.n_virtual();
        for (i, (p, c)) in pairs.iter().enumerate() {
            if p.is_empty() || c.is_empty() {
                return Err(LmError::Other(format!(
                    "pair {i}: empty prefix or continuation"
                )));
            }
            if let Some(&bad) = p
                .iter()
                .chain(c.iter())
                .find(|&&t| t as usize >= cfg.vocab_size)
            {
                return Err(LmError::Other(format!(
                    "pair {i}: token id {bad} is outside the vocabulary ({})",
                    cfg.vocab_size
                )));
            }
            if p.len() + c.len() + nv > cfg.max_position_embeddings {
                return Err(LmError::Other(format!(
                    "pair {i}: {} tokens do not fit the model's context of {}",
                    p.len() + c.len() + nv,
                    cfg.max_position_embeddings
                )));
            }
        }
        // Input length of a pair: the last continuation token is only a target.
        let len = |i: usize| pairs[i].0.len() + pairs[i].1.len() - 1 + nv;
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by_key(|&i| len(i));
        let mut out = vec![0f64; pairs.len()];
        let mut g = 0;
        while g < order.len() {
            // A group: up to SCORE_BATCH pairs whose padded size stays within SCORE_TOKENS.
            let mut e = g + 1;
            while e < order.len()
                && e - g < SCORE_BATCH
                && (e + 1 - g) * len(order[e]) <= SCORE_TOKENS
            {
                e += 1;
            }
            let group = &order[g..e];
            let t = len(*group.last().unwrap_or(&order[g]));
            let b = group.len();
            let mut xs = Vec::with_capacity(b);
            let mut flat = Vec::new();
            let mut targets = Vec::new();
            let mut owner = Vec::new();
            for (j, &i) in group.iter().enumerate() {
                let (p, c) = pairs[i];
                let mut seq = p.to_vec();
                seq.extend_from_slice(&c[..c.len() - 1]);
                let e_ = self.embed_prompt(&seq)?;
                let pad = t - e_.dim(1)?;
                xs.push(if pad > 0 {
                    e_.pad_with_zeros(1, 0, pad)?
                } else {
                    e_
                });
                // Row nv + p.len() - 1 + k predicts continuation token k.
                for (k, &tok) in c.iter().enumerate() {
                    flat.push((j * t + nv + p.len() - 1 + k) as u32);
                    targets.push(tok);
                    owner.push(i);
                }
            }
            let x = Tensor::cat(&xs, 0)?;
            let cache = KvCache::new(cfg, b, t, &self.device)?;
            let slots: Vec<usize> = (0..b).collect();
            let starts = vec![0; b];
            let lps = on_pool(|| -> Result<Vec<f32>> {
                let h = forward_hidden(&self.model, &cache, x, &slots, &starts, Rows::Flat(&flat))?;
                let mut lps = Vec::with_capacity(flat.len());
                // The lm head in chunks keeps the [rows, vocab] logits small.
                for c0 in (0..flat.len()).step_by(HEAD_CHUNK) {
                    let n = HEAD_CHUNK.min(flat.len() - c0);
                    let logits = self
                        .model
                        .lm_head
                        .forward(&h.narrow(0, c0, n)?.contiguous()?)?;
                    let logits = logits.narrow(1, 0, cfg.vocab_size)?.to_dtype(DType::F32)?;
                    let lp = crate::model::log_softmax(&logits)?;
                    let tgt = Tensor::new(&targets[c0..c0 + n], lp.device())?.unsqueeze(1)?;
                    lps.extend(lp.gather(&tgt, 1)?.squeeze(1)?.to_vec1::<f32>()?);
                }
                Ok(lps)
            })?;
            for (lp, &i) in lps.iter().zip(&owner) {
                out[i] += *lp as f64;
            }
            g = e;
        }
        Ok(out)
    }

    fn embed_prompt(&self, prompt: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(prompt, &self.device)?;
        let e = self.model.embed.embedding(&ids)?;
        let e = match &self.model.virtual_tokens {
            Some(v) => Tensor::cat(&[v, &e], 0)?,
            None => e,
        };
        Ok(e.unsqueeze(0)?)
    }

    /// Generates a continuation for every request, calling `on_finished` for each sequence as
    /// soon as it is done (in completion order, not request order).
    pub fn generate(
        &self,
        requests: Vec<GenRequest>,
        params: &SamplingParams,
        mut on_finished: impl FnMut(GenOutput) -> Result<()>,
    ) -> Result<GenStats> {
        params.validate()?;
        let start = Instant::now();
        let cfg = &self.model.cfg;
        let nv = self.model.n_virtual();
        let ctx = cfg.max_position_embeddings;
        let mut stats = GenStats {
            sequences: requests.len(),
            ..Default::default()
        };
        for (i, r) in requests.iter().enumerate() {
            if r.prompt_ids.is_empty() {
                return Err(LmError::Other(format!("request {i}: empty prompt")));
            }
            if let Some(&bad) = r.prompt_ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(LmError::Other(format!(
                    "request {i}: token id {bad} is outside the vocabulary ({})",
                    cfg.vocab_size
                )));
            }
            if r.prompt_ids.len() + nv >= ctx {
                return Err(LmError::Other(format!(
                    "request {i}: prompt of {} tokens{} does not fit the model's context of {ctx} tokens",
                    r.prompt_ids.len(),
                    if nv > 0 { format!(" (+{nv} virtual tokens)") } else { String::new() }
                )));
            }
        }
        if requests.is_empty() {
            return Ok(stats);
        }
        let max_prompt = requests
            .iter()
            .map(|r| r.prompt_ids.len())
            .max()
            .unwrap_or(0);
        let cap = (max_prompt + nv + params.max_new_tokens).min(ctx);
        let nslots = self.opts.batch_size.min(requests.len());
        let cache = KvCache::new(cfg, nslots, cap, &self.device)?;
        let mut queue: VecDeque<(usize, GenRequest)> = requests.into_iter().enumerate().collect();
        let mut slots: Vec<Option<Slot>> = (0..nslots).map(|_| None).collect();
        let vocab = cfg.vocab_size;

        loop {
            // Refill free slots: the new prompts are prefilled together in one forward pass
            // (right-padded to the longest; padding is never attended to and its cache rows are
            // overwritten by decoding), and their first tokens are sampled here.
            loop {
                let free: Vec<usize> = (0..nslots).filter(|&s| slots[s].is_none()).collect();
                let n_new = free.len().min(queue.len());
                if n_new == 0 {
                    break;
                }
                // A prefill pass streams every weight once, like a decode step: refilling one
                // or two slots at a time (sequences end at different lengths) nearly doubled
                // the passes per token. While other slots are busy and more requests wait,
                // refill only once an eighth of the slots is free.
                let busy = free.len() < nslots;
                if busy && n_new < queue.len().min(nslots.div_ceil(8)) {
                    break;
                }
                let mut new: Vec<(usize, GenRequest)> = queue.drain(..n_new).collect();
                // Prefill groups of similar length (padding is wasted work): sorted by length, a
                // group grows while its padded size stays within 5/4 of its real tokens + 8.
                new.sort_by_key(|(_, r)| r.prompt_ids.len());
                let mut group_end = 1;
                let mut real = new[0].1.prompt_ids.len();
                while group_end < new.len() {
                    let l = new[group_end].1.prompt_ids.len();
                    if (group_end + 1) * l * 4 > (real + l) * 5 + 32 {
                        break;
                    }
                    real += l;
                    group_end += 1;
                }
                // The rest goes back to the front of the queue for the next round.
                for item in new.drain(group_end..).rev() {
                    queue.push_front(item);
                }
                let n_new = new.len();
                let fill = &free[..n_new];
                let lens: Vec<usize> = new.iter().map(|(_, r)| r.prompt_ids.len()).collect();
                let t = lens.iter().max().copied().unwrap_or(1) + nv;
                let mut xs = Vec::with_capacity(n_new);
                for (_, r) in &new {
                    stats.prompt_tokens += r.prompt_ids.len();
                    let e = self.embed_prompt(&r.prompt_ids)?;
                    let pad = t - e.dim(1)?;
                    xs.push(if pad > 0 {
                        e.pad_with_zeros(1, 0, pad)?
                    } else {
                        e
                    });
                }
                let x = Tensor::cat(&xs, 0)?;
                let last: Vec<usize> = lens.iter().map(|l| l + nv - 1).collect();
                let starts = vec![0; n_new];
                let logits = on_pool(|| {
                    forward_step(&self.model, &cache, x, fill, &starts, Some(&last), false)
                })?;
                let rows: Vec<Vec<f32>> = logits.to_vec2()?;
                for ((&si, (index, req)), row) in fill.iter().zip(new).zip(rows) {
                    let mut slot = Slot {
                        index,
                        tokens: Vec::new(),
                        len: req.prompt_ids.len() + nv,
                        next: 0,
                        rng: rand_chacha::ChaCha8Rng::seed_from_u64(req.seed),
                        max_len: cap,
                        logprob: 0.0,
                    };
                    if push_token(&mut slot, &row[..vocab], params, &mut stats) {
                        finish(slot, params, &mut on_finished)?;
                    } else {
                        slots[si] = Some(slot);
                    }
                }
            }
            if slots.iter().all(|s| s.is_none()) {
                break;
            }
            // Decode one token in every slot. Free slots (only once the queue is empty) run a
            // dummy token at position 0, which keeps the batch a contiguous view of the cache.
            let last = (0..nslots).rev().find(|&s| slots[s].is_some()).unwrap_or(0);
            let run: Vec<usize> = (0..=last).collect();
            let next: Vec<u32> = run
                .iter()
                .map(|&s| slots[s].as_ref().map_or(0, |x| x.next))
                .collect();
            let starts: Vec<usize> = run
                .iter()
                .map(|&s| slots[s].as_ref().map_or(0, |x| x.len))
                .collect();
            let ids = Tensor::new(next.as_slice(), &self.device)?;
            let x = self.model.embed.embedding(&ids)?.unsqueeze(1)?;
            let logits =
                on_pool(|| forward_step(&self.model, &cache, x, &run, &starts, None, false))?;
            let rows: Vec<Vec<f32>> = logits.to_vec2()?;
            for (j, &s) in run.iter().enumerate() {
                let Some(slot) = slots[s].as_mut() else {
                    continue;
                };
                slot.len += 1;
                if push_token(slot, &rows[j][..vocab], params, &mut stats) {
                    let slot = slots[s].take().unwrap();
                    finish(slot, params, &mut on_finished)?;
                }
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }
}

/// Runs `f` on a thread of rayon's pool (the caller waits). A forward pass issues hundreds of
/// parallel ops; started from a thread outside the pool each would be handed over to the pool
/// and waited for (two thread wake-ups per op), started inside it they split with work stealing.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// Samples the next token into `slot`; true when the sequence is finished.
fn push_token(slot: &mut Slot, logits: &[f32], p: &SamplingParams, stats: &mut GenStats) -> bool {
    let t = sample_token(logits, p, &mut slot.rng);
    slot.logprob += log_softmax_at(logits, t as usize);
    stats.new_tokens += 1;
    slot.tokens.push(t);
    slot.next = t;
    p.stop_tokens.contains(&t)
        || slot.tokens.len() >= p.max_new_tokens
        || slot.len + 1 >= slot.max_len
}

/// `log softmax(logits)[i]`, in f64 (the sum of exponentials in f64 over f32 terms).
fn log_softmax_at(logits: &[f32], i: usize) -> f64 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() || i >= logits.len() {
        return f64::NEG_INFINITY;
    }
    let s: f64 = logits
        .chunks(256)
        .map(|c| c.iter().map(|&x| (x - m).exp()).sum::<f32>() as f64)
        .sum();
    (logits[i] - m) as f64 - s.ln()
}

fn finish(
    mut slot: Slot,
    p: &SamplingParams,
    on_finished: &mut impl FnMut(GenOutput) -> Result<()>,
) -> Result<()> {
    let stopped = slot
        .tokens
        .last()
        .is_some_and(|t| p.stop_tokens.contains(t));
    if stopped {
        slot.tokens.pop();
    }
    on_finished(GenOutput {
        index: slot.index,
        tokens: slot.tokens,
        stopped,
        logprob: slot.logprob,
    })
}

fn to_device(w: &LlamaWeights, dev: &Device) -> Result<LlamaWeights> {
    let mv = |t: &Tensor| t.to_device(dev);
    Ok(LlamaWeights {
        config: w.config.clone(),
        embed: mv(&w.embed)?,
        layers: w
            .layers
            .iter()
            .map(|l| {
                Ok(crate::LayerWeights {
                    attn_norm: mv(&l.attn_norm)?,
                    wq: mv(&l.wq)?,
                    wk: mv(&l.wk)?,
                    wv: mv(&l.wv)?,
                    wo: mv(&l.wo)?,
                    ffn_norm: mv(&l.ffn_norm)?,
                    w_gate: mv(&l.w_gate)?,
                    w_up: mv(&l.w_up)?,
                    w_down: mv(&l.w_down)?,
                    bq: l.bq.as_ref().map(mv).transpose()?,
                    bk: l.bk.as_ref().map(mv).transpose()?,
                    bv: l.bv.as_ref().map(mv).transpose()?,
                    q_norm: l.q_norm.as_ref().map(mv).transpose()?,
                    k_norm: l.k_norm.as_ref().map(mv).transpose()?,
                    post_attn_norm: l.post_attn_norm.as_ref().map(mv).transpose()?,
                    post_ffn_norm: l.post_ffn_norm.as_ref().map(mv).transpose()?,
                })
            })
            .collect::<Result<_>>()?,
        final_norm: mv(&w.final_norm)?,
        lm_head: w.lm_head.as_ref().map(mv).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0f32 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = fast_exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-5, "relative error {worst}");
        // Near 0 (the bulk of a nucleus) it is as good as f32 allows.
        for i in 0..=10_000 {
            let x = -(i as f32) / 10_000.0;
            let want = (x as f64).exp();
            assert!(((fast_exp(x) as f64 - want) / want).abs() < 3e-7, "{x}");
        }
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(-88.0), 0.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(f32::NAN), 0.0);
        // Positive inputs (the training crate's sigmoid uses e^{-x} for negative x).
        for i in 0..=20_000 {
            let x = 80.0f32 * i as f32 / 20_000.0;
            let want = (x as f64).exp();
            assert!(((fast_exp(x) as f64 - want) / want).abs() < 1e-5, "{x}");
        }
    }

    /// The nucleus by sorting everything (the definition), in f64.
    fn naive_nucleus(logits: &[f32], t: f64, k: Option<usize>, tp: f64) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if let Some(k) = k {
            idx.truncate(k);
        }
        let max = logits[idx[0] as usize] as f64;
        let w: Vec<f64> = idx
            .iter()
            .map(|&i| ((logits[i as usize] as f64 - max) / t).exp())
            .collect();
        let z: f64 = w.iter().sum();
        let mut cum = 0.0;
        let mut out = Vec::new();
        for (&i, &wi) in idx.iter().zip(&w) {
            out.push(i);
            cum += wi;
            if cum >= tp * z {
                break;
            }
        }
        out
    }

    #[test]
    fn nucleus_matches_the_sorting_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for case in 0..60 {
            let n = [5, 100, 4096, 49152][case % 4];
            let spread = [0.5f32, 3.0, 10.0][case % 3];
            let mut logits: Vec<f32> = (0..n)
                .map(|_| (rng.random::<f32>() - 0.5) * 2.0 * spread)
                .collect();
            // Ties and a dominant token in some cases.
            if case % 5 == 0 {
                logits[n / 2] = logits[0];
            }
            if case % 7 == 0 {
                logits[n - 1] = 40.0;
            }
            let t = [1.0, 0.7, 1.5][case % 3];
            let tp = [0.95, 0.5, 0.99, 0.2][case % 4];
            let k = (case % 2 == 1).then_some(n.div_ceil(3));
            let want = naive_nucleus(&logits, t, k, tp);
            let p = SamplingParams {
                temperature: t,
                top_k: k,
                top_p: Some(tp),
                ..Default::default()
            };
            let (mut ew, mut bins, mut ids) = (Vec::new(), Vec::new(), Vec::new());
            // Same candidate preparation as `sample_with`.
            let inv_t = 1.0 / t as f32;
            if let Some(k) = k {
                ids.extend(0..n as u32);
                ids.select_nth_unstable_by(k - 1, |a: &u32, b: &u32| {
                    logits[*b as usize]
                        .total_cmp(&logits[*a as usize])
                        .then(a.cmp(b))
                });
                ids.truncate(k);
            }
            let max = if ids.is_empty() {
                logits.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                ids.iter()
                    .map(|&i| logits[i as usize])
                    .fold(f32::NEG_INFINITY, f32::max)
            };
            if ids.is_empty() {
                ew.extend(logits.iter().map(|&l| fast_exp((l - max) * inv_t)));
            } else {
                ew.extend(
                    ids.iter()
                        .map(|&i| fast_exp((logits[i as usize] - max) * inv_t)),
                );
            }
            let (mut got, w) = nucleus(&logits, &ids, inv_t, max, tp, &ew, &mut bins);
            assert_eq!(got.len(), w.len());
            got.sort_unstable();
            let mut want_sorted = want.clone();
            want_sorted.sort_unstable();
            assert_eq!(
                got, want_sorted,
                "case {case} (n {n}, T {t}, k {k:?}, top-p {tp})"
            );
            // And sampling only ever returns nucleus members.
            for _ in 0..20 {
                let s = sample_token(&logits, &p, &mut rng);
                assert!(
                    want.contains(&s),
                    "case {case}: sampled {s} outside the nucleus"
                );
            }
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_softmax() {
        // 4 tokens, T = 1, no truncation: frequencies within 4 sigma of the probabilities.
        let logits = [0.0f32, 1.0, -1.0, 0.5];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let p = SamplingParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 20_000;
        let mut c = [0usize; 4];
        for _ in 0..n {
            c[sample_token(&logits, &p, &mut rng) as usize] += 1;
        }
        for (i, &l) in logits.iter().enumerate() {
            let q = (l as f64).exp() / z;
            let sd = (q * (1.0 - q) / n as f64).sqrt();
            let f = c[i] as f64 / n as f64;
            assert!((f - q).abs() < 4.0 * sd, "token {i}: {f} vs {q}");
        }
    }
}

#[cfg(test)]
mod logprob_tests {
    use super::*;
    use crate::{LlamaConfig, LlamaWeights};

    /// The log-probability the sampler accumulates equals the teacher-forced score of the
    /// same tokens (the synthesis filter relies on it to skip the prompted label's pass).
    #[test]
    fn sampled_logprob_equals_the_teacher_forced_score() {
        let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 21).unwrap();
        let g = Generator::new(
            &w,
            None,
            GeneratorOptions {
                batch_size: 3,
                weights: WeightFormat::F32,
            },
            &Device::Cpu,
        )
        .unwrap();
        // A frequent stop token so that some sequences stop and some hit the length limit;
        // temperature and top-p must not change what is accumulated.
        let params = SamplingParams {
            temperature: 0.7,
            top_k: None,
            top_p: Some(0.9),
            max_new_tokens: 6,
            stop_tokens: (0..40).collect(),
        };
        let prompts: Vec<Vec<u32>> = (0..8u32).map(|i| vec![1, 50 + i, 60 + i % 3]).collect();
        let reqs = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| GenRequest {
                prompt_ids: p.clone(),
                seed: i as u64,
            })
            .collect();
        let mut outs = Vec::new();
        g.generate(reqs, &params, |o| {
            outs.push(o);
            Ok(())
        })
        .unwrap();
        assert_eq!(outs.len(), 8);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-3 * b.abs().max(1.0);
        let (mut stopped, mut limited) = (0, 0);
        for o in &outs {
            let p = prompts[o.index].as_slice();
            assert!(o.logprob < 0.0);
            if o.stopped {
                // The sampled stop token is not in `tokens` but its term is in `logprob`:
                // exactly one of the stop tokens must explain it.
                stopped += 1;
                let conts: Vec<Vec<u32>> = params
                    .stop_tokens
                    .iter()
                    .map(|&s| {
                        let mut c = o.tokens.clone();
                        c.push(s);
                        c
                    })
                    .collect();
                let pairs: Vec<(&[u32], &[u32])> =
                    conts.iter().map(|c| (p, c.as_slice())).collect();
                let lls = g.continuation_log_likelihoods(&pairs).unwrap();
                let hits = lls.iter().filter(|&&l| close(o.logprob, l)).count();
                assert_eq!(hits, 1, "logprob {} vs {lls:?}", o.logprob);
            } else {
                limited += 1;
                let want = g
                    .continuation_log_likelihoods(&[(p, o.tokens.as_slice())])
                    .unwrap()[0];
                assert!(close(o.logprob, want), "{} vs {want}", o.logprob);
            }
        }
        assert!(
            stopped > 0 && limited > 0,
            "stopped {stopped}, limited {limited}"
        );
    }
}
