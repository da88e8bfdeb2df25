//! `dpsynth evaluate`: train classifiers on synthetic data, test them on real data, and compare
//! with the non-private ceiling and a DP-SGD baseline.

use std::path::PathBuf;

use anyhow::Context;
use dpsynth_eval::{evaluate, ClassifierKind, EvalConfig, Progress};

/// Step 3: how good is a synthetic dataset?
///
/// Trains each classifier (MiniLM embeddings + logistic regression, and a word-level CNN) on
/// the synthetic set and tests it on the real test set: that accuracy is the product's number.
/// For comparison it also trains on the real training set without privacy (the ceiling) and,
/// with --epsilon, with DP-SGD at that (ε, δ) directly on the real data (the baseline a
/// synthetic dataset has to beat: logistic regression on the public MiniLM embeddings, and a
/// CNN whose word embeddings are MiniLM's public vectors, frozen, so only its convolutions
/// and output layer see the private data). Also reports MAUVE between synthetic and real test
/// text, length/vocabulary/label statistics, and a memorization check (evidence, not a
/// guarantee).
///
/// Writes DIR/metrics.json (aggregates only, shareable) and DIR/memorization_private.json
/// (quotes training records: keep it private). Embeddings are cached (see --cache-dir), so a
/// second evaluation of the same files does not re-embed.
///
/// Example:
///   dpsynth evaluate --synthetic run/synthetic.jsonl --train data/train.jsonl \
///       --test data/test.jsonl --epsilon 3 --out run/eval
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Synthetic records (JSONL: id, text, label).
    #[arg(long, value_name = "FILE")]
    pub synthetic: PathBuf,
    /// Real training records (the private data the synthetic set was made from).
    #[arg(long, value_name = "FILE")]
    pub train: PathBuf,
    /// Real held-out test records.
    #[arg(long, value_name = "FILE")]
    pub test: PathBuf,
    /// Also train the DP-SGD baseline on the real training set at this ε.
    #[arg(long, value_name = "E")]
    pub epsilon: Option<f64>,
    /// δ of the DP-SGD baseline (the DP-SGD rows are (ε, δ)-DP for the training set under
    /// add/remove of one record; the other rows read it without privacy).
    #[arg(long, value_name = "D", default_value_t = 1e-5)]
    pub delta: f64,
    /// Output directory for metrics.json and memorization_private.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Classifiers: logreg (MiniLM + logistic regression), cnn (word CNN).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "logreg,cnn",
        value_name = "C,.."
    )]
    pub classifiers: Vec<String>,
    /// Directory with all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)
    /// [default: $DPSYNTH_ASSETS/minilm or ./assets/minilm].
    #[arg(long, value_name = "DIR")]
    pub minilm: Option<PathBuf>,
    /// Embedding cache directory [default: $DPSYNTH_CACHE/embeddings or ~/.cache/dpsynth/embeddings].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not cache embeddings.
    #[arg(long)]
    pub no_cache: bool,
    /// Skip the non-private real→real ceiling.
    #[arg(long)]
    pub no_real_baseline: bool,
    /// Texts per side used for MAUVE (0 disables MAUVE).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub mauve_texts: usize,
    /// Seed the DP-SGD baseline's noise: reproducible but NOT secure.
    #[arg(long, value_name = "SEED")]
    pub dp_seed: Option<u64>,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = EvalConfig::new(args.synthetic, args.train, args.test);
    cfg.classifiers = args
        .classifiers
        .iter()
        .map(|s| s.parse::<ClassifierKind>())
        .collect::<Result<_, _>>()?;
    if cfg.classifiers.is_empty() {
        anyhow::bail!("--classifiers: name at least one of logreg, cnn");
    }
    if let Some(e) = args.epsilon {
        if !(e > 0.0 && e.is_finite()) {
            anyhow::bail!("--epsilon must be a positive number (got {e})");
        }
    }
    if !(args.delta > 0.0 && args.delta < 1.0) {
        anyhow::bail!("--delta must be in (0, 1) (got {})", args.delta);
    }
    cfg.epsilon = args.epsilon;
    cfg.delta = args.delta;
    cfg.out_dir = args.out;
    cfg.minilm_dir = args.minilm;
    if args.no_cache {
        cfg.cache_dir = None;
    } else if let Some(c) = args.cache_dir {
        cfg.cache_dir = Some(c);
    }
    cfg.real_baseline = !args.no_real_baseline;
    cfg.mauve_max_texts = args.mauve_texts;
    cfg.dp_seed = args.dp_seed;
    if args.dp_seed.is_some() {
        eprintln!("warning: --dp-seed makes the DP-SGD baseline's noise reproducible, not secure");
    }
    let progress = if args.quiet {
        Progress::hidden()
    } else {
        Progress::stderr()
    };
    let report = evaluate(&cfg, &progress).context("evaluation failed")?;
    println!("{}", report.table());
    if let Some(out) = &cfg.out_dir {
        println!(
            "wrote {} and {} (PRIVATE: quotes training records)",
            out.join("metrics.json").display(),
            out.join("memorization_private.json").display()
        );
    }
    Ok(())
}
