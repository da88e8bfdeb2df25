//! Test helpers shared by dpsynth's crates (a dev-dependency only; no library depends on it):
//! the real-asset lookup below and generated bad input for fuzz tests ([`fuzz`]).
//!
//! # Real assets
//! Tests that need a real asset (the SmolLM2 GGUF, MiniLM, the recipe datasets) look it up
//! with [`asset`] (a path under the assets directory) or [`found`] (the result of a crate's
//! own lookup). When the asset is missing the test is skipped with a line
//! `skipped: asset X missing` on stderr, unless `DPSYNTH_REQUIRE_ASSETS=1` is set (as
//! `scripts/test.sh`, and so `.ci/run`, do): then the lookup panics with a message naming the
//! asset, so that a real-asset test can never pass silently when its asset is absent.
//!
//! ```ignore
//! let Some(gguf) = dpsynth_testkit::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
//!     return; // skipped (only when assets are not required)
//! };
//! ```

use std::path::{Path, PathBuf};

pub mod fuzz;

/// Set to `1` to make a missing asset a test failure instead of a skip.
pub const REQUIRE_ASSETS_ENV: &str = "DPSYNTH_REQUIRE_ASSETS";

/// The assets directory: `$DPSYNTH_ASSETS` if set and non-empty, else `<workspace>/assets`.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("DPSYNTH_ASSETS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets"),
    }
}

/// Whether missing assets fail tests (`DPSYNTH_REQUIRE_ASSETS=1`, or `true`/`yes`).
pub fn assets_required() -> bool {
    std::env::var(REQUIRE_ASSETS_ENV)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// `rel` under [`assets_dir`] if it exists (file or directory). Otherwise panics when assets
/// are required, else prints `skipped: asset <path> missing` and returns `None`.
pub fn asset(rel: impl AsRef<Path>) -> Option<PathBuf> {
    let p = assets_dir().join(rel.as_ref());
    let what = p.display().to_string();
    found(&what, p.exists().then_some(p))
}

/// Report a lookup made elsewhere (e.g. `find_minilm_dir(None)`): `Some` passes through; for
/// `None` panics when assets are required, else prints `skipped: asset <what> missing`.
pub fn found<T>(what: &str, lookup: Option<T>) -> Option<T> {
    if lookup.is_none() {
        missing(what, assets_required());
    }
    lookup
}

fn missing(what: &str, required: bool) {
    if required {
        panic!(
            "asset {what} missing, and {REQUIRE_ASSETS_ENV}=1 forbids skipping: run \
             scripts/fetch-assets.sh or set DPSYNTH_ASSETS (unset {REQUIRE_ASSETS_ENV} to skip)"
        );
    }
    eprintln!(
        "skipped: asset {what} missing (run scripts/fetch-assets.sh or set DPSYNTH_ASSETS; \
         {REQUIRE_ASSETS_ENV}=1 makes this a failure)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_assets_pass_through() {
        assert_eq!(found("x", Some(3)), Some(3));
        // This crate's own manifest exists relative to the workspace assets' parent.
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(found("Cargo.toml", here.exists().then_some(&here)).is_some());
    }

    #[test]
    fn missing_asset_skips_when_not_required() {
        missing("nowhere/x.bin", false);
    }

    #[test]
    #[should_panic(expected = "asset nowhere/x.bin missing")]
    fn missing_asset_fails_when_required() {
        missing("nowhere/x.bin", true);
    }
}
