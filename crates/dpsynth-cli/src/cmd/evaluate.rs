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
/// Writes into DIR:
///   metrics.json               what the DP guarantee covers: the synthetic-data and DP-SGD
///                              baseline results on the test set (shareable; each DP baseline
///                              is its own (ε, δ) release on the training records)
///   metrics_private.json       PRIVATE: everything, including exact statistics of the training
///                              and test data (label counts, lengths, vocabulary, memorization,
///                              the non-private ceiling); not covered by the guarantee
///   memorization_private.json  PRIVATE: quotes training records
///   embeddings_private/        PRIVATE: cached MiniLM embeddings of the texts (a second
///                              evaluation of the same files does not re-embed); a shared
///                              cache elsewhere only with --cache-dir or $DPSYNTH_CACHE
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
    /// Output directory for metrics.json and the private files.
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
    /// A shared embedding cache (it will hold embeddings of the private texts) [default:
    /// $DPSYNTH_CACHE/embeddings when that is set, else OUT/embeddings_private].
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
    // Private by default (OUT/embeddings_private); a shared cache only when asked for.
    cfg.cache_embeddings = !args.no_cache;
    cfg.cache_dir = args.cache_dir.or_else(dpsynth_eval::shared_cache_dir);
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
        use dpsynth_eval::output_files as f;
        println!(
            "wrote {} (covered by the DP guarantee), {} (PRIVATE: statistics of the private data) and {} (PRIVATE: quotes training records)",
            out.join(f::METRICS).display(),
            out.join(f::METRICS_PRIVATE).display(),
            out.join(f::MEMORIZATION_PRIVATE).display()
        );
    }
    Ok(())
}
