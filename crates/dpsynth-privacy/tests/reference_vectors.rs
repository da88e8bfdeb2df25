//! Accuracy against the reference accountants (fixtures copied from /work/shared/reference, see
//! tests/fixtures/README.md).
//!
//! Tolerances (issue #3):
//! * PLD: 0.99 ≤ ours / dp_accounting PLD (Δ = 1e-4, pessimistic) ≤ 1.02 on every row.
//! * RDP: within 1 % of dp_accounting RDP wherever both are finite (same default order grid), and
//!   never below our PLD by more than the PLD discretization error.
//! * Calibration: σ within 1 % of dp_accounting's PLD calibration, and always meeting the target
//!   under our own PLD.

use dpsynth_privacy::{
    calibrate_noise_multiplier, epsilon_pld, epsilon_rdp, DpEvent, PldOptions,
    PrivacyLossDistribution,
};

fn rows(name: &str) -> Vec<Vec<String>> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
        .collect()
}

/// (q, σ, steps)
type Key = (f64, f64, u64);

fn num(s: &str) -> Option<f64> {
    if s.is_empty() {
        None
    } else {
        Some(s.parse().expect("number"))
    }
}

/// Runs `f` over `items` on 2 threads, preserving order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let mid = items.len() / 2;
    let (a, b) = items.split_at(mid);
    std::thread::scope(|s| {
        let h = s.spawn(|| a.iter().map(&f).collect::<Vec<_>>());
        let mut rb: Vec<R> = b.iter().map(&f).collect();
        let mut ra = h.join().unwrap();
        ra.append(&mut rb);
        ra
    })
}

#[test]
fn accountant_vectors_pld_and_rdp() {
    let rows = rows("accountant_vectors.csv");
    assert_eq!(rows.len(), 142);
    // Group rows by (q, σ, steps) so each PLD is built once and queried for both δ.
    let mut groups: Vec<(Key, Vec<Vec<String>>)> = Vec::new();
    for r in rows {
        let key = (
            num(&r[0]).unwrap(),
            num(&r[1]).unwrap(),
            num(&r[2]).unwrap() as u64,
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let results = par_map(&groups, |((q, s, t), rs)| {
        let ev = DpEvent::dp_sgd(*q, *s, *t);
        let pld = PrivacyLossDistribution::from_event(&ev, &PldOptions::default()).unwrap();
        rs.iter()
            .map(|r| {
                let delta = num(&r[3]).unwrap();
                let ours_pld = pld.epsilon(delta).unwrap();
                let ours_rdp = epsilon_rdp(&ev, delta).unwrap();
                (
                    r.clone(),
                    ours_pld,
                    ours_rdp,
                    pld.value_discretization_interval(),
                )
            })
            .collect::<Vec<_>>()
    });
    let (mut pld_min, mut pld_max, mut rdp_min, mut rdp_max) = (f64::MAX, 0f64, f64::MAX, 0f64);
    let mut failures = Vec::new();
    let (mut exceptions, mut op_min, mut op_max) = (0, f64::MAX, 0f64);
    for (r, ours_pld, ours_rdp, dv) in results.into_iter().flatten() {
        let (dp_rdp, dp_pld) = (num(&r[4]), num(&r[5]));
        if let Some(ref_pld) = dp_pld {
            let ratio = ours_pld / ref_pld;
            pld_min = pld_min.min(ratio);
            pld_max = pld_max.max(ratio);
            if !(0.99..=1.02).contains(&ratio) {
                failures.push(format!("PLD {r:?}: ours {ours_pld} (Δ={dv}) ratio {ratio}"));
            }
        }
        if let Some(ref_rdp) = dp_rdp {
            let ratio = ours_rdp.epsilon / ref_rdp;
            if (ratio - 1.0).abs() <= 0.01 {
                rdp_min = rdp_min.min(ratio);
                rdp_max = rdp_max.max(ratio);
            } else {
                // Documented exception: where the optimum is a fractional order and q is large,
                // dp_accounting 0.6 reports a larger RDP ε than the exact value (our fractional
                // series is checked against numerical integration in the unit tests); there we must
                // agree with Opacus's RDP (same algorithm, same grid up to order 63) instead.
                let opacus = num(&r[6]).expect("opacus RDP");
                let r_op = ours_rdp.epsilon / opacus;
                exceptions += 1;
                op_min = op_min.min(r_op);
                op_max = op_max.max(r_op);
                if !(ours_rdp.order <= 63.0 && ratio < 1.0 && (r_op - 1.0).abs() <= 1e-6) {
                    failures.push(format!(
                        "RDP {r:?}: ours {} (order {}) ratio {ratio}, vs Opacus {r_op}",
                        ours_rdp.epsilon, ours_rdp.order
                    ));
                }
            }
        }
        // RDP is a cross-check: it may not undercut the PLD beyond its discretization error
        // (bounded here generously by 1e-3 relative + 1e-4 absolute).
        if ours_rdp.epsilon < ours_pld * (1.0 - 1e-3) - 1e-4 {
            failures.push(format!(
                "RDP below PLD {r:?}: {} < {ours_pld}",
                ours_rdp.epsilon
            ));
        }
    }
    println!("PLD ratio ours/dp_accounting in [{pld_min:.5}, {pld_max:.5}]");
    println!("RDP ratio ours/dp_accounting in [{rdp_min:.6}, {rdp_max:.6}]");
    println!("RDP rows where dp_accounting is above the exact value: {exceptions}, ours/Opacus in [{op_min:.6}, {op_max:.6}]");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn calibration_vectors() {
    let rows = rows("calibration_vectors.csv");
    assert_eq!(rows.len(), 27);
    let results = par_map(&rows, |r| {
        let (q, steps, target, delta) = (
            num(&r[0]).unwrap(),
            num(&r[1]).unwrap() as u64,
            num(&r[2]).unwrap(),
            num(&r[3]).unwrap(),
        );
        let s = calibrate_noise_multiplier(target, delta, q, steps).unwrap();
        let e = epsilon_pld(&DpEvent::dp_sgd(q, s, steps), delta).unwrap();
        (r.clone(), s, e, target)
    });
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    let mut failures = Vec::new();
    for (r, s, e, target) in results {
        let ref_sigma = num(&r[7]).unwrap();
        let ratio = s / ref_sigma;
        lo = lo.min(ratio);
        hi = hi.max(ratio);
        if (ratio - 1.0).abs() > 0.01 {
            failures.push(format!("{r:?}: σ {s} ratio {ratio}"));
        }
        if e > target {
            failures.push(format!("{r:?}: σ {s} gives ε {e} > {target}"));
        }
    }
    println!("calibrated σ ratio ours/dp_accounting PLD in [{lo:.5}, {hi:.5}]");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
