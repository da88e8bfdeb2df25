//! Progress reporting for long evaluation steps (indicatif bars on stderr, or nothing).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes: bars on stderr (the CLI) or nowhere (tests, library callers that
/// draw their own). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Progress bars on stderr.
    pub fn stderr() -> Self {
        Self { enabled: true }
    }
    /// No output.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }
    /// A bar for `total` units of work named `what`.
    pub fn bar(&self, what: &str, total: u64) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:>28} [{bar:30}] {pos}/{len} ({elapsed} elapsed, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        pb
    }
    /// Print a status line (above any bars) when enabled.
    pub fn note(&self, msg: &str) {
        if self.enabled {
            eprintln!("{msg}");
        }
    }
}
