//! Unit tests of the DP pipeline: clipping, noise, sampling, ledger, resume, bad input.

use candle_core::{Device, Tensor};
use dpsynth_lm::{LlamaConfig, LlamaWeights, LoraConfig};
use dpsynth_privacy::DpEvent;

use crate::dp::*;
use crate::labels::*;
use crate::ledger::Ledger;
use crate::model::*;
use crate::rng::{DpRng, SeedPolicy};
use crate::train::*;

fn seeded(stream: &str) -> DpRng {
    DpRng::new(SeedPolicy::Seeded { seed: 42 }, stream, 0)
}

fn random_grads(b: usize) -> Vec<Tensor> {
    let dev = Device::Cpu;
    // Per-example scales spread over orders of magnitude, so some are clipped, some not.
    let scales: Vec<f32> = (0..b).map(|i| 10f32.powf(i as f32 / 2.0 - 2.0)).collect();
    let s = Tensor::from_vec(scales, (b, 1, 1), &dev).unwrap();
    vec![
        Tensor::randn(0f32, 1.0, (b, 3, 5), &dev)
            .unwrap()
            .broadcast_mul(&s)
            .unwrap(),
        Tensor::randn(0f32, 1.0, (b, 7, 2), &dev)
            .unwrap()
            .broadcast_mul(&s)
            .unwrap(),
    ]
}

#[test]
fn clipped_norms_are_at_most_c_and_sum_is_exact() {
    let b = 9;
    let g = random_grads(b);
    let c = 0.7;
    let peg = PerExampleGrads::new(g.clone()).unwrap();
    let norms = peg.norms().unwrap();
    assert!(norms.iter().any(|&n| n > c) && norms.iter().any(|&n| n < c));
    let (sum, stats) = peg.clip_and_sum(c).unwrap();
    for (&n, &cn) in stats.norms.iter().zip(&stats.clipped_norms) {
        assert!(cn <= c + 1e-6, "clipped norm {cn} > C");
        if n <= c {
            assert_eq!(n, cn);
        }
    }
    // Independent check: clip each example's tensors by hand, recompute norms and the sum.
    let mut expect: Vec<Tensor> = g
        .iter()
        .map(|t| t.get(0).unwrap().zeros_like().unwrap())
        .collect();
    for i in 0..b {
        let sq: f32 = g
            .iter()
            .map(|t| {
                t.get(i)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .sum();
        let f = (c as f32 / sq.sqrt()).min(1.0);
        let mut csq = 0f32;
        for (e, t) in expect.iter_mut().zip(&g) {
            let ci = (t.get(i).unwrap() * f as f64).unwrap();
            csq += ci
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            *e = (&*e + ci).unwrap();
        }
        assert!(csq.sqrt() as f64 <= c * (1.0 + 1e-5));
    }
    let noisy = sum.add_noise(0.0, 1.0, &mut seeded("n")).unwrap();
    for (a, e) in noisy.tensors().iter().zip(&expect) {
        let d = (a - e)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "clipped sum differs by {d}");
    }
}

#[test]
fn huge_clip_equals_unclipped_sum() {
    let g = random_grads(6);
    let (c, _) = PerExampleGrads::new(g.clone())
        .unwrap()
        .clip_and_sum(1e30)
        .unwrap();
    let a = c.add_noise(0.0, 3.0, &mut seeded("n")).unwrap();
    let u = PerExampleGrads::new(g)
        .unwrap()
        .sum_without_privacy()
        .unwrap()
        .into_gradient(3.0)
        .unwrap();
    for (x, y) in a.tensors().iter().zip(u.tensors()) {
        let d = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6);
    }
}

#[test]
fn noise_has_the_right_mean_and_std() {
    let (sigma, c, eb) = (1.3, 0.5, 4.0);
    let n = 200_000usize;
    let z = ClippedSum::zeros(&[vec![n]], c, &Device::Cpu).unwrap();
    let g = z.add_noise(sigma, eb, &mut seeded("noise")).unwrap();
    let v = g.tensors()[0].to_vec1::<f32>().unwrap();
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std_expect = sigma * c / eb;
    assert!(
        mean.abs() < 5.0 * std_expect / (n as f64).sqrt(),
        "mean {mean}"
    );
    assert!(
        (var.sqrt() / std_expect - 1.0).abs() < 0.01,
        "std {} vs {std_expect}",
        var.sqrt()
    );
}

#[test]
fn poisson_batch_sizes_have_binomial_mean_and_variance() {
    let (n, q, draws) = (2000usize, 0.03, 3000);
    let sizes: Vec<f64> = (0..draws)
        .map(|s| {
            DpRng::new(SeedPolicy::Seeded { seed: 7 }, "sampling", s)
                .poisson_sample(n, q)
                .len() as f64
        })
        .collect();
    let mean = sizes.iter().sum::<f64>() / draws as f64;
    let var = sizes.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
    let (m0, v0) = (q * n as f64, q * (1.0 - q) * n as f64);
    assert!(
        (mean - m0).abs() < 4.0 * (v0 / draws as f64).sqrt(),
        "mean {mean} vs {m0}"
    );
    assert!((var / v0 - 1.0).abs() < 0.1, "variance {var} vs {v0}");
    // Empty batches happen when q·n is small.
    let empties = (0..500)
        .filter(|&s| {
            DpRng::new(SeedPolicy::Seeded { seed: 1 }, "sampling", s)
                .poisson_sample(20, 0.05)
                .is_empty()
        })
        .count();
    assert!(empties > 100, "{empties}");
}

#[test]
fn user_group_sum_adds_rows() {
    let g = random_grads(5);
    let peg = PerExampleGrads::new(g.clone())
        .unwrap()
        .group_sum(&[0, 1, 0, 2, 1], 3)
        .unwrap();
    let t = &peg.tensors()[0];
    let want = (g[0].get(0).unwrap() + g[0].get(2).unwrap()).unwrap();
    let d = (t.get(0).unwrap() - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-6);
}

#[test]
fn label_histogram_postprocessing() {
    let labels = vec!["a".to_string(), "b".into(), "c".into()];
    let units: Vec<Vec<&str>> = (0..300)
        .map(|i| vec![if i % 3 == 0 { "a" } else { "b" }])
        .collect();
    let h = dp_label_histogram(&labels, &units, 1.0, &mut seeded("labels")).unwrap();
    assert!(h.proportions.iter().all(|&p| p >= 0.0));
    assert!((h.proportions.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!((h.noisy_counts[0] - 100.0).abs() < 6.0 && (h.noisy_counts[1] - 200.0).abs() < 6.0);
    let counts = allocate(17, &h.proportions);
    assert_eq!(counts.iter().sum::<usize>(), 17);
    assert_eq!(proportions_from(&[-1.0, -2.0]), vec![0.5, 0.5]);
}

// ---------- end-to-end on a tiny random model ----------

pub(crate) fn tiny_data(n: usize) -> PreparedData {
    let mut examples = Vec::new();
    let mut unit_labels = Vec::new();
    for i in 0..n {
        let label = if i % 2 == 0 { 10 } else { 20 };
        let len = 3 + i % 5;
        let mut ids = vec![1, label];
        ids.extend((0..len).map(|k| label + 1 + (k as u32 * 3 + i as u32) % 9));
        ids.push(2);
        examples.push(Example { ids, n_prefix: 2 });
        unit_labels.push(vec![if i % 2 == 0 {
            "pos".to_string()
        } else {
            "neg".to_string()
        }]);
    }
    PreparedData {
        units: (0..n).map(|i| vec![i]).collect(),
        examples,
        labels: vec!["neg".into(), "pos".into()],
        unit_labels,
        records: n,
    }
}

pub(crate) fn tiny_cfg(dir: &std::path::Path) -> TrainConfig {
    let mut c = TrainConfig::new(
        "unused.jsonl".into(),
        "unused.gguf".into(),
        dir.to_path_buf(),
    );
    c.method = Method::Lora(LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
    });
    c.epsilon = Some(8.0);
    c.delta = Some(1e-4);
    c.steps = Some(6);
    c.epochs = None;
    c.expected_batch = 8;
    c.physical_batch = 4;
    c.lr = 1e-2;
    c.seed = Some(3);
    c.checkpoint_every = 2;
    c
}

#[test]
fn end_to_end_ledger_matches_accountant() {
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 1).unwrap();
    let data = tiny_data(64);
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cfg(dir.path());
    let s = train_prepared(&cfg, &w, &data, &mut NoProgress).unwrap();
    assert_eq!(s.steps_done, 6);
    let led = Ledger::read(&dir.path().join("privacy.json")).unwrap();
    let sgd = led.dp_sgd.clone().unwrap();
    assert_eq!(sgd.steps_spent, 6);
    assert!((sgd.sampling_probability - 8.0 / 64.0).abs() < 1e-12);
    let lh = led.label_histogram.clone().unwrap();
    let ev = DpEvent::Composed(vec![
        DpEvent::gaussian(lh.noise_multiplier),
        DpEvent::dp_sgd(sgd.sampling_probability, sgd.noise_multiplier, 6),
    ]);
    let e = dpsynth_privacy::epsilon_pld(&ev, 1e-4).unwrap();
    assert!((led.epsilon_pld.unwrap() - e).abs() <= 1e-12 * e);
    assert!(
        e <= 8.0 && e > 7.0,
        "calibrated ε {e} should be just under the budget"
    );
    let r = dpsynth_privacy::epsilon_rdp(&ev, 1e-4).unwrap();
    assert!((led.epsilon_rdp.unwrap() - r.epsilon).abs() <= 1e-12 * r.epsilon);
    for f in [
        "config.json",
        "run.json",
        "loss.csv",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
}

pub(crate) struct StopAt(pub u64, pub u64);
impl Progress for StopAt {
    fn step(&mut self, i: &StepInfo) {
        self.1 = i.step;
    }
    fn should_stop(&mut self) -> bool {
        self.1 >= self.0
    }
}

#[test]
fn resume_continues_the_same_ledger_and_matches_uninterrupted() {
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 1).unwrap();
    let data = tiny_data(48);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    train_prepared(&tiny_cfg(a.path()), &w, &data, &mut NoProgress).unwrap();
    let s = train_prepared(&tiny_cfg(b.path()), &w, &data, &mut StopAt(3, 0)).unwrap();
    assert_eq!(s.steps_done, 3);
    assert!(s.stopped_early.is_some());
    assert_eq!(
        Ledger::read(&b.path().join("privacy.json"))
            .unwrap()
            .dp_sgd
            .unwrap()
            .steps_spent,
        3
    );
    // Starting over in the same directory without --resume is refused.
    assert!(train_prepared(&tiny_cfg(b.path()), &w, &data, &mut NoProgress).is_err());
    // A different configuration is refused with a clear message, ledger untouched.
    let mut other = tiny_cfg(b.path());
    other.resume = true;
    other.clip_norm = 0.5;
    let e = train_prepared(&other, &w, &data, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("different configuration") && e.contains("clip_norm"),
        "{e}"
    );
    assert_eq!(
        Ledger::read(&b.path().join("privacy.json"))
            .unwrap()
            .dp_sgd
            .unwrap()
            .steps_spent,
        3
    );
    let mut rc = tiny_cfg(b.path());
    rc.resume = true;
    let s = train_prepared(&rc, &w, &data, &mut NoProgress).unwrap();
    assert_eq!(s.steps_done, 6);
    let la = Ledger::read(&a.path().join("privacy.json")).unwrap();
    let lb = Ledger::read(&b.path().join("privacy.json")).unwrap();
    assert_eq!(la.epsilon_pld, lb.epsilon_pld);
    assert_eq!(lb.dp_sgd.unwrap().steps_spent, 6);
    // Seeded runs are reproducible: the resumed adapter equals the uninterrupted one.
    let pa = candle_core::safetensors::load(
        a.path().join("adapter/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let pb = candle_core::safetensors::load(
        b.path().join("adapter/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (k, t) in &pa {
        let d = (t - &pb[k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{k} differs by {d}");
    }
    // Resuming a finished run spends nothing more.
    let s = train_prepared(&rc, &w, &data, &mut NoProgress).unwrap();
    assert_eq!(s.steps_done, 6);
    assert_eq!(
        Ledger::read(&b.path().join("privacy.json"))
            .unwrap()
            .epsilon_pld,
        lb.epsilon_pld
    );
}

#[test]
fn bad_inputs_give_clear_errors_and_spend_nothing() {
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let empty = PreparedData {
        examples: vec![],
        units: vec![],
        labels: vec![],
        unit_labels: vec![],
        records: 0,
    };
    let e = train_prepared(&tiny_cfg(dir.path()), &w, &empty, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    // σ given, ε too small even for one step.
    let mut c = tiny_cfg(dir.path());
    c.noise_multiplier = Some(0.5);
    c.epsilon = Some(0.01);
    c.label_distribution = LabelDistribution::Uniform;
    let e = train_prepared(&c, &w, &tiny_data(32), &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("too small") && e.contains("single step"), "{e}");
    assert!(
        !dir.path().join("privacy.json").exists(),
        "no budget may be spent"
    );
    // σ given, budget for only some of the steps: stops cleanly with the adapter saved.
    let mut c = tiny_cfg(dir.path());
    c.noise_multiplier = Some(0.8);
    c.epsilon = Some(6.0);
    c.steps = Some(200);
    c.label_distribution = LabelDistribution::Uniform;
    let s = train_prepared(&c, &w, &tiny_data(32), &mut NoProgress).unwrap();
    assert!(s.steps_done < 200 && s.steps_done > 0);
    assert!(s.stopped_early.unwrap().contains("budget"));
    assert!(s.epsilon_pld.unwrap() <= 6.0);
    assert!(dir
        .path()
        .join("adapter/adapter_model.safetensors")
        .exists());
    // Calibration impossible: a tiny ε with many steps.
    let d2 = tempfile::tempdir().unwrap();
    let mut c = tiny_cfg(d2.path());
    c.epsilon = Some(1e-3);
    c.steps = Some(100000);
    c.expected_batch = 32;
    let e = train_prepared(&c, &w, &tiny_data(32), &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("too small"), "{e}");
    assert!(!d2.path().join("privacy.json").exists());
}

#[test]
fn no_dp_step_equals_plain_gradient() {
    // The --no-dp path (sum of per-example grads / expected batch) equals the gradient of
    // the summed loss computed with shared (not per-example) parameters.
    let w = LlamaWeights::random(&LlamaConfig::tiny(), &Device::Cpu, 2).unwrap();
    let method = Method::Lora(LoraConfig {
        rank: 2,
        alpha: 2.0,
        targets: vec!["v_proj".into(), "up_proj".into()],
    });
    let mut params = Params::init(&method, &w, 1).unwrap();
    for (i, t) in params.tensors.iter_mut().enumerate() {
        if i % 2 == 1 {
            *t = t.randn_like(0.0, 0.2).unwrap();
        }
    }
    let data = tiny_data(5);
    let refs: Vec<&Example> = data.examples.iter().collect();
    let batch = TrainBatch::new(&refs, 0, &Device::Cpu).unwrap();
    let model = TrainModel::new(&w);
    let (g, _) = batched_per_example_grads(&model, &method, &params, &batch).unwrap();
    let np = PerExampleGrads::new(g)
        .unwrap()
        .sum_without_privacy()
        .unwrap()
        .into_gradient(2.0)
        .unwrap();
    // Shared parameters: B = 1 copy broadcast over the batch.
    let vars: Vec<candle_core::Var> = params
        .tensors
        .iter()
        .map(|t| candle_core::Var::from_tensor(t).unwrap())
        .collect();
    let mut ab = std::collections::BTreeMap::new();
    for (i, n) in params.names.iter().enumerate().step_by(2) {
        let parts: Vec<&str> = n.split('.').collect();
        let l: usize = parts[1].parse().unwrap();
        let bsz = batch.batch;
        let a = vars[i]
            .as_tensor()
            .unsqueeze(0)
            .unwrap()
            .broadcast_as((bsz, vars[i].dims()[0], vars[i].dims()[1]))
            .unwrap();
        let b = vars[i + 1]
            .as_tensor()
            .unsqueeze(0)
            .unwrap()
            .broadcast_as((bsz, vars[i + 1].dims()[0], vars[i + 1].dims()[1]))
            .unwrap();
        ab.insert((l, parts[2].to_string()), (a, b));
    }
    let (loss, _) = model
        .loss(&batch, &Trainables::Lora { ab, scaling: 1.0 })
        .unwrap();
    let gr = loss.backward().unwrap();
    for (v, x) in vars.iter().zip(np.tensors()) {
        let plain = (gr.get(v.as_tensor()).unwrap() / 2.0).unwrap();
        let d = (&plain - x)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let n = plain
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-4 * n.max(1e-6), "{d} vs {n}");
    }
}

#[test]
#[ignore]
fn time_pld() {
    let t = std::time::Instant::now();
    let e = dpsynth_privacy::epsilon_pld(&DpEvent::dp_sgd(0.125, 1.0, 6), 1e-4).unwrap();
    eprintln!("pld 6 steps {e} {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let e = dpsynth_privacy::epsilon_pld(&DpEvent::dp_sgd(0.01, 1.0, 1000), 1e-5).unwrap();
    eprintln!("pld 1000 steps {e} {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let e = dpsynth_privacy::epsilon_pld(
        &DpEvent::Composed(vec![
            DpEvent::gaussian(20.0),
            DpEvent::dp_sgd(0.01, 1.0, 1000),
        ]),
        1e-5,
    )
    .unwrap();
    eprintln!("pld composed {e} {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let e = dpsynth_privacy::epsilon_rdp(&DpEvent::dp_sgd(0.01, 1.0, 1000), 1e-5).unwrap();
    eprintln!("rdp {e:?} {:?}", t.elapsed());
}
