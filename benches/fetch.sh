#!/usr/bin/env bash
# Benchmark: downloading and verifying a 1 GiB artifact over loopback HTTP. Times Clarity's
# `agent fetch` (download, sha256 while writing, fsync, verify, rename into the cache) against
# `curl -o` alone and `curl -o` followed by `sha256sum`, and Clarity's hashing (`agent hash`)
# against `openssl dgst -sha256` on the same file. Best of RUNS (default 3) wall-clock times,
# then the ratios. The server is nginx (sendfile, so it is not the bottleneck) when installed,
# python's http.server otherwise. Everything lives in one temporary directory, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-1024}"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
bin="$PWD/target/release/clarity-reconcile"

mkdir -p "$work/www"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/www/artifact.bin"
sha="$(openssl dgst -sha256 -r "$work/www/artifact.bin" | cut -d' ' -f1)"
bytes="$(stat -c %s "$work/www/artifact.bin")"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  server="nginx"
  mkdir -p "$work/nginx/tmp"
  cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $work/nginx/tmp/client;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    default_type application/octet-stream;
    server { listen 127.0.0.1:$port; root $work/www; }
}
EOF
  PATH="$PATH:/usr/sbin" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
else
  server="python3 http.server"
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
fi
server_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done
url="http://127.0.0.1:$port/artifact.bin"

best() { # label, setup command (untimed, may be ""), command... → prints and sets $result
  local label="$1" setup="$2"; shift 2
  local b=""
  for _ in $(seq "$runs"); do
    [ -n "$setup" ] && eval "$setup"
    local start end t
    start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc -l)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc -l)" = 1 ]; then b=$t; fi
  done
  result=$b
  printf '  %-46s %7.3f s  %7.0f MiB/s\n' "$label" "$b" "$(echo "$size_mib / $b" | bc -l)"
}

curl_then_sha256sum() { curl -sS -o "$work/curl.bin" "$url" && sha256sum "$work/curl.bin"; }

echo "artifact: $bytes bytes over loopback HTTP ($server), $(nproc) cores, best of $runs"
echo "download and verify:"
best "clarity-reconcile agent fetch" 'rm -rf "$work/cache"' \
  "$bin" agent fetch --url "$url" --sha256 "$sha" --size "$bytes" --cache "$work/cache"
t_clarity=$result
[ "$(stat -c %s "$work/cache/$sha")" = "$bytes" ] || { echo "clarity's cached file is wrong" >&2; exit 1; }
best "curl -o (no verification)" 'rm -f "$work/curl.bin"' curl -sS -o "$work/curl.bin" "$url"
t_curl=$result
best "curl -o, then sha256sum" 'rm -f "$work/curl.bin"' curl_then_sha256sum
t_curl_sum=$result
echo "hash the same file (page cache warm):"
best "clarity-reconcile agent hash" "" "$bin" agent hash "$work/www/artifact.bin"
t_hash=$result
[ "$("$bin" agent hash "$work/www/artifact.bin")" = "$sha" ] || { echo "hashes differ" >&2; exit 1; }
best "openssl dgst -sha256" "" openssl dgst -sha256 "$work/www/artifact.bin"
t_openssl=$result
best "sha256sum" "" sha256sum "$work/www/artifact.bin"

echo "ratios (below 1 is faster):"
printf '  %-46s %7.2f\n' "clarity fetch / curl -o" "$(echo "$t_clarity / $t_curl" | bc -l)"
printf '  %-46s %7.2f\n' "clarity fetch / (curl -o, then sha256sum)" "$(echo "$t_clarity / $t_curl_sum" | bc -l)"
printf '  %-46s %7.2f\n' "clarity hash / openssl dgst -sha256" "$(echo "$t_hash / $t_openssl" | bc -l)"
echo "(clarity fetch also fsyncs the file before the rename; curl does not)"
