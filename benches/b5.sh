#!/usr/bin/env bash
# Benchmark B5: a config change to 50 hosts, one of which fails its health check (issue 14,
# item 7). Clarity against ansible-playbook, same hosts, same run.
#
#   sudo bash benches/b5.sh                # about 4 minutes on 2 cores (a venv on first use)
#   sudo B5_HOSTS=20 bash benches/b5.sh    # a smaller fleet first
#
# The hosts are sshd's in network namespaces b5h1..b5hN (benches/lib_hosts.sh; the testbed of
# benches/fleet_ssh.sh), each running two copies of a tiny HTTP service (benches/b5/web.py):
# Clarity's deployment `web` (port 8080, service manager `process`) and Ansible's in /srv/web
# (port 8081). Both are installed first (untimed), then the same change is made by each tool:
# the config file moves the service to a new port (9090, Ansible's 9091) with a new greeting,
# on every host. On host B5_FAILING (b5h17) a firewall rule in its namespace refuses the new
# ports, so the new config's health check fails there and only there:
#   - Clarity: `rollout: {batch_size: 10, max_failures: 0}`, an http health check (2 probes,
#     1 s apart); `clarity-reconcile --rev HEAD --parallel N`.
#   - Ansible: `serial: 10`, `max_fail_percentage: 0`, a template task notifying a restart
#     handler, a `uri` health check (2 tries, 1 s apart), a rescue that restores the previous
#     config (benches/b5/site.yml).
# It prints both times and the ratio (target: Clarity >= 10x faster), the time from the failing
# host's failed health check to its finished rollback (Clarity's streamed agent events, and the
# restored service's start time on the host; target <= 1 s), and whether the failure budget
# stopped the rollout as configured: converged hosts counted from Clarity's ledger and checked on
# every host (which config each one's service answers with), Ansible's checked on the hosts.
# Everything it starts or creates is stopped (by PID) and removed on exit (trap), except the
# venv (target/b5/venv), the client key and the logs. Needs root. Not run by CI.
#
# Settings: B5_HOSTS (50, 2..200), B5_FAILING (17), B5_BATCH (10), B5_DIR (target/b5),
# B5_DEADLINE (1800 s: the run gets SIGTERM and cleans up), B5_NO_BUILD=1 (no cargo build),
# CLARITY_BIN (another build of clarity-reconcile to measure; implies nothing about building).
set -euo pipefail

benches=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib_hosts.sh
. "$benches/lib_hosts.sh"
lh_become_subreaper "$0" "$@"

root_dir=$(cd "$benches/.." && pwd)
# shellcheck source=harness_net.sh
. "$benches/harness_net.sh"
assets=$benches/b5
hosts_n=${B5_HOSTS:-50}
failing_n=${B5_FAILING:-17}
batch=${B5_BATCH:-10}
deadline=${B5_DEADLINE:-1800}
bin=${CLARITY_BIN:-$root_dir/target/release/clarity-reconcile}
python=/usr/bin/python3
LH_TAG=b5
LH_DIR=${B5_DIR:-$root_dir/target/b5}
LH_CTL=b5ctl
LH_BRIDGE=b5br0
LH_PREFIX=24
net=$HARNESS_BENCH_B5_NET
LH_BRIDGE_CIDR=$net.1/24
addr() { echo "$net.$((10 + ${1#b5h}))"; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, sshd per host, iptables)"
[[ $hosts_n =~ ^[0-9]+$ ]] && [ "$hosts_n" -ge 2 ] && [ "$hosts_n" -le 200 ] || die "B5_HOSTS must be 2..200"
[[ $failing_n =~ ^[0-9]+$ ]] && [ "$failing_n" -ge 1 ] && [ "$failing_n" -le "$hosts_n" ] ||
  die "B5_FAILING must be 1..B5_HOSTS"
[[ $batch =~ ^[0-9]+$ ]] && [ "$batch" -ge 1 ] || die "B5_BATCH must be a number"
[[ $deadline =~ ^[0-9]+$ ]] || die "B5_DEADLINE must be whole seconds"
[[ $LH_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || die "B5_DIR must be an absolute path without spaces"
lh_require_tools iptables curl
[ -x "$python" ] || die "missing $python"

names=()
for ((n = 1; n <= hosts_n; n++)); do names+=("b5h$n"); done
failing=b5h$failing_n
logs=$LH_DIR/logs
run=$LH_DIR/run
venv=$LH_DIR/venv
ledger=$run/ledger.sqlite

lh_before_teardown() { # Ansible's ControlPersist masters
  local s
  for s in "$run"/ansible/cp/*; do
    [ -S "$s" ] && timeout 5 ssh -o ControlPath="$s" -O exit bench >/dev/null 2>&1 || true
  done
}
lh_arm "$deadline"
lh_leftovers
mkdir -p "$run" "$logs"

if [ "${B5_NO_BUILD:-}" != 1 ]; then
  log "cargo build --release"
  (cd "$root_dir" && timeout 1800 cargo build --release --quiet) >"$logs/build.log" 2>&1 ||
    die "cargo build --release failed (see $logs/build.log)"
fi
[ -x "$bin" ] || die "no $bin"
if [ ! -x "$venv/bin/ansible-playbook" ]; then
  log "installing ansible-core into $venv"
  { timeout 120 "$python" -m venv "$venv" && timeout 900 "$venv/bin/pip" install -q ansible-core; } \
    >"$logs/pip.log" 2>&1 || die "cannot install ansible-core (see $logs/pip.log)"
fi
ansible_version=$("$venv/bin/ansible-playbook" --version | head -n1)

log "$hosts_n hosts: keys, sshd configs, network, sshd"
lh_make_hosts
lh_net_up
lh_sshd_up
key=$LH_DIR/client/id_ed25519
in_ctl() { ip netns exec "$LH_CTL" "$@"; }

# ---------------------------------------------------------------------------------------------
# Both tools install v1 (untimed)

clar=(--repo "$LH_DIR/repo" --rev HEAD --work-dir "$LH_DIR/clarity-wd" --ledger "$ledger"
  --identity "$key" --parallel "$hosts_n")
mkdir -p "$LH_DIR/clarity-wd"
log "clarity: the agent on b5h1 over SSH, hard-linked into the other hosts"
head -n1 "$run/hosts.tsv" >"$run/first.tsv"
"$python" "$assets/gen_repo.py" "$LH_DIR/repo1" "$run/first.tsv" --version v1 --batch "$batch"
in_ctl timeout 600 "$bin" --repo "$LH_DIR/repo1" --rev HEAD --dry-run --work-dir "$LH_DIR/clarity-wd" \
  --identity "$key" >"$logs/agent-install.log" 2>&1 ||
  [ $? = 2 ] || die "the first contact with b5h1 failed (see $logs/agent-install.log)"
rm -rf "$LH_DIR/repo1"
lh_share_agent b5h1

log "clarity: installing v1 on $hosts_n hosts (untimed)"
"$python" "$assets/gen_repo.py" "$LH_DIR/repo" "$run/hosts.tsv" --version v1 --batch "$batch"
in_ctl timeout 900 "$bin" "${clar[@]}" >"$logs/clarity-v1.log" 2>&1 ||
  die "clarity: installing v1 failed (see $logs/clarity-v1.log)"

ans=$run/ansible
mkdir -p "$ans/home" "$ans/tmp" "$ans/cp"
{
  echo "[bench]"
  for h in "${names[@]}"; do printf '%s ansible_host=%s\n' "$h" "$(addr "$h")"; done
  printf '\n[bench:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\n' "$key"
} >"$ans/hosts.ini"
cat >"$ans/ansible.cfg" <<EOF
[defaults]
forks = $hosts_n
host_key_checking = True
gathering = explicit
retry_files_enabled = False
nocolor = True
timeout = 30

[ssh_connection]
pipelining = True
control_path_dir = $ans/cp
ssh_args = -F /dev/null -o ControlMaster=auto -o ControlPersist=60s -o KexAlgorithms=curve25519-sha256 -o IdentitiesOnly=yes -o UserKnownHostsFile=$LH_DIR/client/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
EOF
playbook() { # LOG PLAYBOOK [ARGS...]
  local log_file=$1 book=$2
  shift 2
  lh_timed "$log_file" in_ctl env ANSIBLE_CONFIG="$ans/ansible.cfg" ANSIBLE_HOME="$ans/home" \
    ANSIBLE_LOCAL_TEMP="$ans/tmp" HOME="$ans/home" \
    timeout --kill-after=10 900 "$venv/bin/ansible-playbook" -i "$ans/hosts.ini" \
    -e ansible_python_interpreter=/usr/bin/python3 "$@" "$assets/$book"
}
log "ansible: installing v1 on $hosts_n hosts (untimed)"
playbook "$logs/ansible-setup.log" setup.yml
[ "$LH_RC" = 0 ] || die "ansible setup failed (see $logs/ansible-setup.log)"
playbook "$logs/ansible-v1.log" site.yml -e @"$assets/vars-v1.yml"
[ "$LH_RC" = 0 ] || die "ansible: installing v1 failed (see $logs/ansible-v1.log)"

# What one host's two services answer: "CLARITY ANSIBLE", each v1, v2 or none (checked on the
# host, inside its namespace).
serves() {
  local h=$1 c=none a=none
  if ip netns exec "$h" curl -fsS -m 2 http://127.0.0.1:9090/health 2>/dev/null | grep -qx 'ok v2'; then c=v2
  elif ip netns exec "$h" curl -fsS -m 2 http://127.0.0.1:8080/health 2>/dev/null | grep -qx 'ok v1'; then c=v1; fi
  if ip netns exec "$h" curl -fsS -m 2 http://127.0.0.1:9091/health 2>/dev/null | grep -qx 'ok v2'; then a=v2
  elif ip netns exec "$h" curl -fsS -m 2 http://127.0.0.1:8081/health 2>/dev/null | grep -qx 'ok v1'; then a=v1; fi
  echo "$c $a"
}
for h in "${names[@]}"; do
  [ "$(serves "$h")" = "v1 v1" ] || die "$h does not serve v1 from both tools after the install: $(serves "$h")"
done
log "$hosts_n hosts serve v1 from both tools"

log "$failing: a firewall rule in its namespace refuses the new ports 9090 and 9091"
ip netns exec "$failing" iptables -A INPUT -p tcp -m multiport --dports 9090,9091 -j REJECT --reject-with tcp-reset

# ---------------------------------------------------------------------------------------------
# The change, timed: Clarity, then Ansible

"$python" "$assets/gen_repo.py" "$LH_DIR/repo" "$run/hosts.tsv" --version v2 --batch "$batch"
log "clarity: the v2 config change, rollout batch_size $batch, max_failures 0"
# Its output goes through stamp.py, which notes when each line (an agent event) arrived.
lh_timed "$logs/clarity-v2.log" in_ctl bash -c 'set -o pipefail; "$@" | "'"$python"'" "'"$assets/stamp.py"'"' \
  bash timeout --kill-after=10 900 "$bin" "${clar[@]}"
t_clarity=$LH_T rc_clarity=$LH_RC
log "clarity: $t_clarity s, exit $rc_clarity"

log "ansible-playbook: the same change, serial $batch, max_fail_percentage 0"
playbook "$logs/ansible-v2.log" site.yml -e @"$assets/vars-v2.yml"
t_ansible=$LH_T rc_ansible=$LH_RC
log "ansible: $t_ansible s, exit $rc_ansible"

# ---------------------------------------------------------------------------------------------
# Checking what happened, on the hosts and in the ledger

# Hosts the rollout reaches before the budget (max_failures 0) stops it: every batch up to and
# including the failing host's.
reached=$(((failing_n + batch - 1) / batch * batch))
[ "$reached" -gt "$hosts_n" ] && reached=$hosts_n
expect_converged=$((reached - 1))

: >"$run/serves"
for h in "${names[@]}"; do printf '%s %s\n' "$h" "$(serves "$h")" >>"$run/serves"; done
run_id=$(sqlite3 "$ledger" "SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT 1")
sqlite3 -separator ' ' "$ledger" \
  "SELECT server, outcome FROM run_hosts WHERE run_id = '$run_id' ORDER BY ordinal" >"$run/outcomes"
count() { awk -v o="$2" '$2 == o' "$1" | wc -l; }
c_conv=$(count "$run/outcomes" converged)
c_back=$(awk '$2 == "rolled_back" { print $1 }' "$run/outcomes" | tr '\n' ' ')
# Every host: the ledger's word against the host. Converged means the host serves v2; any
# other outcome (rolled back, not attempted, or no row) means it still serves v1.
mismatch=()
a_v2=0 a_bad=()
for ((n = 1; n <= hosts_n; n++)); do
  h=b5h$n
  o=$(awk -v h="$h" '$1 == h { print $2 }' "$run/outcomes")
  read -r _ c a < <(grep "^$h " "$run/serves")
  if [ "$o" = converged ]; then want=v2; else want=v1; fi
  [ "$c" = "$want" ] || mismatch+=("$h: ledger ${o:-no row}, serves $c")
  [ "$a" = v2 ] && a_v2=$((a_v2 + 1))
  if [ "$n" -le "$reached" ] && [ "$n" != "$failing_n" ]; then want=v2; else want=v1; fi
  [ "$a" = "$want" ] || a_bad+=("$h: $a, expected $want")
done
c_v2=$(awk '$2 == "v2"' "$run/serves" | wc -l)

# The failing host: from its failed health check to its finished rollback, in Clarity's own
# streamed events, and on the host (when the restored service started, from its pidfile).
t_fail=$(awk -v h="$failing" '$2 == h":" && /health check/ && /: FAILED/ { print $1; exit }' "$logs/clarity-v2.log")
t_back=$(awk -v h="$failing" '$2 == h":" && / rollback: / { print $1; exit }' "$logs/clarity-v2.log")
rollback_s=$(awk -v a="$t_fail" -v b="$t_back" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.3f", b - a }')
pidfile=$(ls "$LH_DIR/hosts/$failing/var/lib/clarity/run/"*.pid 2>/dev/null | head -n1 || true)
restart_s=n/a
if [ -n "$pidfile" ] && [ -n "$t_fail" ]; then
  # Its start time is in clock ticks since boot; boot time from now and /proc/uptime (btime in
  # /proc/stat is rounded to the second).
  start_ticks=$(sed -n 's/^start_time=//p' "$pidfile")
  boot=$(awk -v now="$(date +%s.%N)" '{ printf "%.3f", now - $1 }' /proc/uptime)
  restart_s=$(awk -v t="$start_ticks" -v hz="$(getconf CLK_TCK)" -v b="$boot" -v f="$t_fail" \
    'BEGIN { printf "%.2f", b + t / hz - f }')
fi
rollback_ok=$(awk -v r="$rollback_s" 'BEGIN { print (r != "n/a" && r <= 1.0) ? "met" : "missed" }')
budget_ok=missed
[ "$c_conv" = "$expect_converged" ] && [ "${#mismatch[@]}" = 0 ] && [ "$c_v2" = "$expect_converged" ] &&
  [ "$c_back" = "$failing " ] && budget_ok=met
a_budget=missed
[ "${#a_bad[@]}" = 0 ] && a_budget=met

{
  echo
  echo "B5: a config change to $hosts_n hosts, $failing failing its health check; batches of $batch, no failure tolerated"
  echo "  clarity: $("$bin" --version 2>/dev/null || echo "$bin"); peer: $ansible_version"
  echo "  $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  printf '%-62s %9s   %s\n' "tool" "time" "exit"
  printf '%-62s %7.2f s   %s\n' "clarity-reconcile --parallel $hosts_n (rollout batch_size $batch, max_failures 0)" "$t_clarity" "$rc_clarity"
  printf '%-62s %7.2f s   %s\n' "ansible-playbook (serial $batch, max_fail_percentage 0, forks $hosts_n)" "$t_ansible" "$rc_ansible"
  echo
  printf '%-46s %14s   %-12s %s\n' "figure" "value" "target" "verdict"
  awk -v a="$t_ansible" -v c="$t_clarity" 'BEGIN { r = a / c
    printf "%-46s %13.2fx   %-12s %s\n", "Ansible / Clarity", r, ">= 10x", (r >= 10) ? "met" : "missed" }'
  printf '%-46s %12s s   %-12s %s\n' "$failing: failed health check -> rolled back" "$rollback_s" "<= 1 s" "$rollback_ok"
  printf '%-46s %12s s   %-12s %s\n' "  (the restored service started, on the host)" "+$restart_s" "" ""
  printf '%-46s %14s   %-12s %s\n' "clarity: converged (ledger / serving v2)" "$c_conv / $c_v2" "$expect_converged" "$budget_ok"
  printf '%-46s %14s   %-12s %s\n' "clarity: rolled back (ledger)" "${c_back:-none}" "$failing" ""
  printf '%-46s %14s   %-12s %s\n' "clarity: not attempted, still v1 (ledger)" \
    "$((hosts_n - $(wc -l <"$run/outcomes") + $(awk '$2 != "converged" && $2 != "rolled_back"' "$run/outcomes" | wc -l)))" \
    "$((hosts_n - reached))" ""
  printf '%-46s %14s   %-12s %s\n' "ansible: hosts serving v2 (checked on hosts)" "$a_v2" "$expect_converged" "$a_budget"
  for m in "${mismatch[@]}" "${a_bad[@]}"; do echo "  mismatch: $m"; done
  echo
  echo "clarity's ledger, run $run_id: $(awk '{ print $2 }' "$run/outcomes" | sort | uniq -c | awk '{ printf "%s%s %s", s, $1, $2; s = ", " }')"
  echo
} | tee "$logs/results.txt"
