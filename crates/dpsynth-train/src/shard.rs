//! Sharded synthesis: `dpsynth synthesize --shard i/n` samples a deterministic, disjoint part
//! of the dataset and `dpsynth synthesize merge` joins the parts into exactly the file one
//! process would have written with the same seed.
//!
//! # The slot scheme
//! A synthesis run fills `T` *slots* (`T` = `--candidates` with `--filter`, else `--n`). Slot
//! `g` has a label fixed by the label quotas (slots `0..q₀` the first label, the next `q₁` the
//! second, …; [`slot_labels`]) and its sampler seed is a function of the run's seed, `g` and the
//! attempt number only ([`slot_seed`]: a ChaCha20 stream keyed by (seed, g)); a text outside
//! the word-count limits is retried with the next attempt's seed. The record id is `syn-<g>`.
//! Shard `i` of `n` samples the slots `g ≡ i (mod n)` (strided, so every shard gets every label
//! and a similar amount of work). With `--filter` the shard also scores its texts under every
//! label's prefix (a per-text computation); the merge then only de-duplicates, selects and
//! balances, in slot order, exactly as one process does: no model is loaded by the merge.
//!
//! A shard file is JSONL: a header line `{"dpsynth_shard": …}` ([`ShardHeader`]) then one
//! line per slot ([`ShardSlot`]); log-likelihoods are stored as the bit patterns of their f64s
//! so the merge reproduces the single-process decisions exactly.
//!
//! # Privacy
//! Sampling and scoring are post-processing of the DP model (Dwork & Roth 2014, Prop. 2.1);
//! sharding changes how the work is split, not what is computed, and spends no ε.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dpsynth_data::card::{CardModel, CardPrivacy};
use serde::{Deserialize, Serialize};

use crate::synth::{
    finish_filtered, finish_plain, PostInput, Sampled, Scorer, SlotText, SynthConfig,
    SynthProgress, SynthSummary,
};
use crate::{Result, TrainError};

/// Shard `index` of `count` (0-based: `0/4` … `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for ShardSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("shard `{s}`: expected i/n with 0 ≤ i < n, e.g. 0/4 … 3/4");
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!(
                "shard `{s}`: the shard count must be at least 1 (i/n with 0 ≤ i < n)"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard `{s}`: index {index} is not below the shard count {count}; shards are \
                 numbered 0 … {} (a Kubernetes JOB_COMPLETION_INDEX or a Slurm array of 0-{} \
                 gives these)",
                count - 1,
                count - 1
            ));
        }
        Ok(ShardSpec { index, count })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl ShardSpec {
    /// This shard's slots among `total`: `index, index + count, …`.
    pub fn slots(&self, total: usize) -> Vec<usize> {
        (self.index..total).step_by(self.count.max(1)).collect()
    }
}

/// The prompted label of every slot: `quotas[0]` slots of label 0, then label 1, ….
pub fn slot_labels(quotas: &[usize]) -> Vec<usize> {
    quotas
        .iter()
        .enumerate()
        .flat_map(|(l, &q)| std::iter::repeat_n(l, q))
        .collect()
}

/// The sampler seed of `attempt` of slot `slot`: the `attempt`-th output of a ChaCha20 stream
/// keyed by (`seed`, "synthesis-slot", `slot`). Depends on nothing else (not on the shard or
/// batch a slot is sampled in).
pub fn slot_seed(seed: u64, slot: usize, attempt: u32) -> u64 {
    let mut r = crate::rng::DpRng::new(
        crate::rng::SeedPolicy::Seeded { seed },
        "synthesis-slot",
        slot as u64,
    );
    let mut s = r.next_u64();
    for _ in 0..attempt {
        s = r.next_u64();
    }
    s
}

/// The record id of slot `slot`.
pub fn record_id(slot: usize) -> String {
    format!("syn-{slot}")
}

/// The settings that must agree between shards (everything of the config but the paths, the
/// seed, the shard and the batch size), as JSON.
fn settings(cfg: &SynthConfig) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(cfg)?;
    if let Some(m) = v.as_object_mut() {
        for k in ["run", "out", "shard", "model", "seed", "batch_size"] {
            m.remove(k);
        }
    }
    Ok(v)
}

/// The card's `generation` entry: the settings, the seed and the number of shards.
pub fn generation_json(
    cfg: &SynthConfig,
    seed: u64,
    shards: Option<usize>,
) -> Result<serde_json::Value> {
    let mut v = settings(cfg)?;
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "seed".into(),
            if cfg.seed.is_some() {
                serde_json::json!(seed)
            } else {
                serde_json::json!("from the OS")
            },
        );
        m.insert("shards".into(), serde_json::json!(shards.unwrap_or(1)));
        m.insert(
            "record_ids".into(),
            serde_json::json!("syn-<slot>; slots of a record are fixed by (seed, slot)"),
        );
    }
    Ok(v)
}

/// Work a shard did (may differ between shards).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub by_length: usize,
    pub tokens: usize,
    pub gen_secs: f64,
    pub seconds: f64,
}

/// The first line of a shard file: everything the merge checks and needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardHeader {
    pub version: u32,
    pub index: usize,
    pub count: usize,
    pub seed: u64,
    /// Total slots of the whole run.
    pub slots: usize,
    pub labels: Vec<String>,
    /// Label proportions as f64 bit patterns (exact).
    pub proportions_bits: Vec<u64>,
    /// [`SynthConfig`] without paths, seed, shard and batch size.
    pub settings: serde_json::Value,
    /// The card's privacy part: ε, δ, unit and the ledger's hash (identifies the run).
    pub privacy: CardPrivacy,
    /// The card's model part: base model and adapter hashes (identify the run).
    pub model: CardModel,
    pub stats: ShardStats,
}

const SHARD_VERSION: u32 = 1;

impl ShardHeader {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &SynthConfig,
        spec: ShardSpec,
        seed: u64,
        labels: &[String],
        props: &[f64],
        slots: usize,
        privacy: CardPrivacy,
        model: CardModel,
    ) -> Result<Self> {
        Ok(ShardHeader {
            version: SHARD_VERSION,
            index: spec.index,
            count: spec.count,
            seed,
            slots,
            labels: labels.to_vec(),
            proportions_bits: props.iter().map(|p| p.to_bits()).collect(),
            settings: settings(cfg)?,
            privacy,
            model,
            stats: ShardStats::default(),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct HeaderLine {
    dpsynth_shard: ShardHeader,
}

/// One slot of a shard file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardSlot {
    pub slot: usize,
    pub label: usize,
    /// `None`: every attempt failed the length filter.
    pub text: Option<String>,
    /// With the filter: `log p(text | prefix_l)` per label, as f64 bit patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lls_bits: Option<Vec<u64>>,
}

/// Write this shard's slots (scored with `score` when filtering) to `cfg.out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_shard(
    cfg: &SynthConfig,
    mut header: ShardHeader,
    slots: &[usize],
    slot_label: &[usize],
    sampled: Sampled,
    score: &Scorer,
    progress: &mut dyn SynthProgress,
    t0: Instant,
) -> Result<SynthSummary> {
    let k = header.labels.len();
    // With the filter: score every text of this shard (the merge de-duplicates; scores are
    // per text, so a duplicate's scores are simply not used).
    let mut lls: Vec<Option<Vec<f64>>> = vec![None; slots.len()];
    if cfg.filter.is_some() {
        let items: Vec<(usize, &str)> = slots
            .iter()
            .zip(&sampled.texts)
            .filter_map(|(&g, t)| t.as_deref().map(|t| (g, t)))
            .collect();
        progress.message(&format!(
            "scoring {} candidates under every label's prefix",
            items.len()
        ));
        progress.start(items.len());
        let mut rows = score(&items, progress)?.into_iter();
        progress.finish();
        for (j, t) in sampled.texts.iter().enumerate() {
            if t.is_some() {
                lls[j] = Some(rows.next().ok_or_else(|| {
                    TrainError::Other("scoring returned fewer rows than candidates".into())
                })?);
            }
        }
    }
    let mut lines = Vec::with_capacity(slots.len());
    let mut have = vec![0usize; k];
    let mut quota = vec![0usize; k];
    for ((&g, text), ll) in slots.iter().zip(sampled.texts).zip(lls) {
        let label = slot_label[g];
        quota[label] += 1;
        if text.is_some() {
            have[label] += 1;
        }
        lines.push(ShardSlot {
            slot: g,
            label,
            text,
            lls_bits: ll.map(|v| v.into_iter().map(f64::to_bits).collect()),
        });
    }
    header.stats = ShardStats {
        by_length: sampled.by_length,
        tokens: sampled.tokens,
        gen_secs: sampled.gen_secs,
        seconds: t0.elapsed().as_secs_f64(),
    };
    let tmp = cfg.out.with_extension("shard.tmp");
    {
        let f = std::fs::File::create(&tmp).map_err(|e| TrainError::file(&tmp, e))?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer(
            &mut w,
            &HeaderLine {
                dpsynth_shard: header.clone(),
            },
        )?;
        w.write_all(b"\n")?;
        for l in &lines {
            serde_json::to_writer(&mut w, l)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, &cfg.out).map_err(|e| TrainError::file(&cfg.out, e))?;
    let written = have.iter().sum();
    Ok(SynthSummary {
        out: cfg.out.clone(),
        written,
        requested: slots.len(),
        per_label: header
            .labels
            .iter()
            .zip(quota.iter().zip(&have))
            .map(|(l, (&q, &h))| (l.clone(), q, h))
            .collect(),
        duplicates_removed: 0,
        filtered_by_length: sampled.by_length,
        generated_tokens: sampled.tokens,
        tokens_per_second: sampled.tokens as f64 / sampled.gen_secs.max(1e-9),
        seconds: header.stats.seconds,
        filter: None,
    })
}

/// Read a shard file: its header and slots. Errors name the file and line.
pub fn read_shard(path: &Path) -> Result<(ShardHeader, Vec<ShardSlot>)> {
    let f = std::fs::File::open(path).map_err(|e| TrainError::file(path, e))?;
    let mut lines = std::io::BufReader::new(f).lines();
    let first = lines
        .next()
        .transpose()
        .map_err(|e| TrainError::file(path, e))?
        .ok_or_else(|| TrainError::file(path, "empty file; expected a shard file"))?;
    let h: HeaderLine = serde_json::from_str(&first).map_err(|e| {
        TrainError::file(
            path,
            format!("line 1: not a shard file written by `dpsynth synthesize --shard` ({e})"),
        )
    })?;
    let h = h.dpsynth_shard;
    if h.version != SHARD_VERSION {
        return Err(TrainError::file(
            path,
            format!(
                "shard file version {} (this dpsynth reads {SHARD_VERSION})",
                h.version
            ),
        ));
    }
    let mut slots = Vec::new();
    for (i, l) in lines.enumerate() {
        let l = l.map_err(|e| TrainError::file(path, e))?;
        if l.trim().is_empty() {
            continue;
        }
        let s: ShardSlot = serde_json::from_str(&l)
            .map_err(|e| TrainError::file(path, format!("line {}: {e}", i + 2)))?;
        slots.push(s);
    }
    Ok((h, slots))
}

fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    a == b
}

/// Check that the shard files are the complete set of one run's shards; returns them by index.
fn check(files: &[(PathBuf, ShardHeader, Vec<ShardSlot>)]) -> Result<()> {
    let Some((p0, h0, _)) = files.first() else {
        return Err(TrainError::Config(
            "merge needs at least one shard file".into(),
        ));
    };
    let d = |p: &Path| p.display().to_string();
    for (p, h, _) in &files[1..] {
        let what = if h.privacy.ledger_sha256 != h0.privacy.ledger_sha256
            || h.model.adapter_sha256 != h0.model.adapter_sha256
            || h.model.base_sha256 != h0.model.base_sha256
        {
            Some(format!(
                "come from different runs (ledger {} / adapter {} vs ledger {} / adapter {})",
                short(&h0.privacy.ledger_sha256),
                short(h0.model.adapter_sha256.as_deref().unwrap_or("none")),
                short(&h.privacy.ledger_sha256),
                short(h.model.adapter_sha256.as_deref().unwrap_or("none")),
            ))
        } else if h.seed != h0.seed {
            Some(format!("have different seeds ({} vs {})", h0.seed, h.seed))
        } else if h.count != h0.count {
            Some(format!(
                "were cut into different numbers of shards ({} vs {})",
                h0.count, h.count
            ))
        } else if !same(&h.settings, &h0.settings)
            || h.labels != h0.labels
            || h.proportions_bits != h0.proportions_bits
            || h.slots != h0.slots
            || h.privacy != h0.privacy
        {
            Some(format!(
                "were sampled with different settings ({} vs {})",
                h0.settings, h.settings
            ))
        } else {
            None
        };
        if let Some(w) = what {
            return Err(TrainError::Config(format!(
                "{} and {} {w}: merge only the shards of one `dpsynth synthesize --shard i/n` run",
                d(p0),
                d(p)
            )));
        }
    }
    let n = h0.count;
    let mut by_index: BTreeMap<usize, &Path> = BTreeMap::new();
    for (p, h, _) in files {
        if let Some(prev) = by_index.insert(h.index, p) {
            return Err(TrainError::Config(format!(
                "shard {}/{n} given twice: {} and {}",
                h.index,
                d(prev),
                d(p)
            )));
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(TrainError::Config(format!(
            "missing shard{} {} (got {} of {n} shards)",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            files.len()
        )));
    }
    // Every shard holds exactly its slots, each once, with the right label and scores.
    let slot_label = slot_labels(&crate::labels::allocate(
        h0.slots,
        &h0.proportions_bits
            .iter()
            .map(|&b| f64::from_bits(b))
            .collect::<Vec<_>>(),
    ));
    let filtered = !h0.settings.get("filter").is_none_or(|f| f.is_null());
    for (p, h, slots) in files {
        let want = ShardSpec {
            index: h.index,
            count: n,
        }
        .slots(h0.slots);
        let got: Vec<usize> = slots.iter().map(|s| s.slot).collect();
        if got != want {
            return Err(TrainError::file(
                p,
                format!(
                    "shard {}/{n} should hold slots {} (every {n}th of {}), found {} slot lines: \
                     the file is incomplete or was edited",
                    h.index,
                    want.iter()
                        .take(3)
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                        + ", …",
                    h0.slots,
                    got.len()
                ),
            ));
        }
        for s in slots {
            let scored_ok = match (&s.text, &s.lls_bits) {
                (Some(_), Some(v)) => filtered && v.len() == h0.labels.len(),
                (Some(_), None) => !filtered,
                (None, None) => true,
                (None, Some(_)) => false,
            };
            if slot_label.get(s.slot) != Some(&s.label) || !scored_ok {
                return Err(TrainError::file(
                    p,
                    format!(
                        "slot {}: label or scores do not match the run's settings",
                        s.slot
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// Join the shard files of one `--shard i/n` run into `out`: checks that they are all `n`
/// shards of the same run (ledger and adapter hashes), seed and settings, none missing or
/// repeated; then applies the same post-processing as a single process (exact duplicates in
/// slot order; with the filter: de-duplication, re-labelling and balancing) and writes `out`,
/// its filter counts and its dataset card. Nothing is written when a check fails.
///
/// # Privacy
/// Post-processing of the shards' samples (see [`crate::filter`]); the card's ε, δ and unit are
/// the ledger's, carried in every shard header and checked equal.
pub fn merge(
    files: &[PathBuf],
    out: &Path,
    progress: &mut dyn SynthProgress,
) -> Result<SynthSummary> {
    let t0 = Instant::now();
    for f in files {
        if f.canonicalize().ok().is_some() && f.canonicalize().ok() == out.canonicalize().ok() {
            return Err(TrainError::file(
                out,
                "the merged output would overwrite one of the shard files",
            ));
        }
    }
    let mut read = Vec::with_capacity(files.len());
    for f in files {
        let (h, s) = read_shard(f)?;
        read.push((f.clone(), h, s));
    }
    check(&read)?;
    let h0 = read[0].1.clone();
    let cfg: SynthConfig = {
        // Rebuild the config for the card (paths are not part of the shards' settings).
        let mut v = h0.settings.clone();
        if let Some(m) = v.as_object_mut() {
            m.insert("run".into(), serde_json::json!(""));
            m.insert("out".into(), serde_json::json!(out));
            m.insert("seed".into(), serde_json::json!(h0.seed));
            m.insert("batch_size".into(), serde_json::json!(0));
        }
        serde_json::from_value(v)?
    };
    let props: Vec<f64> = h0
        .proportions_bits
        .iter()
        .map(|&b| f64::from_bits(b))
        .collect();
    let (mut by_length, mut tokens, mut gen_secs) = (0usize, 0usize, 0f64);
    let mut cands = Vec::with_capacity(h0.slots);
    let mut lls: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (_, h, slots) in read {
        by_length += h.stats.by_length;
        tokens += h.stats.tokens;
        gen_secs += h.stats.gen_secs;
        for s in slots {
            if let Some(v) = s.lls_bits {
                lls.insert(s.slot, v.into_iter().map(f64::from_bits).collect());
            }
            cands.push(SlotText {
                slot: s.slot,
                label: s.label,
                text: s.text,
            });
        }
    }
    let post = PostInput {
        out,
        n: cfg.n,
        labels: &h0.labels,
        props: &props,
        base_only: cfg.base_only,
        by_length,
    };
    let mut summary = match &cfg.filter {
        Some(fc) => {
            let sc =
                |items: &[(usize, &str)], _: &mut dyn SynthProgress| -> Result<Vec<Vec<f64>>> {
                    items
                        .iter()
                        .map(|(slot, _)| {
                            lls.get(slot).cloned().ok_or_else(|| {
                                TrainError::Other(format!("slot {slot} has no scores"))
                            })
                        })
                        .collect()
                };
            finish_filtered(&post, fc, cands, &sc, progress)?
        }
        None => finish_plain(&post, cands, progress)?,
    };
    summary.generated_tokens = tokens;
    summary.tokens_per_second = tokens as f64 / gen_secs.max(1e-9);
    summary.seconds = t0.elapsed().as_secs_f64();
    crate::card::write_synthesis_card(
        out,
        h0.privacy,
        h0.model,
        generation_json(&cfg, h0.seed, Some(h0.count))?,
        &summary,
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs_parse_and_reject_bad_ones() {
        assert_eq!(
            "3/4".parse::<ShardSpec>().unwrap(),
            ShardSpec { index: 3, count: 4 }
        );
        for bad in ["5/4", "4/4", "0/0", "1", "a/b", "-1/4", ""] {
            let e = bad.parse::<ShardSpec>().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!("5/4"
            .parse::<ShardSpec>()
            .unwrap_err()
            .contains("not below"));
        assert!("0/0"
            .parse::<ShardSpec>()
            .unwrap_err()
            .contains("at least 1"));
    }

    #[test]
    fn shards_partition_the_slots() {
        let total = 23;
        let mut all: Vec<usize> = (0..4)
            .flat_map(|i| ShardSpec { index: i, count: 4 }.slots(total))
            .collect();
        all.sort();
        assert_eq!(all, (0..total).collect::<Vec<_>>());
        assert_eq!(ShardSpec { index: 1, count: 4 }.slots(10), vec![1, 5, 9]);
    }

    #[test]
    fn slot_seeds_depend_on_seed_slot_and_attempt_only() {
        assert_eq!(slot_seed(7, 3, 0), slot_seed(7, 3, 0));
        let all = [
            slot_seed(7, 3, 0),
            slot_seed(7, 3, 1),
            slot_seed(7, 4, 0),
            slot_seed(8, 3, 0),
        ];
        for i in 0..all.len() {
            for j in 0..i {
                assert_ne!(all[i], all[j]);
            }
        }
        assert_eq!(slot_labels(&[2, 0, 3]), vec![0, 0, 2, 2, 2]);
    }
}
