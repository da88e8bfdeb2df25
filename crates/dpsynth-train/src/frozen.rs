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
