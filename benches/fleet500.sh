#!/usr/bin/env bash
# Benchmark: one no-op pass over 500 hosts over real SSH (issue 14, item 6).
#
#   sudo bash benches/fleet500.sh                    # 500 hosts, about 5 minutes on 2 cores
#   sudo FLEET500_HOSTS=50 bash benches/fleet500.sh  # a smaller fleet first
#
# Sets up FLEET500_HOSTS (500) network namespaces f5h1..f5hN, each with its own sshd (own host
# key, hostname and view of /opt/clarity and /var/lib/clarity) on a bridge inside namespace
# f5ctl, from which both tools connect (benches/lib_hosts.sh; the hosts are the ones of
# benches/fleet_ssh.sh, repository from benches/fleet_ssh/gen_repo.py). Every host is converged
# first (Clarity, `local` transport); the agent that host 1 receives over SSH is hard-linked
# into every other host (500 copies would not fit on the disk). Then it measures:
#   - plain ssh (xargs -P FLEET500_PARALLEL, curve25519, one command per host): the floor;
#   - clarity-reconcile --dry-run --parallel FLEET500_PARALLEL: wall time, peak RSS
#     (/usr/bin/time -f %M; target < 500 MB), peak open fds and threads (/proc/PID/fd sampled
#     every 5 ms), and the ratio to plain ssh (best of 2 each);
#   - the same pass with one host slowed by `tc netem delay 2s` on its own eth0 (or, where the
#     kernel has no netem, by the same 2 s in fleet500/delay_proxy.py): every other host's
#     time, read from the hosts' own session logs (bashrc timestamps), must not grow.
# Prints a table and writes it to $FLEET500_DIR/logs/results.txt. Everything it starts or
# creates is stopped (by PID) and removed on exit (trap), also on failure or a signal, except
# the client key and the logs. Needs root. Not run by CI.
#
# Settings: FLEET500_HOSTS (500, 1..500), FLEET500_PARALLEL (100), FLEET500_DIR
# (target/fleet500), FLEET500_DEADLINE (1800 s: the run gets SIGTERM and cleans up),
# FLEET500_NO_BUILD=1 (do not run cargo build --release), CLARITY_BIN (another build to measure).
set -euo pipefail

benches=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib_hosts.sh
. "$benches/lib_hosts.sh"
lh_become_subreaper "$0" "$@"

root_dir=$(cd "$benches/.." && pwd)
# shellcheck source=harness_net.sh
. "$benches/harness_net.sh"
hosts_n=${FLEET500_HOSTS:-500}
parallel=${FLEET500_PARALLEL:-100}
deadline=${FLEET500_DEADLINE:-1800}
bin=${CLARITY_BIN:-$root_dir/target/release/clarity-reconcile}
python=/usr/bin/python3
LH_TAG=fleet500
LH_DIR=${FLEET500_DIR:-$root_dir/target/fleet500}
LH_CTL=f5ctl
LH_BRIDGE=f5br0
LH_PREFIX=${HARNESS_BENCH_FLEET500_NET#*/}
net_base=${HARNESS_BENCH_FLEET500_NET%/*} # 10.77.2.0: hosts 1..250 on .2.x, 251..500 on .3.x
IFS=. read -r o1 o2 o3 _ <<<"$net_base"
LH_BRIDGE_CIDR=$o1.$o2.$o3.1/$LH_PREFIX
addr() { # f5hN → its address in the /23, never a .0 or .255
  local n=${1#f5h}
  if [ "$n" -le 250 ]; then echo "$o1.$o2.$o3.$((n + 4))"; else echo "$o1.$o2.$((o3 + 1)).$((n - 250 + 4))"; fi
}

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, sshd per host, tc)"
[ "$LH_PREFIX" = 23 ] || die "HARNESS_BENCH_FLEET500_NET must be a /23"
[[ $hosts_n =~ ^[0-9]+$ ]] && [ "$hosts_n" -ge 2 ] && [ "$hosts_n" -le 500 ] ||
  die "FLEET500_HOSTS must be 2..500"
[[ $parallel =~ ^[0-9]+$ ]] && [ "$parallel" -ge 1 ] || die "FLEET500_PARALLEL must be a number"
[[ $deadline =~ ^[0-9]+$ ]] || die "FLEET500_DEADLINE must be whole seconds"
[[ $LH_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || die "FLEET500_DIR must be an absolute path without spaces"
lh_require_tools tc iptables /usr/bin/time
[ -x "$python" ] || die "missing $python"

names=()
for ((n = 1; n <= hosts_n; n++)); do names+=("f5h$n"); done
slow=f5h$(((hosts_n + 1) / 2)) # a host in the middle of the rollout order
logs=$LH_DIR/logs
run=$LH_DIR/run

lh_arm "$deadline"
lh_leftovers
mkdir -p "$run" "$logs"

if [ "${FLEET500_NO_BUILD:-}" != 1 ]; then
  log "cargo build --release"
  (cd "$root_dir" && timeout 1800 cargo build --release --quiet) >"$logs/build.log" 2>&1 ||
    die "cargo build --release failed (see $logs/build.log)"
fi
[ -x "$bin" ] || die "no $bin"

log "$hosts_n hosts: keys and sshd configs"
lh_make_hosts
log "converging $hosts_n host directories (Clarity, local transport)"
"$python" "$benches/fleet_ssh/gen_repo.py" "$LH_DIR/repo" "$run/hosts.tsv" --phase local
timeout 900 "$bin" --repo "$LH_DIR/repo" --rev HEAD --work-dir "$LH_DIR/hosts" --parallel 8 \
  --ledger "$run/converge-ledger.sqlite" >"$logs/converge.log" 2>&1 ||
  die "converging the host directories failed (see $logs/converge.log)"
"$python" "$benches/fleet_ssh/gen_repo.py" "$LH_DIR/repo" "$run/hosts.tsv" --phase ssh

log "network: $LH_CTL with $LH_BRIDGE ($LH_BRIDGE_CIDR), $hosts_n host namespaces, $hosts_n sshd"
lh_net_up
lh_sshd_up
lh_ssh_opts
key=$LH_DIR/client/id_ed25519

# Sanity: each host answers with its own name and release.
ip netns exec "$LH_CTL" timeout 300 xargs -a "$run/addresses" -P "$parallel" -I{} \
  ssh "${LH_SSH_OPTS[@]}" root@{} 'echo "$(hostname) $(readlink /opt/clarity/app/current)"' \
  >"$run/sanity" 2>&1 || die "ssh to the hosts failed: $(head -n3 "$run/sanity")"
for h in "${names[@]}"; do
  rel=$(readlink "$LH_DIR/hosts/$h/opt/clarity/app/current")
  grep -qx "$h $rel" "$run/sanity" || die "$h does not look like its own host: $(head -n3 "$run/sanity")"
done
log "$hosts_n hosts up, each with its own hostname and release"

clar=(--rev HEAD --dry-run --allow-unreachable --work-dir "$LH_DIR/clarity-wd" --identity "$key"
  --parallel "$parallel")
mkdir -p "$LH_DIR/clarity-wd"
log "installing the agent on f5h1 over SSH, then hard-linking it into the other hosts"
head -n1 "$run/hosts.tsv" >"$run/first.tsv"
"$python" "$benches/fleet_ssh/gen_repo.py" "$LH_DIR/repo1" "$run/first.tsv" --phase local >/dev/null
"$python" "$benches/fleet_ssh/gen_repo.py" "$LH_DIR/repo1" "$run/first.tsv" --phase ssh >/dev/null
ip netns exec "$LH_CTL" timeout 600 "$bin" --repo "$LH_DIR/repo1" "${clar[@]}" \
  >"$logs/agent-install.log" 2>&1 || die "the first contact with f5h1 failed (see $logs/agent-install.log)"
rm -rf "$LH_DIR/repo1"
lh_share_agent f5h1

# ---------------------------------------------------------------------------------------------
# Measuring

check_cmd='test -e "/proc/$(head -n1 /var/lib/clarity/run/clarity-app.pid)"'
declare -A T=() NOTE=()

plain_ssh() { # LOG
  lh_timed "$1" ip netns exec "$LH_CTL" timeout 600 \
    xargs -a "$run/addresses" -P "$parallel" -I{} ssh "${LH_SSH_OPTS[@]}" root@{} "$check_cmd"
  [ "$LH_RC" = 0 ] || die "plain ssh: a host failed the check (see $1)"
}

clarity_pass() { # LOG [EXTRA OPTS...] → LH_T, CL_RSS_KB, CL_FDS, CL_THREADS; fails unless a no-op
  local log_file=$1 sampler summary
  shift
  "$python" "$benches/fleet500/sample_fds.py" "$bin" >"$run/fds" &
  sampler=$!
  lh_timed "$log_file" ip netns exec "$LH_CTL" /usr/bin/time -f %M -o "$run/rss" \
    timeout --kill-after=10 900 "$bin" --repo "$LH_DIR/repo" "${clar[@]}" "$@"
  kill -TERM "$sampler" && wait "$sampler" || true
  CL_RSS_KB=$(tail -n1 "$run/rss")
  CL_FDS=$(sed -n 's/.*fds=\([0-9]*\).*/\1/p' "$run/fds")
  CL_THREADS=$(sed -n 's/.*threads=\([0-9]*\).*/\1/p' "$run/fds")
  summary=$(grep -m1 -E '^Plan: ' "$log_file" || true)
  [ "$LH_RC" = 0 ] && [[ $summary == *"0 hosts to change, $hosts_n unchanged, 0 unreachable, 0 failed"* ]] ||
    die "clarity: not a no-op pass (exit $LH_RC): ${summary:-$(tail -n3 "$log_file")}"
}

best() { awk 'BEGIN { b = "" } { if (b == "" || $1 < b) b = $1 } END { print b }'; }

log "plain ssh, xargs -P $parallel (2 runs)"
: >"$run/t-ssh"
for i in 1 2; do
  plain_ssh "$logs/ssh.$i.log"
  log "plain ssh run $i: $LH_T s"
  echo "$LH_T" >>"$run/t-ssh"
done
T[ssh]=$(best <"$run/t-ssh")

log "clarity --dry-run --parallel $parallel (2 runs)"
: >"$run/t-clarity"
rss_max=0 fds_max=0 threads_max=0
for i in 1 2; do
  t0=$(date +%s.%N)
  clarity_pass "$logs/clarity.$i.log"
  log "clarity run $i: $LH_T s, peak RSS $((CL_RSS_KB / 1024)) MB, peak $CL_FDS fds, $CL_THREADS threads"
  echo "$LH_T" >>"$run/t-clarity"
  [ "$CL_RSS_KB" -gt "$rss_max" ] && rss_max=$CL_RSS_KB
  [ "${CL_FDS:-0}" -gt "$fds_max" ] && fds_max=$CL_FDS
  [ "${CL_THREADS:-0}" -gt "$threads_max" ] && threads_max=$CL_THREADS
  lh_session_times "$t0" >"$run/hosts-normal.$i"
done
T[clarity]=$(best <"$run/t-clarity")
# The normal run whose pass was faster is the baseline for the slow-host run.
if awk -v a="$(sed -n 1p "$run/t-clarity")" -v b="$(sed -n 2p "$run/t-clarity")" 'BEGIN { exit !(a <= b) }'; then
  cp "$run/hosts-normal.1" "$run/hosts-normal"
else
  cp "$run/hosts-normal.2" "$run/hosts-normal"
fi

# One host slowed by 2 s of latency. `tc ... netem delay 2s` on its eth0 is the plain way, but
# where the kernel has no netem the same delay comes from a user-space proxy in the host's
# namespace (fleet500/delay_proxy.py) that incoming ssh connections are redirected to.
slow_how="tc netem delay 2s on its eth0"
if ! ip netns exec "$slow" tc qdisc add dev eth0 root netem delay 2s 2>"$run/netem.err"; then
  slow_how="2 s delay proxy (no netem in this kernel: $(head -c 60 "$run/netem.err"))"
  ip netns exec "$slow" "$python" "$benches/fleet500/delay_proxy.py" "$(addr "$slow")" 2222 \
    "$(addr "$slow")" 22 2 >"$logs/delay_proxy.log" 2>&1 &
  proxy_pid=$!
  for ((i = 0; i < 100; i++)); do
    ip netns exec "$slow" bash -c "(exec 3<>/dev/tcp/$(addr "$slow")/2222) 2>/dev/null" && break
    sleep 0.05
  done
  ip netns exec "$slow" iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 22 -j REDIRECT --to-ports 2222
fi
log "slowing $slow: $slow_how"
# Check that it is slow: one plain ssh command must take more than 2 s.
lh_timed "$run/slow-probe" ip netns exec "$LH_CTL" ssh "${LH_SSH_OPTS[@]}" "root@$(addr "$slow")" true
[ "$LH_RC" = 0 ] && awk -v t="$LH_T" 'BEGIN { exit !(t > 2) }' || die "$slow is not slow: ssh took $LH_T s ($(head -c 200 "$run/slow-probe"))"
slow_probe=$LH_T
t0=$(date +%s.%N)
clarity_pass "$logs/clarity-slow.log" --connect-timeout 60 --command-timeout 120
T[clarity-slow]=$LH_T
lh_session_times "$t0" >"$run/hosts-slow"
t0=$(date +%s.%N)
plain_ssh "$logs/ssh-slow.log"
T[ssh-slow]=$LH_T
lh_session_times "$t0" >"$run/hosts-ssh-slow"
if [ -n "${proxy_pid:-}" ]; then
  ip netns exec "$slow" iptables -t nat -D PREROUTING -i eth0 -p tcp --dport 22 -j REDIRECT --to-ports 2222
  kill_and_wait "$proxy_pid"
  proxy_pid=""
else
  ip netns exec "$slow" tc qdisc del dev eth0 root
fi

# ---------------------------------------------------------------------------------------------
# Report

stats() { # FILE EXCLUDE → "median p95 max" of the hosts' times, without host EXCLUDE
  awk -v x="$2" '$1 != x && $2 != "-" { print $2 }' "$1" | sort -n | awk '
    { v[NR] = $1 } END {
      if (NR == 0) { print "- - -"; exit }
      printf "%.2f %.2f %.2f", v[int((NR + 1) / 2)], v[int(NR * 0.95 + 0.999)], v[NR] }'
}
missing() { awk '$2 == "-"' "$1" | wc -l; }
host_t() { awk -v h="$2" '$1 == h { print $2 }' "$1"; }
read -r n_med n_p95 n_max <<<"$(stats "$run/hosts-normal" "$slow")"
read -r s_med s_p95 s_max <<<"$(stats "$run/hosts-slow" "$slow")"
read -r p_med p_p95 p_max <<<"$(stats "$run/hosts-ssh-slow" "$slow")"
# "Adds nothing": the other hosts' slowest time grows by at most 25 % plus 0.3 s (the noise of
# two passes on a shared 2-core machine), and every other host ran its command in both passes.
slow_ok=$(awk -v a="$n_max" -v b="$s_max" 'BEGIN { print (b <= a * 1.25 + 0.3) ? "met" : "missed" }')
[ "$(missing "$run/hosts-normal")" = 0 ] && [ "$(missing "$run/hosts-slow")" = 0 ] || slow_ok="missed (hosts without a session)"
rss_mb=$((rss_max / 1024))
{
  echo
  echo "fleet500: one no-op pass over $hosts_n hosts over SSH, $parallel at a time (wall clock, best of 2)"
  echo "  clarity: $("$bin" --version 2>/dev/null || echo "$bin"); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  printf '%-58s %9s\n' "pass" "time"
  printf '%-58s %7.2f s\n' "plain ssh (xargs -P $parallel, curve25519, 1 command per host)" "${T[ssh]}"
  printf '%-58s %7.2f s\n' "clarity --dry-run --parallel $parallel (agent installed)" "${T[clarity]}"
  printf '%-58s %7.2f s\n' "clarity, $slow slowed by 2 s" "${T[clarity-slow]}"
  printf '%-58s %7.2f s\n' "plain ssh, $slow slowed by 2 s" "${T[ssh-slow]}"
  echo "  (slowed by: $slow_how; one ssh command to it took $slow_probe s)"
  echo
  printf '%-40s %12s   %-10s %s\n' "figure" "value" "target" "verdict"
  awk -v a="${T[clarity]}" -v b="${T[ssh]}" 'BEGIN { r = a / b
    printf "%-40s %11.2fx   %-10s %s\n", "Clarity / plain ssh", r, "<= 1.0x", (r <= 1.0) ? "met" : "missed" }'
  printf '%-40s %9s MB   %-10s %s\n' "clarity peak RSS (of 4 passes)" "$rss_mb" "< 500 MB" \
    "$([ "$rss_mb" -lt 500 ] && echo met || echo missed)"
  printf '%-40s %12s   %-10s %s\n' "clarity peak open fds (of 4 passes)" "$fds_max" "bounded" \
    "$([ "$fds_max" -le $((parallel * 2 + 64)) ] && echo "met (<= 2 x parallel + 64)" || echo missed)"
  printf '%-40s %12s\n' "clarity peak threads" "$threads_max"
  echo
  echo "per-host time, from each host's own session log (end of its last command - pass start):"
  printf '  %-44s %7s %7s %7s   %s\n' "other $((hosts_n - 1)) hosts" "median" "p95" "max" "$slow"
  printf '  %-44s %6ss %6ss %6ss   %ss\n' "clarity, no slow host" "$n_med" "$n_p95" "$n_max" "$(host_t "$run/hosts-normal" "$slow")"
  printf '  %-44s %6ss %6ss %6ss   %ss\n' "clarity, $slow slowed by 2 s" "$s_med" "$s_p95" "$s_max" "$(host_t "$run/hosts-slow" "$slow")"
  printf '  %-44s %6ss %6ss %6ss   %ss\n' "plain ssh, $slow slowed by 2 s" "$p_med" "$p_p95" "$p_max" "$(host_t "$run/hosts-ssh-slow" "$slow")"
  printf '%-40s %12s   %-10s %s\n' "slow host adds to the others' max" \
    "$(awk -v a="$n_max" -v b="$s_max" 'BEGIN { printf "%+.2f s", b - a }')" "~0 s" "$slow_ok"
  echo
} | tee "$logs/results.txt"
