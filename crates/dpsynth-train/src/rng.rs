//! Randomness for DP: a ChaCha20 CSPRNG seeded from the operating system, or from a
//! user-given seed (reproducible, not secure), for Poisson sampling and Gaussian noise.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
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

/// A CSPRNG for sampling and noise.
///
/// # Privacy
/// The DP guarantee of the Gaussian mechanism assumes noise an adversary cannot predict;
/// [`SeedPolicy::Os`] draws the ChaCha20 key from the OS. A seeded generator makes the noise
/// reproducible and therefore gives no guarantee against someone who knows the seed.
pub struct DpRng {
    rng: ChaCha20Rng,
}

impl DpRng {
    /// The generator for `stream` (e.g. "sampling", "noise", "labels") at `step`: with a
    /// seed, a deterministic function of (seed, stream, step) so that a resumed run draws
    /// the same values; from the OS, fresh entropy every time.
    pub fn new(policy: SeedPolicy, stream: &str, step: u64) -> Self {
        match policy {
            SeedPolicy::Os => Self {
                rng: ChaCha20Rng::from_os_rng(),
            },
            SeedPolicy::Seeded { seed } => {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&seed.to_le_bytes());
                key[8..16].copy_from_slice(&step.to_le_bytes());
                let h = fnv1a(stream.as_bytes());
                key[16..24].copy_from_slice(&h.to_le_bytes());
                Self {
                    rng: ChaCha20Rng::from_seed(key),
                }
            }
        }
    }

    /// Poisson sampling: each of `0..n` independently with probability `q`.
    ///
    /// # Privacy
    /// Exactly the sampling the sampled-Gaussian accountant assumes (Mironov et al. 2019,
    /// Def. 3; Zhu & Wang 2019): independent Bernoulli(q) inclusion of every unit, so logical
    /// batch sizes vary and can be 0.
    pub fn poisson_sample(&mut self, n: usize, q: f64) -> Vec<usize> {
        (0..n).filter(|_| self.rng.random::<f64>() < q).collect()
    }

    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }

    pub fn gaussian(&mut self, std: f64) -> f64 {
        let z: f64 = StandardNormal.sample(&mut self.rng);
        z * std
    }
}

impl NoiseSource for DpRng {
    fn fill_gaussian(&mut self, buf: &mut [f32], std: f64) {
        for x in buf.iter_mut() {
            let z: f64 = StandardNormal.sample(&mut self.rng);
            *x = (z * std) as f32;
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
