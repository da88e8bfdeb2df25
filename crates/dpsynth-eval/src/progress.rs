//! Progress reporting for long evaluation steps: [`dpsynth_data::progress::StageBar`] (a bar
//! on a terminal, a plain line every few seconds otherwise), or nothing.

pub use dpsynth_data::progress::StageBar;

/// Where progress goes: stderr (the CLI) or nowhere (tests, library callers that draw their
/// own). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Progress on stderr (bars on a terminal, plain lines otherwise).
    pub fn stderr() -> Self {
        Self { enabled: true }
    }
    /// No output.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }
    /// Progress of `total` units of work named `what`.
    pub fn bar(&self, what: &str, total: u64) -> StageBar {
        if !self.enabled {
            return StageBar::hidden();
        }
        StageBar::stderr(what, "", total)
    }
    /// Print a status line when enabled.
    pub fn note(&self, msg: &str) {
        if self.enabled {
            eprintln!("{msg}");
        }
    }
}
