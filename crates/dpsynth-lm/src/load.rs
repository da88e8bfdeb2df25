//! Loading llama-family models: a GGUF file (any quantization candle reads, dequantized to f32)
//! or a Hugging Face directory (`config.json` + `*.safetensors` + `tokenizer.json`).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::tokenizer::Tokenizer;
use crate::{LayerWeights, LlamaConfig, LlamaWeights, LmError, Result};

fn file_err(path: &Path, msg: impl Into<String>) -> LmError {
    LmError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Loads a model and its tokenizer: a `.gguf` file or a Hugging Face model directory.
/// Weights come back as f32 on `device`, in Hugging Face layout (GGUF's interleaved Q/K rows
/// are permuted back to the rotate-half order).
pub fn load_model(path: &Path, device: &Device) -> Result<(LlamaWeights, Tokenizer)> {
    if path.is_dir() {
        load_hf_dir(path, device)
    } else if path.is_file() {
        load_gguf(path, device)
    } else {
        Err(file_err(
            path,
            "model not found (expected a .gguf file or a Hugging Face model directory)",
        ))
    }
}

/// Reads the GGUF header and checks that every tensor's bytes are inside the file.
pub fn read_gguf_content(path: &Path) -> Result<(std::fs::File, gguf_file::Content)> {
    let mut file = std::fs::File::open(path).map_err(|e| file_err(path, e.to_string()))?;
    let file_len = file.metadata()?.len();
    let ct = gguf_file::Content::read(&mut file).map_err(|e| {
        file_err(
            path,
            format!("not a readable GGUF file (truncated or corrupt header?): {e}"),
        )
    })?;
    for (name, info) in ct.tensor_infos.iter() {
        let n = info.shape.elem_count();
        let bytes = n / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = ct.tensor_data_offset + info.offset + bytes as u64;
        if end > file_len {
            return Err(file_err(
                path,
                format!(
                    "GGUF file is truncated: tensor `{name}` ends at byte {end} but the file has {file_len} bytes"
                ),
            ));
        }
    }
    Ok((file, ct))
}

fn gguf_arch(path: &Path, ct: &gguf_file::Content) -> Result<String> {
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    if arch != "llama" {
        return Err(file_err(
            path,
            format!(
                "GGUF architecture is `{arch}`, only `llama` (SmolLM, TinyLlama, Llama 2/3) is supported"
            ),
        ));
    }
    Ok(arch)
}

fn gguf_config(path: &Path, ct: &gguf_file::Content, tok: &Tokenizer) -> Result<LlamaConfig> {
    let arch = gguf_arch(path, ct)?;
    let get = |k: &str| ct.metadata.get(&format!("{arch}.{k}"));
    let get_usize = |k: &str| -> Result<usize> {
        get(k)
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|v| v as usize)
            .ok_or_else(|| file_err(path, format!("GGUF metadata has no `{arch}.{k}`")))
    };
    let get_f64 = |k: &str, default: f64| -> f64 {
        get(k)
            .and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
            .unwrap_or(default)
    };
    let hidden = get_usize("embedding_length")?;
    let heads = get_usize("attention.head_count")?;
    let kv_heads = get_usize("attention.head_count_kv").unwrap_or(heads);
    let embd = ct
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| file_err(path, "GGUF file has no `token_embd.weight`"))?;
    let vocab = embd.shape.dims()[0];
    let tie = !ct.tensor_infos.contains_key("output.weight");
    let cfg = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: get_usize("feed_forward_length")?,
        num_hidden_layers: get_usize("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        rms_norm_eps: get_f64("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: get_f64("rope.freq_base", 10_000.0),
        max_position_embeddings: get_usize("context_length").unwrap_or(2048),
        tie_word_embeddings: tie,
        bos_token_id: tok.bos_id(),
        eos_token_id: tok.eos_id(),
    };
    if let Ok(rd) = get_usize("rope.dimension_count") {
        if rd != cfg.head_dim() {
            return Err(file_err(
                path,
                format!(
                    "partial rotary embeddings (rope dim {rd} < head dim {}) are not supported",
                    cfg.head_dim()
                ),
            ));
        }
    }
    cfg.validate().map_err(|e| file_err(path, e.to_string()))?;
    Ok(cfg)
}

/// Undoes llama.cpp's `convert_hf_to_gguf.py` permutation of Q/K rows: GGUF stores each head
/// as `[head_dim/2, 2]` (interleaved pairs), Hugging Face as `[2, head_dim/2]` (rotate-half).
pub fn unpermute_qk(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / n_heads;
    Ok(w.reshape((n_heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// The inverse of [`unpermute_qk`] (Hugging Face rotate-half order to GGUF's interleaved order).
pub fn permute_qk(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / n_heads;
    Ok(w.reshape((n_heads, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Loads a GGUF llama model (weights dequantized to f32) and the tokenizer in its metadata.
pub fn load_gguf(path: &Path, device: &Device) -> Result<(LlamaWeights, Tokenizer)> {
    let (mut file, ct) = read_gguf_content(path)?;
    gguf_arch(path, &ct)?;
    let tok = Tokenizer::from_gguf_content(&ct).map_err(|e| file_err(path, e.to_string()))?;
    let cfg = gguf_config(path, &ct, &tok)?;
    let mut get = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let q = ct
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| file_err(path, format!("tensor `{name}`: {e}")))?;
        let t = q.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?;
        if t.dims() != shape {
            return Err(file_err(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t.to_device(device)?)
    };
    let d = cfg.hidden_size;
    let hd = cfg.head_dim();
    let (nh, nkv, ff) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
    );
    let embed = get("token_embd.weight", &[cfg.vocab_size, d])?;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        layers.push(LayerWeights {
            attn_norm: get(&p("attn_norm"), &[d])?,
            wq: unpermute_qk(&get(&p("attn_q"), &[nh * hd, d])?, nh)?,
            wk: unpermute_qk(&get(&p("attn_k"), &[nkv * hd, d])?, nkv)?,
            wv: get(&p("attn_v"), &[nkv * hd, d])?,
            wo: get(&p("attn_output"), &[d, nh * hd])?,
            ffn_norm: get(&p("ffn_norm"), &[d])?,
            w_gate: get(&p("ffn_gate"), &[ff, d])?,
            w_up: get(&p("ffn_up"), &[ff, d])?,
            w_down: get(&p("ffn_down"), &[d, ff])?,
        });
    }
    let final_norm = get("output_norm.weight", &[d])?;
    let lm_head = if cfg.tie_word_embeddings {
        None
    } else {
        Some(get("output.weight", &[cfg.vocab_size, d])?)
    };
    Ok((
        LlamaWeights {
            config: cfg,
            embed,
            layers,
            final_norm,
            lm_head,
        },
        tok,
    ))
}

#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_parameters: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_ctx")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    model_type: Option<String>,
    head_dim: Option<usize>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_ctx() -> usize {
    2048
}

fn first_id(v: &Option<serde_json::Value>) -> Option<u32> {
    match v.as_ref()? {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
        _ => None,
    }
}

/// Reads a Hugging Face `config.json` of a llama model.
pub fn read_hf_config(path: &Path) -> Result<LlamaConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    let c: HfConfig = serde_json::from_str(&text)
        .map_err(|e| file_err(path, format!("not a llama config.json: {e}")))?;
    if let Some(mt) = &c.model_type {
        if mt != "llama" && mt != "mistral" {
            return Err(file_err(
                path,
                format!("model_type `{mt}` is not supported (llama only)"),
            ));
        }
    }
    let has_scaling = match (&c.rope_scaling, &c.rope_parameters) {
        (Some(serde_json::Value::Object(m)), _) => !m.is_empty(),
        (_, Some(serde_json::Value::Object(m))) => m
            .get("rope_type")
            .and_then(|v| v.as_str())
            .is_some_and(|t| t != "default"),
        _ => false,
    };
    if has_scaling {
        return Err(file_err(path, "rope scaling is not supported"));
    }
    let rope_theta = c
        .rope_theta
        .or_else(|| {
            c.rope_parameters
                .as_ref()
                .and_then(|p| p.get("rope_theta"))
                .and_then(|v| v.as_f64())
        })
        .unwrap_or(10_000.0);
    let cfg = LlamaConfig {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        rms_norm_eps: c.rms_norm_eps,
        rope_theta,
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
        bos_token_id: first_id(&c.bos_token_id),
        eos_token_id: first_id(&c.eos_token_id),
    };
    if let Some(hd) = c.head_dim {
        if hd != cfg.head_dim() {
            return Err(file_err(
                path,
                "head_dim different from hidden_size / num_attention_heads is not supported",
            ));
        }
    }
    cfg.validate().map_err(|e| file_err(path, e.to_string()))?;
    Ok(cfg)
}

/// Loads a Hugging Face llama directory: `config.json`, `*.safetensors`, `tokenizer.json`.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<(LlamaWeights, Tokenizer)> {
    let cfg = read_hf_config(&dir.join("config.json"))?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(file_err(
            &tok_path,
            "missing tokenizer.json next to config.json",
        ));
    }
    let tok = Tokenizer::from_file(&tok_path)?.with_special_ids(cfg.bos_token_id, cfg.eos_token_id);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(file_err(
            dir,
            "no *.safetensors weights in the model directory",
        ));
    }
    let mut map = std::collections::HashMap::new();
    for f in &files {
        let ts = candle_core::safetensors::load(f, &Device::Cpu)
            .map_err(|e| file_err(f, format!("cannot read safetensors: {e}")))?;
        map.extend(ts);
    }
    let weights =
        weights_from_hf_tensors(&cfg, map, device).map_err(|e| file_err(dir, e.to_string()))?;
    Ok((weights, tok))
}

/// Builds [`LlamaWeights`] from Hugging Face tensor names (`model.layers.0.self_attn.q_proj.weight`, ...).
pub fn weights_from_hf_tensors(
    cfg: &LlamaConfig,
    mut map: std::collections::HashMap<String, Tensor>,
    device: &Device,
) -> Result<LlamaWeights> {
    let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let t = map
            .remove(name)
            .ok_or_else(|| LmError::Shape(format!("missing tensor `{name}`")))?;
        if t.dims() != shape {
            return Err(LmError::Shape(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(device)?)
    };
    let d = cfg.hidden_size;
    let hd = cfg.head_dim();
    let (nh, nkv, ff) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
    );
    let embed = take("model.embed_tokens.weight", &[cfg.vocab_size, d])?;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}.weight");
        layers.push(LayerWeights {
            attn_norm: take(&p("input_layernorm"), &[d])?,
            wq: take(&p("self_attn.q_proj"), &[nh * hd, d])?,
            wk: take(&p("self_attn.k_proj"), &[nkv * hd, d])?,
            wv: take(&p("self_attn.v_proj"), &[nkv * hd, d])?,
            wo: take(&p("self_attn.o_proj"), &[d, nh * hd])?,
            ffn_norm: take(&p("post_attention_layernorm"), &[d])?,
            w_gate: take(&p("mlp.gate_proj"), &[ff, d])?,
            w_up: take(&p("mlp.up_proj"), &[ff, d])?,
            w_down: take(&p("mlp.down_proj"), &[d, ff])?,
        });
    }
    let final_norm = take("model.norm.weight", &[d])?;
    let lm_head = if cfg.tie_word_embeddings {
        None
    } else {
        Some(take("lm_head.weight", &[cfg.vocab_size, d])?)
    };
    Ok(LlamaWeights {
        config: cfg.clone(),
        embed,
        layers,
        final_norm,
        lm_head,
    })
}

/// The weights under Hugging Face names (for saving a full fine-tune as safetensors).
pub fn weights_to_hf_tensors(w: &LlamaWeights) -> Vec<(String, Tensor)> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), w.embed.clone())];
    for (i, l) in w.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{i}.{s}.weight");
        out.push((p("input_layernorm"), l.attn_norm.clone()));
        out.push((p("self_attn.q_proj"), l.wq.clone()));
        out.push((p("self_attn.k_proj"), l.wk.clone()));
        out.push((p("self_attn.v_proj"), l.wv.clone()));
        out.push((p("self_attn.o_proj"), l.wo.clone()));
        out.push((p("post_attention_layernorm"), l.ffn_norm.clone()));
        out.push((p("mlp.gate_proj"), l.w_gate.clone()));
        out.push((p("mlp.up_proj"), l.w_up.clone()));
        out.push((p("mlp.down_proj"), l.w_down.clone()));
    }
    out.push(("model.norm.weight".to_string(), w.final_norm.clone()));
    if let Some(h) = &w.lm_head {
        out.push(("lm_head.weight".to_string(), h.clone()));
    }
    out
}

/// Writes a Hugging Face `config.json` for `cfg` (llama architecture).
pub fn hf_config_json(cfg: &LlamaConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    })
}
