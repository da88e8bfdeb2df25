//! `dpsynth synthesize`: sample a labeled synthetic dataset from a trained run.

use std::path::PathBuf;

use anyhow::Context;
use dpsynth_train::shard::ShardSpec;
use dpsynth_train::synth::{synthesize, SynthConfig};

/// Generate N labeled records from a `dpsynth train` run.
///
/// Per-label counts follow the run's label distribution (the DP histogram in its ledger, or
/// uniform, or a file); each record is sampled from the fine-tuned model prompted with the
/// same prefix template as in training. Record g (a "slot") has its label fixed by the label
/// quotas and its sampler seed derived from (--seed, g); a text outside the word-count limits
/// is retried with a new seed. Exact duplicates are dropped (not regenerated). Output: JSONL
/// with `id` (`syn-<g>`), `text`, `label`, plus its dataset card OUT.card.json / OUT.card.md
/// (ε, δ and privacy unit from the run's ledger, models, method, counts, what the guarantee
/// covers). This is post-processing of the DP model: no extra privacy cost.
///
/// Sharded (clusters): `--shard i/n --seed S` samples only the slots g ≡ i (mod n) into a
/// shard file; `dpsynth synthesize merge OUT SHARD...` joins all n shard files into the
/// output of one process with the same seed: byte for byte with --weights f32 or
/// --batch-size 1 (the batched bf16/q8_0 kernels round a row depending on its batch-mates, so
/// some texts then diverge after a few tokens; see the README).
///
/// Example: dpsynth synthesize --run runs/rt-lora --n 1000 --out synthetic.jsonl
#[derive(clap::Args, Debug)]
#[command(
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<SynthCommand>,
    /// Run directory written by `dpsynth train`.
    #[arg(long, required = true)]
    pub run: Option<PathBuf>,
    /// Number of records to generate.
    #[arg(long, required = true)]
    pub n: Option<usize>,
    /// Output JSONL file (with --shard: the shard file).
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Sample only shard I of N (0 ≤ I < N): the slots g ≡ I (mod N) of the same run and
    /// --seed, written as a shard file for `dpsynth synthesize merge`. Needs --seed.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<ShardSpec>,
    /// Override the label distribution: uniform, dp (the run's DP histogram) or a JSON file.
    #[arg(long)]
    pub label_distribution: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Maximum new tokens per record.
    #[arg(long, default_value_t = 96)]
    pub max_new_tokens: usize,
    /// Drop texts with fewer words.
    #[arg(long, default_value_t = 1)]
    pub min_words: usize,
    /// Drop texts with more words.
    #[arg(long)]
    pub max_words: Option<usize>,
    /// Sequences decoded together.
    #[arg(long, default_value_t = dpsynth_report::defaults::SYNTH_BATCH as usize)]
    pub batch_size: usize,
    /// Sampling seed (no privacy effect).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Base model (default: the one the run was trained on).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Generator weights: auto (bf16 where the CPU has AVX-512 BF16, else f32), bf16, f32
    /// (exact) or q8_0.
    #[arg(long, default_value = "auto")]
    pub weights: String,
    /// Post-process (free, no ε): sample --candidates texts, remove exact and near duplicates,
    /// score each under the model with every label's prefix, re-label to the most likely label
    /// and keep --n balanced by the label distribution. Writes OUT's `.filter.json` counts.
    #[arg(long)]
    pub filter: bool,
    /// Candidates sampled with --filter [default: --n].
    #[arg(long, requires = "filter")]
    pub candidates: Option<usize>,
    /// Near-duplicate threshold with --filter: Jaccard of character 5-grams (above 1: exact only).
    #[arg(long, default_value_t = dpsynth_train::filter::NEAR_DUP_JACCARD)]
    pub near_dup_jaccard: f64,
    /// Drop candidates whose label posterior is below this with --filter (0 = off; choose any
    /// other value on a validation split, never on the test split).
    #[arg(long, default_value_t = 0.0)]
    pub min_confidence: f64,
    /// The ε = 0 control: sample from the public base model (the run's adapter and DP label
    /// histogram are not read; labels uniform), same template and filters.
    #[arg(long)]
    pub base_only: bool,
}

/// `dpsynth synthesize merge`.
#[derive(clap::Subcommand, Debug)]
pub enum SynthCommand {
    /// Join the shard files of one `dpsynth synthesize --shard i/n` run into OUT (plus its
    /// filter counts and dataset card): exactly what one process with the same seed writes.
    /// Checks that the files are all n shards of the same run (ledger and adapter hashes),
    /// seed and settings, none missing or given twice; nothing is written otherwise. Applies
    /// the same free post-processing as one process (duplicates; with --filter: de-duplication,
    /// re-labelling, balancing) over the union. Loads no model.
    Merge {
        /// Output JSONL file.
        out: PathBuf,
        /// The shard files (any order).
        #[arg(required = true, num_args = 1..)]
        shards: Vec<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(SynthCommand::Merge { out, shards }) = args.cmd {
        let s = dpsynth_train::shard::merge(
            &shards,
            &out,
            &mut dpsynth_train::ConsoleProgress::new("merge"),
        )
        .context("merging shards failed")?;
        println!(
            "merged {} shard files: wrote {} of {} records to {} (card: {})",
            shards.len(),
            s.written,
            s.requested,
            s.out.display(),
            dpsynth_data::card_paths(&s.out).0.display()
        );
        print_summary(&s);
        return Ok(());
    }
    let (Some(run), Some(n), Some(out)) = (args.run, args.n, args.out) else {
        anyhow::bail!("--run, --n and --out are required");
    };
    let mut c = SynthConfig::new(run, n, out);
    c.label_distribution = args
        .label_distribution
        .map(|s| s.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .transpose()?;
    c.temperature = args.temperature;
    c.top_k = args.top_k;
    c.top_p = Some(args.top_p);
    c.max_new_tokens = args.max_new_tokens;
    c.min_words = args.min_words;
    c.max_words = args.max_words;
    c.batch_size = args.batch_size;
    c.seed = args.seed;
    c.model = args.model;
    c.weights = args.weights;
    c.base_only = args.base_only;
    c.shard = args.shard;
    if args.filter {
        c.filter = Some(dpsynth_train::filter::FilterConfig {
            near_dup_jaccard: args.near_dup_jaccard,
            min_confidence: args.min_confidence,
            ..Default::default()
        });
        c.candidates = args.candidates;
    }
    let s = synthesize(&c, &mut dpsynth_train::ConsoleProgress::new("synthesize"))
        .context("synthesis failed")?;
    if let Some(sh) = c.shard {
        println!(
            "shard {sh}: sampled {} of its {} slots into {} (join all {} shards with `dpsynth synthesize merge OUT FILES...`)",
            s.written,
            s.requested,
            s.out.display(),
            sh.count
        );
        return Ok(());
    }
    println!(
        "wrote {} of {} records to {} (card: {})",
        s.written,
        s.requested,
        s.out.display(),
        dpsynth_data::card_paths(&s.out).0.display()
    );
    print_summary(&s);
    Ok(())
}

fn print_summary(s: &dpsynth_train::synth::SynthSummary) {
    for (l, want, got) in &s.per_label {
        println!("  {l:<20} {got} / {want}");
    }
    println!(
        "duplicates removed {}, filtered by length {}, {} tokens at {:.1} tokens/s, {:.1} s",
        s.duplicates_removed,
        s.filtered_by_length,
        s.generated_tokens,
        s.tokens_per_second,
        s.seconds
    );
    if let Some(f) = &s.filter {
        println!(
            "filters: {} generated, {} exact + {} near duplicates removed, {} re-labelled, {} below confidence, {} over quota, {} kept (counts in {})",
            f.generated,
            f.exact_duplicates,
            f.near_duplicates,
            f.relabeled,
            f.dropped_low_confidence,
            f.dropped_by_balance,
            f.kept,
            dpsynth_train::synth::filter_counts_path(&s.out).display()
        );
    }
}
