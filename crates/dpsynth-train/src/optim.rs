//! AdamW with linear warm-up, then linear or cosine decay (or a constant rate).

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::dp::ReleasableGradient;
use crate::model::Params;
use crate::Result;

/// Learning-rate decay after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Linear decay to 0 at the last step (the original schedule).
    #[default]
    Linear,
    /// Half-cosine decay to 0 at the last step (Loshchilov & Hutter 2017, without restarts).
    Cosine,
    /// Constant after the warm-up.
    Constant,
}

impl LrSchedule {
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Linear => "linear",
            LrSchedule::Cosine => "cosine",
            LrSchedule::Constant => "constant",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "linear" => Some(LrSchedule::Linear),
            "cosine" => Some(LrSchedule::Cosine),
            "constant" => Some(LrSchedule::Constant),
            _ => None,
        }
    }
    /// For `skip_serializing_if`: configs written before the option existed used `linear`.
    pub fn is_linear(&self) -> bool {
        *self == LrSchedule::Linear
    }
}

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: usize,
    /// Total steps; the rate decays to 0 at this step (0 = constant after warm-up).
    pub total_steps: usize,
    /// Decay shape after the warm-up.
    #[serde(default)]
    pub schedule: LrSchedule,
}

impl AdamWConfig {
    /// The learning rate used at step `t` (0-based).
    pub fn lr_at(&self, t: usize) -> f64 {
        if self.warmup_steps > 0 && t < self.warmup_steps {
            return self.lr * (t + 1) as f64 / self.warmup_steps as f64;
        }
        if self.total_steps > self.warmup_steps {
            let rem = self.total_steps.saturating_sub(t) as f64;
            let span = (self.total_steps - self.warmup_steps) as f64;
            let left = (rem / span).clamp(0.0, 1.0);
            return match self.schedule {
                LrSchedule::Linear => self.lr * left,
                // 1 at the end of the warm-up, 0 at `total_steps`.
                LrSchedule::Cosine => self.lr * 0.5 * (1.0 - (std::f64::consts::PI * left).cos()),
                LrSchedule::Constant => self.lr,
            };
        }
        self.lr
    }
}

/// AdamW (Loshchilov & Hutter 2019) over a [`Params`] set.
#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub step: usize,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &Params) -> Result<Self> {
        let z = |t: &Tensor| t.zeros_like();
        Ok(Self {
            config,
            m: params
                .tensors
                .iter()
                .map(z)
                .collect::<candle_core::Result<_>>()?,
            v: params
                .tensors
                .iter()
                .map(z)
                .collect::<candle_core::Result<_>>()?,
            step: 0,
        })
    }

    /// One update. Takes only a [`ReleasableGradient`]: a noised DP gradient or an
    /// explicitly non-private one.
    pub fn step<G: ReleasableGradient>(&mut self, params: &mut Params, grad: G) -> Result<()> {
        let c = &self.config;
        let lr = c.lr_at(self.step);
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (i, g) in grad.tensors().iter().enumerate() {
            let m = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let upd = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let p = &params.tensors[i];
            let p = ((p * (1.0 - lr * c.weight_decay))? - (upd * lr)?)?;
            params.tensors[i] = p;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Move state to a device (after loading a checkpoint).
    pub fn to_device(&mut self, dev: &Device) -> Result<()> {
        for t in self.m.iter_mut().chain(self.v.iter_mut()) {
            *t = t.to_device(dev)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: LrSchedule) -> AdamWConfig {
        AdamWConfig {
            lr: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 10,
            total_steps: 110,
            schedule,
        }
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        for s in [LrSchedule::Linear, LrSchedule::Cosine, LrSchedule::Constant] {
            let c = cfg(s);
            // Linear warm-up: 0.1, 0.2, ..., 1.0 over the first 10 steps.
            assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
            assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
            assert!((c.lr_at(10) - 1.0).abs() < 1e-12, "{s:?}");
            let mut last = f64::INFINITY;
            for t in 10..110 {
                let r = c.lr_at(t);
                assert!(r <= last + 1e-12 && r >= 0.0, "{s:?} t={t}");
                last = r;
            }
        }
        // Halfway through the decay: linear 0.5, cosine 0.5; a quarter in: cosine above linear.
        let (l, c) = (cfg(LrSchedule::Linear), cfg(LrSchedule::Cosine));
        assert!((l.lr_at(60) - 0.5).abs() < 1e-12);
        assert!((c.lr_at(60) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(35) > l.lr_at(35));
        assert!(c.lr_at(109) < 0.01 && c.lr_at(109) > 0.0);
        assert_eq!(cfg(LrSchedule::Constant).lr_at(109), 1.0);
        assert_eq!(LrSchedule::parse("cosine"), Some(LrSchedule::Cosine));
        assert_eq!(LrSchedule::parse("cos"), None);
    }
}
