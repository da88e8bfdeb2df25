//! `dpsynth generate`: sample text from the language model, optionally with a trained adapter.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use dpsynth_lm::{Adapter, GenRequest, Generator, GeneratorOptions, SamplingParams, WeightFormat};

/// Generate text from one prompt or a file of prompts (one per line).
///
/// Completions are printed as they finish (batches are refilled, so the order can differ from
/// the input order; each is tagged with its prompt number). Generation speed is printed at the
/// end. Examples:
///
///   dpsynth generate --prompt "Label: positive\nReview:" --num-samples 4
///
///   dpsynth generate --prompts prompts.txt --adapter runs/rt/adapter --batch-size 16
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .gguf file or a Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long, default_value = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Adapter directory written by `dpsynth train` (or a PEFT LoRA adapter).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The prompt. `\n` is read as a newline.
    #[arg(long, conflicts_with = "prompts", required_unless_present = "prompts")]
    pub prompt: Option<String>,
    /// A text file with one prompt per line (`\n` inside a line is read as a newline).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Wrap each prompt in the model's chat template (SmolLM2-Instruct `<|im_start|>` format).
    #[arg(long)]
    pub chat: bool,
    /// Completions per prompt.
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Sequences decoded together (more is faster per token, up to the CPU's limits).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample only from the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with this much probability (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Seed; sample i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights used for generation. auto: bf16 on CPUs with AVX-512 BF16, else f32.
    /// bf16: packed bf16 weights on the AVX-512 BF16 kernel (fastest; logits within ~0.1 of f32,
    /// same greedy output on the reference prompts). f32: exact. q8_0: 8-bit (next-token
    /// distributions differ from f32 by KL 3e-3 to 1e-2 nats).
    #[arg(long, alias = "quantize", default_value = "auto", value_parser = ["auto", "bf16", "f32", "q8_0"])]
    pub weights: String,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let fmt: WeightFormat = args.weights.parse()?;
    if args.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    let mut prompts: Vec<String> = match (&args.prompt, &args.prompts) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompts from {}", f.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
        (None, None) => bail!("give --prompt or --prompts"),
    };
    if prompts.is_empty() {
        bail!("no prompts given");
    }
    for p in &mut prompts {
        *p = p.replace("\\n", "\n");
        if args.chat {
            *p = format!("<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n");
        }
    }
    let dev = dpsynth_lm::Device::Cpu;
    let t0 = std::time::Instant::now();
    let (weights, tok) = dpsynth_lm::load_model(&args.model, &dev)
        .with_context(|| format!("cannot load model {}", args.model.display()))?;
    let adapter = match &args.adapter {
        Some(d) => Some(
            Adapter::load(d, &weights.config, &dev)
                .with_context(|| format!("cannot load adapter {}", d.display()))?,
        ),
        None => None,
    };
    let gen = Generator::new(
        &weights,
        adapter.as_ref(),
        GeneratorOptions {
            batch_size: args.batch_size.max(1),
            weights: fmt,
        },
        &dev,
    )?;
    drop(weights);
    eprintln!(
        "loaded {}{} in {:.1}s ({} weights)",
        args.model.display(),
        adapter
            .as_ref()
            .map(|a| format!(" + {}", a.describe()))
            .unwrap_or_default(),
        t0.elapsed().as_secs_f64(),
        fmt
    );
    let mut encoded = Vec::new();
    for p in &prompts {
        // With the tokenizer's special tokens: BOS for models that want it (Gemma; not SmolLM2).
        encoded.push(tok.encode(p, true)?);
    }
    let mut reqs = Vec::new();
    for (pi, ids) in encoded.iter().enumerate() {
        for s in 0..args.num_samples {
            let i = pi * args.num_samples + s;
            reqs.push(GenRequest {
                prompt_ids: ids.clone(),
                seed: args.seed.wrapping_add(i as u64),
            });
        }
    }
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: (args.top_k > 0).then_some(args.top_k),
        top_p: (args.top_p < 1.0).then_some(args.top_p),
        max_new_tokens: args.max_new_tokens,
        stop_tokens: if args.ignore_eos {
            Vec::new()
        } else {
            tok.eos_id().into_iter().collect()
        },
    };
    let ns = args.num_samples;
    let stdout = std::io::stdout();
    let stats = gen.generate(reqs, &params, |o| {
        let text = tok.decode(&o.tokens)?;
        let mut out = stdout.lock();
        let _ = writeln!(
            out,
            "--- prompt {} sample {}{}\n{}{}",
            o.index / ns + 1,
            o.index % ns + 1,
            if o.stopped { "" } else { " (length limit)" },
            prompts[o.index / ns],
            text
        );
        Ok(())
    })?;
    eprintln!(
        "{} sequences, {} new tokens in {:.2}s: {:.1} tokens/s (batch {}, {} weights)",
        stats.sequences,
        stats.new_tokens,
        stats.seconds,
        stats.tokens_per_second(),
        args.batch_size,
        fmt
    );
    Ok(())
}
