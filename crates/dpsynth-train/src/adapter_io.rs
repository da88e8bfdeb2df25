//! Turning trained parameters into a `dpsynth_lm::Adapter` (saved by the lm crate: LoRA and
//! prompt tuning in Hugging Face PEFT layout, full fine-tuning as a Hugging Face model
//! directory).

use std::path::Path;

use dpsynth_lm::{Adapter, LlamaWeights, PromptAdapter};

use crate::model::{Method, Params};
use crate::Result;

/// The adapter these parameters represent.
pub fn to_adapter(method: &Method, params: &Params, base: &LlamaWeights) -> Result<Adapter> {
    Ok(match method {
        Method::Lora(c) => Adapter::Lora(params.to_lora(c)?),
        Method::Prompt { .. } => Adapter::Prompt(PromptAdapter {
            virtual_tokens: params.tensors[0].clone(),
        }),
        Method::Full => Adapter::Full(Box::new(params.to_full_weights(base)?)),
    })
}

/// Save the trained parameters to `dir` as an adapter.
pub fn save_params(
    dir: &Path,
    method: &Method,
    params: &Params,
    base: &LlamaWeights,
) -> Result<()> {
    to_adapter(method, params, base)?.save(dir)?;
    Ok(())
}
