#!/usr/bin/env bash
# Benchmark: planning a generated fleet (benches/gen_fleet.py: 10,000 servers x 5 deployments,
# read from a git commit) against `ansible-inventory --list` over the same fleet, in one run.
# Prints, each the best of RUNS wall-clock times with the peak RSS of that run (GNU time):
#   - the cold `--dry-run --assume-empty-hosts` plan, text and JSON (empty work dir: no cache),
#   - `validate`,
#   - the incremental plan: one deployment file changed and committed, the plan cache warm,
#   - `ansible-inventory --list` and the ratio of its time to the cold text plan's.
# Usage: benches/fleet.sh   (CLIENTS=1000 SERVERS=10 RUNS=3 BENCH_DIR=<dir> to change)
# Needs python3 (venv) and GNU time (`time` package); ansible-core is installed from pip's
# configured index into a venv under target/. Figures go to docs/performance.md ("Planning").
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${CLIENTS:-1000}" servers="${SERVERS:-10}" runs="${RUNS:-3}"
work="${BENCH_DIR:-$(mktemp -d)}"
repo="$work/fleet"
inventory="$work/ansible-inventory.yml"
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
if [ ! -d "$repo/.git" ]; then
  python3 benches/gen_fleet.py "$repo" --clients "$clients" --servers "$servers" \
    --ansible-inventory "$inventory"
fi
cargo build --release --quiet
bin="$PWD/target/release/clarity-reconcile"
venv="$PWD/target/ansible-venv"
if [ ! -x "$venv/bin/ansible-inventory" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ansible-core
fi

# measure LABEL SETUP COMMAND...: best of $runs; SETUP (a shell snippet) runs before each try,
# untimed. Prints the line and leaves the best seconds in $best.
measure() {
  local label="$1" setup="$2"; shift 2
  best="" rss=""
  for _ in $(seq "$runs"); do
    eval "$setup"
    /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >/dev/null 2>"$work/stderr" || true
    # GNU time puts "Command exited with non-zero status N" first (a plan with changes exits 2).
    read -r t kb < <(tail -n 1 "$work/time.out")
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t rss=$kb; fi
  done
  printf '%-58s %7.3f s  %5d MiB peak RSS\n' "$label" "$best" "$((rss / 1024))"
}

plan=("$bin" --repo "$repo" --rev HEAD --dry-run --assume-empty-hosts)
n=$((clients * servers))
echo "fleet: $n servers x 5 deployments; $(nproc) cores; best of $runs"
fresh='rm -rf "$work/wd"'
measure "plan, text, cold (no cache)" "$fresh" "${plan[@]}" --work-dir "$work/wd"
cold_text=$best
measure "plan, JSON, cold (no cache)" "$fresh" "${plan[@]}" --work-dir "$work/wd" --output json
measure "validate" "" "$bin" validate --repo "$repo" --rev HEAD

# Incremental: a warm cache, then one deployment file changes (its port) and is committed.
rm -rf "$work/wd"
"${plan[@]}" --work-dir "$work/wd" >/dev/null 2>&1 || true
dep="clients/client-0000/deployments/smsgateway/prod.yml"
port=20000
# Each try changes the file again, so every timed plan sees exactly one changed file against
# the cache the previous plan left.
change='port=$((port + 1)); sed -i "s/^  port: .*/  port: $port/" "$repo/$dep"; git -C "$repo" -c user.name=bench -c user.email=bench@clarity.invalid commit -qam "port $port"'
measure "plan, text, after one deployment file changed" "$change" "${plan[@]}" --work-dir "$work/wd" -v
grep -h "plan cache:" "$work/stderr" || true

measure "ansible-inventory --list, same $n hosts" "" "$venv/bin/ansible-inventory" -i "$inventory" --list
printf 'ratio: ansible-inventory --list / cold text plan = %.1fx (target >= 40x)\n' \
  "$(echo "$best / $cold_text" | bc -l)"
