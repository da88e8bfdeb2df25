//! Render the report of a run or sweep directory: `cargo run -p dpsynth-report --example render DIR`.
fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: render DIR"));
    let w = if dpsynth_report::sweep::is_sweep_dir(&dir) {
        dpsynth_report::sweep::write_sweep_report(&dir)
    } else {
        dpsynth_report::report::write_run_report(
            &dir,
            &dpsynth_report::report::ReportOptions::new(),
        )
    }
    .expect("report");
    println!("{}", w.html.display());
}
