#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian packages),
# then runs rustfmt, clippy and every test. CI runs exactly this (through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: build prerequisites (OpenSSL headers for libssh2), then what the tests
# exercise for real: git, the age CLI (secrets interop), python3 and a JRE (the example repo's
# demo artifacts), headless Chromium with its WebDriver (the dashboard's browser tests), and
# the container runtimes (docker and lxc artifacts).
# One package a line, so that additions merge cleanly.
packages=(
  build-essential dpkg-dev pkg-config libssl-dev
  git age gnupg openssh-client openssh-server curl openssl
  python3 python3-venv default-jre-headless
  postgresql nginx apache2-utils vsftpd supervisor
  systemd-container debootstrap
  zsh fish
  bsdutils  # script(1): the pseudo-terminal tests/terminal.rs runs an apply under
  chromium chromium-driver
  docker.io podman runc catatonit lxc busybox-static
)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Test servers that come from PyPI (moto's S3-compatible server), in a venv of their own:
# pip's configured index, no host named here.
export CLARITY_TEST_VENV="${CLARITY_TEST_VENV:-/opt/clarity-test-venv}"
if [ ! -x "$CLARITY_TEST_VENV/bin/moto_server" ]; then
  echo "creating $CLARITY_TEST_VENV (moto[server])"
  /usr/bin/python3 -m venv "$CLARITY_TEST_VENV"
  "$CLARITY_TEST_VENV/bin/pip" install -q 'moto[server]'
fi

# Tests run git; make sure commits work on a machine without a global identity.
export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-clarity-tests}" GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-tests@clarity.invalid}"
export GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-clarity-tests}" GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-tests@clarity.invalid}"

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked --no-fail-fast
# Fuzz targets, 60 s each (they run side by side, so about a minute in all).
scripts/fuzz.sh 60
