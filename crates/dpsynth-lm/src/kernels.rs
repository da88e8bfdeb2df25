//! The packed bf16 kernels and `fast_exp` live in the `dpsynth-kernels` crate (shared with the
//! evaluation crate's MiniLM); this module re-exports them so `dpsynth_lm::kernels::…` paths keep
//! working.
pub use dpsynth_kernels::*;
