//! Cryptographically secure randomness for DP noise and Poisson sampling.
//!
//! # Privacy
//! * Noise and sampling come from ChaCha20 (`rand_chacha`), seeded from the operating system's
//!   entropy source ([`SecureRng::from_os`]). A user-supplied seed ([`SecureRng::seeded`]) makes a
//!   run reproducible but NOT private against anyone who knows or can guess the seed: it logs a
//!   warning and [`SecureRng::is_seeded`] lets the caller record it in the privacy ledger.
//! * Poisson sampling includes each index independently with probability `q' = ⌊q·2⁶⁴⌋/2⁶⁴ ≤ q`
//!   (64-bit threshold comparison): the realised rate never exceeds the accounted rate, and a smaller
//!   rate only amplifies privacy more (the accountant's ε is monotone in q).
//! * **Floating-point caveat** (Mironov 2012, "On significance of the least significant bits for
//!   differential privacy"; Jin et al. 2022 for the Gaussian): textbook floating-point samplers do
//!   not produce the continuous distributions the proofs assume, and the set of floats a noisy
//!   output can take may reveal the input. What we do: Gaussian variates are drawn in `f64` from
//!   53-bit uniforms (rand_distr's ziggurat), so the noise has far finer resolution than the `f32`
//!   values it is added to; [`SecureRng::add_gaussian`] adds in `f64` and rounds the *sum* once to
//!   `f32`, which is the rounding step Mironov's attack needs absent (his fix, the snapping
//!   mechanism, rounds the noisy output). DP-SGD never releases the noisy sums themselves, only
//!   parameters after further float arithmetic. This is mitigation, not a proof: a formally exact
//!   sampler (discrete Gaussian, Canonne–Kamath–Steinke 2020) is not implemented.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::PrivacyError;

/// ChaCha20 CSPRNG, seeded from the OS unless a seed is given explicitly.
#[derive(Clone, Debug)]
pub struct SecureRng {
    rng: ChaCha20Rng,
    seeded: bool,
}

impl SecureRng {
    /// Seeded from the operating system's entropy source (the private default).
    ///
    /// # Panics
    /// If the OS has no entropy source at all (use [`SecureRng::try_from_os`] to handle that).
    pub fn from_os() -> Self {
        Self::try_from_os().expect("the operating system's random number generator is unavailable")
    }

    /// As [`SecureRng::from_os`], returning an error instead of panicking.
    pub fn try_from_os() -> Result<Self, PrivacyError> {
        let rng = ChaCha20Rng::try_from_os_rng().map_err(|e| PrivacyError::Unsupported {
            accountant: "SecureRng",
            reason: format!("OS entropy source unavailable: {e}"),
        })?;
        Ok(SecureRng { rng, seeded: false })
    }

    /// Deterministic stream from `seed` (reproducible, NOT secure); logs a warning.
    ///
    /// # Privacy
    /// The DP guarantee assumes the noise is unpredictable to the adversary. With a known seed the
    /// noise can be regenerated and subtracted: record `is_seeded()` in the ledger and never use a
    /// seeded run for a real release.
    pub fn seeded(seed: u64) -> Self {
        tracing::warn!(
            seed,
            "DP noise and sampling use a fixed seed: the run is reproducible but NOT private against anyone who knows the seed"
        );
        SecureRng {
            rng: ChaCha20Rng::seed_from_u64(seed),
            seeded: true,
        }
    }

    /// Deterministic stream keyed by `(seed, stream, step)`, for runs that must draw the same
    /// values after a resume (e.g. the noise of DP-SGD step 17 is the same whether or not the run
    /// was interrupted at step 10). Unlike [`SecureRng::seeded`] it does NOT log: a training loop
    /// creates one per stream and step, so the caller warns once per run.
    ///
    /// The ChaCha20 key is `seed ‖ step ‖ FNV-1a(stream)` (little-endian, 24 of 32 bytes; the rest
    /// zero): distinct `(seed, stream, step)` give independent-looking streams.
    ///
    /// # Privacy
    /// Same as [`SecureRng::seeded`]: reproducible, NOT private against anyone who knows the seed.
    /// Record `is_seeded()` in the ledger.
    pub fn keyed(seed: u64, stream: &str, step: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&step.to_le_bytes());
        key[16..24].copy_from_slice(&fnv1a(stream.as_bytes()).to_le_bytes());
        SecureRng {
            rng: ChaCha20Rng::from_seed(key),
            seeded: true,
        }
    }

    /// True when created with [`SecureRng::seeded`] or [`SecureRng::keyed`].
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    /// One N(0, std²) variate (f64, 53-bit resolution).
    pub fn gaussian(&mut self, std: f64) -> f64 {
        let z: f64 = StandardNormal.sample(&mut self.rng);
        z * std
    }

    /// Fills `out` with independent N(0, std²) variates (drawn in f64, rounded to f32).
    pub fn fill_gaussian(&mut self, out: &mut [f32], std: f64) {
        for o in out.iter_mut() {
            *o = self.gaussian(std) as f32;
        }
    }

    /// Adds independent N(0, std²) noise to `values` in f64 and rounds each sum once to f32
    /// (see the module docs on the floating-point caveat).
    pub fn add_gaussian(&mut self, values: &mut [f32], std: f64) {
        for v in values.iter_mut() {
            *v = (*v as f64 + self.gaussian(std)) as f32;
        }
    }

    /// Poisson sampling: each index in `0..n` independently with probability q (≤ q, see module
    /// docs); returned in increasing order. q ≥ 1 returns all indices, q ≤ 0 (or NaN) none.
    ///
    /// # Privacy
    /// This is the sampling the DP-SGD event [`crate::DpEvent::dp_sgd`] accounts for: the batch size
    /// is random (Binomial(n, q)); do not pad or truncate batches to a fixed size.
    pub fn poisson_sample(&mut self, n: usize, q: f64) -> Vec<usize> {
        if q.is_nan() || q <= 0.0 {
            return Vec::new();
        }
        if q >= 1.0 {
            return (0..n).collect();
        }
        // ⌊q·2⁶⁴⌋ computed without overflow; q < 1 so it fits in u64.
        let threshold = (q * 18446744073709551616.0).floor() as u64;
        (0..n).filter(|_| self.rng.next_u64() < threshold).collect()
    }

    /// Next uniformly random u64.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform f64 in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// Uniform integer in `0..n` (n > 0), unbiased.
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n.max(1))
    }
}

/// 64-bit FNV-1a: a stable (not secret) hash of a stream name for [`SecureRng::keyed`].
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl RngCore for SecureRng {
    fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.rng.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_reproducible_and_flagged() {
        let mut a = SecureRng::seeded(7);
        let mut b = SecureRng::seeded(7);
        assert!(a.is_seeded());
        assert_eq!(a.next_u64(), b.next_u64());
        assert_eq!(a.poisson_sample(1000, 0.1), b.poisson_sample(1000, 0.1));
        let c = SecureRng::from_os();
        assert!(!c.is_seeded());
        let mut d = SecureRng::from_os();
        let mut e = SecureRng::from_os();
        assert_ne!(d.next_u64(), e.next_u64());
    }

    #[test]
    fn keyed_streams_are_reproducible_distinct_and_flagged() {
        let a = SecureRng::keyed(7, "noise", 3);
        assert!(a.is_seeded());
        let draw = |mut r: SecureRng| (0..4).map(|_| r.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(a), draw(SecureRng::keyed(7, "noise", 3)));
        // Any one of seed, stream or step changed gives a different stream.
        let base = draw(SecureRng::keyed(7, "noise", 3));
        assert_ne!(base, draw(SecureRng::keyed(8, "noise", 3)));
        assert_ne!(base, draw(SecureRng::keyed(7, "sampling", 3)));
        assert_ne!(base, draw(SecureRng::keyed(7, "noise", 4)));
    }

    #[test]
    fn gaussian_moments() {
        // n = 200k: mean within 5 s.e., variance within 5 s.e. (fixed seed: deterministic).
        let mut r = SecureRng::seeded(1);
        let mut v = vec![0f32; 200_000];
        r.fill_gaussian(&mut v, 2.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 5.0 * 2.0 / n.sqrt(), "{mean}");
        assert!((var - 4.0).abs() < 5.0 * 4.0 * (2.0 / n).sqrt(), "{var}");
        // Tail frequency P(|Z| > 2σ) ≈ 0.0455
        let tail = v.iter().filter(|&&x| x.abs() > 4.0).count() as f64 / n;
        assert!(
            (tail - 0.0455).abs() < 5.0 * (0.0455f64 * 0.9545 / n).sqrt(),
            "{tail}"
        );
    }

    #[test]
    fn poisson_sample_rate_and_independence() {
        let mut r = SecureRng::seeded(3);
        let (n, q) = (100_000usize, 0.03);
        let mut counts = vec![0u32; n];
        let rounds = 20;
        let mut sizes = Vec::new();
        for _ in 0..rounds {
            let s = r.poisson_sample(n, q);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            sizes.push(s.len() as f64);
            for i in s {
                counts[i] += 1;
            }
        }
        let mean_size = sizes.iter().sum::<f64>() / rounds as f64;
        let sd = (n as f64 * q * (1.0 - q) / rounds as f64).sqrt();
        assert!((mean_size - n as f64 * q).abs() < 5.0 * sd, "{mean_size}");
        // Batch sizes vary (Binomial), i.e. not a fixed-size sampler.
        assert!(sizes.iter().any(|&s| s != sizes[0]));
        // First and second half of the indices are sampled at the same rate.
        let h1: u32 = counts[..n / 2].iter().sum();
        let h2: u32 = counts[n / 2..].iter().sum();
        let sd_h = (n as f64 / 2.0 * rounds as f64 * q).sqrt();
        assert!(((h1 as f64) - (h2 as f64)).abs() < 5.0 * sd_h * 1.5);
        assert!(r.poisson_sample(10, 1.0).len() == 10);
        assert!(r.poisson_sample(10, 0.0).is_empty());
    }
}
