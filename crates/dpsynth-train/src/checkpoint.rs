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

/// What `state.json` says about its private part.
const PRIVATE_NOTE: &str = "private_losses: per-step losses, logical batch sizes and \
dropped-gradient counts of the private Poisson batches, without noise. PRIVATE: NOT covered by \
the DP guarantee; share the adapter, not this checkpoint.";

#[derive(Serialize, Deserialize)]
struct State {
    step: u64,
    config: serde_json::Value,
    names: Vec<String>,
    /// Marks the file as holding private statistics ([`PRIVATE_NOTE`]).
    #[serde(default)]
    privacy_note: String,
    /// Statistics of the private batches (named `losses` in checkpoints written before).
    #[serde(alias = "losses")]
    private_losses: Vec<StepInfo>,
    seed_policy: SeedPolicy,
    /// The tensor file this state belongs to (absent in checkpoints written before it existed:
    /// then `state.safetensors`).
    #[serde(default)]
    tensors: Option<String>,
}

impl Checkpoint {
    /// Write to `dir`: the tensors to a new file named after the step, then `state.json`
    /// atomically (it names that tensor file), then the previous tensor file is removed.
    ///
    /// # Privacy
    /// A kill at any point leaves a consistent pair: either the old `state.json` with the old
    /// tensors or the new `state.json` with the new ones. Were the tensors overwritten in place, a
    /// kill between the two writes would pair step-N+k parameters with a step-N state, and a
    /// resume would repeat steps N..N+k on data those parameters already saw: compute the
    /// ledger does not count.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, n) in self.params.names.iter().enumerate() {
            map.insert(format!("param.{n}"), self.params.tensors[i].clone());
            map.insert(format!("adam_m.{n}"), self.m[i].clone());
            map.insert(format!("adam_v.{n}"), self.v[i].clone());
        }
        let previous = read_state(dir).ok().map(|st| tensor_file(&st));
        let name = format!("state-{:09}.safetensors", self.step);
        let p = dir.join(&name);
        candle_core::safetensors::save(&map, &p).map_err(|e| TrainError::file(&p, e))?;
        let st = State {
            step: self.step,
            config: self.config.clone(),
            names: self.params.names.clone(),
            privacy_note: PRIVATE_NOTE.into(),
            private_losses: self.losses.clone(),
            seed_policy: self.seed_policy,
            tensors: Some(name.clone()),
        };
        let sp = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_string(&st)?).map_err(|e| TrainError::file(&tmp, e))?;
        std::fs::rename(&tmp, &sp).map_err(|e| TrainError::file(&sp, e))?;
        if let Some(old) = previous.filter(|old| *old != name) {
            // Best effort: a leftover file is harmless (never named by state.json).
            let _ = std::fs::remove_file(dir.join(old));
        }
        Ok(())
    }

    /// Whether `dir` holds a complete checkpoint (its `state.json`, written last, exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join("state.json").is_file()
    }

    /// Load; `template` gives the expected names and shapes.
    pub fn load(dir: &Path, device: &Device, template: &Params) -> Result<Self> {
        let err = |msg: String| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            msg,
        };
        let st = read_state(dir).map_err(err)?;
        if st.names != template.names {
            return Err(err(
                "its parameters do not match this model and method (checkpoint from another configuration)".into(),
            ));
        }
        let p = dir.join(tensor_file(&st));
        let map = candle_core::safetensors::load(&p, device)
            .map_err(|e| err(format!("{}: {e}", p.display())))?;
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
            losses: st.private_losses,
            seed_policy: st.seed_policy,
        })
    }
}

fn read_state(dir: &Path) -> std::result::Result<State, String> {
    let s = std::fs::read_to_string(dir.join("state.json"))
        .map_err(|e| format!("cannot read state.json ({e}); nothing to resume"))?;
    serde_json::from_str(&s).map_err(|e| format!("corrupt state.json: {e}"))
}

fn tensor_file(st: &State) -> String {
    st.tensors
        .clone()
        .unwrap_or_else(|| "state.safetensors".to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(step: u64, value: f32) -> Checkpoint {
        let t = Tensor::full(value, (2, 3), &Device::Cpu).unwrap();
        Checkpoint {
            step,
            config: serde_json::json!({"clip_norm": 1.0}),
            params: Params {
                names: vec!["w".into()],
                tensors: vec![t.clone()],
            },
            m: vec![t.zeros_like().unwrap()],
            v: vec![t.zeros_like().unwrap()],
            losses: Vec::new(),
            seed_policy: SeedPolicy::Os,
        }
    }

    fn first(c: &Checkpoint) -> f32 {
        c.params.tensors[0]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    }

    #[test]
    fn state_json_names_its_tensor_file_and_old_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let template = ckpt(0, 0.0).params;
        ckpt(4, 1.0).save(dir.path()).unwrap();
        ckpt(8, 2.0).save(dir.path()).unwrap();
        let files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        assert_eq!(files, vec!["state-000000008.safetensors".to_string()]);
        let c = Checkpoint::load(dir.path(), &Device::Cpu, &template).unwrap();
        assert_eq!((c.step, first(&c)), (8, 2.0));
        // The private statistics are marked as such.
        let st: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap())
                .unwrap();
        assert!(st.get("losses").is_none() && st.get("private_losses").is_some());
        assert!(st["privacy_note"].as_str().unwrap().contains("PRIVATE"));

        // A kill after the tensors of step 12 were written but before state.json was replaced:
        // the resume must still pair step 8 with step 8's tensors.
        let stray = dir.path().join("state-000000012.safetensors");
        std::fs::copy(dir.path().join("state-000000008.safetensors"), &stray).unwrap();
        let mut map = HashMap::new();
        map.insert(
            "param.w".to_string(),
            Tensor::full(3f32, (2, 3), &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&map, &stray).unwrap();
        let c = Checkpoint::load(dir.path(), &Device::Cpu, &template).unwrap();
        assert_eq!((c.step, first(&c)), (8, 2.0));
    }
}
