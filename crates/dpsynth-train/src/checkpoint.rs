//! Checkpoints: trained parameters, optimizer state, step, loss log, seed policy and the
//! configuration that wrote them (a resumed run must match it).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::Params;
use crate::rng::SeedPolicy;
use crate::train::StepInfo;
use crate::{Result, TrainError};

/// A resumable training state.
pub struct Checkpoint {
    pub step: u64,
    pub config: serde_json::Value,
    pub params: Params,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub losses: Vec<StepInfo>,
    pub seed_policy: SeedPolicy,
}

#[derive(Serialize, Deserialize)]
struct State {
    step: u64,
    config: serde_json::Value,
    names: Vec<String>,
    losses: Vec<StepInfo>,
    seed_policy: SeedPolicy,
}

impl Checkpoint {
    /// Write to `dir` (tensors first, `state.json` last and atomically: a checkpoint
    /// without a valid `state.json` is ignored).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, n) in self.params.names.iter().enumerate() {
            map.insert(format!("param.{n}"), self.params.tensors[i].clone());
            map.insert(format!("adam_m.{n}"), self.m[i].clone());
            map.insert(format!("adam_v.{n}"), self.v[i].clone());
        }
        let p = dir.join("state.safetensors");
        candle_core::safetensors::save(&map, &p).map_err(|e| TrainError::file(&p, e))?;
        let st = State {
            step: self.step,
            config: self.config.clone(),
            names: self.params.names.clone(),
            losses: self.losses.clone(),
            seed_policy: self.seed_policy,
        };
        let sp = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_string(&st)?).map_err(|e| TrainError::file(&tmp, e))?;
        std::fs::rename(&tmp, &sp).map_err(|e| TrainError::file(&sp, e))?;
        Ok(())
    }

    /// Load; `template` gives the expected names and shapes.
    pub fn load(dir: &Path, device: &Device, template: &Params) -> Result<Self> {
        let err = |msg: String| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            msg,
        };
        let sp = dir.join("state.json");
        let s = std::fs::read_to_string(&sp)
            .map_err(|e| err(format!("cannot read state.json ({e}); nothing to resume")))?;
        let st: State =
            serde_json::from_str(&s).map_err(|e| err(format!("corrupt state.json: {e}")))?;
        if st.names != template.names {
            return Err(err(
                "its parameters do not match this model and method (checkpoint from another configuration)".into(),
            ));
        }
        let p = dir.join("state.safetensors");
        let map = candle_core::safetensors::load(&p, device).map_err(|e| err(e.to_string()))?;
        let get = |k: String, like: &Tensor| -> Result<Tensor> {
            let t = map
                .get(&k)
                .ok_or_else(|| err(format!("missing tensor {k}")))?;
            if t.dims() != like.dims() {
                return Err(err(format!(
                    "{k} has shape {:?}, expected {:?}",
                    t.dims(),
                    like.dims()
                )));
            }
            Ok(t.clone())
        };
        let mut params = Vec::new();
        let mut m = Vec::new();
        let mut v = Vec::new();
        for (n, t) in template.names.iter().zip(&template.tensors) {
            params.push(get(format!("param.{n}"), t)?);
            m.push(get(format!("adam_m.{n}"), t)?);
            v.push(get(format!("adam_v.{n}"), t)?);
        }
        Ok(Self {
            step: st.step,
            config: st.config,
            params: Params {
                names: template.names.clone(),
                tensors: params,
            },
            m,
            v,
            losses: st.losses,
            seed_policy: st.seed_policy,
        })
    }
}

/// Top-level field names where two JSON objects differ.
pub fn diff_fields(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["<whole configuration>".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
