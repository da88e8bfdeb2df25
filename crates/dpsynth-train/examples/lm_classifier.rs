//! Diagnostic: the (DP) model as a classifier of labeled JSONL records — the rule the synthesis
//! filter re-labels with (posterior ∝ π_l · p(text ++ EOS | prefix_l)), applied to real records.
//! Run it on a validation split, never on the test split.
//! `cargo run --release -p dpsynth-train --example lm_classifier -- RUN_TRAIN_DIR RECORDS.jsonl [base]`
//! (`base`: the public base model with uniform labels, the ε = 0 control's relabeler).

use candle_core::Device;
use dpsynth_lm::{Adapter, Generator, GeneratorOptions, WeightFormat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("DPSYNTH_DEFAULT_MALLOC").is_none() {
        dpsynth_lm::kernels::keep_freed_memory();
    }
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: lm_classifier RUN_TRAIN_DIR RECORDS.jsonl [base]");
        std::process::exit(2);
    }
    let run = std::path::PathBuf::from(&a[1]);
    let base = a.get(3).is_some_and(|s| s == "base");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json"))?)?;
    let labels: Vec<String> = serde_json::from_value(info["labels"].clone())?;
    let template = info["template"].as_str().unwrap_or_default().to_string();
    let model = std::path::PathBuf::from(info["model"].as_str().unwrap_or_default());
    let max_tokens = info["max_tokens"].as_u64().unwrap_or(48) as usize;
    let dev = Device::Cpu;
    let (w, tok) = dpsynth_lm::load_model(&model, &dev)?;
    let adapter = if base {
        None
    } else {
        Some(Adapter::load(&run.join("adapter"), &w.config, &dev)?)
    };
    let g = Generator::new(
        &w,
        adapter.as_ref(),
        GeneratorOptions {
            batch_size: 8,
            weights: WeightFormat::Bf16,
        },
        &dev,
    )?;
    let prior = if base {
        vec![1.0 / labels.len() as f64; labels.len()]
    } else {
        let ledger = dpsynth_train::ledger::Ledger::read(&run.join("privacy.json"))?;
        dpsynth_train::synth::label_proportions(
            &serde_json::from_value::<dpsynth_train::train::RunInfo>(info.clone())?,
            &ledger,
            &dpsynth_train::LabelDistribution::Dp,
        )?
    };
    let prefixes: Vec<Vec<u32>> = labels
        .iter()
        .map(|l| dpsynth_train::format::prefix_ids(&tok, &template, l))
        .collect::<Result<_, _>>()?;
    let eos = tok.eos_id().ok_or("no eos")?;
    let mut texts = Vec::new();
    let mut gold = Vec::new();
    for line in std::fs::read_to_string(&a[2])?.lines() {
        let r: serde_json::Value = serde_json::from_str(line)?;
        let mut ids = tok.encode(r["text"].as_str().unwrap_or_default(), false)?;
        ids.truncate(max_tokens);
        texts.push(ids);
        gold.push(
            labels
                .iter()
                .position(|l| l == r["label"].as_str().unwrap_or_default())
                .ok_or("unknown label")?,
        );
    }
    let lls = dpsynth_train::filter::score_candidates(&g, &prefixes, &texts, eos, |_| {})?;
    let mut right = 0;
    for (ll, &y) in lls.iter().zip(&gold) {
        let p = dpsynth_train::filter::posterior(ll, &prior);
        let arg = (0..p.len())
            .max_by(|&i, &j| p[i].total_cmp(&p[j]))
            .unwrap_or(0);
        right += usize::from(arg == y);
    }
    println!(
        "cpu {}; {} model as a classifier of {} records: accuracy {:.1}% (prior {:?})",
        dpsynth_lm::kernels::cpu_model(),
        if base { "base" } else { "DP" },
        gold.len(),
        100.0 * right as f64 / gold.len() as f64,
        prior
    );
    Ok(())
}
