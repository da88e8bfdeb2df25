//! Fast products with frozen weights: bf16 weights, bf16-rounded activations, f32 accumulation.
//!
//! [`PackedWeight`] holds a frozen weight `W: [out, in]` (Hugging Face layout) as bf16, packed in
//! column panels. Four kernel paths compute the same products (bf16 operands, exact bf16 × bf16
//! products, f32 accumulation; results agree up to f32 summation order), chosen at run time per
//! machine ([`kernel_path`]):
//!
//! - [`KernelPath::Amx`]: Intel AMX-BF16 tiles (`tdpbf16ps`, Sapphire Rapids and later), 32 × 32
//!   output blocks from 2 × 2 tiles of 16 × 16 f32. Needs the Linux permission
//!   `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, requested once per process at first
//!   use; the tile configuration is loaded at the start of every task and released at its end.
//! - [`KernelPath::Avx512Bf16`]: an 8 × 32 register-blocked AVX-512 BF16 microkernel
//!   (`vdpbf16ps`: 32 bf16 products accumulated into 16 f32 lanes per instruction).
//! - [`KernelPath::Avx512Fma`]: the same 8 × 32 blocking with f32 FMAs on the bf16 values
//!   (shift/mask to f32). On the Intel Xeon here `vdpbf16ps` issues about once per 2-3 cycles
//!   (measured 1.1-1.4 G instructions/s against 5-6.6 G for `vfmadd231ps` zmm), so the FMA
//!   kernel is ~1.5× faster there; on AMD Zen the BF16 kernel wins.
//! - [`KernelPath::Portable`]: ordinary f32 arithmetic on the bf16 values (compiled for AVX2 + FMA
//!   when the CPU has them).
//!
//! Choice: `DPSYNTH_KERNEL=amx|avx512bf16|avx512fma|portable` forces a path (an unavailable one falls back
//! to the best available, with a note in [`kernel_path_note`]); `DPSYNTH_BF16=0` means
//! `portable`; otherwise AMX when available, else the faster of the two AVX-512 register kernels
//! (BF16 `vdpbf16ps` or f32 FMA), measured once at first use, else portable. A row's result does
//! not depend on how many rows share the product (see [`AMX_MIN_ROWS`]).
//!
//! Numerics: every product `x[i,k]·W[n,k]` is computed exactly (bf16 × bf16 fits in f32), the
//! only errors are the bf16 rounding of `x` and `W` (round to nearest even, relative 2⁻⁹ each)
//! and f32 summation. Activations are rounded to bf16 once per call. (`vdpbf16ps` and
//! `tdpbf16ps` treat bf16 subnormals, below 1.2e-38, as zero.)
//!
//! Layout of a packed `B: [k, n]` (the right-hand matrix of `y = x·B`): panels of [`NR`] columns;
//! within a panel, `[kps][NR][2]` bf16 with `kps = ceil(k/2)` rounded up to a multiple of 16,
//! i.e. for each pair of k-steps the 2 values of each column are adjacent, so one 512-bit load
//! gives 16 columns × 2 k-steps, which is exactly the operand layout of `vdpbf16ps`, and 16
//! k-pair rows at offset 0 / +64 bytes with stride 128 are the two 16-column AMX B tiles.
//! Columns past `n` and k-steps past `k` are zero.
//!
//! Measured (`cargo run --release -p dpsynth-lm --example kernel_bench`, 1 thread, mean thread
//! CPU time): AMD EPYC Zen 5 (AVX-512 BF16 path): 1024×576×1536 ≈ 460 GFLOP/s forward and ≈ 410
//! input gradient (candle f32 matmul ≈ 125); 32×576×1536 ≈ 500; the 8×576×49152 lm head ≈ 245
//! (its 56 MB of bf16 weights stream from DRAM); the portable kernel (AVX2) 110-160. Intel Xeon
//! ("Intel(R) Xeon(R) Processor", Sapphire-Rapids-class KVM guest with AMX, 2 vCPUs, load
//! average 10-14 from other jobs, so ±20%), forward / input gradient in GFLOP/s:
//! 1024×576×1536 AMX 259 / 297, AVX-512 FMA 128 / 131, AVX-512 BF16 90 / 91, portable 60,
//! candle f32 87; 32×576×1536 AMX 388 / 625, FMA 145, BF16 103, candle 64; 8×576×49152 (lm
//! head, weights from DRAM) AMX 52, FMA 46, BF16 39, candle 16.

//! Threading: the product is split over column panels (and, when there are few panels, over
//! row blocks) with rayon's global pool (`RAYON_NUM_THREADS` applies). Small products run on the
//! calling thread.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Columns per packed panel.
const NR: usize = 32;
/// Rows per AVX-512 microkernel call (`MR_AVX * NR / 16` = 16 zmm accumulators). Measured on
/// Zen 5 (1 thread, 32 x 576 x 960): 8 rows ~480 GFLOP/s, 12 rows ~300 (the 24-accumulator
/// version spills).
const MR_AVX: usize = 8;
/// Rows per portable microkernel call.
const MR_PORT: usize = 4;
/// k-pairs per cache block: a `KCP × NR` block of B is `KCP * NR * 4` bytes = 128 KiB (L2).
/// Measured on Zen 5: splitting k into L1-sized blocks (192 or 288 pairs) was slower than
/// streaming whole panels from L2 for this model's widths (k ≤ 1536).
const KCP: usize = 1024;
/// Row blocks per L2 chunk of activations (`16 * 8` rows × up to `KCP` k-pairs × 4 bytes ≤ 512 KiB).
const MC_BLOCKS: usize = 16;
/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 17;

/// k-pairs per AMX tile (16 rows of B, 64 bytes of each A row); panels store a multiple of it.
const KT: usize = 16;

/// `B: [k, n]` packed in panels of `NR` columns, bf16 bits.
#[derive(Clone)]
struct Panels {
    k: usize,
    n: usize,
    /// `ceil(k / 2)`.
    kp: usize,
    /// k-pairs stored per panel: `kp` rounded up to a multiple of [`KT`] (zero rows past `kp`).
    kps: usize,
    data: Vec<u16>,
}

impl Panels {
    fn n_panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel_len(&self) -> usize {
        self.kps * NR * 2
    }

    /// Packs `B[kk, nn] = get(kk, nn)` for `kk < k`, `nn < n`.
    fn pack(k: usize, n: usize, get: impl Fn(usize, usize) -> f32 + Sync) -> Panels {
        let kp = k.div_ceil(2);
        let kps = kp.div_ceil(KT) * KT;
        let n_panels = n.div_ceil(NR);
        let plen = kps * NR * 2;
        let mut data = vec![0u16; n_panels * plen];
        if plen > 0 {
            data.par_chunks_mut(plen)
                .enumerate()
                .for_each(|(p, chunk)| {
                    let ncols = NR.min(n - p * NR);
                    // k outer, columns inner: contiguous writes (and contiguous reads when
                    // `get` walks a row of W along `nn`, as the backward packing does).
                    for kk in 0..k {
                        let dst = &mut chunk[(kk / 2) * NR * 2 + (kk & 1)..];
                        for j in 0..ncols {
                            dst[j * 2] = half::bf16::from_f32(get(kk, p * NR + j)).to_bits();
                        }
                    }
                });
        }
        Panels {
            k,
            n,
            kp,
            kps,
            data,
        }
    }

    /// The packed value `B[kk, nn]` as f32.
    fn get(&self, kk: usize, nn: usize) -> f32 {
        let (p, j) = (nn / NR, nn % NR);
        let bits = self.data[p * self.panel_len() + (kk / 2) * NR * 2 + j * 2 + (kk & 1)];
        f32::from_bits((bits as u32) << 16)
    }

    fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

/// A frozen weight `W: [out, in]` (Hugging Face layout) packed as bf16 for fast products with f32
/// activations (bf16 × bf16 products, f32 accumulation).
#[derive(Clone)]
pub struct PackedWeight {
    out: usize,
    inp: usize,
    /// `Wᵀ: [in, out]` packed, for `y = x·Wᵀ`.
    fwd: Panels,
    /// `W: [out, in]` packed, for `dx = g·W` (training only).
    bwd: Option<Panels>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeight")
            .field("out_features", &self.out)
            .field("in_features", &self.inp)
            .field("for_training", &self.bwd.is_some())
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// `w` as a host f32 `[out, in]` vector.
fn host_matrix(w: &Tensor) -> candle_core::Result<(usize, usize, Vec<f32>)> {
    let (out, inp) = w.dims2()?;
    let v = w
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((out, inp, v))
}

impl PackedWeight {
    /// Packs for `y = x·Wᵀ` only (inference). `w` is a `[out, in]` tensor (f32/bf16/f16, any
    /// device: copied to host). Values are rounded to bf16 (nearest even).
    pub fn for_forward(w: &Tensor) -> candle_core::Result<Self> {
        let (out, inp, v) = host_matrix(w)?;
        Ok(Self::from_host(out, inp, &v, false))
    }

    /// Packs for `y = x·Wᵀ` AND for the input gradient `dx = g·W` (training): twice the memory
    /// of [`PackedWeight::for_forward`].
    pub fn for_training(w: &Tensor) -> candle_core::Result<Self> {
        let (out, inp, v) = host_matrix(w)?;
        Ok(Self::from_host(out, inp, &v, true))
    }

    fn from_host(out: usize, inp: usize, w: &[f32], training: bool) -> Self {
        debug_assert_eq!(w.len(), out * inp);
        let fwd = Panels::pack(inp, out, |kk, nn| w[nn * inp + kk]);
        let bwd = training.then(|| Panels::pack(out, inp, |kk, nn| w[kk * inp + nn]));
        Self { out, inp, fwd, bwd }
    }

    pub fn out_features(&self) -> usize {
        self.out
    }

    pub fn in_features(&self) -> usize {
        self.inp
    }

    /// True when packed with [`PackedWeight::for_training`].
    pub fn has_backward(&self) -> bool {
        self.bwd.is_some()
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ`. Slices are row-major, contiguous.
    ///
    /// # Panics
    /// If `x.len() != rows * in` or `y.len() != rows * out`.
    pub fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        matmul(&self.fwd, x, rows, y, kernel_path());
    }

    /// [`PackedWeight::forward`] on a given kernel path (benchmarks, tests). A path this CPU
    /// lacks ([`KernelPath::available`]) runs on the portable kernel instead.
    ///
    /// # Panics
    /// As [`PackedWeight::forward`].
    pub fn forward_with(&self, path: KernelPath, x: &[f32], rows: usize, y: &mut [f32]) {
        matmul(&self.fwd, x, rows, y, path.or_portable());
    }

    /// `dx[rows, in] = g[rows, out] · W`. An error if not packed for training.
    ///
    /// # Panics
    /// If `g.len() != rows * out` or `dx.len() != rows * in`.
    pub fn backward_input(
        &self,
        g: &[f32],
        rows: usize,
        dx: &mut [f32],
    ) -> candle_core::Result<()> {
        self.backward_input_with(kernel_path(), g, rows, dx)
    }

    /// [`PackedWeight::backward_input`] on a given kernel path (benchmarks, tests). A path this
    /// CPU lacks runs on the portable kernel instead.
    ///
    /// # Panics
    /// As [`PackedWeight::backward_input`].
    pub fn backward_input_with(
        &self,
        path: KernelPath,
        g: &[f32],
        rows: usize,
        dx: &mut [f32],
    ) -> candle_core::Result<()> {
        let b = self.bwd.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "PackedWeight::backward_input: weight was packed with for_forward; \
                 use PackedWeight::for_training for the input gradient"
                    .into(),
            )
        })?;
        matmul(b, g, rows, dx, path.or_portable());
        Ok(())
    }

    /// Memory held by the packed data, bytes.
    pub fn bytes(&self) -> usize {
        self.fwd.bytes() + self.bwd.as_ref().map_or(0, Panels::bytes)
    }

    /// The weight as the bf16-rounded values it holds, `[out, in]` f32 on `device`.
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let mut v = vec![0f32; self.out * self.inp];
        for (o, row) in v.chunks_mut(self.inp.max(1)).enumerate().take(self.out) {
            for (i, x) in row.iter_mut().enumerate() {
                *x = self.fwd.get(i, o);
            }
        }
        Tensor::from_vec(v, (self.out, self.inp), device)
    }
}

/// A way of computing the packed products; see the crate documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Intel AMX-BF16 tiles (`tdpbf16ps`).
    Amx,
    /// The AVX-512 BF16 (`vdpbf16ps`) register microkernel.
    Avx512Bf16,
    /// An AVX-512F f32 FMA register microkernel on the same bf16 data (bf16 → f32 by shifts):
    /// faster than `vdpbf16ps` where that instruction issues at a low rate (Intel Xeon).
    Avx512Fma,
    /// f32 arithmetic on the bf16 values (AVX2 + FMA when available).
    Portable,
}

impl KernelPath {
    /// All paths.
    pub const ALL: [KernelPath; 4] = [
        KernelPath::Amx,
        KernelPath::Avx512Bf16,
        KernelPath::Avx512Fma,
        KernelPath::Portable,
    ];

    /// The name used by `DPSYNTH_KERNEL` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Amx => "amx",
            KernelPath::Avx512Bf16 => "avx512bf16",
            KernelPath::Avx512Fma => "avx512fma",
            KernelPath::Portable => "portable",
        }
    }

    /// Parses a [`KernelPath::name`] (case-insensitive; `avx512-bf16`/`avx512_bf16` accepted).
    pub fn parse(s: &str) -> Option<KernelPath> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "amx" | "amxbf16" => Some(KernelPath::Amx),
            "avx512bf16" => Some(KernelPath::Avx512Bf16),
            "avx512fma" | "avx512f" => Some(KernelPath::Avx512Fma),
            "portable" => Some(KernelPath::Portable),
            _ => None,
        }
    }

    /// True when this CPU (and, for AMX, the operating system) supports the path. AMX is checked
    /// by CPUID, the Linux permission request and a small self-test product.
    pub fn available(self) -> bool {
        match self {
            KernelPath::Amx => amx_available(),
            KernelPath::Avx512Bf16 => cpu_has_avx512_bf16(),
            KernelPath::Avx512Fma => cpu_has_avx512_fma(),
            KernelPath::Portable => true,
        }
    }

    fn or_portable(self) -> KernelPath {
        if self.available() {
            self
        } else {
            KernelPath::Portable
        }
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The paths this machine supports.
pub fn available_paths() -> Vec<KernelPath> {
    KernelPath::ALL
        .into_iter()
        .filter(|p| p.available())
        .collect()
}

/// Below this many rows the AMX path runs a product on the faster AVX-512 register kernel.
/// 1, i.e. never: with 8, a MiniLM sentence embedded alone (under 8 tokens) took a different
/// summation order than in a batch, and since activations are rounded to bf16 at every layer,
/// f32-level differences grew to 4e-4 in the embedding. With one kernel for all row counts a
/// row's result does not depend on the rows it shares a product with. (Decode-size products
/// stream their weights from memory: 1×576×49152 ran 8-10 GFLOP/s on every path.)
pub const AMX_MIN_ROWS: usize = 1;

struct Choice {
    path: KernelPath,
    note: String,
}

fn choice() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let best = if amx_available() {
            KernelPath::Amx
        } else {
            small_rows_path()
        };
        let requested = std::env::var("DPSYNTH_KERNEL")
            .ok()
            .filter(|v| !v.trim().is_empty() && v.trim() != "auto");
        if let Some(r) = requested {
            return match KernelPath::parse(&r) {
                Some(p) if p.available() => Choice {
                    path: p,
                    note: format!("DPSYNTH_KERNEL={r}"),
                },
                Some(p) => Choice {
                    path: best,
                    note: format!(
                        "DPSYNTH_KERNEL={r}, but this CPU lacks {}; using {best}",
                        p.name()
                    ),
                },
                None => Choice {
                    path: best,
                    note: format!(
                        "unknown DPSYNTH_KERNEL={r} (amx, avx512bf16, avx512fma, portable, auto); using {best}"
                    ),
                },
            };
        }
        if std::env::var("DPSYNTH_BF16").is_ok_and(|v| v.trim() == "0") {
            return Choice {
                path: KernelPath::Portable,
                note: "DPSYNTH_BF16=0".into(),
            };
        }
        Choice {
            path: best,
            note: "fastest available".into(),
        }
    })
}

/// The faster of the AVX-512 register kernels (BF16 `vdpbf16ps` or f32 FMA) on this CPU,
/// measured once (thread CPU time, best of 5, a 64 × 512 × 512 product each: a few ms); the
/// portable kernel when the CPU has neither. The AMX path runs its small products on it.
fn small_rows_path() -> KernelPath {
    static PATH: OnceLock<KernelPath> = OnceLock::new();
    *PATH.get_or_init(|| {
        let cands: Vec<KernelPath> = [KernelPath::Avx512Bf16, KernelPath::Avx512Fma]
            .into_iter()
            .filter(|p| p.available())
            .collect();
        match cands.len() {
            0 => KernelPath::Portable,
            1 => cands[0],
            _ => {
                let (rows, k, n) = (64, 512, 512);
                let w: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
                    .collect();
                let x: Vec<f32> = (0..rows * k)
                    .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.01)
                    .collect();
                let pw = PackedWeight::from_host(n, k, &w, false);
                let mut y = vec![0f32; rows * n];
                let time = |p: KernelPath, y: &mut [f32]| {
                    (0..5)
                        .map(|_| {
                            let t0 = thread_cpu_seconds();
                            // Direct call: the measurement runs on this thread only.
                            matmul_on_this_thread(&pw.fwd, &x, rows, y, p);
                            thread_cpu_seconds() - t0
                        })
                        .fold(f64::INFINITY, f64::min)
                };
                let t: Vec<f64> = cands.iter().map(|&p| time(p, &mut y)).collect();
                if t[1] < t[0] {
                    cands[1]
                } else {
                    cands[0]
                }
            }
        }
    })
}

/// CPU time of the calling thread in seconds (wall time where unavailable).
fn thread_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: plain FFI call writing into a valid timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// The kernel path [`PackedWeight::forward`] and [`PackedWeight::backward_input`] use in this
/// process (chosen once; see the crate documentation).
pub fn kernel_path() -> KernelPath {
    choice().path
}

/// Why [`kernel_path`] was chosen (env override, fallback, or "fastest available").
pub fn kernel_path_note() -> &'static str {
    &choice().note
}

/// One line for logs and benchmark tables: the chosen path, why, and the available ones.
pub fn kernel_description() -> String {
    let avail: Vec<&str> = available_paths().iter().map(|p| p.name()).collect();
    format!(
        "{} ({}; available: {})",
        kernel_path().name(),
        kernel_path_note(),
        avail.join(", ")
    )
}

/// The CPU model name from `/proc/cpuinfo` (Linux), else the architecture name.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// True when a hardware bf16 path (AMX or AVX-512 BF16) is in use: bf16 weights are then the
/// fast choice. False with `DPSYNTH_BF16=0` or `DPSYNTH_KERNEL=portable`.
pub fn bf16_kernel_available() -> bool {
    kernel_path() != KernelPath::Portable
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx512_bf16() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx512_bf16() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx512_fma() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx512_fma() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn amx_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    // AMX's A/C tiles are converted and stored with AVX-512 code: require both.
    *AVAILABLE.get_or_init(|| cpu_has_avx512_bf16() && amx::init())
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_available() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx2_fma() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

thread_local! {
    /// Activation rows converted to bf16 pairs, reused across calls.
    static SCRATCH: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Set while [`matmul_on_this_thread`] runs: no rayon tasks.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`matmul`] entirely on the calling thread (for measurements).
fn matmul_on_this_thread(b: &Panels, x: &[f32], rows: usize, c: &mut [f32], path: KernelPath) {
    let prev = SERIAL.with(|s| s.replace(true));
    matmul(b, x, rows, c, path);
    SERIAL.with(|s| s.set(prev));
}

/// A pointer that may be shared between the threads of one product (they write disjoint tiles).
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// A method (not field access) so that closures capture the whole `Sync` wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `run(p0, p1, rb0, rb1)` over tiles covering `n_panels` panels × `row_blocks` row
/// blocks: on the calling thread for small products (`work` multiply-adds) or one thread, else
/// as ~4 rayon tasks per thread, split over panels and, when there are few panels, rows.
fn split_run(
    n_panels: usize,
    row_blocks: usize,
    work: usize,
    run: impl Fn(usize, usize, usize, usize) + Sync,
) {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || work < PAR_MIN_WORK || SERIAL.with(|s| s.get()) {
        run(0, n_panels, 0, row_blocks);
    } else {
        // Aim for ~4 tasks per thread; split rows too when there are few panels.
        let target = threads * 4;
        let panel_chunk = n_panels.div_ceil(target).max(1);
        let n_pchunks = n_panels.div_ceil(panel_chunk);
        let n_rchunks = target.div_ceil(n_pchunks).min(row_blocks).max(1);
        let row_chunk = row_blocks.div_ceil(n_rchunks);
        let n_rchunks = row_blocks.div_ceil(row_chunk);
        (0..n_pchunks * n_rchunks).into_par_iter().for_each(|t| {
            let (pc, rc) = (t / n_rchunks, t % n_rchunks);
            let p0 = pc * panel_chunk;
            let rb0 = rc * row_chunk;
            run(
                p0,
                (p0 + panel_chunk).min(n_panels),
                rb0,
                (rb0 + row_chunk).min(row_blocks),
            );
        });
    }
}

/// `c[rows, n] = a[rows, k] · B` with `B` packed, on `path` (the caller checked that the CPU
/// has it).
fn matmul(b: &Panels, x: &[f32], rows: usize, c: &mut [f32], path: KernelPath) {
    let (k, n, kp) = (b.k, b.n, b.kp);
    assert_eq!(x.len(), rows * k, "packed matmul: input length");
    assert_eq!(c.len(), rows * n, "packed matmul: output length");
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    // Take the scratch buffer out of the thread-local (re-entrancy safe: a nested call on this
    // thread, e.g. through rayon work stealing, just allocates its own).
    let mut a = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let path = if path == KernelPath::Amx && rows < AMX_MIN_ROWS {
        small_rows_path()
    } else {
        path
    };
    #[cfg(target_arch = "x86_64")]
    if path == KernelPath::Amx {
        // SAFETY: `path` is only `Amx` when `amx_available()` (AVX-512 BF16 + AMX, permitted).
        unsafe { amx::matmul(b, x, rows, c, &mut a) };
        SCRATCH.with(|s| *s.borrow_mut() = a);
        return;
    }
    // The FMA kernel reads the activations as f32 (bf16-rounded, `2 * kp` per row), the others
    // as bf16 pairs (`kp` per row).
    let fma = path == KernelPath::Avx512Fma;
    let (lda, per_pair) = if fma { (2 * kp, 2) } else { (kp, 1) };
    a.clear();
    a.resize(rows * lda, 0);
    if fma {
        convert_rows_f32(x, rows, k, lda, &mut a);
    } else {
        convert_rows(x, rows, k, kp, &mut a, path == KernelPath::Avx512Bf16);
    }

    let mr = if path == KernelPath::Portable {
        MR_PORT
    } else {
        MR_AVX
    };
    let n_panels = b.n_panels();
    let row_blocks = rows.div_ceil(mr);
    let work = rows * n * k;
    let cp = SyncPtr(c.as_mut_ptr());
    let a_ref = &a[..];
    // Computes the tile (row blocks rb0..rb1) × (panels p0..p1). Loop order (GotoBLAS): per
    // k-block, per chunk of MC_BLOCKS row blocks (its bf16 rows stay in L2), per panel (its
    // KCP × NR block stays in L1 across the chunk's row blocks).
    let run = |p0: usize, p1: usize, rb0: usize, rb1: usize| {
        let mut kc0 = 0;
        while kc0 < kp {
            let kcl = KCP.min(kp - kc0);
            let mut mc0 = rb0;
            while mc0 < rb1 {
                let mc1 = (mc0 + MC_BLOCKS).min(rb1);
                for p in p0..p1 {
                    let ncols = NR.min(n - p * NR);
                    let panel = &b.data[p * b.panel_len()..(p + 1) * b.panel_len()];
                    for rb in mc0..mc1 {
                        let r0 = rb * mr;
                        let m = mr.min(rows - r0);
                        // SAFETY: tiles written by different tasks are disjoint; all indices
                        // are in bounds of `a`, `panel` and `c` by construction.
                        unsafe {
                            microkernel(
                                path,
                                m,
                                kcl,
                                a_ref.as_ptr().add(r0 * lda + kc0 * per_pair),
                                lda,
                                panel.as_ptr().add(kc0 * NR * 2),
                                cp.get().add(r0 * n + p * NR),
                                n,
                                ncols,
                                kc0 > 0,
                            );
                        }
                    }
                }
                mc0 = mc1;
            }
            kc0 += kcl;
        }
    };
    split_run(n_panels, row_blocks, work, run);
    SCRATCH.with(|s| *s.borrow_mut() = a);
}

/// Rounds `x[rows, k]` to bf16 (nearest even) and stores the values as f32 bits in
/// `a[rows, lda]` (`lda >= k`, zeros past `k`), for the FMA kernel.
fn convert_rows_f32(x: &[f32], rows: usize, k: usize, lda: usize, a: &mut [u32]) {
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        let ar = &mut a[r * lda..r * lda + k];
        for (v, &xv) in ar.iter_mut().zip(xr) {
            *v = (half::bf16::from_f32(xv).to_bits() as u32) << 16;
        }
    }
}

/// Rounds `x[rows, k]` to bf16 (nearest even) into `a[rows, kp]` pairs: `a[r, p]` holds
/// `x[r, 2p]` in its low and `x[r, 2p+1]` in its high 16 bits, 0 past `k` (`kp >= ceil(k/2)`
/// is the row stride).
fn convert_rows(x: &[f32], rows: usize, k: usize, kp: usize, a: &mut [u32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only set when the CPU has AVX-512 F/BW/BF16; lengths checked by caller.
        unsafe { avx512::convert_rows(x, rows, k, kp, a) };
        return;
    }
    let _ = simd;
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        let ar = &mut a[r * kp..(r + 1) * kp];
        for (p, v) in ar.iter_mut().enumerate() {
            let lo = xr
                .get(2 * p)
                .map_or(0, |&l| half::bf16::from_f32(l).to_bits() as u32);
            let hi = xr
                .get(2 * p + 1)
                .map_or(0, |&h| half::bf16::from_f32(h).to_bits() as u32);
            *v = lo | (hi << 16);
        }
    }
}

/// `c[m, ncols] (+)= a[m, 2*kpairs] · b[2*kpairs, NR]` for one tile.
///
/// # Safety
/// `a` points at `m` rows of stride `lda` with `kpairs` readable entries each; `b` at
/// `kpairs * NR * 2` values; `c` at `m` rows of stride `ldc` with `ncols <= NR` writable entries.
/// `path` available on this CPU, not `Amx`; `m <= MR_AVX` (AVX-512 paths) or `m <= MR_PORT`.
/// For `Avx512Fma`, `a` holds f32 bits (2 per k-pair, see [`convert_rows_f32`]).
#[allow(clippy::too_many_arguments)]
unsafe fn microkernel(
    path: KernelPath,
    m: usize,
    kpairs: usize,
    a: *const u32,
    lda: usize,
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    ncols: usize,
    load_c: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if path == KernelPath::Avx512Bf16 {
        macro_rules! dispatch {
            ($($m:literal)*) => {
                match m {
                    $($m => avx512::kernel::<$m>(kpairs, a, lda, b, c, ldc, ncols, load_c),)*
                    _ => unreachable!("row block larger than MR_AVX"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path == KernelPath::Avx512Fma {
        let a = a as *const f32;
        macro_rules! dispatch {
            ($($m:literal)*) => {
                match m {
                    $($m => avx512::kernel_fma::<$m>(kpairs, a, lda, b, c, ldc, ncols, load_c),)*
                    _ => unreachable!("row block larger than MR_AVX"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8);
        return;
    }
    debug_assert_eq!(path, KernelPath::Portable);
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avx2_fma() {
        macro_rules! dispatch {
            ($($m:literal)*) => {
                match m {
                    $($m => portable::kernel_avx2::<$m>(kpairs, a, lda, b, c, ldc, ncols, load_c),)*
                    _ => unreachable!("row block larger than MR_PORT"),
                }
            };
        }
        dispatch!(1 2 3 4);
        return;
    }
    macro_rules! dispatch {
        ($($m:literal)*) => {
            match m {
                $($m => portable::kernel::<$m>(kpairs, a, lda, b, c, ldc, ncols, load_c),)*
                _ => unreachable!("row block larger than MR_PORT"),
            }
        };
    }
    dispatch!(1 2 3 4);
}

mod portable {
    use super::NR;

    #[inline(always)]
    fn lo(v: u32) -> f32 {
        f32::from_bits(v << 16)
    }

    #[inline(always)]
    fn hi(v: u32) -> f32 {
        f32::from_bits(v & 0xffff_0000)
    }

    /// Portable tile kernel; see [`super::microkernel`] for the contract.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel<const M: usize>(
        kpairs: usize,
        a: *const u32,
        lda: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        ncols: usize,
        load_c: bool,
    ) {
        let mut acc = [[0f32; NR]; M];
        if load_c {
            for (r, row) in acc.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate().take(ncols) {
                    *v = *c.add(r * ldc + j);
                }
            }
        }
        let mut b0 = [0f32; NR];
        let mut b1 = [0f32; NR];
        for p in 0..kpairs {
            let bp = std::slice::from_raw_parts(b.add(p * NR * 2), NR * 2);
            for j in 0..NR {
                b0[j] = f32::from_bits((bp[2 * j] as u32) << 16);
                b1[j] = f32::from_bits((bp[2 * j + 1] as u32) << 16);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = *a.add(r * lda + p);
                let (a0, a1) = (lo(av), hi(av));
                for j in 0..NR {
                    // Both products are exact in f32 (bf16 operands).
                    row[j] += a0 * b0[j] + a1 * b1[j];
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate().take(ncols) {
                *c.add(r * ldc + j) = *v;
            }
        }
    }

    /// The portable kernel compiled for AVX2 + FMA (wider vectors; same arithmetic, Rust does not
    /// contract `a*b + c` into FMA).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx2<const M: usize>(
        kpairs: usize,
        a: *const u32,
        lda: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        ncols: usize,
        load_c: bool,
    ) {
        kernel::<M>(kpairs, a, lda, b, c, ldc, ncols, load_c)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::NR;
    use std::arch::x86_64::*;

    const NV: usize = NR / 16;

    /// See [`super::convert_rows`].
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn convert_rows(x: &[f32], rows: usize, k: usize, kp: usize, a: &mut [u32]) {
        for r in 0..rows {
            let xr = x.as_ptr().add(r * k);
            let ar = a.as_mut_ptr().add(r * kp) as *mut u16;
            let words = 2 * kp;
            let mut i = 0;
            while i < words {
                // Masked loads give 0 past `k` (the pad k-step of an odd `k`).
                let n0 = k.saturating_sub(i).min(16);
                let n1 = k.saturating_sub(i + 16).min(16);
                let m0: __mmask16 = if n0 == 16 { 0xffff } else { (1u16 << n0) - 1 };
                let m1: __mmask16 = if n1 == 16 { 0xffff } else { (1u16 << n1) - 1 };
                let v0 = _mm512_maskz_loadu_ps(m0, xr.add(i));
                let v1 = _mm512_maskz_loadu_ps(m1, xr.add(i + 16));
                // Low 16 words from the second operand.
                let bh: __m512bh = _mm512_cvtne2ps_pbh(v1, v0);
                let nw = (words - i).min(32);
                let mw: __mmask32 = if nw == 32 { u32::MAX } else { (1u32 << nw) - 1 };
                _mm512_mask_storeu_epi16(
                    ar.add(i) as *mut i16,
                    mw,
                    std::mem::transmute::<__m512bh, __m512i>(bh),
                );
                i += 32;
            }
        }
    }

    #[inline(always)]
    fn col_mask(ncols: usize, v: usize) -> __mmask16 {
        let cnt = ncols.saturating_sub(v * 16).min(16);
        if cnt == 16 {
            0xffff
        } else {
            (1u16 << cnt) - 1
        }
    }

    /// AVX-512 BF16 tile kernel; see [`super::microkernel`] for the contract.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel<const M: usize>(
        kpairs: usize,
        a: *const u32,
        lda: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        ncols: usize,
        load_c: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; M];
        let masks: [__mmask16; NV] = std::array::from_fn(|v| col_mask(ncols, v));
        if load_c {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_maskz_loadu_ps(masks[v], c.add(r * ldc + v * 16));
                }
            }
        }
        for p in 0..kpairs {
            let bp = b.add(p * NR * 2);
            let bv: [__m512bh; NV] = std::array::from_fn(|v| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    bp.add(v * 32) as *const __m512i
                ))
            });
            for (r, row) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    *a.add(r * lda + p) as i32,
                ));
                for (v, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_dpbf16_ps(*acc, av, bv[v]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, acc) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(r * ldc + v * 16), masks[v], *acc);
            }
        }
    }

    /// AVX-512F f32 FMA tile kernel: `a` holds bf16-rounded f32 activations (`2 * kpairs` per
    /// row, stride `lda` floats); the packed bf16 pairs of `b` become f32 by a shift (even k)
    /// and a mask (odd k). Otherwise the contract of [`super::microkernel`].
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_fma<const M: usize>(
        kpairs: usize,
        a: *const f32,
        lda: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        ncols: usize,
        load_c: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; M];
        let masks: [__mmask16; NV] = std::array::from_fn(|v| col_mask(ncols, v));
        if load_c {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_maskz_loadu_ps(masks[v], c.add(r * ldc + v * 16));
                }
            }
        }
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for p in 0..kpairs {
            let bp = b.add(p * NR * 2);
            let raw: [__m512i; NV] =
                std::array::from_fn(|v| _mm512_loadu_si512(bp.add(v * 32) as *const __m512i));
            let b0: [__m512; NV] =
                std::array::from_fn(|v| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw[v])));
            let b1: [__m512; NV] =
                std::array::from_fn(|v| _mm512_castsi512_ps(_mm512_and_si512(raw[v], hi)));
            for (r, row) in acc.iter_mut().enumerate() {
                let a0 = _mm512_set1_ps(*a.add(r * lda + 2 * p));
                let a1 = _mm512_set1_ps(*a.add(r * lda + 2 * p + 1));
                for (v, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(a0, b0[v], *acc);
                    *acc = _mm512_fmadd_ps(a1, b1[v], *acc);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, acc) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(r * ldc + v * 16), masks[v], *acc);
            }
        }
    }
}

/// The AMX-BF16 path: 32 × 32 output blocks (4 C tiles) from 2 A tiles (16 rows × 16 k-pairs of
/// the bf16 activations) × 2 B tiles (16 k-pairs × 16 columns of a packed panel).
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{Panels, SyncPtr, KT, NR};
    use std::arch::asm;

    /// k-tiles (of [`KT`] k-pairs) per cache block: a block of one B panel is
    /// `KC_TILES * 16 * 128` bytes = 48 KiB and a 32-row block of A as much (L2). Measured on
    /// the Intel Xeon (1 thread, 2048×384×1536 and 2048×1536×384, a loaded machine, ±20%):
    /// 8 → 270-345 GFLOP/s, 16 → 300-360, 24 → 290-405, 48 (no k blocking) → 260-385.
    const KC_TILES: usize = 24;
    /// Row blocks per chunk of A kept in L2 (`8 * 32` rows × `KC_TILES * 16` k-pairs × 4 bytes
    /// = 128 KiB) while the panels pass over it.
    const MC_BLOCKS: usize = 8;

    /// [`KC_TILES`] and [`MC_BLOCKS`], overridable for tuning experiments with `kernel_bench`
    /// (`DPSYNTH_AMX_BLOCKING=KC,MC`).
    fn tuning() -> (usize, usize) {
        static T: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
        *T.get_or_init(|| {
            std::env::var("DPSYNTH_AMX_BLOCKING")
                .ok()
                .and_then(|v| {
                    let (a, b) = v.split_once(',')?;
                    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
                })
                .filter(|&(a, b): &(usize, usize)| a > 0 && b > 0)
                .unwrap_or((KC_TILES, MC_BLOCKS))
        })
    }

    /// Tile palette 1; tiles 0-7 all 16 rows × 64 bytes: tmm0-3 the C blocks (rows 0-15 /
    /// 16-31 × columns 0-15 / 16-31), tmm4-5 the A tiles, tmm6-7 the B tiles.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    static CONFIG: TileConfig = {
        let mut b = [0u8; 64];
        b[0] = 1;
        let mut t = 0;
        while t < 8 {
            b[16 + 2 * t] = 64; // colsb (u16, little endian)
            b[48 + t] = 16; // rows
            t += 1;
        }
        TileConfig(b)
    };

    /// The tile configuration loaded on this thread for the guard's lifetime (released on drop,
    /// so threads do not keep 8 KiB of tile state across context switches).
    struct Tiles;

    impl Tiles {
        /// # Safety
        /// AMX must be available and permitted ([`init`] returned true).
        unsafe fn load() -> Tiles {
            asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            Tiles
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: a `Tiles` only exists after a successful `ldtilecfg`.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// CPUID (AMX-TILE, AMX-BF16), XCR0 (tile state enabled by the OS), the Linux permission
    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` and a self-test product.
    pub(super) fn init() -> bool {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        let (max_leaf, l1, l7) = (__cpuid(0).eax, __cpuid(1), __cpuid_count(7, 0));
        let amx_bf16 = l7.edx & (1 << 22) != 0;
        let amx_tile = l7.edx & (1 << 24) != 0;
        let osxsave = l1.ecx & (1 << 27) != 0;
        if max_leaf < 7 || !amx_bf16 || !amx_tile || !osxsave {
            return false;
        }
        let (lo, _hi): (u32, u32);
        // SAFETY: XGETBV is available when CPUID reports OSXSAVE.
        unsafe {
            asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack))
        };
        // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA).
        if lo & (3 << 17) != (3 << 17) {
            return false;
        }
        if !request_permission() {
            return false;
        }
        // SAFETY: the CPU has AMX-BF16 and the OS enabled and permitted its state.
        unsafe { self_test() }
    }

    #[cfg(target_os = "linux")]
    fn request_permission() -> bool {
        const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: plain syscalls; the GET variant writes one u64 into `perm`.
        unsafe {
            if libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) != 0
            {
                return false;
            }
            let mut perm: u64 = 0;
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_GET_XCOMP_PERM,
                &mut perm as *mut u64,
            ) == 0
                && perm & (1 << XFEATURE_XTILEDATA) != 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn request_permission() -> bool {
        false
    }

    /// One 32 × 32 × 32 product of small integers (exact in bf16 and f32) through the real
    /// packing, conversion and tile code, compared with the scalar product.
    ///
    /// # Safety
    /// As [`Tiles::load`].
    unsafe fn self_test() -> bool {
        let (rows, k, n) = (32usize, 32usize, 32usize);
        let av = |r: usize, kk: usize| ((r * 3 + kk * 7) % 9) as f32 - 4.0;
        let bv = |kk: usize, nn: usize| ((kk * 5 + nn * 11) % 7) as f32 - 3.0;
        let b = Panels::pack(k, n, bv);
        let x: Vec<f32> = (0..rows * k).map(|i| av(i / k, i % k)).collect();
        let mut a = vec![0u32; rows * b.kps];
        super::avx512::convert_rows(&x, rows, k, b.kps, &mut a);
        let mut c = vec![f32::NAN; rows * n];
        {
            let _t = Tiles::load();
            block(
                true,
                b.kps / KT,
                a.as_ptr(),
                b.kps * 4,
                b.data.as_ptr(),
                c.as_mut_ptr(),
                n,
                rows,
                n,
                false,
            );
        }
        (0..rows * n).all(|i| {
            let (r, nn) = (i / n, i % n);
            let want: f32 = (0..k).map(|kk| av(r, kk) * bv(kk, nn)).sum();
            c[i] == want
        })
    }

    /// `c[m, ncols] (+)= A · B` for one block: `A` = 32 (`two`) or 16 rows of stride `lda_bytes`
    /// holding `ktiles * 16` k-pairs, `B` = the same k-pairs of one packed panel, `c` of row
    /// stride `ldc` floats. Blocks cut by the matrix edge go through a local buffer.
    ///
    /// # Safety
    /// Tiles configured on this thread ([`Tiles::load`]); `ktiles >= 1`; `a` readable for
    /// 32 (or 16) rows × `ktiles * 64` bytes, `b` for `ktiles * 2048` bytes, `c` writable for
    /// `m` rows × `ncols` floats; `m <= 32` (or 16), `ncols <= NR`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn block(
        two: bool,
        ktiles: usize,
        a: *const u32,
        lda_bytes: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        m: usize,
        ncols: usize,
        load_c: bool,
    ) {
        #[repr(C, align(64))]
        struct Buf([f32; 32 * NR]);
        let mb = if two { 32 } else { 16 };
        let full = m == mb && ncols == NR;
        let mut buf = Buf([0f32; 32 * NR]);
        let (cp, ldc_bytes) = if full {
            (c, ldc * 4)
        } else {
            if load_c {
                for r in 0..m {
                    std::ptr::copy_nonoverlapping(
                        c.add(r * ldc),
                        buf.0.as_mut_ptr().add(r * NR),
                        ncols,
                    );
                }
            }
            (buf.0.as_mut_ptr(), NR * 4)
        };
        let c_lo = cp as *mut u8;
        let c_hi = c_lo.add(16 * ldc_bytes);
        if load_c {
            asm!(
                "tileloadd tmm0, [{c} + {s}*1]",
                "tileloadd tmm1, [{c} + {s}*1 + 64]",
                c = in(reg) c_lo, s = in(reg) ldc_bytes, options(nostack, readonly)
            );
            if two {
                asm!(
                    "tileloadd tmm2, [{c} + {s}*1]",
                    "tileloadd tmm3, [{c} + {s}*1 + 64]",
                    c = in(reg) c_hi, s = in(reg) ldc_bytes, options(nostack, readonly)
                );
            }
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        let a_lo = a as *const u8;
        if two {
            asm!(
                "2:",
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tileloadd tmm6, [{b} + {ldb}*1]",
                "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a2} + {lda}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 64",
                "add {a2}, 64",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a_lo => _,
                a2 = inout(reg) a_lo.add(16 * lda_bytes) => _,
                b = inout(reg) b => _,
                n = inout(reg) ktiles => _,
                lda = in(reg) lda_bytes,
                ldb = in(reg) NR * 4,
                options(nostack, readonly)
            );
        } else {
            asm!(
                "2:",
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tileloadd tmm6, [{b} + {ldb}*1]",
                "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "add {a}, 64",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a_lo => _,
                b = inout(reg) b => _,
                n = inout(reg) ktiles => _,
                lda = in(reg) lda_bytes,
                ldb = in(reg) NR * 4,
                options(nostack, readonly)
            );
        }
        asm!(
            "tilestored [{c} + {s}*1], tmm0",
            "tilestored [{c} + {s}*1 + 64], tmm1",
            c = in(reg) c_lo, s = in(reg) ldc_bytes, options(nostack)
        );
        if two {
            asm!(
                "tilestored [{c} + {s}*1], tmm2",
                "tilestored [{c} + {s}*1 + 64], tmm3",
                c = in(reg) c_hi, s = in(reg) ldc_bytes, options(nostack)
            );
        }
        if !full {
            for r in 0..m {
                std::ptr::copy_nonoverlapping(buf.0.as_ptr().add(r * NR), c.add(r * ldc), ncols);
            }
        }
    }

    /// `c[rows, n] = x[rows, k] · B` on AMX; `a` is scratch for the bf16 activations.
    ///
    /// # Safety
    /// [`init`] returned true. Lengths: `x` = `rows * b.k`, `c` = `rows * b.n`; `rows`, `b.n`,
    /// `b.k` > 0 (checked by the caller).
    pub(super) unsafe fn matmul(
        b: &Panels,
        x: &[f32],
        rows: usize,
        c: &mut [f32],
        a: &mut Vec<u32>,
    ) {
        let (k, n, kps) = (b.k, b.n, b.kps);
        let two = rows > 16;
        let mb = if two { 32 } else { 16 };
        let rows_pad = rows.div_ceil(mb) * mb;
        // No full clear: the conversion writes every k-pair (zeros past `k`) of the first `rows`
        // rows; only the padding rows are zeroed.
        a.resize(rows_pad * kps, 0);
        a[rows * kps..rows_pad * kps].fill(0);
        super::avx512::convert_rows(x, rows, k, kps, &mut a[..rows * kps]);
        let ktiles = kps / KT;
        let (kc_max, mc_blocks) = tuning();
        let n_kc = ktiles.div_ceil(kc_max);
        let kc_tiles = ktiles.div_ceil(n_kc);
        let n_panels = b.n_panels();
        let row_blocks = rows_pad / mb;
        let plen = b.panel_len();
        let cp = SyncPtr(c.as_mut_ptr());
        let a_ref = &a[..];
        let run = |p0: usize, p1: usize, rb0: usize, rb1: usize| {
            // SAFETY (whole closure): AMX permitted (caller); indices in bounds by construction:
            // A rows < rows_pad, k-pairs < kps; panel offsets < n_panels * plen; C rows < rows,
            // columns < n; tasks write disjoint blocks.
            unsafe {
                let _tiles = Tiles::load();
                let mut kt0 = 0;
                while kt0 < ktiles {
                    let ktl = kc_tiles.min(ktiles - kt0);
                    let mut mc0 = rb0;
                    while mc0 < rb1 {
                        let mc1 = (mc0 + mc_blocks).min(rb1);
                        for p in p0..p1 {
                            let ncols = NR.min(n - p * NR);
                            let panel = b.data.as_ptr().add(p * plen + kt0 * KT * NR * 2);
                            for rb in mc0..mc1 {
                                let r0 = rb * mb;
                                block(
                                    two,
                                    ktl,
                                    a_ref.as_ptr().add(r0 * kps + kt0 * KT),
                                    kps * 4,
                                    panel,
                                    cp.get().add(r0 * n + p * NR),
                                    n,
                                    mb.min(rows - r0),
                                    ncols,
                                    kt0 > 0,
                                );
                            }
                        }
                        mc0 = mc1;
                    }
                    kt0 += ktl;
                }
            }
        };
        super::split_run(n_panels, row_blocks, rows * n * k, run);
    }
}

/// Forward custom op of [`packed_linear`].
struct PackedLinear {
    w: Arc<PackedWeight>,
}

/// Backward (input gradient) custom op of [`packed_linear`].
struct PackedLinearInputGrad {
    w: Arc<PackedWeight>,
}

/// The contiguous f32 data of a custom-op argument and its shape with the last dim replaced.
fn op_input<'a>(
    name: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    expect_last: usize,
    new_last: usize,
) -> candle_core::Result<(&'a [f32], usize, Shape)> {
    let data = match storage {
        CpuStorage::F32(v) => v,
        other => {
            return Err(candle_core::Error::Msg(format!(
                "{name}: expected f32 input, got {:?}",
                other.dtype()
            )))
        }
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: input must be contiguous")))?;
    let dims = layout.shape().dims();
    let last = dims.last().copied().unwrap_or(0);
    if dims.is_empty() || last != expect_last {
        return Err(candle_core::Error::Msg(format!(
            "{name}: input shape {:?} does not end in {expect_last}",
            dims
        )));
    }
    let rows = layout.shape().elem_count() / last.max(1);
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("non-empty") = new_last;
    Ok((&data[start..end], rows, Shape::from(out_dims)))
}

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, rows, shape) = op_input(self.name(), storage, layout, self.w.inp, self.w.out)?;
        let mut y = vec![0f32; rows * self.w.out];
        self.w.forward(x, rows, &mut y);
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad_res.to_dtype(DType::F32)?.contiguous()?;
        let dx = g.apply_op1(PackedLinearInputGrad { w: self.w.clone() })?;
        Ok(Some(dx))
    }
}

impl CustomOp1 for PackedLinearInputGrad {
    fn name(&self) -> &'static str {
        "packed-linear-input-grad"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, rows, shape) = op_input(self.name(), storage, layout, self.w.out, self.w.inp)?;
        let mut dx = vec![0f32; rows * self.w.inp];
        self.w.backward_input(g, rows, &mut dx)?;
        Ok((CpuStorage::F32(dx), shape))
    }
}

/// `x: [..., in]` f32 tensor → `[..., out]`: `x·Wᵀ` with the packed (bf16) weight.
///
/// A candle custom op whose backward returns ONLY the input gradient (`g·W` through
/// [`PackedWeight::backward_input`], which needs [`PackedWeight::for_training`]); the weight is
/// a constant and never gets a gradient. Inputs of other float dtypes are computed in f32 and
/// the result is cast back.
///
/// On a non-CPU device this falls back to a matmul with the dequantized (bf16-valued, f32)
/// weight, rebuilt on every call: correct (autograd gives the same input gradient, the weight
/// is a fresh constant) but slow. A device kernel is future work.
pub fn packed_linear(x: &Tensor, w: &Arc<PackedWeight>) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    let xf = if dt == DType::F32 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    };
    let y = if x.device().is_cpu() {
        xf.contiguous()?.apply_op1(PackedLinear { w: w.clone() })?
    } else {
        let wt = w.dequantize(x.device())?;
        xf.broadcast_matmul(&wt.t()?)?
    };
    if dt == DType::F32 {
        Ok(y)
    } else {
        y.to_dtype(dt)
    }
}

/// `e^x`, vectorizable (libm's `expf` is not inlined), shared by the sampler, the fused SwiGLU and
/// the training crate's fused ops: 0 below -87 (and for NaN and -∞); up to x ≈ 87 relative error below 1e-5 (4e-6 near -87, from rounding `x·log2(e)` to f32: the same order
/// as the rounding of the f32 logit difference `x` itself). Range reduction `x·log2(e) = n + f`, `|f| ≤ 1/2`, then a
/// degree-7 Taylor polynomial of `2^f` (truncation error < 2e-8) scaled by `2^n` via the
/// exponent bits.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let t = (x * std::f32::consts::LOG2_E).clamp(-126.0, 126.0);
    let m = t + MAGIC;
    let n = m - MAGIC;
    let f = t - n;
    let ni = (m.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129
                        + f * (0.001_333_355_8 + f * (0.000_154_035_3 + f * 0.000_015_252_73))))));
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x >= -87.0 {
        p * scale
    } else {
        0.0
    }
}

/// Keeps freed tensor memory in the process for reuse instead of returning it to the OS
/// (glibc `mallopt`: no `mmap` for blocks below 1 GiB, no heap trimming below 1 GiB of free
/// top). Every training step allocates and frees the same multi-megabyte tensors; with the
/// defaults each of them is a fresh `mmap`, page-faulted and zero-filled by the kernel (about
/// 15% of a LoRA step's CPU time as system time). Peak RSS is unchanged (the same memory is
/// live at the peak); memory freed after the peak stays resident until exit. One malloc
/// arena for all threads: the threads of a micro-batch (`dpsynth_train::model::per_example_grads`)
/// then reuse each other's freed tensors instead of each keeping its own cache (measured on
/// the Intel Xeon under load, LoRA 8 × 128 with per-thread arenas: peak RSS 2.46 GB with 1
/// thread, 2.99 GB with 2). Process-wide, so the binary sets it once at start (`dpsynth`'s main,
/// unless `DPSYNTH_DEFAULT_MALLOC` is set), as do the benchmark examples; libraries never call it. It matters as much for scoring and generation
/// (batched forward passes allocate and free the same activation blocks). No effect off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters; valid at any time.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn bf(x: f32) -> f64 {
        half::bf16::from_f32(x).to_f64()
    }

    fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        // Sum of uniforms: roughly normal, mixed signs.
        (0..n)
            .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>())
            .collect()
    }

    /// Checks `c = a·B` where `B[kk, nn] = bmat(kk, nn)` against f64 on bf16-rounded inputs
    /// (relative 1e-5 of Σ|terms|) and against the f32 product of the unrounded inputs
    /// (relative 1e-2 of Σ|terms|).
    fn check(
        a: &[f32],
        rows: usize,
        k: usize,
        n: usize,
        bmat: impl Fn(usize, usize) -> f32,
        c: &[f32],
        what: &str,
    ) {
        for r in 0..rows {
            for nn in 0..n {
                let (mut exact, mut abs, mut f32ref) = (0f64, 0f64, 0f32);
                for kk in 0..k {
                    let t = bf(a[r * k + kk]) * bf(bmat(kk, nn));
                    exact += t;
                    abs += t.abs();
                    f32ref += a[r * k + kk] * bmat(kk, nn);
                }
                let got = c[r * n + nn] as f64;
                let tol = 1e-5 * abs + 1e-30;
                assert!(
                    (got - exact).abs() <= tol,
                    "{what} rows={rows} k={k} n={n} at ({r},{nn}): {got} vs exact {exact} (tol {tol})"
                );
                let tol32 = 1e-2 * abs + 1e-30;
                assert!(
                    (got - f32ref as f64).abs() <= tol32,
                    "{what} rows={rows} k={k} n={n} at ({r},{nn}): {got} vs f32 {f32ref}"
                );
            }
        }
    }

    /// The paths this CPU has; prints the skipped ones (CI machines differ).
    fn paths() -> Vec<KernelPath> {
        for p in KernelPath::ALL {
            if !p.available() {
                eprintln!("kernel path {p} not available on this CPU: skipped");
            }
        }
        available_paths()
    }

    #[test]
    fn forward_and_backward_match_f64_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let shapes: &[(usize, usize, usize)] = &[
            (1, 1, 1),
            (1, 2, 17),
            (2, 3, 48),
            (7, 31, 49),
            (13, 64, 33),
            (64, 576, 17),
            (1, 1536, 49),
            (13, 1536, 96),
            (64, 31, 1),
            (7, 577, 65),
            (25, 2, 100),
            // k beyond one k-block (accumulating into C), rows beyond one L2 row chunk.
            (5, 2 * KCP + 3, 33),
            (MR_AVX * MC_BLOCKS + 3, 20, 40),
            // AMX: row counts around its 16/32-row blocks and AMX_MIN_ROWS, k around its
            // 16-pair tiles and 128-pair cache blocks, several cache blocks and row chunks.
            (AMX_MIN_ROWS, 33, 31),
            (16, 32, 32),
            (17, 64, 64),
            (31, 257, 95),
            (32, 288, 64),
            (33, 576, 70),
            (300, 1000, 67),
            (64, 1536, 96),
            (9, 4, 200),
        ];
        for &(rows, k, n) in shapes {
            let w = randn(&mut rng, n * k); // [out=n, in=k]
            let x = randn(&mut rng, rows * k);
            let g = randn(&mut rng, rows * n);
            let pw = PackedWeight::from_host(n, k, &w, true);
            for path in paths() {
                let mut y = vec![f32::NAN; rows * n];
                pw.forward_with(path, &x, rows, &mut y);
                check(
                    &x,
                    rows,
                    k,
                    n,
                    |kk, nn| w[nn * k + kk],
                    &y,
                    &format!("forward {path}"),
                );
                let mut dx = vec![f32::NAN; rows * k];
                pw.backward_input_with(path, &g, rows, &mut dx).unwrap();
                check(
                    &g,
                    rows,
                    n,
                    k,
                    |kk, nn| w[kk * k + nn],
                    &dx,
                    &format!("backward {path}"),
                );
            }
        }
    }

    #[test]
    fn paths_agree_with_each_other_and_selection_is_reported() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let (rows, k, n) = (70, 384, 160);
        let w = randn(&mut rng, n * k);
        let x = randn(&mut rng, rows * k);
        let pw = PackedWeight::from_host(n, k, &w, true);
        let mut base = vec![0f32; rows * n];
        pw.forward_with(KernelPath::Portable, &x, rows, &mut base);
        for path in paths() {
            let mut y = vec![f32::NAN; rows * n];
            pw.forward_with(path, &x, rows, &mut y);
            for (a, b) in y.iter().zip(&base) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{path}: {a} vs {b}"
                );
            }
        }
        // The chosen path is available, named in the description, and bf16_kernel_available
        // agrees with it.
        let p = kernel_path();
        assert!(p.available());
        assert!(kernel_description().starts_with(p.name()));
        assert_eq!(bf16_kernel_available(), p != KernelPath::Portable);
        for q in KernelPath::ALL {
            assert_eq!(KernelPath::parse(q.name()), Some(q));
        }
        assert_eq!(
            KernelPath::parse("AVX512-BF16"),
            Some(KernelPath::Avx512Bf16)
        );
        assert_eq!(KernelPath::parse("gpu"), None);
        assert!(!cpu_model().is_empty());
    }

    #[test]
    fn wide_output_slice_like_lm_head() {
        // A 4096-column slice of a 49152-wide head, 576 inputs, decode-like row counts.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (k, n) = (576, 4096);
        let w = randn(&mut rng, n * k);
        let pw = PackedWeight::from_host(n, k, &w, false);
        for rows in [1, 8, 40] {
            let x = randn(&mut rng, rows * k);
            for path in paths() {
                let mut y = vec![f32::NAN; rows * n];
                pw.forward_with(path, &x, rows, &mut y);
                check(
                    &x,
                    rows,
                    k,
                    n,
                    |kk, nn| w[nn * k + kk],
                    &y,
                    &format!("wide {path}"),
                );
            }
        }
    }

    #[test]
    fn simd_and_portable_agree_and_public_api() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (rows, k, n) = (9, 100, 70);
        let w = randn(&mut rng, n * k);
        let x = randn(&mut rng, rows * k);
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let pw = PackedWeight::for_forward(&wt).unwrap();
        assert_eq!((pw.out_features(), pw.in_features()), (n, k));
        assert!(!pw.has_backward());
        // 3 panels × 50 k-pairs (stored as 64, a multiple of KT) × NR × 2 bf16.
        assert_eq!(pw.bytes(), 3 * 64 * NR * 2 * 2);
        let mut y = vec![0f32; rows * n];
        pw.forward(&x, rows, &mut y);
        let mut yp = vec![0f32; rows * n];
        pw.forward_with(KernelPath::Portable, &x, rows, &mut yp);
        for (a, b) in y.iter().zip(&yp) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let mut dx = vec![0f32; rows * k];
        let err = pw.backward_input(&y, rows, &mut dx).unwrap_err();
        assert!(err.to_string().contains("for_training"), "{err}");
        // Dequantize gives the bf16-rounded weight.
        let dq: Vec<f32> = pw
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in dq.iter().zip(&w) {
            assert_eq!(*a as f64, bf(*b));
        }
        // bf16 and f16 weights are accepted.
        let pw16 = PackedWeight::for_forward(&wt.to_dtype(DType::BF16).unwrap()).unwrap();
        assert_eq!(pw16.fwd.data, pw.fwd.data);
    }

    #[test]
    fn packed_linear_gradient_is_input_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (b, t, k, n) = (2, 3, 40, 24);
        let w = randn(&mut rng, n * k);
        let x = randn(&mut rng, b * t * k);
        let dev = Device::Cpu;
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let pw = Arc::new(PackedWeight::for_training(&wt).unwrap());
        // Reference: plain autograd through a matmul with the bf16-rounded weight as a Var.
        let wq = candle_core::Var::from_tensor(&pw.dequantize(&dev).unwrap()).unwrap();
        let xv = candle_core::Var::from_vec(x, (b, t, k), &dev).unwrap();
        let coef = Tensor::from_vec(randn(&mut rng, b * t * n), (b, t, n), &dev).unwrap();
        let y_ref = xv
            .as_tensor()
            .broadcast_matmul(&wq.as_tensor().t().unwrap())
            .unwrap();
        let loss_ref = (&y_ref * &coef).unwrap().sum_all().unwrap();
        let g_ref = loss_ref.backward().unwrap();
        let dx_ref: Vec<f32> = g_ref
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();

        let y = packed_linear(xv.as_tensor(), &pw).unwrap();
        assert_eq!(y.dims(), &[b, t, n]);
        let loss = (&y * &coef).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let dx: Vec<f32> = grads
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Gradients g·W: the packed path rounds g to bf16 (relative 2^-9 per term).
        let scale = dx_ref.iter().map(|v| v.abs()).fold(0f32, f32::max);
        for (a, r) in dx.iter().zip(&dx_ref) {
            assert!((a - r).abs() <= 2e-2 * scale, "{a} vs {r}");
        }
        // Forward values within bf16 tolerance of the reference.
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let yr: Vec<f32> = y_ref.flatten_all().unwrap().to_vec1().unwrap();
        let ys = yr.iter().map(|v| v.abs()).fold(0f32, f32::max);
        for (a, r) in yv.iter().zip(&yr) {
            assert!((a - r).abs() <= 2e-2 * ys, "{a} vs {r}");
        }
        // The weight is a constant of the op: no gradient anywhere for it.
        assert!(grads.get(wq.as_tensor()).is_none());
        assert!(grads.get(&wt).is_none());

        // A forward-only weight gives an error (not a panic) on backward.
        let pf = Arc::new(PackedWeight::for_forward(&wt).unwrap());
        let xv2 = candle_core::Var::from_vec(vec![0.5f32; k], (1, k), &dev).unwrap();
        let l = packed_linear(xv2.as_tensor(), &pf)
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(l.backward().is_err());
    }

    #[test]
    fn packed_linear_other_dtypes_and_shapes() {
        let dev = Device::Cpu;
        let wt =
            Tensor::from_vec((0..12).map(|i| i as f32 * 0.25).collect(), (3, 4), &dev).unwrap();
        let pw = Arc::new(PackedWeight::for_forward(&wt).unwrap());
        let x = Tensor::from_vec(vec![1f32, 2., 3., 4., -1., 0., 1., 0.5], (2, 4), &dev).unwrap();
        let y: Vec<Vec<f32>> = packed_linear(&x, &pw).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![5.0, 15.0, 25.0], vec![0.875, 1.375, 1.875]]);
        let yb = packed_linear(&x.to_dtype(DType::BF16).unwrap(), &pw).unwrap();
        assert_eq!(yb.dtype(), DType::BF16);
        // Non-contiguous input.
        let xt = x.t().unwrap().t().unwrap().broadcast_as((2, 2, 4)).unwrap();
        assert_eq!(packed_linear(&xt, &pw).unwrap().dims(), &[2, 2, 3]);
        assert!(packed_linear(&wt.t().unwrap(), &pw).is_err());
    }
}
