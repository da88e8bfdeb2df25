//! Loading llama-family models: a GGUF file (any quantization candle reads, dequantized to f32)
//! or a Hugging Face directory (`config.json` + `*.safetensors` + `tokenizer.json`).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::config::{
    Activation, LayerType, ModelType, RopeScaling, SUPPORTED_GGUF_ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
};
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

fn gguf_arch(path: &Path, ct: &gguf_file::Content) -> Result<(String, ModelType)> {
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    match ModelType::from_gguf(&arch) {
        Some(t) => Ok((arch, t)),
        None => Err(file_err(
            path,
            format!(
                "GGUF architecture is `{arch}`, which is not supported (supported: {SUPPORTED_GGUF_ARCHITECTURES})"
            ),
        )),
    }
}

/// Gemma 3's local/global layer pattern as llama.cpp hard-codes it: every 6th layer global.
const GEMMA3_SLIDING_WINDOW_PATTERN: usize = 6;
/// Gemma 3's rope base of the local layers (llama.cpp hard-codes it; GGUF files do not store it).
const GEMMA3_ROPE_LOCAL_BASE_FREQ: f64 = 10_000.0;

fn gguf_config(path: &Path, ct: &gguf_file::Content, tok: &Tokenizer) -> Result<LlamaConfig> {
    let (arch, family) = gguf_arch(path, ct)?;
    let get = |k: &str| ct.metadata.get(&format!("{arch}.{k}"));
    let get_usize = |k: &str| -> Result<usize> {
        get(k)
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|v| v as usize)
            .ok_or_else(|| file_err(path, format!("GGUF metadata has no `{arch}.{k}`")))
    };
    let get_f64 = |k: &str| -> Option<f64> {
        get(k).and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
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
    let mut cfg = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: get_usize("feed_forward_length")?,
        num_hidden_layers: get_usize("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        rms_norm_eps: get_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: get_f64("rope.freq_base").unwrap_or(10_000.0),
        max_position_embeddings: get_usize("context_length").unwrap_or(2048),
        tie_word_embeddings: tie,
        bos_token_id: tok.bos_id(),
        eos_token_id: tok.eos_id(),
        model_type: family,
        head_dim: None,
        attention_bias: ct.tensor_infos.contains_key("blk.0.attn_q.bias"),
        hidden_act: Activation::Silu,
        rope_scaling: None,
        query_pre_attn_scalar: None,
        sliding_window: None,
        layer_types: None,
        rope_local_base_freq: None,
        final_logit_softcapping: None,
        attn_logit_softcapping: None,
    };
    if let Ok(kl) = get_usize("attention.key_length") {
        if kl * heads != hidden {
            cfg.head_dim = Some(kl);
        }
        if let Ok(vl) = get_usize("attention.value_length") {
            if vl != kl {
                return Err(file_err(
                    path,
                    format!(
                        "value head width {vl} differs from key head width {kl}: not supported"
                    ),
                ));
            }
        }
    }
    if ct.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(file_err(
            path,
            "per-frequency rope factors (`rope_freqs.weight`, Llama 3.1+ rope scaling in GGUF) are \
             not supported; load the Hugging Face directory (config.json `rope_scaling`) instead",
        ));
    }
    let scaling = get("rope.scaling.type").and_then(|v| v.to_string().ok().cloned());
    match scaling.as_deref() {
        None | Some("none") => {}
        Some("linear") => {
            let factor = get_f64("rope.scaling.factor").unwrap_or(1.0);
            if factor != 1.0 {
                cfg.rope_scaling = Some(RopeScaling::Linear { factor });
            }
        }
        Some(other) => {
            return Err(file_err(
                path,
                format!("rope scaling `{other}` is not supported (supported: linear)"),
            ))
        }
    }
    if family == ModelType::Gemma3Text {
        cfg.hidden_act = Activation::GeluPytorchTanh;
        // llama.cpp scales scores by 1/sqrt(head_dim) for Gemma 3 (all sizes but 27B, whose
        // query_pre_attn_scalar is hidden / heads).
        cfg.query_pre_attn_scalar = Some(cfg.head_dim() as f64);
        if let Ok(w) = get_usize("attention.sliding_window") {
            let n = cfg.num_hidden_layers;
            cfg.sliding_window = Some(w);
            cfg.layer_types = Some(
                (0..n)
                    .map(|i| {
                        if (i + 1) % GEMMA3_SLIDING_WINDOW_PATTERN == 0 {
                            LayerType::FullAttention
                        } else {
                            LayerType::SlidingAttention
                        }
                    })
                    .collect(),
            );
            cfg.rope_local_base_freq = Some(GEMMA3_ROPE_LOCAL_BASE_FREQ);
        }
    }
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
    // GGUF stores Gemma's norm weights as the multiplier `1 + w` (llama.cpp's converter adds
    // 1); the Hugging Face layout kept here stores `w`.
    let norm_off = cfg.norm_weight_offset();
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
        let t = if norm_off != 0.0 && name.ends_with("norm.weight") {
            (t - norm_off)?
        } else {
            t
        };
        Ok(t.to_device(device)?)
    };
    let d = cfg.hidden_size;
    let hd = cfg.head_dim();
    let (nh, nkv, ff) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
    );
    // Only llama.cpp's llama converter permutes Q/K rows for interleaved rope; Qwen and Gemma
    // use the rotate-half (NEOX) rope and keep Hugging Face's order.
    let permuted = cfg.model_type == ModelType::Llama;
    let qk = |t: Tensor, heads: usize| -> Result<Tensor> {
        if permuted {
            unpermute_qk(&t, heads)
        } else {
            Ok(t)
        }
    };
    let embed = get("token_embd.weight", &[cfg.vocab_size, d])?;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        let pb = |s: &str| format!("blk.{i}.{s}.bias");
        let (bq, bk, bv) = if cfg.attention_bias {
            (
                Some(get(&pb("attn_q"), &[nh * hd])?),
                Some(get(&pb("attn_k"), &[nkv * hd])?),
                Some(get(&pb("attn_v"), &[nkv * hd])?),
            )
        } else {
            (None, None, None)
        };
        let (q_norm, k_norm) = if cfg.has_qk_norm() {
            (
                Some(get(&p("attn_q_norm"), &[hd])?),
                Some(get(&p("attn_k_norm"), &[hd])?),
            )
        } else {
            (None, None)
        };
        let (post_attn_norm, post_ffn_norm) = if cfg.has_post_norms() {
            (
                Some(get(&p("post_attention_norm"), &[d])?),
                Some(get(&p("post_ffw_norm"), &[d])?),
            )
        } else {
            (None, None)
        };
        layers.push(LayerWeights {
            attn_norm: get(&p("attn_norm"), &[d])?,
            wq: qk(get(&p("attn_q"), &[nh * hd, d])?, nh)?,
            wk: qk(get(&p("attn_k"), &[nkv * hd, d])?, nkv)?,
            wv: get(&p("attn_v"), &[nkv * hd, d])?,
            wo: get(&p("attn_output"), &[d, nh * hd])?,
            ffn_norm: get(&p("ffn_norm"), &[d])?,
            w_gate: get(&p("ffn_gate"), &[ff, d])?,
            w_up: get(&p("ffn_up"), &[ff, d])?,
            w_down: get(&p("ffn_down"), &[d, ff])?,
            bq,
            bk,
            bv,
            q_norm,
            k_norm,
            post_attn_norm,
            post_ffn_norm,
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
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    head_dim: Option<usize>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    rope_local_base_freq: Option<f64>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
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

/// `rope_scaling` / one `rope_parameters` entry: `(rope_theta, scaling)`.
fn parse_rope(
    v: &serde_json::Value,
) -> std::result::Result<(Option<f64>, Option<RopeScaling>), String> {
    let Some(m) = v.as_object() else {
        return Ok((None, None));
    };
    let theta = m.get("rope_theta").and_then(|x| x.as_f64());
    let kind = m
        .get("rope_type")
        .or_else(|| m.get("type"))
        .and_then(|x| x.as_str())
        .unwrap_or("default");
    let num = |k: &str| -> std::result::Result<f64, String> {
        m.get(k)
            .and_then(|x| x.as_f64())
            .ok_or_else(|| format!("rope scaling `{kind}` without `{k}`"))
    };
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        }),
        other => {
            return Err(format!(
                "rope scaling `{other}` is not supported (supported: default, linear, llama3)"
            ))
        }
    };
    Ok((theta, scaling))
}

/// Reads a Hugging Face `config.json` of a supported family (see [`SUPPORTED_MODEL_TYPES`]).
pub fn read_hf_config(path: &Path) -> Result<LlamaConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    // The family first, so that an unsupported model gets that error, not a missing field.
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| file_err(path, format!("not a JSON config.json: {e}")))?;
    let family = match raw.get("model_type").and_then(|v| v.as_str()) {
        None => ModelType::Llama,
        Some("gemma3") => {
            return Err(file_err(
                path,
                "model_type `gemma3` is the multimodal Gemma 3 (text model under `text_config`, \
                 weights under `language_model.`), which is not supported; use a text-only \
                 checkpoint (model_type `gemma3_text`, e.g. gemma-3-270m or gemma-3-1b)",
            ))
        }
        Some(mt) => ModelType::from_hf(mt).ok_or_else(|| {
            file_err(
                path,
                format!("model_type `{mt}` is not supported (supported: {SUPPORTED_MODEL_TYPES})"),
            )
        })?,
    };
    let c: HfConfig = serde_json::from_value(raw)
        .map_err(|e| file_err(path, format!("not a {} config.json: {e}", family.hf_name())))?;
    let bad = |m: String| file_err(path, m);
    let is_gemma = family == ModelType::Gemma3Text;
    // Global rope: `rope_theta` + `rope_scaling` (transformers 4), or `rope_parameters`
    // (transformers 5: flat, or per layer type for Gemma 3).
    let (mut theta, mut scaling) = (c.rope_theta, None);
    let mut local_theta = c.rope_local_base_freq;
    if let Some(rs) = &c.rope_scaling {
        let (_, s) = parse_rope(rs).map_err(&bad)?;
        scaling = s;
    }
    if let Some(rp) = &c.rope_parameters {
        if let Some(full) = rp.get("full_attention") {
            let (t, s) = parse_rope(full).map_err(&bad)?;
            theta = theta.or(t);
            scaling = scaling.or(s);
            if let Some(sl) = rp.get("sliding_attention") {
                let (t, s) = parse_rope(sl).map_err(&bad)?;
                if s.is_some() {
                    return Err(bad(
                        "rope scaling of sliding-attention layers is not supported".into(),
                    ));
                }
                local_theta = local_theta.or(t);
            }
        } else {
            let (t, s) = parse_rope(rp).map_err(&bad)?;
            theta = theta.or(t);
            scaling = scaling.or(s);
        }
    }
    let act = c.hidden_activation.as_deref().or(c.hidden_act.as_deref());
    let hidden_act = match act {
        None if is_gemma => Activation::GeluPytorchTanh,
        None | Some("silu") | Some("swish") => Activation::Silu,
        Some("gelu_pytorch_tanh") => Activation::GeluPytorchTanh,
        Some(other) => {
            return Err(bad(format!(
                "activation `{other}` is not supported (supported: silu, gelu_pytorch_tanh)"
            )))
        }
    };
    if c.mlp_bias == Some(true) {
        return Err(bad("mlp_bias is not supported".into()));
    }
    let attention_bias = match family {
        ModelType::Qwen2 => true,
        ModelType::Llama if c.attention_bias == Some(true) => {
            return Err(bad(
                "attention_bias on a llama model (biased o_proj) is not supported".into(),
            ))
        }
        _ => false,
    };
    if family == ModelType::Qwen2 && c.use_sliding_window == Some(true) {
        return Err(bad(
            "Qwen2 with use_sliding_window = true is not supported".into()
        ));
    }
    let (sliding_window, layer_types) = if is_gemma {
        let types = match (&c.layer_types, c.sliding_window_pattern) {
            (Some(t), _) => Some(
                t.iter()
                    .map(|x| match x.as_str() {
                        "sliding_attention" => Ok(LayerType::SlidingAttention),
                        "full_attention" => Ok(LayerType::FullAttention),
                        o => Err(bad(format!("layer type `{o}` is not supported"))),
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            (None, Some(p)) if p > 0 => Some(
                (0..c.num_hidden_layers)
                    .map(|i| {
                        if (i + 1) % p == 0 {
                            LayerType::FullAttention
                        } else {
                            LayerType::SlidingAttention
                        }
                    })
                    .collect(),
            ),
            _ => None,
        };
        (c.sliding_window, types)
    } else {
        (None, None)
    };
    let cfg = LlamaConfig {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: theta.unwrap_or(if is_gemma { 1_000_000.0 } else { 10_000.0 }),
        max_position_embeddings: c.max_position_embeddings,
        // transformers' defaults: tied for Gemma 3, untied for llama and Qwen.
        tie_word_embeddings: c.tie_word_embeddings.unwrap_or(is_gemma),
        bos_token_id: first_id(&c.bos_token_id),
        eos_token_id: first_id(&c.eos_token_id),
        model_type: family,
        // Kept only when it differs from hidden / heads (the default).
        head_dim: c
            .head_dim
            .filter(|&h| h * c.num_attention_heads != c.hidden_size),
        attention_bias,
        hidden_act,
        rope_scaling: scaling,
        query_pre_attn_scalar: if is_gemma {
            Some(c.query_pre_attn_scalar.unwrap_or(256.0))
        } else {
            None
        },
        sliding_window,
        layer_types,
        rope_local_base_freq: if is_gemma {
            Some(local_theta.unwrap_or(10_000.0))
        } else {
            None
        },
        final_logit_softcapping: c.final_logit_softcapping,
        attn_logit_softcapping: c.attn_logit_softcapping,
    };
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
    let names = HfNormNames::of(cfg);
    for i in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}.weight");
        let pb = |s: &str| format!("model.layers.{i}.{s}.bias");
        let mut opt = |on: bool, name: String, shape: &[usize]| -> Result<Option<Tensor>> {
            if on {
                take(&name, shape).map(Some)
            } else {
                Ok(None)
            }
        };
        let (bias, qkn, post) = (cfg.attention_bias, cfg.has_qk_norm(), cfg.has_post_norms());
        let bq = opt(bias, pb("self_attn.q_proj"), &[nh * hd])?;
        let bk = opt(bias, pb("self_attn.k_proj"), &[nkv * hd])?;
        let bv = opt(bias, pb("self_attn.v_proj"), &[nkv * hd])?;
        let q_norm = opt(qkn, p("self_attn.q_norm"), &[hd])?;
        let k_norm = opt(qkn, p("self_attn.k_norm"), &[hd])?;
        let post_attn_norm = opt(post, p("post_attention_layernorm"), &[d])?;
        let post_ffn_norm = opt(post, p("post_feedforward_layernorm"), &[d])?;
        layers.push(LayerWeights {
            attn_norm: take(&p("input_layernorm"), &[d])?,
            wq: take(&p("self_attn.q_proj"), &[nh * hd, d])?,
            wk: take(&p("self_attn.k_proj"), &[nkv * hd, d])?,
            wv: take(&p("self_attn.v_proj"), &[nkv * hd, d])?,
            wo: take(&p("self_attn.o_proj"), &[d, nh * hd])?,
            ffn_norm: take(&p(names.ffn_norm), &[d])?,
            w_gate: take(&p("mlp.gate_proj"), &[ff, d])?,
            w_up: take(&p("mlp.up_proj"), &[ff, d])?,
            w_down: take(&p("mlp.down_proj"), &[d, ff])?,
            bq,
            bk,
            bv,
            q_norm,
            k_norm,
            post_attn_norm,
            post_ffn_norm,
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

/// Hugging Face name of the pre-FFN norm: llama and Qwen call it `post_attention_layernorm`,
/// Gemma `pre_feedforward_layernorm` (its `post_attention_layernorm` is the attention-output norm).
struct HfNormNames {
    ffn_norm: &'static str,
}

impl HfNormNames {
    fn of(cfg: &LlamaConfig) -> Self {
        Self {
            ffn_norm: if cfg.has_post_norms() {
                "pre_feedforward_layernorm"
            } else {
                "post_attention_layernorm"
            },
        }
    }
}

/// The weights under Hugging Face names (for saving a full fine-tune as safetensors).
pub fn weights_to_hf_tensors(w: &LlamaWeights) -> Vec<(String, Tensor)> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), w.embed.clone())];
    let names = HfNormNames::of(&w.config);
    for (i, l) in w.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{i}.{s}.weight");
        let pb = |s: &str| format!("model.layers.{i}.{s}.bias");
        out.push((p("input_layernorm"), l.attn_norm.clone()));
        out.push((p("self_attn.q_proj"), l.wq.clone()));
        out.push((p("self_attn.k_proj"), l.wk.clone()));
        out.push((p("self_attn.v_proj"), l.wv.clone()));
        out.push((p("self_attn.o_proj"), l.wo.clone()));
        out.push((p(names.ffn_norm), l.ffn_norm.clone()));
        out.push((p("mlp.gate_proj"), l.w_gate.clone()));
        out.push((p("mlp.up_proj"), l.w_up.clone()));
        out.push((p("mlp.down_proj"), l.w_down.clone()));
        let extra = [
            (pb("self_attn.q_proj"), &l.bq),
            (pb("self_attn.k_proj"), &l.bk),
            (pb("self_attn.v_proj"), &l.bv),
            (p("self_attn.q_norm"), &l.q_norm),
            (p("self_attn.k_norm"), &l.k_norm),
            (p("post_attention_layernorm"), &l.post_attn_norm),
            (p("post_feedforward_layernorm"), &l.post_ffn_norm),
        ];
        for (name, t) in extra {
            if let Some(t) = t {
                out.push((name, t.clone()));
            }
        }
    }
    out.push(("model.norm.weight".to_string(), w.final_norm.clone()));
    if let Some(h) = &w.lm_head {
        out.push(("lm_head.weight".to_string(), h.clone()));
    }
    out
}

/// Writes a Hugging Face `config.json` for `cfg` (read back by [`read_hf_config`]).
pub fn hf_config_json(cfg: &LlamaConfig) -> serde_json::Value {
    let mut j = serde_json::json!({
        "architectures": [cfg.model_type.hf_architecture()],
        "model_type": cfg.model_type.hf_name(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim(),
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "hidden_act": cfg.hidden_act,
        "torch_dtype": "float32",
    });
    let m = j.as_object_mut().expect("an object");
    if cfg.model_type == ModelType::Qwen2 {
        m.insert("use_sliding_window".into(), false.into());
    }
    if let Some(s) = &cfg.rope_scaling {
        m.insert(
            "rope_scaling".into(),
            serde_json::to_value(s).expect("serializable"),
        );
    }
    if cfg.is_gemma() {
        m.insert(
            "hidden_activation".into(),
            serde_json::to_value(cfg.hidden_act).expect("serializable"),
        );
        m.insert(
            "query_pre_attn_scalar".into(),
            cfg.query_pre_attn_scalar.into(),
        );
        m.insert("sliding_window".into(), cfg.sliding_window.into());
        m.insert(
            "layer_types".into(),
            serde_json::to_value(&cfg.layer_types).expect("serializable"),
        );
        m.insert(
            "rope_local_base_freq".into(),
            cfg.rope_local_base_freq.into(),
        );
        m.insert("final_logit_softcapping".into(), serde_json::Value::Null);
        m.insert("attn_logit_softcapping".into(), serde_json::Value::Null);
    }
    j
}
