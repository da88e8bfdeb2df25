//! Fused training ops: candle custom ops with hand-written backward passes.
//!
//! Written from primitive candle ops, a llama block keeps 5–6 full-size temporaries per
//! RMSNorm, rope and softmax alive for the backward (every intermediate node of the graph
//! holds its inputs), and the cross-entropy over a 49k vocabulary keeps several `[M, V]`
//! copies of the logits. These ops compute the same functions with one output tensor each
//! and a backward that needs only their inputs (or output), which cuts peak memory and the
//! time spent clearing freshly allocated pages.
//!
//! Every op has a primitive-op fallback used on non-CPU devices. On the CPU the fused ops
//! are what the per-example gradient tests check against the slow one-example oracle
//! (plain candle ops, written independently), for LoRA, prompt tuning and full fine-tuning.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Shape, Storage, Tensor};
use dpsynth_lm::kernels::fast_exp;
use rayon::prelude::*;

fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: non-contiguous input")))?;
    Ok(&data[a..b])
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_data<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(cpu_slice(c, l, "fused op")?),
        _ => candle_core::bail!("fused op: expected a cpu tensor"),
    }
}

/// Elements below which a fused op runs on the calling thread (rayon's task overhead is a
/// few microseconds; these ops stream memory at several GB/s).
const PAR_MIN_ELEMS: usize = 1 << 15;

/// Rows per rayon task for a row-wise op over `rows` rows of `width` elements: one task
/// when small, else about 4 tasks per thread (rows of one task stay contiguous).
fn rows_per_task(rows: usize, width: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads <= 1 || rows * width < PAR_MIN_ELEMS {
        return rows.max(1);
    }
    rows.div_ceil(threads * 4).max(1)
}

// Reductions with 16 independent partial sums: a plain `.sum()` over f32 is a serial
// dependency chain the compiler may not reorder (and so does not vectorize).
const LANES: usize = 16;

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

#[inline]
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let (ra, rb, rc) = (ca.remainder(), cb.remainder(), cc.remainder());
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j] * z[j];
        }
    }
    acc.iter().sum::<f32>()
        + ra.iter()
            .zip(rb)
            .zip(rc)
            .map(|((x, y), z)| x * y * z)
            .sum::<f32>()
}

#[inline]
fn max_of(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let ca = a.chunks_exact(LANES);
    let r = ca.remainder();
    for x in ca {
        for j in 0..LANES {
            acc[j] = acc[j].max(x[j]);
        }
    }
    acc.iter()
        .chain(r)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// `row[i] = exp((row[i] - mx) * scale)` in place; returns the sum.
#[inline]
fn exp_in_place(row: &mut [f32], mx: f32, scale: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            let e = fast_exp((c[j] - mx) * scale);
            c[j] = e;
            acc[j] += e;
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for v in chunks.into_remainder() {
        let e = fast_exp((*v - mx) * scale);
        *v = e;
        sum += e;
    }
    sum
}

// ---------------------------------------------------------------- RMSNorm

struct RmsNormOp {
    eps: f32,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "train-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, self.name())?;
        let w = cpu_slice(s2, l2, self.name())?;
        let d = w.len();
        if l1.dims().last() != Some(&d) {
            candle_core::bail!("rms-norm: input last dim differs from the weight's {d}")
        }
        let mut y = vec![0f32; x.len()];
        let per = rows_per_task(x.len() / d.max(1), d) * d;
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(yc, xc)| {
                for (xr, yr) in xc.chunks_exact(d).zip(yc.chunks_exact_mut(d)) {
                    let ms = dot(xr, xr) / d as f32;
                    let r = 1.0 / (ms + self.eps).sqrt();
                    for ((yv, xv), wv) in yr.iter_mut().zip(xr).zip(w) {
                        *yv = xv * r * wv;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let want_dw = w.track_op();
        let (dx, dw) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(g, |g| {
                    let d = w.len();
                    let mut dx = vec![0f32; x.len()];
                    let mut dw = vec![0f32; if want_dw { d } else { 0 }];
                    let row = |xr: &[f32], gr: &[f32], dr: &mut [f32]| -> f32 {
                        let ms = dot(xr, xr) / d as f32;
                        let r = 1.0 / (ms + self.eps).sqrt();
                        let c = r * r * r * dot3(xr, gr, w) / d as f32;
                        for (((dv, xv), gv), wv) in dr.iter_mut().zip(xr).zip(gr).zip(w) {
                            *dv = r * gv * wv - xv * c;
                        }
                        r
                    };
                    if want_dw {
                        // Full fine-tuning: the weight gradient sums over rows (serial).
                        for ((xr, gr), dr) in x
                            .chunks_exact(d)
                            .zip(g.chunks_exact(d))
                            .zip(dx.chunks_exact_mut(d))
                        {
                            let r = row(xr, gr, dr);
                            for ((dwv, xv), gv) in dw.iter_mut().zip(xr).zip(gr) {
                                *dwv += gv * xv * r;
                            }
                        }
                    } else {
                        let per = rows_per_task(x.len() / d.max(1), d) * d;
                        dx.par_chunks_mut(per)
                            .zip(x.par_chunks(per).zip(g.par_chunks(per)))
                            .for_each(|(dc, (xc, gc))| {
                                for ((xr, gr), dr) in xc
                                    .chunks_exact(d)
                                    .zip(gc.chunks_exact(d))
                                    .zip(dc.chunks_exact_mut(d))
                                {
                                    row(xr, gr, dr);
                                }
                            });
                    }
                    Ok((dx, dw))
                })
            })
        })?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = if want_dw {
            Some(Tensor::from_vec(dw, w.shape(), w.device())?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

/// RMSNorm `x / sqrt(mean(x²) + eps) * w` over the last dim (fused on the CPU).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x
            .contiguous()?
            .apply_op2(&w.contiguous()?, RmsNormOp { eps: eps as f32 }),
        _ => {
            let r = (x.sqr()?.mean_keepdim(candle_core::D::Minus1)? + eps)?.sqrt()?;
            x.broadcast_div(&r)?.broadcast_mul(w)
        }
    }
}

// ---------------------------------------------------------------- rope + transpose

/// Rotate-half rope fused with the `[B, T, H, hd] -> [B, H, T, hd]` transpose
/// (`rotate = false`: the transpose only, for values).
struct RopeT {
    b: usize,
    t: usize,
    h: usize,
    hd: usize,
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    rotate: bool,
}

impl RopeT {
    /// `src` in `[B, T, H, hd]`, `dst` in `[B, H, T, hd]` (`inverse = false`), or the
    /// reverse direction with the inverse rotation (`inverse = true`, the backward).
    fn run(&self, src: &[f32], dst: &mut [f32], inverse: bool) {
        let per_b = self.t * self.h * self.hd;
        if self.b > 1 && src.len() >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
            // Each example's block is self-contained in both layouts.
            dst.par_chunks_mut(per_b)
                .zip(src.par_chunks(per_b))
                .for_each(|(d, s)| self.run_one(s, d, inverse));
        } else {
            for (d, s) in dst.chunks_mut(per_b).zip(src.chunks(per_b)) {
                self.run_one(s, d, inverse);
            }
        }
    }

    /// One example: `src`/`dst` are its `[T, H, hd]` / `[H, T, hd]` blocks.
    fn run_one(&self, src: &[f32], dst: &mut [f32], inverse: bool) {
        let (t, h, hd) = (self.t, self.h, self.hd);
        let half = hd / 2;
        for p in 0..t {
            let c = &self.cos[p * hd..p * hd + half];
            let s = &self.sin[p * hd..p * hd + half];
            for hh in 0..h {
                let bth = (p * h + hh) * hd;
                let bht = (hh * t + p) * hd;
                let (i, o) = if inverse { (bht, bth) } else { (bth, bht) };
                let x = &src[i..i + hd];
                let y = &mut dst[o..o + hd];
                if !self.rotate {
                    y.copy_from_slice(x);
                    continue;
                }
                let (x1, x2) = x.split_at(half);
                let (y1, y2) = y.split_at_mut(half);
                if inverse {
                    for j in 0..half {
                        y1[j] = x1[j] * c[j] + x2[j] * s[j];
                        y2[j] = x2[j] * c[j] - x1[j] * s[j];
                    }
                } else {
                    for j in 0..half {
                        y1[j] = x1[j] * c[j] - x2[j] * s[j];
                        y2[j] = x2[j] * c[j] + x1[j] * s[j];
                    }
                }
            }
        }
    }
}

impl CustomOp1 for RopeT {
    fn name(&self) -> &'static str {
        "train-rope-transpose"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        if x.len() != self.b * self.t * self.h * self.hd {
            candle_core::bail!("rope: input shape {:?} does not match", l.dims())
        }
        let mut y = vec![0f32; x.len()];
        self.run(x, &mut y, false);
        Ok((
            CpuStorage::F32(y),
            Shape::from((self.b, self.h, self.t, self.hd)),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = with_data(g, |g| {
            let mut dx = vec![0f32; g.len()];
            self.run(g, &mut dx, true);
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Rope tables for one sequence length, shared by all layers of a forward pass.
#[derive(Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
    cos_v: Arc<Vec<f32>>,
    sin_v: Arc<Vec<f32>>,
}

impl RopeTables {
    pub fn new(cos: Tensor, sin: Tensor) -> candle_core::Result<Self> {
        let cos_v = Arc::new(cos.flatten_all()?.to_vec1::<f32>()?);
        let sin_v = Arc::new(sin.flatten_all()?.to_vec1::<f32>()?);
        Ok(Self {
            cos,
            sin,
            cos_v,
            sin_v,
        })
    }
}

/// `x: [B, T, H*hd]` → `[B, H, T, hd]`, rotated by rope when `rotate`.
pub fn heads(
    x: &Tensor,
    h: usize,
    hd: usize,
    rope: &RopeTables,
    rotate: bool,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op1(RopeT {
            b,
            t,
            h,
            hd,
            cos: rope.cos_v.clone(),
            sin: rope.sin_v.clone(),
            rotate,
        }),
        _ => {
            let y = x.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?;
            if rotate {
                crate::model::rope(&y, &rope.cos, &rope.sin)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            } else {
                Ok(y)
            }
        }
    }
}

// ---------------------------------------------------------------- attention softmax

/// Scaled, causal + key-padding masked softmax over the last dim of the grouped scores
/// `[B, G, R*T, T]` (query position = row index mod `T`; example `b` has `lens[b]` keys).
/// With a sliding `window`, query `q` sees keys `q + 1 - window ..= q` only (Gemma 3's local
/// layers); masked keys get probability 0, hence gradient 0.
struct MaskedSoftmax {
    lens: Arc<Vec<usize>>,
    scale: f32,
    window: Option<usize>,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "train-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let (b, _, _, t) = l.shape().dims4()?;
        if b != self.lens.len() {
            candle_core::bail!("masked softmax: batch {b} but {} lengths", self.lens.len())
        }
        let rows_per_b = x.len() / (b * t).max(1);
        let mut y = vec![0f32; x.len()];
        let rows = x.len() / t.max(1);
        let per = rows_per_task(rows, t);
        y.par_chunks_mut(per * t)
            .zip(x.par_chunks(per * t))
            .enumerate()
            .for_each(|(ci, (yc, xc))| {
                for (i, (xr, yr)) in xc.chunks_exact(t).zip(yc.chunks_exact_mut(t)).enumerate() {
                    let row = ci * per + i;
                    let bi = row / rows_per_b;
                    let q = row % t;
                    let valid = (q + 1).min(self.lens[bi]).max(1);
                    let lo = self
                        .window
                        .map_or(0, |w| (q + 1).saturating_sub(w))
                        .min(valid - 1);
                    let m = max_of(&xr[lo..valid]);
                    yr[lo..valid].copy_from_slice(&xr[lo..valid]);
                    let sum = exp_in_place(&mut yr[lo..valid], m, self.scale);
                    let inv = 1.0 / sum;
                    for yv in &mut yr[lo..valid] {
                        *yv *= inv;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let t = arg.dim(candle_core::D::Minus1)?;
        let dx = with_data(res, |p| {
            with_data(g, |g| {
                let mut dx = vec![0f32; p.len()];
                let per = rows_per_task(p.len() / t.max(1), t) * t;
                dx.par_chunks_mut(per)
                    .zip(p.par_chunks(per).zip(g.par_chunks(per)))
                    .for_each(|(dc, (pc, gc))| {
                        for ((pr, gr), dr) in pc
                            .chunks_exact(t)
                            .zip(gc.chunks_exact(t))
                            .zip(dc.chunks_exact_mut(t))
                        {
                            let dot = dot(pr, gr);
                            for ((dv, pv), gv) in dr.iter_mut().zip(pr).zip(gr) {
                                *dv = self.scale * pv * (gv - dot);
                            }
                        }
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Attention probabilities from grouped raw scores `s = Q Kᵀ: [B, G, R*T, T]`:
/// `softmax(scale * s + mask)`; `mask: [B, 1, 1, T, T]` additive (used off the CPU),
/// `lens`: number of valid keys of each example (used on the CPU); `window`: sliding
/// attention window (query `q` sees keys `q + 1 - window ..= q`), `None` for global attention.
pub fn attention_probs(
    s: &Tensor,
    scale: f64,
    mask: &Tensor,
    lens: &[usize],
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    match s.device() {
        Device::Cpu => s.contiguous()?.apply_op1(MaskedSoftmax {
            lens: Arc::new(lens.to_vec()),
            scale: scale as f32,
            window,
        }),
        _ => {
            let (b, g, rt, t) = s.dims4()?;
            let s = (s * scale)?
                .reshape((b, g, rt / t, t, t))?
                .broadcast_add(mask)?;
            let s = match window {
                Some(w) => {
                    let local: Vec<f32> = (0..t)
                        .flat_map(|q| (0..t).map(move |k| if k + w <= q { -1e9 } else { 0.0 }))
                        .collect();
                    s.broadcast_add(&Tensor::from_vec(local, (t, t), s.device())?)?
                }
                None => s,
            };
            crate::model::softmax_last(&s)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                .reshape((b, g, rt, t))
        }
    }
}

// ---------------------------------------------------------------- SwiGLU

struct SwiGlu;

/// Branch-free (vectorizable) logistic function; absolute error < 1e-7.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "train-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = cpu_slice(s1, l1, self.name())?;
        let u = cpu_slice(s2, l2, self.name())?;
        if g.len() != u.len() {
            candle_core::bail!("swiglu: shapes differ")
        }
        let mut y = vec![0f32; g.len()];
        let per = rows_per_task(g.len(), 1);
        y.par_chunks_mut(per)
            .zip(g.par_chunks(per).zip(u.par_chunks(per)))
            .for_each(|(yc, (gc, uc))| {
                for ((y, &g), &u) in yc.iter_mut().zip(gc).zip(uc) {
                    *y = g * sigmoid(g) * u;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = with_data(g, |g| {
            with_data(u, |u| {
                with_data(dy, |dy| {
                    let mut dg = vec![0f32; g.len()];
                    let mut du = vec![0f32; g.len()];
                    let per = rows_per_task(g.len(), 1);
                    dg.par_chunks_mut(per)
                        .zip(du.par_chunks_mut(per))
                        .zip(
                            g.par_chunks(per)
                                .zip(u.par_chunks(per))
                                .zip(dy.par_chunks(per)),
                        )
                        .for_each(|((dgc, duc), ((gc, uc), dyc))| {
                            for ((((dg, du), &g), &u), &d) in
                                dgc.iter_mut().zip(duc.iter_mut()).zip(gc).zip(uc).zip(dyc)
                            {
                                let s = sigmoid(g);
                                *dg = d * u * s * (1.0 + g * (1.0 - s));
                                *du = d * g * s;
                            }
                        });
                    Ok((dg, du))
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
            Some(Tensor::from_vec(du, u.shape(), u.device())?),
        ))
    }
}

/// `silu(g) * u` (fused on the CPU).
pub fn swiglu(g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    match g.device() {
        Device::Cpu => g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu),
        _ => g.silu()? * u,
    }
}

// ---------------------------------------------------------------- fused cross-entropy

/// A frozen output head `W: [V, d]`.
#[derive(Clone)]
pub enum Head {
    F32(Tensor),
    /// bf16 packed for training (forward and input-gradient panels).
    Packed(Arc<dpsynth_lm::kernels::PackedWeight>),
}

impl Head {
    fn vocab(&self) -> candle_core::Result<usize> {
        match self {
            Head::F32(w) => Ok(w.dims2()?.0),
            Head::Packed(w) => Ok(w.out_features()),
        }
    }

    /// `y[r, V] = x[r, d] · Wᵀ`.
    fn logits(&self, x: &[f32], rows: usize, y: &mut Vec<f32>) -> candle_core::Result<()> {
        match self {
            Head::F32(w) => {
                let (_, d) = w.dims2()?;
                let xt = Tensor::from_slice(x, (rows, d), &Device::Cpu)?;
                *y = xt.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            }
            Head::Packed(w) => {
                y.clear();
                y.resize(rows * w.out_features(), 0.0);
                w.forward(x, rows, y);
            }
        }
        Ok(())
    }

    /// `dx[r, d] = g[r, V] · W`.
    fn input_grad(&self, g: Vec<f32>, rows: usize, dx: &mut [f32]) -> candle_core::Result<()> {
        match self {
            Head::F32(w) => {
                let (v, _) = w.dims2()?;
                let gt = Tensor::from_vec(g, (rows, v), &Device::Cpu)?;
                let r = gt.matmul(w)?.flatten_all()?.to_vec1::<f32>()?;
                dx.copy_from_slice(&r);
            }
            Head::Packed(w) => w.backward_input(&g, rows, dx)?,
        }
        Ok(())
    }
}

/// Rows of the logits computed at a time by [`CrossEntropyOp`] (`CHUNK × V` floats live).
const CE_CHUNK: usize = 128;

/// Per-row next-token NLL `[M]` of hidden states `x: [M, d]` under a frozen head, computed
/// `CE_CHUNK` rows at a time: the `[M, V]` logits are never materialised. The forward also
/// computes `∂nll_i/∂x_i = (softmax_i − onehot_i) · W` (one extra GEMM, the one the
/// backward would do anyway) so the backward is a per-row scale.
struct CrossEntropyOp {
    head: Head,
    targets: Arc<Vec<u32>>,
    dnll_dx: Mutex<Vec<f32>>,
}

impl CustomOp1 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "train-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, self.name())?;
        let (m, d) = l.shape().dims2()?;
        let v = self.head.vocab()?;
        if m != self.targets.len() {
            candle_core::bail!("cross-entropy: {m} rows but {} targets", self.targets.len())
        }
        let mut nll = vec![0f32; m];
        let mut dx = vec![0f32; m * d];
        let mut logits = Vec::new();
        for start in (0..m).step_by(CE_CHUNK) {
            let rows = CE_CHUNK.min(m - start);
            self.head
                .logits(&x[start * d..(start + rows) * d], rows, &mut logits)?;
            for (i, lr) in logits.chunks_exact_mut(v).enumerate() {
                let tgt = self.targets[start + i] as usize;
                if tgt >= v {
                    candle_core::bail!("cross-entropy: target {tgt} outside the vocabulary {v}")
                }
                let mx = max_of(lr);
                let picked = lr[tgt];
                let sum = exp_in_place(lr, mx, 1.0);
                nll[start + i] = sum.ln() + mx - picked;
                let inv = 1.0 / sum;
                for z in lr.iter_mut() {
                    *z *= inv;
                }
                lr[tgt] -= 1.0;
            }
            self.head.input_grad(
                std::mem::take(&mut logits),
                rows,
                &mut dx[start * d..(start + rows) * d],
            )?;
        }
        *self
            .dnll_dx
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned cache".into()))? = dx;
        Ok((CpuStorage::F32(nll), Shape::from(m)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (m, d) = arg.dims2()?;
        let cache = self
            .dnll_dx
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned cache".into()))?;
        if cache.len() != m * d {
            candle_core::bail!("cross-entropy: backward without forward")
        }
        let dx = with_data(g, |g| {
            let mut dx = Vec::with_capacity(m * d);
            for (row, &gv) in cache.chunks_exact(d).zip(g) {
                dx.extend(row.iter().map(|v| v * gv));
            }
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, (m, d), arg.device())?))
    }
}

/// Per-row NLL `[M]` of `targets` under the frozen head applied to `x: [M, d]`
/// (chunked on the CPU; plain logits + log-softmax elsewhere).
pub fn head_cross_entropy(x: &Tensor, head: &Head, targets: &[u32]) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op1(CrossEntropyOp {
            head: head.clone(),
            targets: Arc::new(targets.to_vec()),
            dnll_dx: Mutex::new(Vec::new()),
        }),
        _ => {
            let logits = match head {
                Head::F32(w) => crate::frozen::frozen_linear(x, w)?,
                Head::Packed(w) => dpsynth_lm::kernels::packed_linear(x, w)?,
            };
            let t = Tensor::from_slice(targets, (targets.len(), 1), x.device())?;
            crate::model::cross_entropy(&logits, &t)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        }
    }
}
