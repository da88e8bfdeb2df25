//! Parameter-efficient adapters: LoRA and prompt tuning (full fine-tuning = a whole
//! [`crate::LlamaWeights`]). The structs are shared by training (which produces them) and
//! generation (which applies them). Save/load: LoRA in Hugging Face PEFT layout.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// LoRA hyper-parameters (PEFT semantics: `scaling = alpha / rank`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Hugging Face module names, any of `q_proj k_proj v_proj o_proj gate_proj up_proj down_proj`.
    pub targets: Vec<String>,
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// A LoRA adapter: for (layer index, module name), `W' = W + scaling * B @ A` with
/// `A: [rank, in]` and `B: [out, rank]` (PEFT's `lora_A.weight` / `lora_B.weight`).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    pub a: BTreeMap<(usize, String), Tensor>,
    pub b: BTreeMap<(usize, String), Tensor>,
}

/// Prompt tuning: `n` virtual token embeddings `[n, hidden]` prepended to the input embeddings.
#[derive(Debug, Clone)]
pub struct PromptAdapter {
    pub virtual_tokens: Tensor,
}

/// What a training run produces and generation applies.
#[derive(Debug, Clone)]
pub enum Adapter {
    Lora(LoraAdapter),
    Prompt(PromptAdapter),
    /// Full fine-tuning: the complete set of weights.
    Full(Box<crate::LlamaWeights>),
}
