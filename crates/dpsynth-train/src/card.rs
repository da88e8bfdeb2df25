//! The dataset card of a synthesis run ([`dpsynth_data::card::DatasetCard`]): privacy values
//! copied from the run's ledger, model and adapter hashes, sampling settings, counts.
//!
//! # Privacy
//! ε, δ and the privacy unit are read from the ledger (`privacy.json`, written by training
//! before the adapter): the card never recomputes them and reads no private record. The label
//! counts are counts of the synthetic records and the filter counts describe post-processing of
//! the DP model's samples (Dwork & Roth 2014, Prop. 2.1): the card is free to share.

use std::path::Path;

use dpsynth_data::card::{CardModel, CardPrivacy, DatasetCard, CARD_VERSION};
use dpsynth_privacy::Neighboring;

use crate::ledger::Ledger;
use crate::rng::SeedPolicy;
use crate::synth::SynthSummary;
use crate::train::{RunInfo, RunPaths};
use crate::{Result, TrainError};

fn sha(path: &Path) -> Result<String> {
    dpsynth_data::sha256_path(path).map_err(|e| TrainError::file(path, e))
}

/// The privacy and model parts of the card of data sampled from the run at `paths` (the
/// ε = 0 control: `base_only`, no ledger or adapter read).
pub fn run_card_parts(
    paths: &RunPaths,
    info: &RunInfo,
    model: &Path,
    base_only: bool,
) -> Result<(CardPrivacy, CardModel)> {
    let base = CardModel {
        base: model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.display().to_string()),
        base_sha256: sha(model)?,
        method: if base_only {
            "none (public base model: the ε = 0 control)".into()
        } else {
            info.method.name().into()
        },
        adapter_sha256: None,
    };
    if base_only {
        return Ok((
            CardPrivacy {
                epsilon: Some(0.0),
                epsilon_rdp: Some(0.0),
                delta: 0.0,
                unit: "none".into(),
                neighboring: "no private data was used".into(),
                accountant: "none".into(),
                noise_seed: "none".into(),
                ledger_sha256: String::new(),
                notes: vec![],
            },
            base,
        ));
    }
    let ledger_path = paths.ledger();
    let l = Ledger::read(&ledger_path)?;
    let unit = if l.no_dp {
        "none"
    } else {
        match l.neighboring {
            Neighboring::AddRemoveRecord => "record",
            Neighboring::AddRemoveUser => "user",
        }
    };
    Ok((
        CardPrivacy {
            // A DP run whose ledger has no ε (nothing accounted yet) is shown as ∞, never as 0.
            epsilon: if l.no_dp { None } else { l.epsilon_pld },
            epsilon_rdp: if l.no_dp { None } else { l.epsilon_rdp },
            delta: l.delta,
            unit: unit.into(),
            neighboring: l.neighboring.to_string(),
            accountant: l.accountant.clone(),
            noise_seed: match l.seed_policy {
                SeedPolicy::Os => "os (secure)".into(),
                SeedPolicy::Seeded { .. } => "seeded by the user (reproducible, NOT secure)".into(),
            },
            ledger_sha256: sha(&ledger_path)?,
            notes: l.notes.clone(),
        },
        CardModel {
            adapter_sha256: Some(sha(&paths.adapter())?),
            ..base
        },
    ))
}

/// What the guarantee covers and what it does not, in words.
pub fn coverage(p: &CardPrivacy) -> (Vec<String>, Vec<String>) {
    let mut covered = Vec::new();
    let mut not = vec![
        "the public base model and its pre-training data (public; no guarantee about them)".into(),
        "other files of the run directory: loss.csv, data/summary.json (exact statistics of the \
         private data) and the real train/test splits are private and must not be shared"
            .into(),
        "population-level facts: DP protects each individual unit, not trends the whole \
         dataset shows"
            .into(),
    ];
    match (p.unit.as_str(), p.epsilon) {
        ("none", Some(0.0)) => covered.push(
            "everything here: the ε = 0 control uses no private data at all (public base model, \
             uniform labels)"
                .into(),
        ),
        ("none", _) => not.push(
            "no differential privacy: the run was trained with --no-dp (ε = ∞); do not share"
                .into(),
        ),
        (unit, eps) => {
            let eps = eps.map_or("∞".to_string(), |e| format!("{e:.4}"));
            covered.push(format!(
                "every record and label in this file, and the counts in this card: sampled from a \
                 model fine-tuned with DP-SGD and the DP label histogram, i.e. post-processing of \
                 an (ε = {eps}, δ = {:.3e}) release",
                p.delta
            ));
            covered.push(format!(
                "protection of each {unit} of the private training data: adding or removing one \
                 {unit} changes the distribution of everything released by at most (ε, δ)"
            ));
            if unit == "record" {
                not.push(
                    "a person who contributed several records: protection is per record, and \
                     weaker for someone with k records (group privacy, about k·ε)"
                        .into(),
                );
            }
            if p.noise_seed.starts_with("seeded") {
                not.push(
                    "anyone who knows the training seed: the noise was seeded by the user and is \
                     predictable to them"
                        .into(),
                );
            }
        }
    }
    not.push(
        "other releases from the same private data (e.g. a DP-SGD baseline classifier): each \
         costs its own ε, listed in its own ledger"
            .into(),
    );
    (covered, not)
}

/// Build the card of `out` from the run's parts, the generation settings and the summary of
/// what was written, and write it beside `out`.
pub fn write_synthesis_card(
    out: &Path,
    privacy: CardPrivacy,
    model: CardModel,
    generation: serde_json::Value,
    s: &SynthSummary,
) -> Result<DatasetCard> {
    let (covered, not_covered) = coverage(&privacy);
    let card = DatasetCard {
        card_version: CARD_VERSION,
        name: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created: dpsynth_data::card::utc_now(),
        generator: format!("dpsynth {}", env!("CARGO_PKG_VERSION")),
        privacy,
        model,
        generation,
        records: s.written as u64,
        labels: s
            .per_label
            .iter()
            .map(|(l, _, got)| (l.clone(), *got as u64))
            .collect(),
        filter: s.filter.as_ref().map(serde_json::to_value).transpose()?,
        covered,
        not_covered,
        steps: Vec::new(),
    };
    card.write_beside(out)
        .map_err(|e| TrainError::file(out, e))?;
    Ok(card)
}
