//! `dpsynth data prepare|inspect|export`.

use std::path::PathBuf;

use anyhow::Context;
use dpsynth_data::{Columns, Format, InspectOptions, OnInvalid, PrepareOptions, Source};

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Read, validate and split a dataset into DIR/train.jsonl, DIR/test.jsonl and DIR/summary.json.
    ///
    /// SOURCE is a built-in recipe (rotten-tomatoes, bbc-news, spamassassin; raw files come from
    /// scripts/fetch-assets.sh, found under $DPSYNTH_ASSETS or <checkout>/assets) or a CSV, TSV,
    /// JSONL or Parquet file (optionally .bz2-compressed for the text formats).
    ///
    /// Output: JSONL records {"id", "text", "label"[, "user"]}. The split is stratified by label
    /// and deterministic for a given --seed. summary.json holds counts, label histograms, rows
    /// dropped by reason (with example locations) and the SHA-256 of the source. It contains
    /// exact statistics of your private data: do not publish it.
    ///
    /// Validation: text, label, id and user values are trimmed. A row with missing, empty or
    /// non-UTF-8 text/label, a malformed row, a duplicate id (the first one is kept) or a label with
    /// fewer than --min-per-label examples is dropped and counted (default), or, with
    /// --on-invalid error, stops the run with the file, line/row and column.
    #[command(verbatim_doc_comment)]
    Prepare(PrepareArgs),
    /// Row count, label histogram, text-length quantiles (characters, and tokens of the default model).
    ///
    /// SOURCE is a recipe name or a file (as for `prepare`). Bad rows are counted, never fatal.
    /// For a file, its dataset card is shown when one is found (FILE's .card.json beside it, or
    /// for Parquet in the file's metadata), else it says none was found.
    Inspect(InspectArgs),
    /// Export a (synthetic) dataset as JSONL, CSV or Parquet, carrying its dataset card along.
    ///
    /// INPUT is a JSONL, CSV or Parquet file with `id`, `text` and `label` columns (e.g. the
    /// synthetic.jsonl of `dpsynth synthesize`). Its card (INPUT's .card.json beside it, or in
    /// Parquet metadata) is copied beside the output (OUT.card.json and OUT.card.md) and, for
    /// Parquet, also stored in the file's key-value metadata under `dpsynth.card`. A bad row is an
    /// error (nothing is written): an export never drops records silently.
    ///
    /// Example: dpsynth data export synthetic.jsonl --format parquet --out synthetic.parquet
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The dataset to export.
    pub input: PathBuf,
    /// Output format.
    #[arg(long, value_parser = ["jsonl", "csv", "parquet"])]
    pub format: String,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Format of INPUT [default: from its extension].
    #[arg(long, value_parser = ["csv", "jsonl", "parquet"])]
    pub input_format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// Column holding the text.
    #[arg(long, default_value = "text")]
    pub text_col: String,
    /// Column holding the label (class).
    #[arg(long, default_value = "label")]
    pub label_col: String,
    /// Column identifying the user who contributed the record (for user-level DP); optional.
    #[arg(long)]
    pub user_col: Option<String>,
    /// Column holding a unique record id; without it ids are the 1-based data row numbers
    /// (CSV/TSV: rows after the header; JSONL: line number; Parquet: row number).
    #[arg(long)]
    pub id_col: Option<String>,
    /// File format [default: from the extension: .csv, .tsv/.tab, .jsonl/.ndjson, .parquet/.pq, each optionally + .bz2].
    #[arg(long, value_parser = ["csv", "tsv", "jsonl", "parquet"])]
    pub format: Option<String>,
}

impl FileArgs {
    fn columns(&self) -> Columns {
        Columns {
            text: self.text_col.clone(),
            label: self.label_col.clone(),
            user: self.user_col.clone(),
            id: self.id_col.clone(),
        }
    }
    fn format(&self) -> anyhow::Result<Option<Format>> {
        self.format
            .as_deref()
            .map(|f| f.parse::<Format>().map_err(anyhow::Error::msg))
            .transpose()
    }
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// Recipe name (rotten-tomatoes, bbc-news, spamassassin) or data file path.
    pub source: String,
    /// Output directory (created if needed).
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub file: FileArgs,
    /// Fraction of each label held out as the test set, in [0, 1).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the split (the split is a deterministic function of data and seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep at most N training records (stratified subsample of the train side; test is unchanged).
    #[arg(long, value_name = "N")]
    pub max_train: Option<usize>,
    /// What to do with a bad row: drop it and count it, or stop with an error naming file, line/row, column.
    #[arg(long, default_value = "drop", value_parser = ["drop", "error"])]
    pub on_invalid: String,
    /// Labels with fewer examples are dropped (rare_label); a stratified split needs at least 2.
    #[arg(long, default_value_t = 2)]
    pub min_per_label: u64,
    /// Assets directory for recipes [default: $DPSYNTH_ASSETS, else <checkout>/assets].
    #[arg(long)]
    pub assets: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Recipe name or data file path.
    pub source: String,
    #[command(flatten)]
    pub file: FileArgs,
    /// GGUF model whose tokenizer counts tokens [default: <assets>/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Skip token counting.
    #[arg(long)]
    pub no_tokens: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Assets directory for recipes [default: $DPSYNTH_ASSETS, else <checkout>/assets].
    #[arg(long)]
    pub assets: Option<PathBuf>,
}

pub fn run(c: DataCommand) -> anyhow::Result<()> {
    match c {
        DataCommand::Prepare(a) => prepare(a),
        DataCommand::Inspect(a) => inspect(a),
        DataCommand::Export(a) => export(a),
    }
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let fmt: Format = a.format.parse().map_err(anyhow::Error::msg)?;
    let in_fmt = a
        .input_format
        .as_deref()
        .map(|f| f.parse::<Format>().map_err(anyhow::Error::msg))
        .transpose()?;
    let s = dpsynth_data::export(&a.input, in_fmt, &a.out, fmt)
        .with_context(|| format!("exporting {}", a.input.display()))?;
    println!(
        "wrote {} records to {} ({})",
        s.records,
        a.out.display(),
        s.format
    );
    match &s.card_from {
        Some(src) => {
            println!("dataset card from {src}");
            for f in &s.card_files {
                println!("  card copied to {f}");
            }
            if s.card_in_metadata {
                println!(
                    "  card stored in the Parquet metadata under `{}`",
                    dpsynth_data::card::PARQUET_KEY
                );
            }
        }
        None => eprintln!(
            "warning: {} has no dataset card (no {} beside it): the export carries none; \
             share synthetic data with its card",
            a.input.display(),
            dpsynth_data::card_paths(&a.input).0.display()
        ),
    }
    Ok(())
}

/// The card, as `dpsynth data inspect` prints it.
fn print_card(found: &dpsynth_data::FoundCard) {
    let c = &found.card;
    let p = &c.privacy;
    println!("dataset card ({}):", found.source);
    let eps = p
        .epsilon
        .map_or("∞ (no differential privacy)".to_string(), |e| {
            format!("{e:.4}")
        });
    println!(
        "  ε = {eps}, δ = {}, privacy unit: {} ({})",
        dpsynth_data::card::fmt_delta(p.delta),
        p.unit,
        p.neighboring
    );
    println!(
        "  base model {} (sha256 {}), method {}",
        c.model.base, c.model.base_sha256, c.model.method
    );
    println!(
        "  {} records, created {} by {}",
        c.records, c.created, c.generator
    );
    let labels: Vec<String> = c.labels.iter().map(|(l, n)| format!("{l} {n}")).collect();
    println!("  labels: {}", labels.join(", "));
    if let Some(f) = &c.filter {
        let g = |k: &str| f.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        println!(
            "  filters: {} generated, {} exact + {} near duplicates, {} re-labelled, {} kept",
            g("generated"),
            g("exact_duplicates"),
            g("near_duplicates"),
            g("relabeled"),
            g("kept")
        );
    }
    for x in &c.covered {
        println!("  covered: {x}");
    }
    for x in &c.not_covered {
        println!("  not covered: {x}");
    }
}

fn source_of(s: &str, f: &FileArgs) -> anyhow::Result<Source> {
    Ok(match Source::parse(s) {
        Source::Recipe(r) => Source::Recipe(r),
        Source::File { path, .. } => {
            if !path.exists() {
                anyhow::bail!(
                    "`{s}` is neither a built-in recipe ({}) nor an existing file",
                    dpsynth_data::RECIPES.join(", ")
                );
            }
            Source::File {
                path,
                format: f.format()?,
                columns: f.columns(),
            }
        }
    })
}

fn prepare(a: PrepareArgs) -> anyhow::Result<()> {
    let source = source_of(&a.source, &a.file)?;
    let opts = PrepareOptions {
        out_dir: a.out.clone(),
        test_fraction: a.test_fraction,
        seed: a.seed,
        max_train: a.max_train,
        on_invalid: a
            .on_invalid
            .parse::<OnInvalid>()
            .map_err(anyhow::Error::msg)?,
        min_per_label: a.min_per_label,
        assets_dir: a.assets.clone(),
        progress: true,
    };
    let s =
        dpsynth_data::prepare(&source, &opts).with_context(|| format!("preparing {}", a.source))?;
    println!("{} ({}), sha256 {}", s.source, s.format, s.source_sha256);
    println!(
        "rows read {}, kept {}, dropped {}, filtered {}",
        s.rows_read,
        s.records,
        s.drops.total_dropped(),
        s.drops.total_filtered()
    );
    println!("{:<24} {:>9} {:>9} {:>9}", "label", "all", "train", "test");
    for (l, n) in &s.labels {
        println!(
            "{:<24} {:>9} {:>9} {:>9}",
            l,
            n,
            s.train_labels.get(l).copied().unwrap_or(0),
            s.test_labels.get(l).copied().unwrap_or(0)
        );
    }
    println!(
        "{:<24} {:>9} {:>9} {:>9}",
        "total", s.records, s.train, s.test
    );
    if s.subsampled_out > 0 {
        println!("--max-train left out {} training records", s.subsampled_out);
    }
    print_drops(&s.drops);
    println!(
        "wrote {}/train.jsonl, test.jsonl, summary.json",
        a.out.display()
    );
    Ok(())
}

fn print_drops(d: &dpsynth_data::DropSummary) {
    for (r, n) in &d.dropped {
        println!("dropped {r}: {n}");
        for e in d.examples.get(r).into_iter().flatten() {
            println!("    e.g. {e}");
        }
    }
    for (r, n) in &d.filtered {
        println!("filtered {r}: {n}");
    }
    for (r, n) in &d.repaired {
        println!("repaired {r}: {n}");
    }
}

fn default_model(assets: Option<&PathBuf>) -> Option<PathBuf> {
    let dir = assets.cloned().or_else(dpsynth_data::find_assets_dir)?;
    let p = dir.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.is_file().then_some(p)
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let opts = InspectOptions {
        format: a.file.format()?,
        columns: a.file.columns(),
        assets_dir: a.assets.clone(),
        progress: true,
    };
    let model = if a.no_tokens {
        None
    } else {
        match &a.model {
            Some(m) => Some(m.clone()),
            None => {
                let m = default_model(a.assets.as_ref());
                if m.is_none() {
                    eprintln!("note: default model not found (run scripts/fetch-assets.sh); token counts skipped");
                }
                m
            }
        }
    };
    let tokenizer = match &model {
        Some(m) => Some(
            dpsynth_lm::Tokenizer::from_gguf(m)
                .with_context(|| format!("loading the tokenizer of {}", m.display()))?,
        ),
        None => None,
    };
    let count = |t: &str| -> Result<usize, String> {
        tokenizer
            .as_ref()
            .map(|tk| {
                tk.encode(t, false)
                    .map(|v| v.len())
                    .map_err(|e| e.to_string())
            })
            .unwrap_or(Ok(0))
    };
    let name = model.as_ref().map(|m| {
        m.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    });
    let tokens: Option<(&str, dpsynth_data::TokenCounter<'_>)> = match &name {
        Some(n) => Some((n.as_str(), &count)),
        None => None,
    };
    let r = dpsynth_data::inspect(&a.source, &opts, tokens)
        .with_context(|| format!("inspecting {}", a.source))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{}: {} rows read, {} records",
        r.source, r.rows_read, r.records
    );
    println!("{:<24} {:>9} {:>7}", "label", "records", "share");
    for (l, n) in &r.labels {
        println!(
            "{:<24} {:>9} {:>6.1}%",
            l,
            n,
            100.0 * *n as f64 / r.records.max(1) as f64
        );
    }
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "length", "min", "p10", "p50", "p90", "p99", "max", "mean"
    );
    let row = |name: &str, q: &dpsynth_data::Quantiles| {
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9.1}",
            name, q.min, q.p10, q.p50, q.p90, q.p99, q.max, q.mean
        )
    };
    if let Some(q) = &r.chars {
        row("characters", q);
    }
    if let Some(q) = &r.tokens {
        row("tokens", q);
    }
    if let Some(t) = &r.tokenizer {
        println!("tokens: tokenizer of {t}, special tokens not counted");
    }
    print_drops(&r.drops);
    if !dpsynth_data::is_recipe(&a.source) {
        match &r.card {
            Some(c) => print_card(c),
            None => println!(
                "dataset card: none found (no {} beside it{})",
                dpsynth_data::card_paths(std::path::Path::new(&a.source))
                    .0
                    .display(),
                if a.source.ends_with(".parquet") || a.source.ends_with(".pq") {
                    ", none in the Parquet metadata"
                } else {
                    ""
                }
            ),
        }
    }
    Ok(())
}
