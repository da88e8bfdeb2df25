#!/usr/bin/env bash
# The test command: fetch and verify assets (no work when present), then run every test of the
# workspace. Real-asset tests (SmolLM2, MiniLM, the datasets) run because the assets are there;
# DPSYNTH_REQUIRE_ASSETS=1 makes a missing asset a failure instead of a skip (dpsynth-testkit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null 2>&1 || { echo "test: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
scripts/fetch-assets.sh
export DPSYNTH_ASSETS="${DPSYNTH_ASSETS:-$PWD/assets}"
export DPSYNTH_REQUIRE_ASSETS="${DPSYNTH_REQUIRE_ASSETS:-1}"
cargo test --workspace --locked "$@"
