//! Llama-family decoder-only language models on candle for dpsynth.
//!
//! Shared types used by training (`dpsynth-train`) and generation live here:
//! [`LlamaConfig`] and [`LlamaWeights`] (f32, Hugging Face layout: Q/K rows in the
//! "rotate-half" rope order, i.e. GGUF's interleaved layout is undone at load time).
//!
//! - [`load_model`]: a GGUF file or a Hugging Face directory, plus its [`Tokenizer`].
//! - [`Adapter`]: LoRA / prompt tuning / full; save and load in Hugging Face PEFT layout.
//! - [`Generator`]: batched sampling with a KV cache (bf16, f32 or Q8_0 weights).
//! - [`kernels`]: packed bf16 weights and the AVX-512 BF16 matmul kernel (generation, training).
//! - [`forward_logits`] / [`forward_logits_batch`] / [`sequence_loss`]: the f32 reference forward.

pub mod adapter;
pub mod bench;
pub mod config;
mod cpu_ops;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod load;
pub mod model;
pub mod tokenizer;
pub mod weights;

pub use adapter::{Adapter, LoraAdapter, LoraConfig, PromptAdapter};
/// Re-exported so that users of this crate need not depend on candle directly.
pub use candle_core::{DType, Device, Tensor};
pub use config::LlamaConfig;
pub use error::{LmError, Result};
pub use generate::{
    GenOutput, GenRequest, GenStats, Generator, GeneratorOptions, SamplingParams, WeightFormat,
};
pub use load::load_model;
pub use model::{forward_logits, forward_logits_batch, sequence_loss, SequenceLoss};
pub use tokenizer::Tokenizer;
pub use weights::{LayerWeights, LlamaWeights};
