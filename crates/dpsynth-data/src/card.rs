//! The dataset card of a synthetic dataset: what it is, where it came from and what its privacy
//! guarantee covers. Written beside the data as `<name>.card.json` (machine-readable) and
//! `<name>.card.md` (for people), carried along by [`crate::export`] (a copy beside CSV/JSONL,
//! and the JSON in the key-value metadata of a Parquet file under [`PARQUET_KEY`]) and shown by
//! `dpsynth data inspect`.
//!
//! The card holds no statistic of the private data beyond what the run already released: ε, δ
//! and the privacy unit are copied from the run's privacy ledger (never recomputed from data),
//! the label counts are counts of the *synthetic* records, and the filter counts are
//! post-processing of the DP model's samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::read::Format;

/// Key of the card JSON in a Parquet file's key-value metadata.
pub const PARQUET_KEY: &str = "dpsynth.card";
/// Version of the card layout.
pub const CARD_VERSION: u32 = 1;

/// The privacy guarantee, as recorded in the run's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardPrivacy {
    /// ε of everything the run released (PLD accountant); `None`: no guarantee (ε = ∞, a
    /// `--no-dp` run). 0 for the ε = 0 control (no private data used).
    pub epsilon: Option<f64>,
    /// ε by the RDP accountant (a cross-check, ≥ the PLD value up to discretization).
    pub epsilon_rdp: Option<f64>,
    pub delta: f64,
    /// The privacy unit: `record`, `user`, or `none` (no DP / no private data).
    pub unit: String,
    /// The neighboring relation in words.
    pub neighboring: String,
    pub accountant: String,
    /// `os` (secure noise) or `seeded` (reproducible, NOT secure).
    pub noise_seed: String,
    /// SHA-256 of the ledger file the values were copied from (empty for the ε = 0 control).
    pub ledger_sha256: String,
    /// The ledger's own warnings.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The models behind the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardModel {
    /// Base model file or directory name (public).
    pub base: String,
    /// SHA-256 of the base model (the GGUF file, or `model.safetensors` of a directory).
    pub base_sha256: String,
    /// The DP fine-tuning method (`lora`, `prompt`, `full`; `none` for the ε = 0 control).
    pub method: String,
    /// SHA-256 of the trained adapter (absent for the ε = 0 control).
    pub adapter_sha256: Option<String>,
}

/// A synthetic dataset's card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCard {
    pub card_version: u32,
    /// The data file's name when the card was written.
    pub name: String,
    /// UTC date and time of writing (ISO 8601).
    pub created: String,
    /// `dpsynth <version>`.
    pub generator: String,
    pub privacy: CardPrivacy,
    pub model: CardModel,
    /// How the records were made: sampling settings, seed, shards (free-form, for people).
    pub generation: serde_json::Value,
    pub records: u64,
    /// Synthetic records per label.
    pub labels: BTreeMap<String, u64>,
    /// What the free post-processing did (`<name>.filter.json`), when it ran.
    pub filter: Option<serde_json::Value>,
    /// What the guarantee covers.
    pub covered: Vec<String>,
    /// What it does not cover.
    pub not_covered: Vec<String>,
    /// Later free post-processing steps applied to the file (filtering, augmenting, mixing with
    /// public data, …), in order; see [`DatasetCard::derive`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CardStep>,
}

/// One post-processing step recorded in a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardStep {
    /// What was done, e.g. `filter --min-words 5` or `mix public.jsonl:0.3`.
    pub step: String,
    /// Parameters and counts of the step (free-form).
    pub details: serde_json::Value,
    /// UTC date and time (ISO 8601).
    pub date: String,
    pub records_before: u64,
    pub records_after: u64,
}

/// `synthetic.jsonl` → (`synthetic.card.json`, `synthetic.card.md`).
pub fn card_paths(data: &Path) -> (PathBuf, PathBuf) {
    (
        data.with_extension("card.json"),
        data.with_extension("card.md"),
    )
}

/// δ for people: `0`, or three significant digits (`1.000e-5`).
pub fn fmt_delta(d: f64) -> String {
    if d == 0.0 {
        "0".into()
    } else {
        format!("{d:.3e}")
    }
}

/// UTC now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_iso8601(s)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar;
/// Hinnant's days-to-civil algorithm).
pub fn utc_iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

impl DatasetCard {
    /// The card as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse a card from JSON; `place` names where it came from in the error.
    pub fn from_json(s: &str, place: &str) -> Result<Self, DataError> {
        serde_json::from_str(s).map_err(|e| DataError::Corrupt {
            loc: crate::error::Location::file(place),
            msg: format!("not a dpsynth dataset card: {e}"),
        })
    }

    /// The human-readable card (Markdown).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.privacy;
        s.push_str(&format!("# Dataset card: {}\n\n", self.name));
        s.push_str(&format!(
            "Synthetic text generated by {} on {}.\n\n",
            self.generator, self.created
        ));
        s.push_str("## Privacy\n\n");
        let eps = match p.epsilon {
            Some(e) => format!("{e:.4}"),
            None => "∞ (no differential privacy)".into(),
        };
        s.push_str(&format!("- ε = {eps}, δ = {}\n", fmt_delta(p.delta)));
        s.push_str(&format!("- privacy unit: {} ({})\n", p.unit, p.neighboring));
        if let Some(r) = p.epsilon_rdp {
            s.push_str(&format!("- ε by RDP (cross-check): {r:.4}\n"));
        }
        s.push_str(&format!("- accountant: {}\n", p.accountant));
        s.push_str(&format!("- noise seed: {}\n", p.noise_seed));
        if !p.ledger_sha256.is_empty() {
            s.push_str(&format!("- ledger sha256: {}\n", p.ledger_sha256));
        }
        for n in &p.notes {
            s.push_str(&format!("- note: {n}\n"));
        }
        s.push_str("\n## Model and method\n\n");
        let m = &self.model;
        s.push_str(&format!(
            "- base model: {} (sha256 {})\n",
            m.base, m.base_sha256
        ));
        s.push_str(&format!("- method: {}\n", m.method));
        if let Some(a) = &m.adapter_sha256 {
            s.push_str(&format!("- adapter sha256: {a}\n"));
        }
        s.push_str(&format!(
            "- generation: `{}`\n",
            serde_json::to_string(&self.generation).unwrap_or_default()
        ));
        s.push_str(&format!("\n## Records: {}\n\n", self.records));
        s.push_str("| label | records |\n|---|---:|\n");
        for (l, n) in &self.labels {
            s.push_str(&format!("| {l} | {n} |\n"));
        }
        if let Some(f) = &self.filter {
            s.push_str("\n## Post-processing (free, no ε)\n\n");
            for k in [
                "generated",
                "removed_by_length",
                "exact_duplicates",
                "near_duplicates",
                "relabeled",
                "dropped_low_confidence",
                "dropped_by_balance",
                "kept",
            ] {
                if let Some(v) = f.get(k) {
                    s.push_str(&format!("- {k}: {v}\n"));
                }
            }
        }
        if !self.steps.is_empty() {
            s.push_str("\n## Later steps (post-processing)\n\n");
            for st in &self.steps {
                s.push_str(&format!(
                    "- {} ({}): {} → {} records; `{}`\n",
                    st.step,
                    st.date,
                    st.records_before,
                    st.records_after,
                    serde_json::to_string(&st.details).unwrap_or_default()
                ));
            }
        }
        s.push_str("\n## Covered by the guarantee\n\n");
        for c in &self.covered {
            s.push_str(&format!("- {c}\n"));
        }
        s.push_str("\n## Not covered\n\n");
        for c in &self.not_covered {
            s.push_str(&format!("- {c}\n"));
        }
        s
    }

    /// The card of a file derived from this card's data by a post-processing step: `step`
    /// appended (with `details`), the record and label counts recomputed from `records` (the
    /// derived file's records), the name set to `name`. The privacy part is unchanged: a step
    /// computed only from this synthetic data and public inputs costs no ε; a step that adds
    /// other data (e.g. public records) must say so in `covered`/`not_covered` itself.
    pub fn derive(
        &self,
        name: &str,
        step: &str,
        details: serde_json::Value,
        records: &[crate::record::Record],
    ) -> DatasetCard {
        let mut c = self.clone();
        let mut labels = BTreeMap::new();
        for r in records {
            *labels.entry(r.label.clone()).or_insert(0u64) += 1;
        }
        c.steps.push(CardStep {
            step: step.to_string(),
            details,
            date: utc_now(),
            records_before: self.records,
            records_after: records.len() as u64,
        });
        c.name = name.to_string();
        c.records = records.len() as u64;
        c.labels = labels;
        c
    }

    /// Write `<data>.card.json` and `<data>.card.md` beside `data`; returns both paths.
    pub fn write_beside(&self, data: &Path) -> Result<(PathBuf, PathBuf), DataError> {
        let (j, m) = card_paths(data);
        std::fs::write(&j, self.to_json()).map_err(|e| DataError::io(j.display(), e))?;
        std::fs::write(&m, self.to_markdown()).map_err(|e| DataError::io(m.display(), e))?;
        Ok((j, m))
    }
}

/// Where a card was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundCard {
    /// `<file>.card.json` or `<file> (Parquet metadata)`.
    pub source: String,
    pub card: DatasetCard,
}

/// The card of a data file: from a Parquet file's key-value metadata, else from
/// `<name>.card.json` beside it. `Ok(None)` when there is none; an error when one exists but
/// cannot be read.
pub fn find_card(data: &Path, format: Option<Format>) -> Result<Option<FoundCard>, DataError> {
    let fmt = format.or_else(|| Format::from_path(data));
    if fmt == Some(Format::Parquet) {
        if let Some(c) = crate::export::parquet_card(data)? {
            return Ok(Some(FoundCard {
                source: format!("{} (Parquet metadata `{PARQUET_KEY}`)", data.display()),
                card: c,
            }));
        }
    }
    let (j, _) = card_paths(data);
    if !j.is_file() {
        return Ok(None);
    }
    let s = std::fs::read_to_string(&j).map_err(|e| DataError::io(j.display(), e))?;
    let card = DatasetCard::from_json(&s, &j.display().to_string())?;
    Ok(Some(FoundCard {
        source: j.display().to_string(),
        card,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(utc_iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_iso8601(1_796_169_600 + 3661), "2026-12-02T01:01:01Z");
    }

    #[test]
    fn a_derived_card_records_the_step_and_recounts() {
        let c: DatasetCard = serde_json::from_value(serde_json::json!({
            "card_version": 1, "name": "s.jsonl", "created": "x", "generator": "g",
            "privacy": {"epsilon": 3.0, "epsilon_rdp": null, "delta": 1e-5, "unit": "record",
                "neighboring": "n", "accountant": "a", "noise_seed": "os", "ledger_sha256": "h"},
            "model": {"base": "b", "base_sha256": "s", "method": "lora", "adapter_sha256": null},
            "generation": {}, "records": 3, "labels": {"a": 2, "b": 1}, "filter": null,
            "covered": [], "not_covered": []
        }))
        .unwrap();
        assert!(c.steps.is_empty(), "old cards without steps still parse");
        let rec = |l: &str| crate::record::Record {
            id: "1".into(),
            text: "t".into(),
            label: l.into(),
            user: None,
        };
        let d = c.derive(
            "f.jsonl",
            "filter --min-words 5",
            serde_json::json!({"dropped": 1}),
            &[rec("a"), rec("b")],
        );
        assert_eq!(d.records, 2);
        assert_eq!(d.labels, [("a".into(), 1), ("b".into(), 1)].into());
        assert_eq!(d.steps.len(), 1);
        assert_eq!(
            (d.steps[0].records_before, d.steps[0].records_after),
            (3, 2)
        );
        assert_eq!(d.privacy, c.privacy);
        assert!(d.to_markdown().contains("filter --min-words 5"));
    }

    #[test]
    fn card_paths_sit_beside_the_data() {
        let (j, m) = card_paths(Path::new("out/synthetic.jsonl"));
        assert_eq!(j, Path::new("out/synthetic.card.json"));
        assert_eq!(m, Path::new("out/synthetic.card.md"));
    }
}
