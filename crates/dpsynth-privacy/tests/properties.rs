//! Property tests of the accountants (proptest; few cases each because every case runs a PLD).

use dpsynth_privacy::{
    delta_pld, epsilon_pld, epsilon_rdp, rdp::rdp_curve, DpEvent, PldOptions,
    PrivacyLossDistribution,
};
use proptest::prelude::*;

/// Discretization can perturb exact monotonicity only far below this relative level.
const SLACK: f64 = 1e-6;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn epsilon_decreases_in_sigma(q in 0.001f64..0.5, s in 0.6f64..4.0, ratio in 1.05f64..2.0, steps in 1u64..500) {
        let e1 = epsilon_pld(&DpEvent::dp_sgd(q, s, steps), 1e-5).unwrap();
        let e2 = epsilon_pld(&DpEvent::dp_sgd(q, s * ratio, steps), 1e-5).unwrap();
        prop_assert!(e2 <= e1 * (1.0 + SLACK) + 1e-9, "σ {s} → {e1}, σ {} → {e2}", s * ratio);
        let r1 = epsilon_rdp(&DpEvent::dp_sgd(q, s, steps), 1e-5).unwrap().epsilon;
        let r2 = epsilon_rdp(&DpEvent::dp_sgd(q, s * ratio, steps), 1e-5).unwrap().epsilon;
        prop_assert!(r2 <= r1 + 1e-12);
    }

    #[test]
    fn epsilon_increases_in_q_and_steps(q in 0.001f64..0.4, qr in 1.05f64..2.5, s in 0.6f64..4.0, steps in 1u64..400, sr in 2u64..5) {
        let base = epsilon_pld(&DpEvent::dp_sgd(q, s, steps), 1e-5).unwrap();
        let more_q = epsilon_pld(&DpEvent::dp_sgd((q * qr).min(1.0), s, steps), 1e-5).unwrap();
        let more_t = epsilon_pld(&DpEvent::dp_sgd(q, s, steps * sr), 1e-5).unwrap();
        prop_assert!(more_q >= base * (1.0 - SLACK) - 1e-9, "q: {base} → {more_q}");
        prop_assert!(more_t >= base * (1.0 - SLACK) - 1e-9, "steps: {base} → {more_t}");
    }

    #[test]
    fn composing_k_times_equals_self_composition(q in 0.01f64..0.3, s in 0.7f64..3.0, steps in 1u64..50, k in 2usize..5) {
        let e = DpEvent::dp_sgd(q, s, steps);
        let composed = DpEvent::Composed(vec![e.clone(); k]);
        let selfc = DpEvent::SelfComposed { event: Box::new(e), count: k as u64 };
        let a = epsilon_pld(&composed, 1e-5).unwrap();
        let b = epsilon_pld(&selfc, 1e-5).unwrap();
        prop_assert!((a - b).abs() <= 1e-6 * a.max(b) + 1e-9, "composed {a} vs self-composed {b}");
        let ra = rdp_curve(&composed, &[1.5, 2.0, 8.0, 64.0]).unwrap();
        let rb = rdp_curve(&selfc, &[1.5, 2.0, 8.0, 64.0]).unwrap();
        for (x, y) in ra.iter().zip(&rb) {
            prop_assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0));
        }
    }

    #[test]
    fn delta_epsilon_round_trip(q in 0.001f64..0.5, s in 0.6f64..4.0, steps in 1u64..1000, log_delta in -9f64..-3.0) {
        let delta = 10f64.powf(log_delta);
        let pld = PrivacyLossDistribution::from_event(&DpEvent::dp_sgd(q, s, steps), &PldOptions::default()).unwrap();
        let eps = pld.epsilon(delta).unwrap();
        let back = pld.delta(eps).unwrap();
        if eps > 0.0 {
            prop_assert!((back / delta - 1.0).abs() < 1e-6, "δ {delta} → ε {eps} → δ {back}");
        } else {
            prop_assert!(back <= delta * (1.0 + 1e-9));
        }
    }
}

#[test]
fn rdp_never_below_pld_beyond_discretization_error() {
    for &(q, s, t) in &[
        (0.01, 1.0, 1000u64),
        (0.1, 0.8, 10),
        (0.001, 3.0, 1),
        (0.3, 2.0, 200),
    ] {
        let ev = DpEvent::dp_sgd(q, s, t);
        let pld = epsilon_pld(&ev, 1e-6).unwrap();
        let rdp = epsilon_rdp(&ev, 1e-6).unwrap().epsilon;
        assert!(
            rdp >= pld * (1.0 - 1e-3),
            "q={q} σ={s} T={t}: RDP {rdp} < PLD {pld}"
        );
    }
}

#[test]
fn histogram_plus_dp_sgd_composes_in_both_accountants() {
    let sgd = DpEvent::dp_sgd(0.01, 1.0, 500);
    let hist = DpEvent::gaussian(20.0);
    let both = DpEvent::Composed(vec![hist.clone(), sgd.clone()]);
    let (e_sgd, e_hist, e_both) = (
        epsilon_pld(&sgd, 1e-5).unwrap(),
        epsilon_pld(&hist, 1e-5).unwrap(),
        epsilon_pld(&both, 1e-5).unwrap(),
    );
    assert!(
        e_both > e_sgd && e_both > e_hist,
        "{e_sgd} {e_hist} {e_both}"
    );
    assert!(
        e_both < e_sgd + e_hist + 1e-9,
        "composition is sub-additive here"
    );
    let r_sgd = epsilon_rdp(&sgd, 1e-5).unwrap().epsilon;
    let r_both = epsilon_rdp(&both, 1e-5).unwrap().epsilon;
    assert!(r_both > r_sgd && r_both >= e_both * (1.0 - 1e-3));
    // Order does not matter.
    let rev = DpEvent::Composed(vec![sgd, hist]);
    assert!((epsilon_pld(&rev, 1e-5).unwrap() - e_both).abs() < 1e-9);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let good = DpEvent::dp_sgd(0.01, 1.0, 10);
    for d in [0.0, 1.0, -1e-5, f64::NAN, 2.0] {
        assert!(epsilon_pld(&good, d).is_err(), "δ={d}");
        assert!(epsilon_rdp(&good, d).is_err(), "δ={d}");
    }
    for e in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(delta_pld(&good, e).is_err(), "ε={e}");
    }
    for bad in [
        DpEvent::dp_sgd(0.0, 1.0, 10),
        DpEvent::dp_sgd(1.01, 1.0, 10),
        DpEvent::dp_sgd(f64::NAN, 1.0, 10),
        DpEvent::dp_sgd(0.1, 0.0, 10),
        DpEvent::dp_sgd(0.1, -2.0, 10),
        DpEvent::dp_sgd(0.1, f64::NAN, 10),
    ] {
        assert!(epsilon_pld(&bad, 1e-5).is_err(), "{bad}");
        assert!(epsilon_rdp(&bad, 1e-5).is_err(), "{bad}");
    }
    // δ below the truncation allowance at +∞ is a clear error, not a silent ∞.
    let err = epsilon_pld(&DpEvent::dp_sgd(0.5, 0.5, 1000), 1e-300).unwrap_err();
    assert!(err.to_string().contains("δ"), "{err}");
    // Subsampled Laplace is PLD-only.
    let lap = DpEvent::PoissonSampled {
        sampling_probability: 0.1,
        event: Box::new(DpEvent::Laplace {
            noise_multiplier: 1.0,
        }),
    };
    assert!(epsilon_pld(&lap, 1e-5).is_ok());
    assert!(epsilon_rdp(&lap, 1e-5).is_err());
    // steps = 0 is a no-op event: ε = 0 (the calibration API rejects steps = 0 explicitly).
    assert_eq!(
        epsilon_pld(&DpEvent::dp_sgd(0.1, 1.0, 0), 1e-5).unwrap(),
        0.0
    );
}
