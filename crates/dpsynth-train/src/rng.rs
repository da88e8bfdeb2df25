//! Randomness for DP: a ChaCha20 CSPRNG seeded from the operating system, or from a
//! user-given seed (reproducible, not secure), for Poisson sampling and Gaussian noise.

use dpsynth_privacy::SecureRng;
use serde::{Deserialize, Serialize};

use crate::dp::NoiseSource;

/// How the run's randomness is seeded (recorded in the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
pub enum SeedPolicy {
    /// Fresh OS entropy (the default, and the only secure choice).
    Os,
    /// A user-chosen seed: reproducible, NOT secure (the noise is predictable).
    Seeded { seed: u64 },
}

/// A CSPRNG for sampling and noise: [`dpsynth_privacy::SecureRng`] (ChaCha20) created per
/// (stream, step).
///
/// # Privacy
/// The DP guarantee of the Gaussian mechanism assumes noise an adversary cannot predict;
/// [`SeedPolicy::Os`] draws the ChaCha20 key from the OS (`SecureRng::from_os`). A seeded generator
/// (`SecureRng::keyed(seed, stream, step)`) makes the noise reproducible and therefore gives no
/// guarantee against someone who knows the seed; the ledger records the policy and `train()` warns
/// once per run. Poisson sampling is `SecureRng::poisson_sample`, whose realised rate is
/// `⌊q·2⁶⁴⌋/2⁶⁴ ≤ q` (never above the accounted rate).
pub struct DpRng {
    rng: SecureRng,
}

impl DpRng {
    /// The generator for `stream` (e.g. "sampling", "noise", "labels") at `step`: with a
    /// seed, a deterministic function of (seed, stream, step) so that a resumed run draws
    /// the same values; from the OS, fresh entropy every time.
    pub fn new(policy: SeedPolicy, stream: &str, step: u64) -> Self {
        let rng = match policy {
            SeedPolicy::Os => SecureRng::from_os(),
            SeedPolicy::Seeded { seed } => SecureRng::keyed(seed, stream, step),
        };
        Self { rng }
    }

    /// Poisson sampling: each of `0..n` independently with probability `q` (at most q).
    ///
    /// # Privacy
    /// Exactly the sampling the sampled-Gaussian accountant assumes (Mironov et al. 2019,
    /// Def. 3; Zhu & Wang 2019): independent Bernoulli(q) inclusion of every unit, so logical
    /// batch sizes vary and can be 0. The realised rate is ≤ q (see `SecureRng::poisson_sample`),
    /// so the accounted ε is never an underestimate.
    pub fn poisson_sample(&mut self, n: usize, q: f64) -> Vec<usize> {
        self.rng.poisson_sample(n, q)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    pub fn gaussian(&mut self, std: f64) -> f64 {
        self.rng.gaussian(std)
    }
}

impl NoiseSource for DpRng {
    fn sample_gaussian(&mut self, std: f64) -> f64 {
        self.rng.gaussian(std)
    }
}
