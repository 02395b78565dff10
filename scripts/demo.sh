#!/usr/bin/env bash
# The README demo: validate the example config repository, apply its `mock` profile (local
# sandboxes under .clarity/demo: artifacts fetched and verified, releases installed, services
# started, health checks passing), then plan again to show there is nothing left to do.
#   scripts/demo.sh        run the demo
#   scripts/demo.sh stop   take the demo off the sandboxes (clarity-reconcile decommission --profile mock)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=example-config-repo
work="${CLARITY_DEMO_WORK_DIR:-.clarity/demo}"

if [ "${1:-}" = "stop" ]; then
  # Take the demo's deployments off the mock sandboxes the way an operator decommissions a
  # server: services stopped, releases removed, data volumes kept; recorded in the ledger.
  bin="${CLARITY_DEMO_BIN:-}"
  if [ -z "$bin" ]; then
    cargo build --quiet
    bin=target/debug/clarity-reconcile
  fi
  exec "$bin" decommission --repo "$repo" --profile mock --work-dir "$work"
fi

# Build prerequisites (OpenSSL headers for libssh2) and what the demo services run on.
missing=()
for p in build-essential pkg-config libssl-dev python3 default-jre-headless; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Tests pass the binary they built (a nested `cargo build` would wait on their build lock).
bin="${CLARITY_DEMO_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --quiet
  bin=target/debug/clarity-reconcile
fi
# The demo identity decrypts only the example's mock secrets (see example-config-repo/README.md).
export CLARITY_AGE_IDENTITY="$repo/demo-mock.agekey"

echo "== clarity-reconcile validate --repo $repo"
"$bin" validate --repo "$repo"

echo
echo "== clarity-reconcile --repo $repo --profile mock   (apply)"
"$bin" --repo "$repo" --profile mock --work-dir "$work"

echo
echo "== clarity-reconcile --repo $repo --profile mock --dry-run   (again: nothing to do)"
"$bin" --repo "$repo" --profile mock --work-dir "$work" --dry-run

echo
echo "demo: the mock sandboxes under $work are converged and their services are running:"
echo "  curl http://127.0.0.1:18080/        # nordtel's smsgateway (a real jar)"
echo "  curl http://127.0.0.1:18090/metrics # nordtel's monitoring exporter"
echo "stop them with: scripts/demo.sh stop"
