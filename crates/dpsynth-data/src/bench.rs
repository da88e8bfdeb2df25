//! Benchmarks printed by `dpsynth bench` (measure with `--release`): reading and splitting a
//! synthetic CSV. The numbers for the 1 GB case are in the crate's report (`/usr/bin/time -v`).

use std::io::{BufWriter, Write};
use std::time::Instant;

use crate::read::{read_file, Columns, ReadOptions};
use crate::split::stratified_split;

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Write a synthetic CSV (`id,text,label`, ~100-char texts, 4 labels, every 10th text quoted with
/// a comma) of about `bytes` bytes; returns the row count.
pub fn write_synthetic_csv(path: &std::path::Path, bytes: u64) -> std::io::Result<u64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"id,text,label\n")?;
    let labels = ["business", "sport", "tech", "politics"];
    let words = [
        "alpha", "beta", "gamma", "delta", "market", "match", "chip", "vote", "rises", "falls",
        "again", "today",
    ];
    let (mut n, mut size) = (0u64, 14u64);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while size < bytes {
        let mut t = String::with_capacity(128);
        while t.len() < 100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t.push_str(words[(x % words.len() as u64) as usize]);
            t.push(' ');
        }
        let line = if n % 10 == 0 {
            format!(
                "{n},\"{}, {n}\",{}\n",
                t.trim_end(),
                labels[(n % 4) as usize]
            )
        } else {
            format!("{n},{}{n},{}\n", t, labels[(n % 4) as usize])
        };
        w.write_all(line.as_bytes())?;
        size += line.len() as u64;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// (description, seconds): read + validate a 64 MiB synthetic CSV, then split it.
pub fn bench_rows() -> Vec<(String, f64)> {
    let mut rows = Vec::new();
    let path = std::env::temp_dir().join(format!("dpsynth-bench-{}.csv", std::process::id()));
    let size = 64u64 << 20;
    let n = match write_synthetic_csv(&path, size) {
        Ok(n) => n,
        Err(e) => {
            rows.push((
                format!("data: cannot write {} ({e})", path.display()),
                f64::NAN,
            ));
            return rows;
        }
    };
    let opts = ReadOptions {
        columns: Columns {
            id: Some("id".into()),
            ..Columns::default()
        },
        ..ReadOptions::default()
    };
    let t = Instant::now();
    let r = read_file(&path, &opts);
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    match r {
        Ok(r) => {
            rows.push((
                format!(
                    "data: read+validate 64 MiB CSV ({n} rows, {:.0} MiB/s, peak RSS {:.0} MiB)",
                    64.0 / secs,
                    peak_rss_mib().unwrap_or(f64::NAN)
                ),
                secs,
            ));
            let t = Instant::now();
            let s = stratified_split(&r.loaded.data, &r.loaded.kept, 0.2, 0, None);
            rows.push((
                format!(
                    "data: stratified split of {} records",
                    s.map(|s| s.train.len() + s.test.len()).unwrap_or(0)
                ),
                t.elapsed().as_secs_f64(),
            ));
        }
        Err(e) => rows.push((format!("data: read failed: {e}"), f64::NAN)),
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_csv_reads_back_completely() {
        let d = std::env::temp_dir().join(format!("dpsynth-bench-test-{}.csv", std::process::id()));
        let n = write_synthetic_csv(&d, 64 << 10).unwrap();
        let opts = ReadOptions {
            columns: Columns {
                id: Some("id".into()),
                ..Columns::default()
            },
            on_invalid: crate::OnInvalid::Error,
            ..ReadOptions::default()
        };
        let r = read_file(&d, &opts).unwrap();
        std::fs::remove_file(&d).unwrap();
        assert!(n > 400);
        assert_eq!(r.loaded.kept.len() as u64, n);
        assert_eq!(r.loaded.histogram().len(), 4);
    }
}
