//! Recompute an audit's bound at another δ from its audit.json:
//! `cargo run -p dpsynth-audit --example rebound AUDIT_JSON DELTA`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let r = dpsynth_audit::AuditReport::read(std::path::Path::new(&a[1]))?;
    let delta: f64 = a[2].parse()?;
    let s: Vec<f64> = r.per_canary.iter().map(|c| c.score).collect();
    let i: Vec<bool> = r.per_canary.iter().map(|c| c.inserted).collect();
    let b = dpsynth_audit::bound_from_scores(&s, &i, delta, r.confidence)?;
    println!("{b:?}");
    Ok(())
}
