//! Canaries: random records whose membership in the training data only the auditor knows.
//!
//! Two kinds:
//! * [`CanaryKind::Secret`] — "secret sharer" canaries (Carlini et al. 2019, "The Secret
//!   Sharer", USENIX Security): `my secret code is 482913`, the secret a uniformly random
//!   string of `digits` digits.
//! * [`CanaryKind::Words`] — `words` words drawn uniformly (with replacement) from a fixed list
//!   of [`WORDS`] common English words: short in tokens for byte-level BPE vocabularies and
//!   quickly memorized when trained on.
//!
//! Every canary has a *secret* (the random part) and a *format*: [`Canary::alternative`] draws
//! another secret of the same format, which is what the exposure estimate ranks against.

use dpsynth_privacy::SecureRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The word list of [`CanaryKind::Words`] canaries (64 words: 6 bits each).
pub const WORDS: [&str; 64] = [
    "apple", "river", "stone", "cloud", "green", "table", "music", "light", "horse", "paper",
    "glass", "night", "ocean", "bread", "chair", "dream", "field", "house", "smile", "train",
    "water", "money", "earth", "plant", "sugar", "heart", "world", "story", "space", "voice",
    "north", "south", "dance", "metal", "honey", "tiger", "lemon", "storm", "grass", "piano",
    "queen", "robot", "shirt", "snake", "sheep", "truck", "wheel", "watch", "mouse", "radio",
    "candy", "beach", "brick", "coral", "eagle", "flute", "giant", "jelly", "maple", "olive",
    "pearl", "quilt", "tulip", "zebra",
];

/// The fixed text before a secret-sharer canary's digits.
pub const SECRET_PREFIX: &str = "my secret code is ";

/// What the canaries look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CanaryKind {
    /// `my secret code is DDDDDD` with `digits` random digits.
    Secret { digits: usize },
    /// `words` random words from [`WORDS`], space-separated.
    Words { words: usize },
}

impl Default for CanaryKind {
    fn default() -> Self {
        CanaryKind::Secret { digits: 6 }
    }
}

impl CanaryKind {
    /// Parse `secret`, `secret:8`, `words`, `words:5`.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, n) = match s.split_once(':') {
            Some((a, b)) => (a, Some(b.trim().parse::<usize>().ok()?)),
            None => (s, None),
        };
        let k = match name.trim() {
            "secret" => CanaryKind::Secret {
                digits: n.unwrap_or(6),
            },
            "words" => CanaryKind::Words {
                words: n.unwrap_or(6),
            },
            _ => return None,
        };
        (k.size() > 0).then_some(k)
    }

    fn size(&self) -> usize {
        match self {
            CanaryKind::Secret { digits } => *digits,
            CanaryKind::Words { words } => *words,
        }
    }

    /// log2 of the number of possible secrets (|R| of the exposure definition).
    pub fn log2_space(&self) -> f64 {
        match self {
            CanaryKind::Secret { digits } => *digits as f64 * 10f64.log2(),
            CanaryKind::Words { words } => *words as f64 * (WORDS.len() as f64).log2(),
        }
    }

    /// A uniformly random secret.
    pub fn random_secret(&self, rng: &mut impl Rng) -> String {
        match self {
            CanaryKind::Secret { digits } => (0..*digits)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect(),
            CanaryKind::Words { words } => (0..*words)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// The canary text carrying `secret`.
    pub fn text(&self, secret: &str) -> String {
        match self {
            CanaryKind::Secret { .. } => format!("{SECRET_PREFIX}{secret}"),
            CanaryKind::Words { .. } => secret.to_string(),
        }
    }
}

/// One canary record and whether it was inserted into the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub id: String,
    pub label: String,
    /// The random part (digits or words).
    pub secret: String,
    /// The full record text.
    pub text: String,
    /// Inserted into the audit run's training data (the auditor's secret coin).
    pub inserted: bool,
}

impl Canary {
    /// The training record of this canary (its own user, so user-level DP treats each canary
    /// as one unit).
    pub fn record(&self) -> dpsynth_data::Record {
        dpsynth_data::Record {
            id: self.id.clone(),
            text: self.text.clone(),
            label: self.label.clone(),
            user: Some(format!("audit-{}", self.id)),
        }
    }
}

/// `m` canaries with distinct secrets, labels drawn uniformly from `labels`, each inserted
/// independently with probability 1/2 ([`dpsynth_privacy::audit::inclusion_bits`]).
/// Secret-sharer texts come from [`dpsynth_privacy::audit::secret_sharer_canaries`].
///
/// # Privacy
/// The one-run audit (Steinke, Nasr & Jagielski 2023, Thm. 5.2) requires each canary to be
/// included independently with probability exactly 1/2, the bits drawn before training and
/// unknown to the trainer; `rng` is ChaCha20 from the OS unless the user gave a seed. Secrets
/// are distinct so that no held-out canary duplicates an inserted one.
pub fn generate_canaries(
    kind: CanaryKind,
    m: usize,
    labels: &[String],
    rng: &mut SecureRng,
) -> crate::Result<Vec<Canary>> {
    if labels.is_empty() {
        return Err(crate::AuditError::Data(
            "canaries need at least one label".into(),
        ));
    }
    let inserted = dpsynth_privacy::audit::inclusion_bits(rng, m);
    let secrets: Vec<String> = match kind {
        CanaryKind::Secret { digits } => {
            dpsynth_privacy::audit::secret_sharer_canaries(rng, m, digits as u32)?
                .into_iter()
                .map(|t| {
                    t.strip_prefix(SECRET_PREFIX)
                        .map(str::to_string)
                        .unwrap_or(t)
                })
                .collect()
        }
        CanaryKind::Words { .. } => {
            if kind.log2_space() < ((2 * m.max(1)) as f64).log2() {
                return Err(crate::AuditError::Config(format!(
                    "{} random words are too few for {m} distinct canaries",
                    kind.size()
                )));
            }
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::with_capacity(m);
            while out.len() < m {
                let s = kind.random_secret(rng);
                if seen.insert(s.clone()) {
                    out.push(s);
                }
            }
            out
        }
    };
    let width = (m.max(1) as f64).log10().floor() as usize + 1;
    Ok(secrets
        .into_iter()
        .zip(inserted)
        .enumerate()
        .map(|(i, (secret, inserted))| Canary {
            id: format!("canary-{i:0width$}"),
            label: labels[rng.random_range(0..labels.len())].clone(),
            text: kind.text(&secret),
            secret,
            inserted,
        })
        .collect())
}

/// Does `synthetic_text` contain the canary's secret? Compares with whitespace collapsed so
/// that a generator's different spacing does not hide a copy.
pub fn contains_secret(synthetic_text: &str, secret: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    norm(synthetic_text).contains(&norm(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["neg".into(), "pos".into()]
    }

    #[test]
    fn secret_canaries_have_the_format_and_distinct_secrets() {
        let mut rng = SecureRng::seeded(1);
        let c =
            generate_canaries(CanaryKind::Secret { digits: 6 }, 200, &labels(), &mut rng).unwrap();
        assert_eq!(c.len(), 200);
        let secrets: std::collections::HashSet<_> = c.iter().map(|c| &c.secret).collect();
        assert_eq!(secrets.len(), 200);
        for x in &c {
            assert_eq!(x.secret.len(), 6);
            assert!(x.secret.chars().all(|ch| ch.is_ascii_digit()));
            assert_eq!(x.text, format!("my secret code is {}", x.secret));
            assert!(labels().contains(&x.label));
        }
        assert_eq!(c[7].id, "canary-007");
    }

    #[test]
    fn inclusion_is_a_fair_coin() {
        // 4000 canaries: the inserted count is Binomial(4000, 1/2), sd ≈ 31.6; 5 sd band.
        let mut rng = SecureRng::seeded(7);
        let c =
            generate_canaries(CanaryKind::Words { words: 4 }, 4000, &labels(), &mut rng).unwrap();
        let k = c.iter().filter(|c| c.inserted).count() as f64;
        assert!((k - 2000.0).abs() < 5.0 * 31.7, "inserted {k} of 4000");
        // Labels are balanced too.
        let pos = c.iter().filter(|c| c.label == "pos").count() as f64;
        assert!((pos - 2000.0).abs() < 5.0 * 31.7, "pos {pos} of 4000");
    }

    #[test]
    fn word_canaries_use_the_list() {
        let mut rng = SecureRng::seeded(3);
        let k = CanaryKind::Words { words: 5 };
        let s = k.random_secret(&mut rng);
        let w: Vec<&str> = s.split(' ').collect();
        assert_eq!(w.len(), 5);
        assert!(w.iter().all(|x| WORDS.contains(x)));
        assert_eq!(k.text(&s), s);
        assert!((k.log2_space() - 30.0).abs() < 1e-12);
    }

    #[test]
    fn too_few_words_or_no_labels_are_errors() {
        let mut rng = SecureRng::seeded(4);
        assert!(
            generate_canaries(CanaryKind::Words { words: 1 }, 64, &labels(), &mut rng).is_err()
        );
        assert!(generate_canaries(CanaryKind::Secret { digits: 6 }, 4, &[], &mut rng).is_err());
    }

    #[test]
    fn parse_kinds() {
        assert_eq!(
            CanaryKind::parse("secret"),
            Some(CanaryKind::Secret { digits: 6 })
        );
        assert_eq!(
            CanaryKind::parse("words:3"),
            Some(CanaryKind::Words { words: 3 })
        );
        assert_eq!(CanaryKind::parse("words:0"), None);
        assert_eq!(CanaryKind::parse("digits"), None);
        assert_eq!(CanaryKind::parse("secret:x"), None);
    }

    #[test]
    fn secret_search_ignores_spacing() {
        assert!(contains_secret(
            "blah my  secret\ncode is 123456 ok",
            "my secret code is 123456"
        ));
        assert!(!contains_secret("my secret code is 123457", "123456"));
    }
}
