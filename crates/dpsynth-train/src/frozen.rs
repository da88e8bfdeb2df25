//! A linear layer with a frozen weight whose backward returns only the input gradient.
//!
//! candle's autograd differentiates a `matmul` on both sides even when one side is a
//! constant, which would waste one third of the backward FLOPs on gradients of frozen base
//! weights that nobody reads. [`frozen_linear`] computes `x @ W^T` as a
//! [`candle_core::CustomOp1`] on the input only: its backward is `grad @ W`, nothing else.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Storage, Tensor};

/// `x @ W^T` with `W: [out, in]` frozen (no gradient is ever computed for `W`).
#[derive(Debug, Clone)]
pub struct FrozenMatmul {
    w: Tensor,
}

impl FrozenMatmul {
    /// `w` is `[out, in]` (Hugging Face layout), made contiguous here.
    pub fn new(w: &Tensor) -> candle_core::Result<Self> {
        Ok(Self {
            w: w.detach().contiguous()?,
        })
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l.dims().to_vec();
        let (out, inn) = self.w.dims2()?;
        let k = *dims.last().unwrap_or(&0);
        if k != inn {
            candle_core::bail!("frozen-matmul: input has {k} features, weight expects {inn}")
        }
        let rows = l.shape().elem_count() / inn.max(1);
        let (start, _) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("frozen-matmul: non-contiguous input".into()))?;
        let lhs_l = Layout::contiguous_with_offset((rows, inn), start);
        let wt = self.w.t()?;
        let (ws, wl) = wt.storage_and_layout();
        let ws = match &*ws {
            Storage::Cpu(c) => c,
            _ => candle_core::bail!("frozen-matmul: weight not on the cpu"),
        };
        let y = s.matmul(ws, (1, rows, out, inn), &lhs_l, wl)?;
        let mut od = dims;
        *od.last_mut().unwrap() = out;
        Ok((y, Shape::from(od)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (out, _) = self.w.dims2()?;
        let rows = grad.elem_count() / out.max(1);
        let g = grad.contiguous()?.reshape((rows, out))?.matmul(&self.w)?;
        Ok(Some(g.reshape(arg.shape())?))
    }
}

/// `x @ W^T` for `x: [..., in]`, `w: [out, in]`; the weight receives no gradient.
///
/// On the CPU this is a custom op whose backward computes only `grad @ W`; on other devices
/// it falls back to a matmul with the detached weight (same values and input gradient,
/// the wasted weight gradient is dropped).
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op1(FrozenMatmul::new(w)?),
        _ => x.broadcast_matmul(&w.detach().t()?),
    }
}

/// Precision of the frozen base weights (all base linears and the tied/untied output head)
/// in LoRA and prompt tuning. Full fine-tuning always trains in f32.
///
/// # Privacy
/// The guarantee does not depend on this choice. DP-SGD's sensitivity bound comes from
/// clipping whatever per-example gradient is computed to norm ≤ C before summing (Abadi et
/// al. 2016, Alg. 1; the Gaussian mechanism's sensitivity in Mironov et al. 2019, Thm. 4):
/// a gradient computed with bf16-rounded frozen weights is still a deterministic function of
/// one example, clipped to C, so neighbouring datasets still change the clipped sum by at
/// most C. bf16 only changes *which* function is optimised (a slightly perturbed model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrozenPrecision {
    /// f32 weights, candle's f32 GEMM.
    F32,
    /// bf16 weights packed for `dpsynth_lm::kernels` (bf16 × bf16 products, f32
    /// accumulation; activations rounded to bf16 per product).
    Bf16,
}

impl FrozenPrecision {
    /// `Bf16` when the AVX-512 BF16 kernel is available on this CPU, else `F32`.
    pub fn machine_default() -> Self {
        if dpsynth_lm::kernels::bf16_kernel_available() {
            Self::Bf16
        } else {
            Self::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for FrozenPrecision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            o => Err(format!("unknown base precision `{o}` (use f32 or bf16)")),
        }
    }
}

/// The frozen base linears and output head packed as bf16 for training (forward and
/// input-gradient panels).
pub struct PackedBase {
    /// Per layer: module name → packed weight (all seven linears).
    layers: Vec<Vec<(String, std::sync::Arc<dpsynth_lm::kernels::PackedWeight>)>>,
    head: std::sync::Arc<dpsynth_lm::kernels::PackedWeight>,
}

impl PackedBase {
    pub fn new(w: &dpsynth_lm::LlamaWeights) -> candle_core::Result<Self> {
        use dpsynth_lm::kernels::PackedWeight;
        use std::sync::Arc;
        let mut layers = Vec::with_capacity(w.layers.len());
        for lw in &w.layers {
            let mut m = Vec::new();
            for name in dpsynth_lm::weights::LINEAR_MODULES {
                if let Some(t) = lw.linear(name) {
                    m.push((name.to_string(), Arc::new(PackedWeight::for_training(t)?)));
                }
            }
            layers.push(m);
        }
        let head = Arc::new(PackedWeight::for_training(w.lm_head())?);
        Ok(Self { layers, head })
    }

    pub fn linear(
        &self,
        layer: usize,
        module: &str,
    ) -> Option<&std::sync::Arc<dpsynth_lm::kernels::PackedWeight>> {
        self.layers
            .get(layer)?
            .iter()
            .find(|(n, _)| n == module)
            .map(|(_, w)| w)
    }

    pub fn head(&self) -> &std::sync::Arc<dpsynth_lm::kernels::PackedWeight> {
        &self.head
    }

    /// Bytes held by the packed weights.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(_, w)| w.bytes())
            .sum::<usize>()
            + self.head.bytes()
    }
}

/// A copy of `w` whose frozen linears (and untied output head) no longer hold f32 data: each
/// is replaced by a broadcast scalar zero of the same shape (4 bytes). Use it only together
/// with a [`PackedBase`] built from `w` beforehand (the training model reads those weights
/// from the packed copy and refuses released ones); embeddings and norms are kept.
/// Frees about 0.42 GB of f32 weights for SmolLM2-135M once the bf16 copy exists.
pub fn release_frozen_f32(
    w: &dpsynth_lm::LlamaWeights,
) -> candle_core::Result<dpsynth_lm::LlamaWeights> {
    let ph = |t: &Tensor| -> candle_core::Result<Tensor> {
        Tensor::zeros((), t.dtype(), t.device())?.broadcast_as(t.shape())
    };
    let mut out = w.clone();
    for l in &mut out.layers {
        for t in [
            &mut l.wq,
            &mut l.wk,
            &mut l.wv,
            &mut l.wo,
            &mut l.w_gate,
            &mut l.w_up,
            &mut l.w_down,
        ] {
            *t = ph(t)?;
        }
    }
    if let Some(h) = &mut out.lm_head {
        *h = ph(h)?;
    }
    Ok(out)
}

/// True for a weight replaced by [`release_frozen_f32`].
pub fn is_released(t: &Tensor) -> bool {
    t.elem_count() > 1 && t.stride().iter().all(|&s| s == 0)
}
