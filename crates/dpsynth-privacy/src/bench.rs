//! Benchmarks printed by `dpsynth bench` (measure with `--release`).

use std::time::Instant;

use crate::{calibrate_noise_multiplier, epsilon_pld, epsilon_rdp, max_steps, DpEvent, SecureRng};

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

/// (description, seconds) for the accountant's headline operations. Targets: PLD ε for q = 0.01,
/// σ = 1, 10 000 steps under 0.2 s; a calibration under 2 s.
pub fn bench_rows() -> Vec<(String, f64)> {
    let mut rows = Vec::new();
    let ev = DpEvent::dp_sgd(0.01, 1.0, 10_000);
    let (r, t) = time(|| epsilon_pld(&ev, 1e-5));
    rows.push((
        format!(
            "privacy: PLD ε (q=0.01, σ=1, 10k steps, δ=1e-5) = {:.4}",
            r.unwrap_or(f64::NAN)
        ),
        t,
    ));
    let (r, t) = time(|| epsilon_rdp(&ev, 1e-5));
    rows.push((
        format!(
            "privacy: RDP ε (q=0.01, σ=1, 10k steps, δ=1e-5) = {:.4}",
            r.map(|x| x.epsilon).unwrap_or(f64::NAN)
        ),
        t,
    ));
    let (r, t) = time(|| calibrate_noise_multiplier(3.0, 1e-5, 0.01, 10_000));
    rows.push((
        format!(
            "privacy: calibrate σ (ε=3, δ=1e-5, q=0.01, 10k steps) = {:.4}",
            r.unwrap_or(f64::NAN)
        ),
        t,
    ));
    let (r, t) = time(|| calibrate_noise_multiplier(8.0, 1e-5, 0.001, 1000));
    rows.push((
        format!(
            "privacy: calibrate σ (ε=8, δ=1e-5, q=0.001, 1k steps) = {:.4}",
            r.unwrap_or(f64::NAN)
        ),
        t,
    ));
    let (r, t) = time(|| max_steps(1.0, 0.01, 1e-5, 3.0));
    rows.push((
        format!(
            "privacy: max steps (σ=1, q=0.01, ε=3, δ=1e-5) = {}",
            r.map(|v| v as i64).unwrap_or(-1)
        ),
        t,
    ));
    let mut rng = SecureRng::from_os();
    let mut buf = vec![0f32; 1 << 20];
    let (_, t) = time(|| rng.fill_gaussian(&mut buf, 1.0));
    rows.push(("privacy: ChaCha20 Gaussian noise, 1M f32".to_string(), t));
    let (s, t) = time(|| rng.poisson_sample(1_000_000, 0.01).len());
    rows.push((
        format!("privacy: Poisson sample n=1M q=0.01 ({s} drawn)"),
        t,
    ));
    rows
}
