//! The machine description and result table printed by `dpsynth bench`.

use std::fmt::Write as _;

/// What a benchmark ran on.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs listed in /proc/cpuinfo (or available parallelism).
    pub logical_cpus: usize,
    /// CPUs this process may use (affinity / cgroup limits).
    pub available_cpus: usize,
    pub memory_gib: Option<f64>,
    /// Worker threads the benchmarks use.
    pub threads: usize,
    /// `release` or `debug` (with its opt-level), given by the binary.
    pub profile: String,
    pub flags: Vec<String>,
}

/// Parse /proc/cpuinfo text: (model name, logical CPU count, notable SIMD flags).
pub fn parse_cpuinfo(text: &str) -> (Option<String>, usize, Vec<String>) {
    let mut model = None;
    let mut n = 0;
    let mut flags = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        let v = v.trim();
        if k == "processor" {
            n += 1;
        } else if k == "model name" && model.is_none() {
            model = Some(v.to_string());
        } else if k == "flags" && flags.is_empty() {
            for f in ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"] {
                if v.split_whitespace().any(|x| x == f) {
                    flags.push(f.to_string());
                }
            }
        }
    }
    (model, n, flags)
}

/// Parse MemTotal (kB) from /proc/meminfo text, in GiB.
pub fn parse_meminfo(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
}

impl Machine {
    /// Describe this machine. `threads` is what the benchmarks use, `profile` the build profile.
    pub fn detect(threads: usize, profile: &str) -> Machine {
        let (model, n, flags) = std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| parse_cpuinfo(&t))
            .unwrap_or((None, 0, Vec::new()));
        let avail = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Machine {
            cpu_model: model.unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            logical_cpus: if n > 0 { n } else { avail },
            available_cpus: avail,
            memory_gib: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| parse_meminfo(&t)),
            threads,
            profile: profile.to_string(),
            flags,
        }
    }

    /// Key/value lines.
    pub fn rows(&self) -> Vec<(String, String)> {
        vec![
            ("CPU".into(), self.cpu_model.clone()),
            (
                "cores".into(),
                format!(
                    "{} logical, {} available to this process",
                    self.logical_cpus, self.available_cpus
                ),
            ),
            (
                "memory".into(),
                self.memory_gib
                    .map(|g| format!("{g:.1} GiB"))
                    .unwrap_or_else(|| "unknown".into()),
            ),
            ("threads".into(), self.threads.to_string()),
            ("build profile".into(), self.profile.clone()),
            (
                "SIMD".into(),
                if self.flags.is_empty() {
                    "—".into()
                } else {
                    self.flags.join(" ")
                },
            ),
        ]
    }
}

/// One benchmark result.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub suite: String,
    pub name: String,
    pub value: String,
    pub unit: String,
    pub note: String,
}

/// Format the machine and the results as one plain-text table.
pub fn format_bench_table(m: &Machine, rows: &[BenchRow]) -> String {
    let mut o = String::new();
    for (k, v) in m.rows() {
        let _ = writeln!(o, "{k:>14}: {v}");
    }
    o.push('\n');
    let head = ["suite", "benchmark", "value", "unit", "note"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.suite.as_str(),
                r.name.as_str(),
                r.value.as_str(),
                r.unit.as_str(),
                r.note.as_str(),
            ]
        })
        .collect();
    let mut w = head.map(|h| h.chars().count());
    for c in &cells {
        for i in 0..5 {
            w[i] = w[i].max(c[i].chars().count());
        }
    }
    let line = |c: [&str; 5]| {
        let mut s = String::new();
        for i in 0..5 {
            let pad = w[i] - c[i].chars().count();
            if i == 2 {
                s.push_str(&" ".repeat(pad));
                s.push_str(c[i]);
            } else {
                s.push_str(c[i]);
                if i < 4 {
                    s.push_str(&" ".repeat(pad));
                }
            }
            if i < 4 {
                s.push_str("  ");
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(o, "{}", line(head));
    let _ = writeln!(
        o,
        "{}",
        w.iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for c in cells {
        let _ = writeln!(o, "{}", line(c));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_and_formats_a_table() {
        let cpu = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n";
        let (m, n, f) = parse_cpuinfo(cpu);
        assert_eq!(m.as_deref(), Some("Intel(R) Xeon(R) Platinum 8481C"));
        assert_eq!(n, 2);
        assert_eq!(f, vec!["avx2", "fma", "avx512f", "avx512_bf16"]);
        let g = parse_meminfo("MemTotal:       24576000 kB\nMemFree: 1 kB\n").unwrap();
        assert!((g - 23.4375).abs() < 1e-9);
        let mach = Machine {
            cpu_model: "X".into(),
            logical_cpus: 2,
            available_cpus: 2,
            memory_gib: Some(g),
            threads: 2,
            profile: "release".into(),
            flags: vec![],
        };
        let t = format_bench_table(
            &mach,
            &[BenchRow {
                suite: "privacy".into(),
                name: "pld epsilon".into(),
                value: "12.5".into(),
                unit: "ms".into(),
                note: "".into(),
            }],
        );
        assert!(t.contains("CPU: X"));
        assert!(t.contains("build profile: release"));
        assert!(t.contains("privacy  pld epsilon   12.5  ms"), "{t}");
        // Detect on this machine does not panic and finds at least one CPU.
        assert!(Machine::detect(1, "test").logical_cpus >= 1);
    }
}
