//! Generation benchmark and quantized-vs-f32 quality check on the SmolLM2 asset.
//! `cargo run --release -p dpsynth-lm --example lm_bench -- [MODEL] [BATCHES] [NEW_TOKENS] [FORMATS]`
//! e.g. `-- assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf 1,8,32 64 q8_0,f32`

use candle_core::{Device, IndexOp};
use dpsynth_lm::bench::{format_table, generation_bench, BenchOptions};
use dpsynth_lm::model::top_k;
use dpsynth_lm::{forward_logits, Generator, GeneratorOptions, WeightFormat};

fn main() -> dpsynth_lm::Result<()> {
    // The binary's allocator policy (see `keep_freed_memory`), unless DPSYNTH_DEFAULT_MALLOC.
    if std::env::var_os("DPSYNTH_DEFAULT_MALLOC").is_none() {
        dpsynth_lm::kernels::keep_freed_memory();
    }
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let batches: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1, 8, 32]);
    let new_tokens: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(64);
    let formats: Vec<WeightFormat> = args
        .get(4)
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![WeightFormat::Q8_0]);
    if std::env::var("QUALITY").is_ok() {
        let (w, tok) = dpsynth_lm::load_model(model.as_ref(), &Device::Cpu)?;
        for fmt in &formats {
            let g = Generator::new(
                &w,
                None,
                GeneratorOptions {
                    batch_size: 1,
                    weights: *fmt,
                },
                &Device::Cpu,
            )?;
            for text in [
                "The movie was",
                "Label: positive\nReview: An absolute delight from start to finish",
                "Breaking news: the central bank raised interest rates",
                "Héllo wörld! 123 — emojis 🙂 and\ttabs",
            ] {
                let ids = tok.encode(text, false)?;
                let f = forward_logits(&w, None, &ids)?.i(ids.len() - 1)?;
                let q = g.next_token_logits(&ids)?;
                let (fi, _) = top_k(&f, 10)?;
                let (qi, _) = top_k(&q, 10)?;
                let d = (&f - &q)?.abs()?.max(0)?.to_scalar::<f32>()?;
                let lpf = dpsynth_lm::model::log_softmax(&f)?;
                let lpq = dpsynth_lm::model::log_softmax(&q)?;
                let kl = (lpf.exp()? * (&lpf - &lpq)?)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
                let same = fi.iter().zip(&qi).take_while(|(a, b)| a == b).count();
                println!("{fmt}: {text:?}: KL(f32||{fmt}) {kl:.2e}, max |logit diff| {d:.4}, top-10 identical prefix {same}/10, same set {}", fi.iter().all(|x| qi.contains(x)));
            }
        }
    }
    let rows = generation_bench(
        model.as_ref(),
        &BenchOptions {
            batch_sizes: batches,
            new_tokens,
            rounds: 1,
            weights: formats,
        },
    )?;
    print!("{}", format_table(&rows));
    Ok(())
}
