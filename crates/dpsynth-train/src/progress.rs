//! Progress of training and synthesis on stderr, for the CLI: an indicatif bar on a
//! terminal, one plain line every few seconds otherwise (stage, step/total, loss, ε spent so
//! far, ETA), through the one progress home [`dpsynth_data::progress::StageBar`].

use dpsynth_data::progress::StageBar;

use crate::synth::SynthProgress;
use crate::train::{Progress, StepInfo};

/// Console progress for one stage (`train`, `synthesize`).
pub struct ConsoleProgress {
    stage: String,
    /// Printed before [`Progress::message`] lines (e.g. `"  train: "`).
    prefix: String,
    /// Remove the bar when done (a pipeline's later stages follow).
    clear: bool,
    bar: Option<StageBar>,
}

impl ConsoleProgress {
    /// Progress named `stage`; messages are printed as they come.
    pub fn new(stage: &str) -> Self {
        Self {
            stage: stage.to_string(),
            prefix: String::new(),
            clear: false,
            bar: None,
        }
    }

    /// Messages get `prefix`; the bar is cleared when the stage ends.
    pub fn for_pipeline(stage: &str, prefix: &str) -> Self {
        Self {
            stage: stage.to_string(),
            prefix: prefix.to_string(),
            clear: true,
            bar: None,
        }
    }

    fn say(&self, msg: &str) {
        let line = format!("{}{msg}", self.prefix);
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            if self.clear {
                b.finish_and_clear()
            } else {
                b.finish()
            }
        }
    }
}

/// The progress message of one training step: loss, batch, ε so far.
pub fn step_message(i: &StepInfo) -> String {
    let eps = i
        .epsilon
        .map(|e| format!("ε≤{e:.3}"))
        .unwrap_or_else(|| "no DP".into());
    format!(
        "loss {:.4} batch {} {eps} {:.1} s/step",
        i.loss, i.batch, i.seconds
    )
}

impl Progress for ConsoleProgress {
    fn start(&mut self, total: u64, done: u64) {
        let b = StageBar::stderr(&self.stage, "step", total);
        b.start_at(done);
        self.bar = Some(b);
    }
    fn step(&mut self, i: &StepInfo) {
        if let Some(b) = &self.bar {
            b.set_message(step_message(i));
            b.set_position(i.step);
        }
    }
    fn message(&mut self, msg: &str) {
        self.say(msg);
    }
    fn finish(&mut self) {
        self.end();
    }
}

impl SynthProgress for ConsoleProgress {
    fn start(&mut self, total: usize) {
        self.bar = Some(StageBar::stderr(&self.stage, "records", total as u64));
    }
    fn written(&mut self, done: usize, tokens_per_second: f64) {
        if let Some(b) = &self.bar {
            // 0 means "no new measurement" (per-record calls): keep the last rate.
            if tokens_per_second > 0.0 {
                b.set_message(format!("{tokens_per_second:.0} tok/s"));
            }
            b.set_position(done as u64);
        }
    }
    fn message(&mut self, msg: &str) {
        self.say(msg);
    }
    fn finish(&mut self) {
        self.end();
    }
}
