//! Deterministic stratified train/test split and stratified train subsampling.
//!
//! Not a privacy mechanism: which records land in the training set is a function of the seed
//! only. The DP guarantee of later training holds for the training set it is given; no
//! amplification by this subsampling is claimed anywhere (`--max-train` only bounds cost).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;
use crate::error::DataError;

/// Train and test indices into a [`Dataset`], each in a seeded shuffled order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<u32>,
    pub test: Vec<u32>,
    /// Train records left out by `max_train`.
    pub subsampled_out: u64,
}

/// Number of test records for a label with `n` records: `round(n * f)`, clamped to `[1, n - 1]`
/// when `n >= 2` and `0 < f < 1` so both sides see every label.
pub fn test_count(n: usize, f: f64) -> usize {
    if n == 0 || f <= 0.0 {
        return 0;
    }
    if f >= 1.0 {
        return n;
    }
    let t = (n as f64 * f).round() as usize;
    if n >= 2 {
        t.clamp(1, n - 1)
    } else {
        t.min(n)
    }
}

/// Split `idx` (indices into `ds`) per label: within each label (labels in sorted order) the
/// records are shuffled with a ChaCha8 stream seeded by `seed`, the first [`test_count`] go to
/// test. With `max_train`, the train side is then cut to at most `max_train` records, allocating
/// to labels proportionally (largest remainder, at least one per label when possible).
pub fn stratified_split(
    ds: &Dataset,
    idx: &[u32],
    test_fraction: f64,
    seed: u64,
    max_train: Option<usize>,
) -> Result<Split, DataError> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(DataError::InvalidOption(format!(
            "--test-fraction must be in [0, 1), got {test_fraction}"
        )));
    }
    let nl = ds.label_names().len();
    let mut by_label: Vec<Vec<u32>> = vec![Vec::new(); nl];
    for &i in idx {
        by_label[ds.label_index(i as usize) as usize].push(i);
    }
    let mut order: Vec<usize> = (0..nl).collect();
    order.sort_by(|&a, &b| ds.label_names()[a].cmp(&ds.label_names()[b]));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train_by_label = Vec::new();
    let mut test = Vec::new();
    for &l in &order {
        let mut v = std::mem::take(&mut by_label[l]);
        if v.is_empty() {
            continue;
        }
        v.shuffle(&mut rng);
        let t = test_count(v.len(), test_fraction);
        test.extend_from_slice(&v[..t]);
        train_by_label.push(v[t..].to_vec());
    }
    // Test order is fixed before `max_train` touches anything, so it does not depend on it.
    test.shuffle(&mut rng);
    let total_train: usize = train_by_label.iter().map(Vec::len).sum();
    let mut subsampled_out = 0u64;
    if let Some(m) = max_train {
        if m == 0 {
            return Err(DataError::InvalidOption(
                "--max-train must be at least 1".into(),
            ));
        }
        if m < total_train {
            let quotas =
                proportional_quotas(&train_by_label.iter().map(Vec::len).collect::<Vec<_>>(), m);
            for (v, q) in train_by_label.iter_mut().zip(quotas) {
                // Already shuffled: keep a prefix.
                v.truncate(q);
            }
            subsampled_out = (total_train - m) as u64;
        }
    }
    let mut train: Vec<u32> = train_by_label.into_iter().flatten().collect();
    train.shuffle(&mut rng);
    Ok(Split {
        train,
        test,
        subsampled_out,
    })
}

/// Split `m` slots over groups of the given sizes proportionally (largest remainder, ties to the
/// earlier group), giving each non-empty group at least one slot while `m` allows.
pub fn proportional_quotas(sizes: &[usize], m: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    if m >= total {
        return sizes.to_vec();
    }
    let mut q: Vec<usize> = sizes.iter().map(|&s| s * m / total).collect();
    let mut rem: Vec<(usize, usize)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| ((s * m) % total, i))
        .collect();
    rem.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = m - q.iter().sum::<usize>();
    for &(_, i) in &rem {
        if left == 0 {
            break;
        }
        q[i] += 1;
        left -= 1;
    }
    // At least one per non-empty group: take from the largest quotas.
    for i in 0..sizes.len() {
        if sizes[i] > 0 && q[i] == 0 {
            if let Some(j) = (0..q.len()).filter(|&j| q[j] > 1).max_by_key(|&j| q[j]) {
                q[j] -= 1;
                q[i] = 1;
            }
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_count_clamps() {
        assert_eq!(test_count(2, 0.2), 1);
        assert_eq!(test_count(10, 0.2), 2);
        assert_eq!(test_count(100, 0.99), 99);
        assert_eq!(test_count(5, 0.0), 0);
    }

    #[test]
    fn quotas_sum_and_proportion() {
        let q = proportional_quotas(&[700, 300], 100);
        assert_eq!(q, vec![70, 30]);
        let q = proportional_quotas(&[1000, 1], 10);
        assert_eq!(q.iter().sum::<usize>(), 10);
        assert_eq!(q[1], 1);
        let q = proportional_quotas(&[5, 5, 5], 7);
        assert_eq!(q.iter().sum::<usize>(), 7);
        assert!(q.iter().all(|&x| x == 2 || x == 3));
    }
}
