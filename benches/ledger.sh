#!/usr/bin/env bash
# Benchmark: the ledger and the git notes at 10,000 runs (3 hosts, 2 deployments, 12 steps per
# host each). Writes them one run at a time (each a SQLite transaction with fsync, each a notes
# commit) and in one batch, reads them back, then times `clarity-reconcile history` and git's
# own note readers over the result. Prints the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-10000}"
work="${BENCH_DIR:-$(mktemp -d)}/ledger-bench"
rm -rf "$work"
cargo build --release --quiet --bin clarity-reconcile --example ledger_bench
bin=target/release/clarity-reconcile

echo "== writing (examples/ledger_bench.rs)"
out=$(target/release/examples/ledger_bench "$work" "$runs")
echo "$out" | grep -v -E '^(RUN_ID|COMMIT) '
run_id=$(echo "$out" | sed -n 's/^RUN_ID //p')
commit=$(echo "$out" | sed -n 's/^COMMIT //p')

time_it() { # label, command... → best of 3 wall-clock seconds
  local label="$1"; shift
  local best=""
  for _ in 1 2 3; do
    local start end
    start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N)
    local t; t=$(echo "$end - $start" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%-52s %8.3f s\n' "$label" "$best"
}

echo "== reading (best of 3)"
ledger="$work/ledger.sqlite"
time_it "history (text, newest 20)" "$bin" history --ledger "$ledger"
time_it "history --limit 0 (text, all $runs runs)" "$bin" history --ledger "$ledger" --limit 0
time_it "history --limit 0 --output json" "$bin" history --ledger "$ledger" --limit 0 --output json
time_it "history --server app-07 --since 2026-10-01" "$bin" history --ledger "$ledger" --server app-07 --since 2026-10-01
time_it "history show RUN" "$bin" history --ledger "$ledger" show "$run_id"
time_it "git notes --ref=clarity show COMMIT" git -C "$work/repo" notes --ref=clarity show "$commit"
time_it "git log --notes=clarity -n 100" git -C "$work/repo" log --notes=clarity -n 100
time_it "git log --notes=clarity (all $runs commits)" git -C "$work/repo" log --notes=clarity
echo "history --limit 0 printed $("$bin" history --ledger "$ledger" --limit 0 | wc -l) lines"
du -sh "$work/repo/.git" "$ledger" | sed 's/^/size: /'
