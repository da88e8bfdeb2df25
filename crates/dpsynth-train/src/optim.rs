//! AdamW with linear warm-up and linear decay.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::dp::ReleasableGradient;
use crate::model::Params;
use crate::Result;

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
    /// Total steps; the rate decays linearly to 0 at this step (0 = constant after warm-up).
    pub total_steps: usize,
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
            return self.lr * (rem / span).clamp(0.0, 1.0);
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
