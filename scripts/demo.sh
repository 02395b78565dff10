#!/usr/bin/env bash
# The README demo: validate the example config repository and plan its `mock` profile, whose
# servers are local sandboxes under .clarity/demo (no real servers needed).
set -euo pipefail
cd "$(dirname "$0")/.."
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
cargo build --quiet
bin=target/debug/clarity-reconcile
repo=example-config-repo
work=.clarity/demo

echo "== clarity-reconcile validate --repo $repo"
"$bin" validate --repo "$repo"

echo
echo "== clarity-reconcile --repo $repo --profile mock --dry-run"
# The demo identity decrypts only the example's mock secrets (see example-config-repo/README.md).
status=0
CLARITY_AGE_IDENTITY="$repo/demo-mock.agekey" \
  "$bin" --repo "$repo" --profile mock --dry-run --work-dir "$work" || status=$?
# Exit 2 means "changes pending", which is what an empty sandbox should show.
if [ "$status" -ne 2 ] && [ "$status" -ne 0 ]; then
  exit "$status"
fi
echo
echo "demo: plan computed for the mock sandboxes under $work (exit $status: 2 = changes pending)"
