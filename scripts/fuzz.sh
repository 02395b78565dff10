#!/usr/bin/env bash
# The fuzz targets (tests/fuzz.rs: property tests over generated inputs) for a bounded time
# each: `scripts/fuzz.sh [SECONDS]`, default 60 per target. All targets run at once, so the
# step takes about SECONDS plus the build. A failure prints the shrunk input; save it under
# tests/fixtures/fuzz/<target>/ as a regression fixture (every run replays those first).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
CLARITY_FUZZ_SECONDS="$seconds" cargo test --locked --test fuzz -- --test-threads=8
