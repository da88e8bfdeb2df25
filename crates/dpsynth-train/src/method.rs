//! The one place where a fine-tuning method's name becomes a [`Method`] (`dpsynth train`,
//! `dpsynth audit` and `dpsynth run` all parse through [`Method::from_name`]).

use dpsynth_lm::LoraConfig;

use crate::model::Method;
use crate::{Result, TrainError};

impl Method {
    /// The method names accepted on the command line and in `run.toml`.
    pub const NAMES: [&'static str; 3] = ["lora", "prompt", "full"];

    /// Build a method from its name; `lora` uses `lora`, `prompt` uses `virtual_tokens`.
    /// An unknown name is an error that lists the valid ones (never a silent default).
    pub fn from_name(name: &str, lora: LoraConfig, virtual_tokens: usize) -> Result<Method> {
        match name {
            "lora" => Ok(Method::Lora(lora)),
            "prompt" => Ok(Method::Prompt { virtual_tokens }),
            "full" => Ok(Method::Full),
            other => Err(TrainError::Config(format!(
                "unknown fine-tuning method `{other}`: use one of {}",
                Method::NAMES.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lora() -> LoraConfig {
        LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: vec!["q_proj".into()],
        }
    }

    #[test]
    fn every_name_round_trips_and_unknown_names_are_errors() {
        for n in Method::NAMES {
            assert_eq!(Method::from_name(n, lora(), 7).unwrap().name(), n);
        }
        assert_eq!(
            Method::from_name("prompt", lora(), 7)
                .unwrap()
                .virtual_tokens(),
            7
        );
        for bad in ["lroa", "", "LoRA", "full ", "ful"] {
            let e = Method::from_name(bad, lora(), 7).unwrap_err().to_string();
            assert!(
                e.contains("unknown fine-tuning method") && e.contains("lora, prompt, full"),
                "{e}"
            );
        }
    }
}
