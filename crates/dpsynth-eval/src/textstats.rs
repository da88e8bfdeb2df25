//! Text statistics (length, vocabulary, labels) and the memorization check.
//!
//! The memorization check is *evidence, not a guarantee*: DP bounds what any test can find,
//! but a clean check does not prove privacy, and a hit does not by itself prove a leak
//! (short common phrases are shared by chance). Its worst examples quote private training
//! records and belong in a file marked private, never in shareable metrics.

use std::collections::{BTreeMap, HashMap, HashSet};

use dpsynth_data::Record;
use serde::{Deserialize, Serialize};

/// Lowercased word tokens: runs of alphanumerics (and apostrophes inside words).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() || (ch == '\'' && !cur.is_empty()) {
            cur.extend(ch.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur).trim_end_matches('\'').to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur.trim_end_matches('\'').to_string());
    }
    out.retain(|w| !w.is_empty());
    out
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TextStats {
    pub n: usize,
    pub empty_texts: usize,
    pub mean_words: f64,
    pub median_words: f64,
    pub p90_words: f64,
    pub max_words: usize,
    pub vocab_size: usize,
    /// distinct words / total words.
    pub type_token_ratio: f64,
    /// fraction of distinct 2-grams among all 2-grams (a diversity measure).
    pub distinct_2: f64,
    pub label_counts: BTreeMap<String, usize>,
}

pub fn text_stats(records: &[Record]) -> TextStats {
    let toks: Vec<Vec<String>> = records.iter().map(|r| words(&r.text)).collect();
    let mut lens: Vec<usize> = toks.iter().map(Vec::len).collect();
    lens.sort_unstable();
    let total: usize = lens.iter().sum();
    let q = |f: f64| -> f64 {
        if lens.is_empty() {
            0.0
        } else {
            lens[((lens.len() - 1) as f64 * f).round() as usize] as f64
        }
    };
    let vocab: HashSet<&str> = toks.iter().flatten().map(String::as_str).collect();
    let mut bigrams = HashSet::new();
    let mut n_bi = 0usize;
    for t in &toks {
        for w in t.windows(2) {
            bigrams.insert((w[0].as_str(), w[1].as_str()));
            n_bi += 1;
        }
    }
    let mut label_counts = BTreeMap::new();
    for r in records {
        *label_counts.entry(r.label.clone()).or_insert(0) += 1;
    }
    TextStats {
        n: records.len(),
        empty_texts: records.iter().filter(|r| r.text.trim().is_empty()).count(),
        mean_words: if records.is_empty() {
            0.0
        } else {
            total as f64 / records.len() as f64
        },
        median_words: q(0.5),
        p90_words: q(0.9),
        max_words: lens.last().copied().unwrap_or(0),
        vocab_size: vocab.len(),
        type_token_ratio: if total > 0 {
            vocab.len() as f64 / total as f64
        } else {
            0.0
        },
        distinct_2: if n_bi > 0 {
            bigrams.len() as f64 / n_bi as f64
        } else {
            0.0
        },
        label_counts,
    }
}

/// Suffix automaton over word ids of all training records (separated by unique sentinels),
/// answering "longest contiguous word sequence of a query that occurs in some training record"
/// in time linear in the query.
struct SuffixAutomaton {
    next: Vec<HashMap<u32, u32>>,
    link: Vec<i32>,
    len: Vec<u32>,
    /// One end position (in the concatenated sequence) of the substrings of each state.
    endpos: Vec<u32>,
}

impl SuffixAutomaton {
    fn build(seq: &[u32]) -> Self {
        let mut sa = SuffixAutomaton {
            next: vec![HashMap::new()],
            link: vec![-1],
            len: vec![0],
            endpos: vec![0],
        };
        let mut last = 0usize;
        for (pos, &c) in seq.iter().enumerate() {
            let cur = sa.next.len();
            sa.next.push(HashMap::new());
            sa.len.push(sa.len[last] + 1);
            sa.link.push(0);
            sa.endpos.push(pos as u32);
            let mut p = last as i32;
            while p != -1 && !sa.next[p as usize].contains_key(&c) {
                sa.next[p as usize].insert(c, cur as u32);
                p = sa.link[p as usize];
            }
            if p != -1 {
                let q = sa.next[p as usize][&c] as usize;
                if sa.len[p as usize] + 1 == sa.len[q] {
                    sa.link[cur] = q as i32;
                } else {
                    let clone = sa.next.len();
                    sa.next.push(sa.next[q].clone());
                    sa.len.push(sa.len[p as usize] + 1);
                    sa.link.push(sa.link[q]);
                    sa.endpos.push(sa.endpos[q]);
                    while p != -1 && sa.next[p as usize].get(&c) == Some(&(q as u32)) {
                        sa.next[p as usize].insert(c, clone as u32);
                        p = sa.link[p as usize];
                    }
                    sa.link[q] = clone as i32;
                    sa.link[cur] = clone as i32;
                }
            }
            last = cur;
        }
        sa
    }

    /// Longest substring of `query` present in the automaton: (length, end index in query,
    /// end position in the indexed sequence).
    fn longest_common(&self, query: &[u32]) -> (usize, usize, usize) {
        let (mut v, mut l) = (0usize, 0usize);
        let mut best = (0usize, 0usize, 0usize);
        for (i, &c) in query.iter().enumerate() {
            while v != 0 && !self.next[v].contains_key(&c) {
                v = self.link[v] as usize;
                l = self.len[v] as usize;
            }
            if let Some(&nv) = self.next[v].get(&c) {
                v = nv as usize;
                l += 1;
            }
            if l > best.0 {
                best = (l, i, self.endpos[v] as usize);
            }
        }
        best
    }
}

/// Shareable memorization summary (no quotes of training text).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemorizationSummary {
    pub note: String,
    pub n_synthetic: usize,
    /// Synthetic records whose normalized text equals a training record's.
    pub exact_duplicates: usize,
    pub exact_duplicate_rate: f64,
    /// Histogram of the longest shared word n-gram length per synthetic record:
    /// (length, count), lengths ≥ 20 pooled into 20.
    pub longest_shared_ngram_hist: Vec<(usize, usize)>,
    pub mean_longest_shared_ngram: f64,
    pub p95_longest_shared_ngram: f64,
    pub max_longest_shared_ngram: usize,
    /// Synthetic records sharing ≥ `long_ngram_threshold` consecutive words with a training record.
    pub long_ngram_threshold: usize,
    pub records_with_long_shared_ngram: usize,
}

/// One of the worst cases: PRIVATE (quotes a training record).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemorizationExample {
    pub synthetic_id: String,
    pub synthetic_text: String,
    pub train_id: String,
    pub train_text: String,
    pub shared_ngram_words: usize,
    pub shared_ngram: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemorizationPrivate {
    pub warning: String,
    pub worst_examples: Vec<MemorizationExample>,
}

fn normalize_text(t: &str) -> String {
    words(t).join(" ")
}

/// Compare every synthetic record against the training records.
pub fn memorization(
    synthetic: &[Record],
    train: &[Record],
    worst_k: usize,
    long_ngram_threshold: usize,
) -> (MemorizationSummary, MemorizationPrivate) {
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let mut seq: Vec<u32> = Vec::new();
    let mut owner: Vec<u32> = Vec::new(); // training record index of each position
                                          // sentinel ids count down from u32::MAX so no n-gram crosses two records
    let mut sentinel = u32::MAX;
    for (ri, r) in train.iter().enumerate() {
        for w in words(&r.text) {
            let n = vocab.len() as u32;
            seq.push(*vocab.entry(w).or_insert(n));
            owner.push(ri as u32);
        }
        seq.push(sentinel);
        owner.push(ri as u32);
        sentinel -= 1;
    }
    let sa = SuffixAutomaton::build(&seq);
    let train_norm: HashSet<String> = train.iter().map(|r| normalize_text(&r.text)).collect();

    let mut lens = Vec::with_capacity(synthetic.len());
    let mut found: Vec<(usize, usize, usize, usize)> = Vec::new(); // (len, synth idx, q end, train pos)
    let mut exact = 0;
    for (si, s) in synthetic.iter().enumerate() {
        let ws = words(&s.text);
        let norm = ws.join(" ");
        if !norm.is_empty() && train_norm.contains(&norm) {
            exact += 1;
        }
        // unknown words get an id no training position has
        let q: Vec<u32> = ws
            .iter()
            .map(|w| vocab.get(w).copied().unwrap_or(u32::MAX / 2))
            .collect();
        let (l, qend, tpos) = sa.longest_common(&q);
        lens.push(l);
        if l > 0 {
            found.push((l, si, qend, tpos));
        }
    }
    let mut hist: BTreeMap<usize, usize> = BTreeMap::new();
    for &l in &lens {
        *hist.entry(l.min(20)).or_insert(0) += 1;
    }
    let mut sorted = lens.clone();
    sorted.sort_unstable();
    let n = synthetic.len();
    let summary = MemorizationSummary {
        note: "Evidence, not a guarantee: the differential-privacy guarantee comes from DP fine-tuning; \
               this check only looks for verbatim overlap with training records."
            .into(),
        n_synthetic: n,
        exact_duplicates: exact,
        exact_duplicate_rate: if n > 0 { exact as f64 / n as f64 } else { 0.0 },
        longest_shared_ngram_hist: hist.into_iter().collect(),
        mean_longest_shared_ngram: if n > 0 { lens.iter().sum::<usize>() as f64 / n as f64 } else { 0.0 },
        p95_longest_shared_ngram: if n > 0 { sorted[((n - 1) as f64 * 0.95).round() as usize] as f64 } else { 0.0 },
        max_longest_shared_ngram: sorted.last().copied().unwrap_or(0),
        long_ngram_threshold,
        records_with_long_shared_ngram: lens.iter().filter(|&&l| l >= long_ngram_threshold).count(),
    };
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let worst_examples = found
        .into_iter()
        .take(worst_k)
        .map(|(l, si, qend, tpos)| {
            let ws = words(&synthetic[si].text);
            let tr = &train[owner[tpos] as usize];
            MemorizationExample {
                synthetic_id: synthetic[si].id.clone(),
                synthetic_text: synthetic[si].text.clone(),
                train_id: tr.id.clone(),
                train_text: tr.text.clone(),
                shared_ngram_words: l,
                shared_ngram: ws[qend + 1 - l..=qend].join(" "),
            }
        })
        .collect();
    (
        summary,
        MemorizationPrivate {
            warning:
                "PRIVATE: quotes sensitive training records. Do not share or publish this file."
                    .into(),
            worst_examples,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, text: &str) -> Record {
        Record {
            id: id.into(),
            text: text.into(),
            label: "x".into(),
            user: None,
        }
    }

    #[test]
    fn word_tokenizer() {
        assert_eq!(
            words("It's a GREAT film... 10/10!"),
            vec!["it's", "a", "great", "film", "10", "10"]
        );
        assert!(words("  ").is_empty());
    }

    /// Brute force oracle: longest common contiguous word run between `q` and any of `ts`.
    fn brute(q: &[String], ts: &[Vec<String>]) -> usize {
        let mut best = 0;
        for t in ts {
            for i in 0..q.len() {
                for j in 0..t.len() {
                    let mut l = 0;
                    while i + l < q.len() && j + l < t.len() && q[i + l] == t[j + l] {
                        l += 1;
                    }
                    best = best.max(l);
                }
            }
        }
        best
    }

    #[test]
    fn longest_ngram_matches_brute_force_and_does_not_cross_records() {
        let train = vec![
            rec("t1", "the movie was a total mess from start to finish"),
            rec("t2", "finish the job and go home"),
            rec("t3", "a b c d e"),
        ];
        let synth = vec![
            rec("s1", "honestly the movie was a total mess"), // 6 words with t1
            rec("s2", "to finish the job"), // "to finish" (t1) / "finish the job" (t2): 3; "to finish the" would cross records
            rec("s3", "nothing shared here zzz"),
            rec("s4", "A B C D E"), // exact duplicate of t3 (normalized)
        ];
        let ts: Vec<Vec<String>> = train.iter().map(|r| words(&r.text)).collect();
        let (sum, private) = memorization(&synth, &train, 10, 5);
        let want: Vec<usize> = synth.iter().map(|s| brute(&words(&s.text), &ts)).collect();
        assert_eq!(want, vec![6, 3, 0, 5]);
        assert_eq!(sum.exact_duplicates, 1);
        assert_eq!(sum.max_longest_shared_ngram, 6);
        assert_eq!(sum.records_with_long_shared_ngram, 2);
        let worst = &private.worst_examples[0];
        assert_eq!(worst.synthetic_id, "s1");
        assert_eq!(worst.train_id, "t1");
        assert_eq!(worst.shared_ngram, "the movie was a total mess");
        let s2 = private
            .worst_examples
            .iter()
            .find(|e| e.synthetic_id == "s2")
            .unwrap();
        assert_eq!(s2.shared_ngram_words, 3);
        assert_eq!(s2.train_id, "t2");
        // the shareable summary has no text
        let json = serde_json::to_string(&sum).unwrap();
        assert!(!json.contains("movie"));
    }

    #[test]
    fn random_against_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mk = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| -> String {
            (0..n)
                .map(|_| ["a", "b", "c", "d"][rng.random_range(0..4)])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let train: Vec<Record> = (0..8)
            .map(|i| {
                let n = rng.random_range(0..12);
                rec(&format!("t{i}"), &mk(&mut rng, n))
            })
            .collect();
        let synth: Vec<Record> = (0..30)
            .map(|i| {
                let n = rng.random_range(0..15);
                rec(&format!("s{i}"), &mk(&mut rng, n))
            })
            .collect();
        let ts: Vec<Vec<String>> = train.iter().map(|r| words(&r.text)).collect();
        let (_, private) = memorization(&synth, &train, 100, 5);
        for s in &synth {
            let want = brute(&words(&s.text), &ts);
            let got = private
                .worst_examples
                .iter()
                .find(|e| e.synthetic_id == s.id)
                .map_or(0, |e| e.shared_ngram_words);
            assert_eq!(got, want, "{}", s.text);
        }
    }
}
