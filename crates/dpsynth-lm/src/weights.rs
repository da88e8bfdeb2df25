use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::{LlamaConfig, Result};

/// One transformer block's weights, f32, in Hugging Face layout (`[out, in]` for linears).
///
/// `wq`/`wk` rows are in Hugging Face's "rotate-half" rope order: loaders of GGUF files
/// (which store Q/K for the interleaved layout) must un-permute them, so that LoRA adapters
/// trained with PEFT on `q_proj`/`k_proj` apply unchanged.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Tensor, // [d]
    pub wq: Tensor,        // [n_heads * head_dim, d]
    pub wk: Tensor,        // [n_kv_heads * head_dim, d]
    pub wv: Tensor,        // [n_kv_heads * head_dim, d]
    pub wo: Tensor,        // [d, n_heads * head_dim]
    pub ffn_norm: Tensor,  // [d]
    pub w_gate: Tensor,    // [ff, d]
    pub w_up: Tensor,      // [ff, d]
    pub w_down: Tensor,    // [d, ff]
    /// q/k/v projection biases (Qwen2: `attention_bias`), `[n_heads * head_dim]` / `[n_kv * head_dim]`.
    pub bq: Option<Tensor>,
    pub bk: Option<Tensor>,
    pub bv: Option<Tensor>,
    /// RMSNorm weights over each head of q and k (Qwen3, Gemma 3), `[head_dim]`.
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// Norms of the attention output and the FFN output (Gemma 3's `post_attention_layernorm`
    /// and `post_feedforward_layernorm`), `[d]`. For Gemma, `ffn_norm` is its
    /// `pre_feedforward_layernorm`.
    pub post_attn_norm: Option<Tensor>,
    pub post_ffn_norm: Option<Tensor>,
}

/// All weights of a llama-family model. Norm weights are stored as Hugging Face does: for
/// Gemma the multiplier is `1 + w` (see [`LlamaConfig::norm_weight_offset`]).
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    pub config: LlamaConfig,
    pub embed: Tensor, // [vocab, d]
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor,      // [d]
    pub lm_head: Option<Tensor>, // [vocab, d]; None when tied to `embed`
}

/// Module names used for LoRA targets and Hugging Face / PEFT key names.
pub const LINEAR_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl LayerWeights {
    /// The linear weight of a module by its Hugging Face name (`q_proj`, ..., `down_proj`).
    pub fn linear(&self, module: &str) -> Option<&Tensor> {
        Some(match module {
            "q_proj" => &self.wq,
            "k_proj" => &self.wk,
            "v_proj" => &self.wv,
            "o_proj" => &self.wo,
            "gate_proj" => &self.w_gate,
            "up_proj" => &self.w_up,
            "down_proj" => &self.w_down,
            _ => return None,
        })
    }
}

impl LlamaWeights {
    /// The output projection (the embedding matrix when tied).
    pub fn lm_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Random weights for tests: normal(0, 0.02) linears/embeddings, norms near 1.
    pub fn random(config: &LlamaConfig, device: &Device, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut mat = |rows: usize, cols: usize, std: f32| -> Result<Tensor> {
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    // Box-Muller
                    let u1: f32 = rng.random::<f32>().max(1e-7);
                    let u2: f32 = rng.random::<f32>();
                    std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
                })
                .collect();
            Ok(Tensor::from_vec(v, (rows, cols), device)?)
        };
        let d = config.hidden_size;
        let hd = config.head_dim();
        let ff = config.intermediate_size;
        let nq = config.num_attention_heads * hd;
        let nkv = config.num_key_value_heads * hd;
        // Norm weights: multipliers near 1 (stored as `w - offset` for Gemma's `1 + w`).
        let one = 1.0 - config.norm_weight_offset();
        let embed = mat(config.vocab_size, d, 0.5)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            // Draw order of the llama weights kept as before the family fields existed (seeded
            // tests elsewhere rely on it); the family's extra weights come last.
            let attn_norm = (mat(1, d, 0.1)?.squeeze(0)? + one)?;
            let wq = mat(nq, d, 0.2)?;
            let wk = mat(nkv, d, 0.2)?;
            let wv = mat(nkv, d, 0.2)?;
            let wo = mat(d, nq, 0.2)?;
            let ffn_norm = (mat(1, d, 0.1)?.squeeze(0)? + one)?;
            let w_gate = mat(ff, d, 0.2)?;
            let w_up = mat(ff, d, 0.2)?;
            let w_down = mat(d, ff, 0.2)?;
            let mut opt = |on: bool, n: usize, std: f32, shift: f64| -> Result<Option<Tensor>> {
                Ok(if on {
                    Some((mat(1, n, std)?.squeeze(0)? + shift)?)
                } else {
                    None
                })
            };
            let bias = config.attention_bias;
            let (qkn, post) = (config.has_qk_norm(), config.has_post_norms());
            layers.push(LayerWeights {
                bq: opt(bias, nq, 0.2, 0.0)?,
                bk: opt(bias, nkv, 0.2, 0.0)?,
                bv: opt(bias, nkv, 0.2, 0.0)?,
                q_norm: opt(qkn, hd, 0.1, one)?,
                k_norm: opt(qkn, hd, 0.1, one)?,
                post_attn_norm: opt(post, d, 0.1, one)?,
                post_ffn_norm: opt(post, d, 0.1, one)?,
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                ffn_norm,
                w_gate,
                w_up,
                w_down,
            });
        }
        let final_norm = (mat(1, d, 0.1)?.squeeze(0)? + one)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(mat(config.vocab_size, d, 0.2)?)
        };
        Ok(Self {
            config: config.clone(),
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
}
