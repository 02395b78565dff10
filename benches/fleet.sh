#!/usr/bin/env bash
# Benchmark: `validate` (and, where available, the plan) over a generated repository of 10,000
# servers × 5 deployments, read from a git commit. Prints the figures; the target for validate
# is under 2 s on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${CLIENTS:-1000}" servers="${SERVERS:-10}"
work="${BENCH_DIR:-$(mktemp -d)}"
repo="$work/fleet"
[ -d "$repo/.git" ] || python3 benches/gen_fleet.py "$repo" --clients "$clients" --servers "$servers"
cargo build --release --quiet
bin=target/release/clarity-reconcile

time_it() { # label, command... → best of 3 wall-clock seconds
  local label="$1"; shift
  local best=""
  for _ in 1 2 3; do
    local start end
    start=$(date +%s.%N); "$@" >/dev/null || true; end=$(date +%s.%N)
    local t; t=$(echo "$end - $start" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%-48s %6.3f s\n' "$label" "$best"
}

"$bin" validate --repo "$repo" --rev HEAD | tail -1
time_it "validate, $((clients * servers)) servers x 5 deployments" "$bin" validate --repo "$repo" --rev HEAD
time_it "plan (--dry-run) against empty actual states" "$bin" --repo "$repo" --rev HEAD --dry-run --assume-empty-hosts --output json
