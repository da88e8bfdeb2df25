//! `cargo run --release -p dpsynth-privacy --example bench`: the rows `dpsynth bench` prints, plus
//! the process CPU time (Linux /proc) so numbers on a shared machine can be read alongside.

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let c0 = cpu_seconds();
    let t0 = std::time::Instant::now();
    for (name, secs) in dpsynth_privacy::bench::bench_rows() {
        println!("{secs:>9.4} s  {name}");
    }
    if let (Some(a), Some(b)) = (c0, cpu_seconds()) {
        println!(
            "total: wall {:.2} s, CPU {:.2} s",
            t0.elapsed().as_secs_f64(),
            b - a
        );
    }
}
