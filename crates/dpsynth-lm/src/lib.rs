//! Llama-family decoder-only language models on candle for dpsynth.
//!
//! Shared types used by training (`dpsynth-train`) and generation live here:
//! [`LlamaConfig`] and [`LlamaWeights`] (f32, Hugging Face layout: Q/K rows in the
//! "rotate-half" rope order, i.e. GGUF's interleaved layout is undone at load time).

pub mod adapter;
pub mod config;
pub mod error;
pub mod weights;

pub use adapter::{Adapter, LoraAdapter, LoraConfig, PromptAdapter};
pub use config::LlamaConfig;
pub use error::{LmError, Result};
pub use weights::{LayerWeights, LlamaWeights};
