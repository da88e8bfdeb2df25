//! Differential-privacy accounting for dpsynth (no tensor dependency).
//!
//! * [`DpEvent`] describes what a run does to private data (Gaussian / Laplace mechanisms, Poisson
//!   subsampling, composition); [`DpEvent::dp_sgd`] is the DP-SGD fine-tuning run.
//! * [`epsilon_pld`] / [`delta_pld`]: the tight privacy-loss-distribution accountant (reported
//!   first). [`epsilon_rdp`]: the Rényi-DP accountant (cross-check, always ≥ PLD up to the PLD
//!   discretization error).
//! * [`calibrate_noise_multiplier`] / [`max_steps`]: the σ for a target ε, the steps for a budget.
//! * [`compose_sequential`]: the (ε, δ) of several separate releases together (training attempts,
//!   baselines, sweep points; basic composition).
//! * [`SecureRng`]: ChaCha20 noise and Poisson sampling seeded from the OS.
//! * [`audit`]: empirical ε lower bounds from one training run (Steinke, Nasr & Jagielski 2023).
//!
//! # Privacy
//! Accounting is pure and conservative: every numerical approximation errs toward a larger ε (see
//! the `# Privacy` sections and comments of each module). Neighboring datasets differ by adding or
//! removing one record (or one user, see [`Neighboring`]).

pub mod audit;
pub mod bench;
pub mod calibrate;
pub mod compose;
pub mod error;
pub mod event;
pub mod pld;
pub mod rdp;
pub mod rng;
mod special;

pub use calibrate::{
    calibrate_noise_multiplier, calibrate_noise_multiplier_for, calibrate_run, max_steps, RunNoise,
};
pub use compose::{compose_sequential, Guarantee};
pub use error::PrivacyError;
pub use event::{DpEvent, Neighboring};
pub use pld::{delta_pld, epsilon_pld, PldOptions, PrivacyLossDistribution};
pub use rdp::{delta_rdp, epsilon_rdp, epsilon_rdp_with_orders, RdpEpsilon, DEFAULT_RDP_ORDERS};
pub use rng::SecureRng;
