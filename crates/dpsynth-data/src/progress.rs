//! Progress of long stages (training, synthesis, evaluation, reading big files): one home for
//! every crate that runs one.
//!
//! When stderr is a terminal, a [`StageBar`] draws an indicatif bar. When it is not (CI,
//! `nohup`, a cluster job's log file), it prints one plain line at most every
//! [`line_interval`] (`DPSYNTH_PROGRESS_SECS`, default 10 s), and always the first and the
//! last: `train: step 40/160 (25%) loss 3.456 ε≤1.234 | 4m10s elapsed, ETA 12m30s`. A stage
//! that moves slower than the interval prints one line per step.
//!
//! It lives in dpsynth-data because that is the lowest crate that already depends on
//! indicatif and that train, eval and the CLI all depend on; dpsynth-privacy has no UI and
//! must stay free of it.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between plain progress lines (`DPSYNTH_PROGRESS_SECS`, default 10, at least 0.1).
pub fn line_interval() -> Duration {
    let s = std::env::var("DPSYNTH_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(10.0)
        .max(0.1);
    Duration::from_secs_f64(s)
}

/// Whether stderr is a terminal (bars) or not (plain lines).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// `1h02m`, `4m10s`, `12s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

struct Lines {
    stage: String,
    unit: String,
    total: u64,
    pos: u64,
    /// Position when timing started (a resumed run does not count earlier steps).
    start_pos: u64,
    start: Instant,
    last: Option<Instant>,
    every: Duration,
    msg: String,
    done: bool,
}

impl Lines {
    fn line(&self) -> String {
        let elapsed = self.start.elapsed();
        let pct = if self.total > 0 {
            format!(" ({:.0}%)", 100.0 * self.pos as f64 / self.total as f64)
        } else {
            String::new()
        };
        let moved = self.pos.saturating_sub(self.start_pos);
        let eta = if moved > 0 && self.pos < self.total {
            let per = elapsed.as_secs_f64() / moved as f64;
            format!(
                ", ETA {}",
                format_duration(Duration::from_secs_f64(
                    per * (self.total - self.pos) as f64
                ))
            )
        } else {
            String::new()
        };
        let msg = if self.msg.is_empty() {
            String::new()
        } else {
            format!(" {}", self.msg)
        };
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!("{} ", self.unit)
        };
        format!(
            "{}: {unit}{}/{}{pct}{msg} | {} elapsed{eta}",
            self.stage,
            self.pos,
            self.total,
            format_duration(elapsed)
        )
    }

    fn maybe_print(&mut self, force: bool) {
        let now = Instant::now();
        let due = match self.last {
            None => true,
            Some(t) => now.duration_since(t) >= self.every,
        };
        if force || due {
            eprintln!("{}", self.line());
            self.last = Some(now);
        }
    }
}

#[derive(Clone)]
enum Kind {
    Bar(ProgressBar),
    Lines(Arc<Mutex<Lines>>),
    Hidden,
}

/// Progress of one stage: an indicatif bar on a terminal, throttled plain lines otherwise,
/// or nothing ([`StageBar::hidden`]). Cheap to clone (clones share the state).
#[derive(Clone)]
pub struct StageBar {
    kind: Kind,
}

impl StageBar {
    /// `total` units (e.g. "step", "records") of stage `stage`, on stderr: a bar when it is
    /// a terminal, plain lines otherwise.
    pub fn stderr(stage: &str, unit: &str, total: u64) -> Self {
        if stderr_is_terminal() {
            Self::bar(stage, unit, total)
        } else {
            Self::lines(stage, unit, total, line_interval())
        }
    }

    /// Always an indicatif bar (drawn only when stderr is a terminal).
    pub fn bar(stage: &str, unit: &str, total: u64) -> Self {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(&format!(
                "{stage:>12} [{{bar:30}}] {{pos}}/{{len}}{}{unit} {{msg}} ({{elapsed}} < {{eta}})",
                if unit.is_empty() { "" } else { " " }
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self { kind: Kind::Bar(b) }
    }

    /// Always plain lines, at most one per `every` (plus the first and the last).
    pub fn lines(stage: &str, unit: &str, total: u64, every: Duration) -> Self {
        Self {
            kind: Kind::Lines(Arc::new(Mutex::new(Lines {
                stage: stage.to_string(),
                unit: unit.to_string(),
                total,
                pos: 0,
                start_pos: 0,
                start: Instant::now(),
                last: None,
                every,
                msg: String::new(),
                done: false,
            }))),
        }
    }

    /// No output.
    pub fn hidden() -> Self {
        Self { kind: Kind::Hidden }
    }

    fn with_lines(&self, f: impl FnOnce(&mut Lines)) {
        if let Kind::Lines(l) = &self.kind {
            if let Ok(mut l) = l.lock() {
                f(&mut l)
            }
        }
    }

    /// Start at `pos` without counting it as progress (e.g. a resumed run).
    pub fn start_at(&self, pos: u64) {
        match &self.kind {
            Kind::Bar(b) => {
                b.set_position(pos);
                b.reset_eta();
            }
            Kind::Lines(_) => self.with_lines(|l| {
                l.pos = pos;
                l.start_pos = pos;
                l.start = Instant::now();
            }),
            Kind::Hidden => {}
        }
    }

    /// Set the text shown after the position (loss, ε, speed…). Plain lines show it in the
    /// next printed line.
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.kind {
            Kind::Bar(b) => b.set_message(msg),
            Kind::Lines(_) => self.with_lines(|l| l.msg = msg),
            Kind::Hidden => {}
        }
    }

    pub fn set_position(&self, pos: u64) {
        match &self.kind {
            Kind::Bar(b) => b.set_position(pos),
            Kind::Lines(_) => self.with_lines(|l| {
                l.pos = pos;
                l.maybe_print(false);
            }),
            Kind::Hidden => {}
        }
    }

    pub fn inc(&self, n: u64) {
        match &self.kind {
            Kind::Bar(b) => b.inc(n),
            Kind::Lines(_) => self.with_lines(|l| {
                l.pos += n;
                l.maybe_print(false);
            }),
            Kind::Hidden => {}
        }
    }

    /// Print a message line (above the bar on a terminal).
    pub fn println(&self, msg: impl AsRef<str>) {
        match &self.kind {
            Kind::Bar(b) => b.println(msg.as_ref()),
            Kind::Lines(_) => eprintln!("{}", msg.as_ref()),
            Kind::Hidden => {}
        }
    }

    /// Done: the bar stays on screen; plain lines print the final state once.
    pub fn finish(&self) {
        match &self.kind {
            Kind::Bar(b) => b.finish(),
            Kind::Lines(_) => self.with_lines(|l| {
                if !l.done {
                    l.done = true;
                    l.maybe_print(true);
                }
            }),
            Kind::Hidden => {}
        }
    }

    /// Done: the bar is removed; plain lines print the final state once.
    pub fn finish_and_clear(&self) {
        match &self.kind {
            Kind::Bar(b) => b.finish_and_clear(),
            _ => self.finish(),
        }
    }

    /// The line plain mode would print now (tests, logs).
    pub fn current_line(&self) -> Option<String> {
        match &self.kind {
            Kind::Lines(l) => l.lock().ok().map(|l| l.line()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_has_stage_position_message_and_eta() {
        let p = StageBar::lines("train", "step", 10, Duration::from_secs(3600));
        p.start_at(2);
        std::thread::sleep(Duration::from_millis(20));
        p.set_message("loss 1.234 ε≤0.500");
        p.set_position(4);
        let l = p.current_line().unwrap();
        assert!(
            l.starts_with("train: step 4/10 (40%) loss 1.234 ε≤0.500 | "),
            "{l}"
        );
        assert!(l.contains("ETA"), "{l}");
        p.finish();
        let l = p.current_line().unwrap();
        assert!(!l.contains("ETA") || l.contains("4/10"), "{l}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_secs(250)), "4m10s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn hidden_prints_nothing_and_has_no_line() {
        let p = StageBar::hidden();
        p.inc(3);
        assert!(p.current_line().is_none());
    }
}
