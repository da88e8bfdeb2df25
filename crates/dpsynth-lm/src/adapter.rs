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

// ---------------------------------------------------------------------------------------------
// Construction, merge, save and load.
// ---------------------------------------------------------------------------------------------

use std::path::Path;

use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};

use crate::weights::LINEAR_MODULES;
use crate::{LlamaConfig, LlamaWeights, LmError, Result};

/// File names of the Hugging Face PEFT layout.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// File names of a full fine-tune (a Hugging Face model directory without tokenizer).
pub const FULL_CONFIG: &str = "config.json";
pub const FULL_WEIGHTS: &str = "model.safetensors";

fn file_err(path: &Path, msg: impl Into<String>) -> LmError {
    LmError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// `(out, in)` of a linear module in `cfg`'s layout.
pub fn module_shape(cfg: &LlamaConfig, module: &str) -> Option<(usize, usize)> {
    let d = cfg.hidden_size;
    let hd = cfg.head_dim();
    let q = cfg.num_attention_heads * hd;
    let kv = cfg.num_key_value_heads * hd;
    let ff = cfg.intermediate_size;
    Some(match module {
        "q_proj" => (q, d),
        "k_proj" | "v_proj" => (kv, d),
        "o_proj" => (d, q),
        "gate_proj" | "up_proj" => (ff, d),
        "down_proj" => (d, ff),
        _ => return None,
    })
}

/// PEFT's module path prefix for a module (`self_attn` or `mlp`).
fn module_group(module: &str) -> &'static str {
    match module {
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => "self_attn",
    }
}

/// The PEFT safetensors key of a LoRA factor (`"A"` or `"B"`).
pub fn peft_key(layer: usize, module: &str, factor: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{module}.lora_{factor}.weight",
        module_group(module)
    )
}

fn parse_peft_key(key: &str) -> Option<(usize, String, char)> {
    let rest = key.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_group, rest) = rest.split_once('.')?;
    let (module, rest) = rest.split_once('.')?;
    let factor = match rest {
        "lora_A.weight" | "lora_A.default.weight" => 'A',
        "lora_B.weight" | "lora_B.default.weight" => 'B',
        _ => return None,
    };
    Some((layer, module.to_string(), factor))
}

impl LoraConfig {
    /// Checks rank > 0 and known target module names.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(LmError::Config("LoRA rank must be positive".into()));
        }
        if self.targets.is_empty() {
            return Err(LmError::Config(
                "LoRA needs at least one target module".into(),
            ));
        }
        for t in &self.targets {
            if !LINEAR_MODULES.contains(&t.as_str()) {
                return Err(LmError::Config(format!(
                    "unknown LoRA target `{t}` (expected any of {})",
                    LINEAR_MODULES.join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl LoraAdapter {
    /// A fresh adapter as PEFT initializes it: `A ~ U(-1/sqrt(in), 1/sqrt(in))` (kaiming-uniform
    /// with a = sqrt(5)), `B = 0`, so the adapted model starts equal to the base model.
    pub fn init(
        config: &LoraConfig,
        base: &LlamaConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        for layer in 0..base.num_hidden_layers {
            for m in LINEAR_MODULES {
                if !config.targets.iter().any(|t| t == m) {
                    continue;
                }
                let (out, inp) = module_shape(base, m).expect("known module");
                let bound = 1.0 / (inp as f32).sqrt();
                let v: Vec<f32> = (0..config.rank * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                a.insert(
                    (layer, m.to_string()),
                    Tensor::from_vec(v, (config.rank, inp), device)?,
                );
                b.insert(
                    (layer, m.to_string()),
                    Tensor::zeros((out, config.rank), DType::F32, device)?,
                );
            }
        }
        Ok(Self {
            config: config.clone(),
            a,
            b,
        })
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.a
            .values()
            .chain(self.b.values())
            .map(|t| t.elem_count())
            .sum()
    }

    /// `scaling * B @ A` for one module, `[out, in]`, if the module is adapted.
    pub fn delta(&self, layer: usize, module: &str) -> Result<Option<Tensor>> {
        let key = (layer, module.to_string());
        match (self.a.get(&key), self.b.get(&key)) {
            (Some(a), Some(b)) => Ok(Some((b.matmul(a)? * self.config.scaling())?)),
            _ => Ok(None),
        }
    }

    /// Checks every factor's shape against `base` (`what` names the source in errors).
    pub fn check_shapes(&self, base: &LlamaConfig, what: &str) -> Result<()> {
        for ((layer, m), a) in &self.a {
            let b = self.b.get(&(*layer, m.clone())).ok_or_else(|| {
                LmError::Shape(format!(
                    "{what}: layer {layer} {m} has lora_A but no lora_B"
                ))
            })?;
            if *layer >= base.num_hidden_layers {
                return Err(LmError::Shape(format!(
                    "{what}: adapter has layer {layer}, the base model has {} layers",
                    base.num_hidden_layers
                )));
            }
            let (out, inp) = module_shape(base, m)
                .ok_or_else(|| LmError::Shape(format!("{what}: unknown module `{m}`")))?;
            let r = self.config.rank;
            if a.dims() != [r, inp] || b.dims() != [out, r] {
                return Err(LmError::Shape(format!(
                    "{what}: layer {layer} {m}: lora_A {:?} / lora_B {:?}, but the base model needs \
                     [{r}, {inp}] / [{out}, {r}] (adapter trained for a different base model?)",
                    a.dims(),
                    b.dims()
                )));
            }
        }
        if self.b.len() != self.a.len() {
            return Err(LmError::Shape(format!("{what}: unpaired lora_B weights")));
        }
        Ok(())
    }

    /// The base weights with `W + scaling * B A` merged in (for export or fast inference).
    pub fn merge_into(&self, base: &LlamaWeights) -> Result<LlamaWeights> {
        self.check_shapes(&base.config, "LoRA merge")?;
        let mut w = base.clone();
        for (li, layer) in w.layers.iter_mut().enumerate() {
            for m in LINEAR_MODULES {
                if let Some(d) = self.delta(li, m)? {
                    let slot = match m {
                        "q_proj" => &mut layer.wq,
                        "k_proj" => &mut layer.wk,
                        "v_proj" => &mut layer.wv,
                        "o_proj" => &mut layer.wo,
                        "gate_proj" => &mut layer.w_gate,
                        "up_proj" => &mut layer.w_up,
                        _ => &mut layer.w_down,
                    };
                    *slot = (&*slot + d.to_dtype(slot.dtype())?)?;
                }
            }
        }
        Ok(w)
    }

    /// Saves in Hugging Face PEFT layout: `adapter_config.json` + `adapter_model.safetensors`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tensors = Vec::new();
        for ((layer, m), a) in &self.a {
            tensors.push((
                peft_key(*layer, m, "A"),
                a.to_dtype(DType::F32)?.contiguous()?,
            ));
        }
        for ((layer, m), b) in &self.b {
            tensors.push((
                peft_key(*layer, m, "B"),
                b.to_dtype(DType::F32)?.contiguous()?,
            ));
        }
        write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
        let cfg = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.config.rank,
            "lora_alpha": self.config.alpha,
            "target_modules": self.config.targets,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "use_dora": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
            "base_model_name_or_path": null,
            "revision": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "auto_mapping": null,
        });
        write_json(&dir.join(ADAPTER_CONFIG), &cfg)
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| LmError::Other(e.to_string()))?;
    std::fs::write(path, s).map_err(|e| file_err(path, e.to_string()))
}

/// Writes f32 tensors to a safetensors file with `{"format": "pt"}` metadata (what PEFT and
/// transformers expect).
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut bufs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_dtype(DType::F32)?.flatten_all()?;
        let v: Vec<f32> = t.to_vec1()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        bufs.push((name.clone(), tensors_shape(tensors, name), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| LmError::Other(e.to_string()))
        })
        .collect::<Result<_>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|e| file_err(path, format!("cannot write safetensors: {e}")))
}

fn tensors_shape(tensors: &[(String, Tensor)], name: &str) -> Vec<usize> {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.dims().to_vec())
        .unwrap_or_default()
}

fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<std::collections::HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(file_err(path, "file not found"));
    }
    let map = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| file_err(path, format!("cannot read safetensors: {e}")))?;
    map.into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.to_device(device)?)))
        .collect()
}

impl PromptAdapter {
    /// `n` virtual tokens initialized from the embeddings of the given vocabulary ids
    /// (cycled when fewer than `n`), as PEFT's `PromptTuningInit.TEXT` does.
    pub fn init_from_vocab(base: &LlamaWeights, ids: &[u32], n: usize) -> Result<Self> {
        if n == 0 || ids.is_empty() {
            return Err(LmError::Config(
                "prompt tuning needs n > 0 virtual tokens and at least one init token".into(),
            ));
        }
        let ids: Vec<u32> = (0..n).map(|i| ids[i % ids.len()]).collect();
        let idx = Tensor::new(ids.as_slice(), base.device())?;
        Ok(Self {
            virtual_tokens: base.embed.index_select(&idx, 0)?.to_dtype(DType::F32)?,
        })
    }

    /// `n` virtual tokens drawn N(0, std^2) with a seeded generator.
    pub fn init_random(
        n: usize,
        hidden: usize,
        std: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if n == 0 {
            return Err(LmError::Config(
                "prompt tuning needs n > 0 virtual tokens".into(),
            ));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..n * hidden)
            .map(|_| {
                let u1: f32 = rng.random::<f32>().max(1e-7);
                let u2: f32 = rng.random::<f32>();
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect();
        Ok(Self {
            virtual_tokens: Tensor::from_vec(v, (n, hidden), device)?,
        })
    }

    pub fn num_virtual_tokens(&self) -> usize {
        self.virtual_tokens.dims().first().copied().unwrap_or(0)
    }
}

impl Adapter {
    /// Saves the adapter to `dir`: LoRA and prompt tuning in Hugging Face PEFT layout
    /// (`adapter_config.json` + `adapter_model.safetensors`), full fine-tuning as a Hugging
    /// Face model directory (`config.json` + `model.safetensors`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        match self {
            Adapter::Lora(l) => l.save(dir),
            Adapter::Prompt(p) => {
                let (n, d) = p.virtual_tokens.dims2()?;
                write_safetensors(
                    &dir.join(ADAPTER_WEIGHTS),
                    &[("prompt_embeddings".to_string(), p.virtual_tokens.clone())],
                )?;
                let cfg = serde_json::json!({
                    "peft_type": "PROMPT_TUNING",
                    "task_type": "CAUSAL_LM",
                    "num_virtual_tokens": n,
                    "token_dim": d,
                    "num_transformer_submodules": 1,
                    "prompt_tuning_init": "RANDOM",
                    "inference_mode": true,
                    "base_model_name_or_path": null,
                    "revision": null,
                });
                write_json(&dir.join(ADAPTER_CONFIG), &cfg)
            }
            Adapter::Full(w) => save_hf_model(w, dir),
        }
    }

    /// Loads an adapter saved by [`Adapter::save`] (or by PEFT), checking it against the base
    /// model's configuration; a mismatch is an error naming the file and the shapes.
    pub fn load(dir: &Path, base: &LlamaConfig, device: &Device) -> Result<Self> {
        let acfg = dir.join(ADAPTER_CONFIG);
        if acfg.is_file() {
            let text =
                std::fs::read_to_string(&acfg).map_err(|e| file_err(&acfg, e.to_string()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| file_err(&acfg, format!("invalid JSON: {e}")))?;
            let kind = v["peft_type"].as_str().unwrap_or("");
            let wpath = dir.join(ADAPTER_WEIGHTS);
            return match kind {
                "LORA" => load_lora(&acfg, &v, &wpath, base, device).map(Adapter::Lora),
                "PROMPT_TUNING" => {
                    let mut map = read_safetensors(&wpath, device)?;
                    let t = map
                        .remove("prompt_embeddings")
                        .ok_or_else(|| file_err(&wpath, "no `prompt_embeddings` tensor"))?;
                    let ok = t.rank() == 2 && t.dims()[1] == base.hidden_size;
                    if !ok {
                        return Err(file_err(
                            &wpath,
                            format!(
                                "prompt_embeddings has shape {:?}, the base model needs [n, {}] \
                                 (adapter trained for a different base model?)",
                                t.dims(),
                                base.hidden_size
                            ),
                        ));
                    }
                    Ok(Adapter::Prompt(PromptAdapter { virtual_tokens: t }))
                }
                other => Err(file_err(
                    &acfg,
                    format!("peft_type `{other}` is not supported (LORA or PROMPT_TUNING)"),
                )),
            };
        }
        let fcfg = dir.join(FULL_CONFIG);
        if fcfg.is_file() {
            let cfg = crate::load::read_hf_config(&fcfg)?;
            let mut shape_base = base.clone();
            shape_base.bos_token_id = cfg.bos_token_id;
            shape_base.eos_token_id = cfg.eos_token_id;
            shape_base.max_position_embeddings = cfg.max_position_embeddings;
            if cfg != shape_base {
                return Err(file_err(
                    &fcfg,
                    format!(
                        "full fine-tune's configuration does not match the base model: {cfg:?} vs {base:?}"
                    ),
                ));
            }
            let wpath = dir.join(FULL_WEIGHTS);
            let map = read_safetensors(&wpath, device)?;
            let w = crate::load::weights_from_hf_tensors(base, map, device)
                .map_err(|e| file_err(&wpath, e.to_string()))?;
            return Ok(Adapter::Full(Box::new(w)));
        }
        Err(file_err(
            dir,
            format!("not an adapter directory (no {ADAPTER_CONFIG} or {FULL_CONFIG})"),
        ))
    }

    /// The base weights with the adapter merged in, when it can be (LoRA: `W + s B A`;
    /// full: the fine-tuned weights). Prompt tuning cannot be merged into weights.
    pub fn merged(&self, base: &LlamaWeights) -> Result<Option<LlamaWeights>> {
        match self {
            Adapter::Lora(l) => Ok(Some(l.merge_into(base)?)),
            Adapter::Full(w) => Ok(Some((**w).clone())),
            Adapter::Prompt(_) => Ok(None),
        }
    }

    /// Short description, e.g. `LoRA r=8 alpha=16 [q_proj, v_proj]`.
    pub fn describe(&self) -> String {
        match self {
            Adapter::Lora(l) => format!(
                "LoRA r={} alpha={} [{}]",
                l.config.rank,
                l.config.alpha,
                l.config.targets.join(", ")
            ),
            Adapter::Prompt(p) => {
                format!("prompt tuning, {} virtual tokens", p.num_virtual_tokens())
            }
            Adapter::Full(_) => "full fine-tune".to_string(),
        }
    }
}

fn load_lora(
    cfg_path: &Path,
    v: &serde_json::Value,
    wpath: &Path,
    base: &LlamaConfig,
    device: &Device,
) -> Result<LoraAdapter> {
    let rank = v["r"]
        .as_u64()
        .ok_or_else(|| file_err(cfg_path, "missing `r`"))? as usize;
    let alpha = v["lora_alpha"].as_f64().unwrap_or(rank as f64);
    for (k, bad) in [
        ("use_rslora", v["use_rslora"].as_bool() == Some(true)),
        ("use_dora", v["use_dora"].as_bool() == Some(true)),
        (
            "fan_in_fan_out",
            v["fan_in_fan_out"].as_bool() == Some(true),
        ),
        (
            "rank_pattern",
            v["rank_pattern"].as_object().is_some_and(|m| !m.is_empty()),
        ),
        (
            "alpha_pattern",
            v["alpha_pattern"]
                .as_object()
                .is_some_and(|m| !m.is_empty()),
        ),
    ] {
        if bad {
            return Err(file_err(
                cfg_path,
                format!("LoRA option `{k}` is not supported"),
            ));
        }
    }
    if v["bias"].as_str().is_some_and(|b| b != "none") {
        return Err(file_err(cfg_path, "LoRA bias training is not supported"));
    }
    let mut targets: Vec<String> = match &v["target_modules"] {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        _ => return Err(file_err(cfg_path, "missing `target_modules`")),
    };
    targets.sort_by_key(|t| {
        LINEAR_MODULES
            .iter()
            .position(|m| m == t)
            .unwrap_or(usize::MAX)
    });
    let config = LoraConfig {
        rank,
        alpha,
        targets,
    };
    config
        .validate()
        .map_err(|e| file_err(cfg_path, e.to_string()))?;
    let map = read_safetensors(wpath, device)?;
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    for (k, t) in map {
        let (layer, module, f) = parse_peft_key(&k)
            .ok_or_else(|| file_err(wpath, format!("unexpected tensor `{k}` in a LoRA adapter")))?;
        if f == 'A' {
            a.insert((layer, module), t);
        } else {
            b.insert((layer, module), t);
        }
    }
    let l = LoraAdapter { config, a, b };
    l.check_shapes(base, &wpath.display().to_string())?;
    Ok(l)
}

/// Saves weights as a Hugging Face model directory (`config.json` + `model.safetensors`);
/// add the tokenizer's `tokenizer.json` to load it with transformers.
pub fn save_hf_model(w: &LlamaWeights, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_safetensors(
        &dir.join(FULL_WEIGHTS),
        &crate::load::weights_to_hf_tensors(w),
    )?;
    write_json(
        &dir.join(FULL_CONFIG),
        &crate::load::hf_config_json(&w.config),
    )
}
