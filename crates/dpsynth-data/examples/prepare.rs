//! `dpsynth data prepare` without the rest of the CLI, for time/memory measurements of the data
//! path alone (same library call as the CLI):
//!
//! `cargo run --release -p dpsynth-data --example prepare -- SOURCE OUT_DIR [TEXT_COL LABEL_COL [ID_COL]]`
//!
//! e.g. `/usr/bin/time -v target/release/examples/prepare rotten-tomatoes /tmp/rt`.

use dpsynth_data::{prepare, Columns, PrepareOptions, Source};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 2 {
        eprintln!("usage: prepare SOURCE OUT_DIR [TEXT_COL LABEL_COL [ID_COL]]");
        std::process::exit(2);
    }
    let source = match Source::parse(&a[0]) {
        Source::File { path, format, .. } => Source::File {
            path,
            format,
            columns: Columns {
                text: a.get(2).cloned().unwrap_or_else(|| "text".into()),
                label: a.get(3).cloned().unwrap_or_else(|| "label".into()),
                id: a.get(4).cloned(),
                user: None,
            },
        },
        r => r,
    };
    let mut o = PrepareOptions::new(&a[1]);
    o.progress = true;
    let t = std::time::Instant::now();
    match prepare(&source, &o) {
        Ok(s) => println!(
            "{}: read {} kept {} (train {}, test {}) labels {:?} dropped {} in {:.2}s",
            s.source,
            s.rows_read,
            s.records,
            s.train,
            s.test,
            s.labels,
            s.drops.total_dropped(),
            t.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
