use serde::{Deserialize, Serialize};

/// Hyper-parameters of a llama-architecture model (SmolLM2, TinyLlama, Llama 3.x).
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
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
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
        }
    }

    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::LmError::Config(m.to_string()));
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad("hidden_size must be a multiple of num_attention_heads");
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return bad("num_attention_heads must be a multiple of num_key_value_heads");
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad("head_dim must be even for rotary embeddings");
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size and num_hidden_layers must be positive");
        }
        Ok(())
    }
}
