//! Saving and loading what a run trains: LoRA in Hugging Face PEFT layout
//! (`adapter_config.json` + `adapter_model.safetensors`), prompt tuning in PEFT layout
//! (`prompt_embeddings`), full fine-tuning as a safetensors file of all weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use dpsynth_lm::LoraConfig;

use crate::model::{Method, Params};
use crate::{Result, TrainError};

fn peft_key(name: &str) -> Option<String> {
    // layers.{l}.{m}.lora_{A|B}
    let rest = name.strip_prefix("layers.")?;
    let mut it = rest.splitn(3, '.');
    let l = it.next()?;
    let m = it.next()?;
    let w = it.next()?;
    let block = match m {
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
        _ => "mlp",
    };
    Some(format!(
        "base_model.model.model.layers.{l}.{block}.{m}.{w}.weight"
    ))
}

/// Write the trained parameters to `dir` (created if needed).
pub fn save_params(dir: &Path, method: &Method, params: &Params, model: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    let (cfg, file) = match method {
        Method::Lora(c) => {
            for (n, t) in params.names.iter().zip(&params.tensors) {
                let k = peft_key(n).ok_or_else(|| TrainError::Other(format!("bad name {n}")))?;
                map.insert(k, t.clone());
            }
            (
                serde_json::json!({
                    "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": c.rank,
                    "lora_alpha": c.alpha, "target_modules": c.targets, "lora_dropout": 0.0,
                    "bias": "none", "base_model_name_or_path": model,
                }),
                "adapter_model.safetensors",
            )
        }
        Method::Prompt { virtual_tokens } => {
            map.insert("prompt_embeddings".into(), params.tensors[0].clone());
            (
                serde_json::json!({
                    "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM",
                    "num_virtual_tokens": virtual_tokens, "base_model_name_or_path": model,
                }),
                "adapter_model.safetensors",
            )
        }
        Method::Full => {
            for (n, t) in params.names.iter().zip(&params.tensors) {
                map.insert(n.clone(), t.clone());
            }
            (
                serde_json::json!({"peft_type": "FULL", "base_model_name_or_path": model}),
                "model.safetensors",
            )
        }
    };
    let p = dir.join(file);
    candle_core::safetensors::save(&map, &p).map_err(|e| TrainError::file(&p, e))?;
    let c = dir.join("adapter_config.json");
    std::fs::write(&c, serde_json::to_string_pretty(&cfg)?).map_err(|e| TrainError::file(&c, e))?;
    Ok(())
}

/// Read parameters written by [`save_params`], in the order of `template` (from
/// [`Params::init`] on the same model and method).
pub fn load_params(
    dir: &Path,
    method: &Method,
    template: &Params,
    device: &Device,
) -> Result<Params> {
    let file = if matches!(method, Method::Full) {
        "model.safetensors"
    } else {
        "adapter_model.safetensors"
    };
    let p = dir.join(file);
    let map = candle_core::safetensors::load(&p, device).map_err(|e| TrainError::file(&p, e))?;
    let mut tensors = Vec::new();
    for (i, n) in template.names.iter().enumerate() {
        let key = match method {
            Method::Lora(_) => peft_key(n).unwrap_or_default(),
            Method::Prompt { .. } => "prompt_embeddings".into(),
            Method::Full => n.clone(),
        };
        let t = map
            .get(&key)
            .ok_or_else(|| TrainError::file(&p, format!("missing tensor `{key}`")))?;
        if t.dims() != template.tensors[i].dims() {
            return Err(TrainError::file(
                &p,
                format!(
                    "`{key}` has shape {:?}, expected {:?}",
                    t.dims(),
                    template.tensors[i].dims()
                ),
            ));
        }
        tensors.push(t.clone());
    }
    Ok(Params {
        names: template.names.clone(),
        tensors,
    })
}

/// LoRA config helper for callers that only know the method.
pub fn lora_config(method: &Method) -> Option<&LoraConfig> {
    match method {
        Method::Lora(c) => Some(c),
        _ => None,
    }
}
