use serde::{Deserialize, Serialize};

/// The architecture family, by its Hugging Face `model_type`.
///
/// All families share one decoder definition (the llama block); a family only switches the
/// pieces that differ (see the `LlamaConfig` methods that read it):
/// - `llama` (SmolLM2, TinyLlama, Llama 2/3): the plain block.
/// - `qwen2` (Qwen2, Qwen2.5): biases on the q/k/v projections.
/// - `qwen3`: RMSNorm over each head of q and k (before rope), no biases.
/// - `gemma3_text` (Gemma 3): embeddings scaled by √hidden_size, `(1 + w)` RMSNorm weights,
///   norms before and after attention and the FFN, GELU-tanh gated FFN, q/k RMSNorm,
///   sliding-window (local) and global layers with their own rope bases, attention scaled by
///   `query_pre_attn_scalar^-1/2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ModelType {
    #[default]
    #[serde(rename = "llama")]
    Llama,
    #[serde(rename = "qwen2")]
    Qwen2,
    #[serde(rename = "qwen3")]
    Qwen3,
    #[serde(rename = "gemma3_text")]
    Gemma3Text,
}

/// The `model_type`s (Hugging Face `config.json`) this runtime loads.
pub const SUPPORTED_MODEL_TYPES: &str =
    "llama (also mistral, its sliding window ignored), qwen2, qwen3, gemma3_text";
/// The `general.architecture` values of GGUF files this runtime loads.
pub const SUPPORTED_GGUF_ARCHITECTURES: &str = "llama, qwen2, qwen3, gemma3";

impl ModelType {
    /// The family of a Hugging Face `model_type` (`None` when unsupported).
    pub fn from_hf(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "llama" | "mistral" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3_text" => Self::Gemma3Text,
            _ => return None,
        })
    }

    /// The family of a GGUF `general.architecture` (`None` when unsupported).
    pub fn from_gguf(arch: &str) -> Option<Self> {
        Some(match arch {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3" => Self::Gemma3Text,
            _ => return None,
        })
    }

    /// The Hugging Face `model_type`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3Text => "gemma3_text",
        }
    }

    /// The Hugging Face `architectures` entry.
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Gemma3Text => "Gemma3ForCausalLM",
        }
    }
}

/// The FFN gate activation (`hidden_act`, Gemma's `hidden_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU).
    #[default]
    #[serde(rename = "silu")]
    Silu,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (GeGLU, Gemma).
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluPytorchTanh,
}

/// Attention kind of one layer (`layer_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerType {
    /// Causal attention over the last `sliding_window` positions (query included), with the
    /// local rope base (`rope_local_base_freq`).
    #[serde(rename = "sliding_attention")]
    SlidingAttention,
    /// Causal attention over all earlier positions, with `rope_theta` (and `rope_scaling`).
    #[serde(rename = "full_attention")]
    FullAttention,
}

/// Rope frequency scaling (`rope_scaling`), applied to the global layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type")]
pub enum RopeScaling {
    /// Positions divided by `factor` (all frequencies divided by `factor`).
    #[serde(rename = "linear")]
    Linear { factor: f64 },
    /// Llama 3.1+: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    #[serde(rename = "llama3")]
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Hyper-parameters of a decoder in the llama family (SmolLM2, TinyLlama, Llama 3.x, Qwen2/2.5,
/// Qwen3, Gemma 3). Field names follow Hugging Face's `config.json`; the fields after
/// `eos_token_id` default to the plain llama block (older serialized configs still read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub model_type: ModelType,
    /// Width of one attention head; `None`: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Biases on the q/k/v projections (Qwen2). The output projection has none.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default, alias = "hidden_activation")]
    pub hidden_act: Activation,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2` (Gemma); `None`: `head_dim^-1/2`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Window of the sliding-attention layers (positions, the query's own included).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Attention kind per layer; `None`: every layer full attention.
    #[serde(default)]
    pub layer_types: Option<Vec<LayerType>>,
    /// Rope base of the sliding-attention layers (Gemma 3); `None`: `rope_theta`.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Gemma 2's logit soft-capping; not supported (must be `None`, checked by `validate`).
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// A tiny configuration for unit tests (random weights, runs in milliseconds).
    pub fn tiny() -> Self {
        Self {
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 128,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            model_type: ModelType::Llama,
            head_dim: None,
            attention_bias: false,
            hidden_act: Activation::Silu,
            rope_scaling: None,
            query_pre_attn_scalar: None,
            sliding_window: None,
            layer_types: None,
            rope_local_base_freq: None,
            final_logit_softcapping: None,
            attn_logit_softcapping: None,
        }
    }

    /// A tiny configuration of `family` for unit tests: [`LlamaConfig::tiny`] with the family's
    /// fields set as its Hugging Face config does (Gemma 3: 3 layers, the last one global,
    /// a 4-position sliding window; Qwen3 and Gemma 3 with `head_dim` ≠ hidden / heads).
    pub fn tiny_family(family: ModelType) -> Self {
        let mut c = Self::tiny();
        c.model_type = family;
        match family {
            ModelType::Llama => {}
            ModelType::Qwen2 => {
                c.attention_bias = true;
                c.tie_word_embeddings = false;
            }
            ModelType::Qwen3 => {
                c.head_dim = Some(16);
            }
            ModelType::Gemma3Text => {
                c.num_hidden_layers = 3;
                c.head_dim = Some(16);
                c.num_key_value_heads = 1;
                c.hidden_act = Activation::GeluPytorchTanh;
                c.query_pre_attn_scalar = Some(12.0);
                c.sliding_window = Some(4);
                c.layer_types = Some(vec![
                    LayerType::SlidingAttention,
                    LayerType::SlidingAttention,
                    LayerType::FullAttention,
                ]);
                c.rope_theta = 1_000_000.0;
                c.rope_local_base_freq = Some(10_000.0);
                c.rms_norm_eps = 1e-6;
            }
        }
        c
    }

    /// Gemma-style block: `(1 + w)` norms, scaled embeddings, post-attention/FFN norms.
    pub fn is_gemma(&self) -> bool {
        self.model_type == ModelType::Gemma3Text
    }

    /// Whether q and k get an RMSNorm over each head before rope (Qwen3, Gemma 3).
    pub fn has_qk_norm(&self) -> bool {
        matches!(self.model_type, ModelType::Qwen3 | ModelType::Gemma3Text)
    }

    /// Whether the block has norms on the attention and FFN outputs (Gemma 3).
    pub fn has_post_norms(&self) -> bool {
        self.is_gemma()
    }

    /// Added to every RMSNorm weight before it multiplies (Gemma stores `w` for `1 + w`).
    pub fn norm_weight_offset(&self) -> f64 {
        if self.is_gemma() {
            1.0
        } else {
            0.0
        }
    }

    /// Factor applied to the token embeddings (Gemma: √hidden_size, rounded to the weights'
    /// dtype as transformers does; 1 otherwise). Prompt-tuning vectors are not scaled.
    pub fn embed_scale(&self) -> f64 {
        if self.is_gemma() {
            (self.hidden_size as f64).sqrt() as f32 as f64
        } else {
            1.0
        }
    }

    /// Scale of the attention scores.
    pub fn attn_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim() as f64)
            .sqrt()
    }

    /// The sliding window of layer `layer`, `None` for global attention.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        match self.layer_types.as_ref().and_then(|t| t.get(layer)) {
            Some(LayerType::SlidingAttention) => self.sliding_window,
            _ => None,
        }
    }

    /// Rope inverse frequencies of layer `layer` (`head_dim / 2` values, rounded to f32 as
    /// transformers computes them): see [`LlamaConfig::rope_inv_freq_f64`].
    pub fn rope_inv_freq(&self, layer: usize) -> Vec<f32> {
        self.rope_inv_freq_f64(layer)
            .into_iter()
            .map(|f| f as f32)
            .collect()
    }

    /// Rope inverse frequencies of layer `layer` (`head_dim / 2` values) in f64: the local
    /// base for sliding-window layers, else `rope_theta` with `rope_scaling` applied.
    pub fn rope_inv_freq_f64(&self, layer: usize) -> Vec<f64> {
        let hd = self.head_dim();
        let local = self.layer_window(layer).is_some();
        let base = if local {
            self.rope_local_base_freq.unwrap_or(self.rope_theta)
        } else {
            self.rope_theta
        };
        (0..hd / 2)
            .map(|i| {
                let f = 1.0 / base.powf(2.0 * i as f64 / hd as f64);
                match (&self.rope_scaling, local) {
                    (_, true) | (None, _) => f,
                    (Some(RopeScaling::Linear { factor }), _) => f / factor,
                    (
                        Some(RopeScaling::Llama3 {
                            factor,
                            low_freq_factor,
                            high_freq_factor,
                            original_max_position_embeddings,
                        }),
                        _,
                    ) => {
                        // transformers' `_compute_llama3_parameters`.
                        let old = *original_max_position_embeddings as f64;
                        let low_wavelen = old / low_freq_factor;
                        let high_wavelen = old / high_freq_factor;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                }
            })
            .collect()
    }

    /// Whether layers differ in rope base or attention window (Gemma 3's local/global mix).
    pub fn has_layer_variants(&self) -> bool {
        (0..self.num_hidden_layers).any(|l| self.layer_window(l).is_some())
    }

    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::LmError::Config(m));
        if self.num_attention_heads == 0 {
            return bad("num_attention_heads must be positive".into());
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad("hidden_size must be a multiple of num_attention_heads".into());
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return bad("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return bad("head_dim must be positive and even for rotary embeddings".into());
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size and num_hidden_layers must be positive".into());
        }
        if self.final_logit_softcapping.is_some() || self.attn_logit_softcapping.is_some() {
            return bad("logit soft-capping (Gemma 2) is not supported".into());
        }
        if let Some(t) = &self.layer_types {
            if t.len() != self.num_hidden_layers {
                return bad(format!(
                    "layer_types has {} entries for {} layers",
                    t.len(),
                    self.num_hidden_layers
                ));
            }
            if t.contains(&LayerType::SlidingAttention) && self.sliding_window.unwrap_or(0) == 0 {
                return bad("sliding_attention layers need a positive sliding_window".into());
            }
        }
        if let Some(q) = self.query_pre_attn_scalar {
            if q.is_nan() || q <= 0.0 {
                return bad("query_pre_attn_scalar must be positive".into());
            }
        }
        match &self.rope_scaling {
            Some(RopeScaling::Linear { factor }) | Some(RopeScaling::Llama3 { factor, .. })
                if factor.is_nan() || *factor < 1.0 =>
            {
                return bad("rope_scaling factor must be >= 1".into());
            }
            Some(RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                ..
            }) if high_freq_factor.is_nan()
                || low_freq_factor.is_nan()
                || high_freq_factor <= low_freq_factor =>
            {
                return bad("rope_scaling: high_freq_factor must exceed low_freq_factor".into());
            }
            _ => {}
        }
        Ok(())
    }
}
