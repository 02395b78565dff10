#!/usr/bin/env bash
# Benchmark: one no-op pass over 50 hosts reached over real SSH, by Clarity and by its peers.
#
# Sets up FLEET_SSH_HOSTS (50) network namespaces cb1..cbN, each with its own sshd (own host
# key, hostname and view of /opt/clarity and /var/lib/clarity) on a bridge inside a namespace
# `cbctl`, from which every tool connects. Every host is converged first (Clarity, `local`
# transport, into $FLEET_SSH_DIR/hosts/cbN), then each tool checks the same four things per
# host: a file, a rendered template, the service state (a running `sleep` with a pidfile), the
# `current -> releases/...` symlink:
#   plain ssh (the floor), ansible-playbook --check, pyinfra --dry, clarity-reconcile --dry-run.
# Prints wall-clock times (best of 3 when a run is under 30 s) and the ratios against targets.
# Everything it starts or creates is stopped and removed on exit (trap), except the peers'
# venv, the client key and the logs under $FLEET_SSH_DIR (default target/fleet_ssh).
# Needs root. See benches/fleet_ssh/README.md.
set -euo pipefail

# Become a child subreaper (the attribute survives exec): the services Clarity starts detached
# and ssh's ControlPersist masters are re-parented to this shell, which reaps them, instead of
# to PID 1, which on these machines does not.
if [ "${FLEET_SSH_SUBREAPER:-}" != 1 ]; then
  export FLEET_SSH_SUBREAPER=1
  exec /usr/bin/python3 -c '
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("fleet_ssh: prctl(PR_SET_CHILD_SUBREAPER) failed")
os.execv("/bin/bash", ["bash"] + sys.argv[1:])' "$0" "$@"
fi

benches=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$benches/.." && pwd)
assets=$benches/fleet_ssh
hosts_n=${FLEET_SSH_HOSTS:-50}
bench=${FLEET_SSH_DIR:-$root_dir/target/fleet_ssh}
# shellcheck source=harness_net.sh
. "$benches/harness_net.sh"
net=${FLEET_SSH_NET:-$HARNESS_BENCH_FLEET_NET}   # a /24 that exists only inside the namespaces below
deadline=${FLEET_SSH_DEADLINE:-3600}   # the whole run stops by itself after this many seconds
cold_timeout=${FLEET_SSH_COLD_TIMEOUT:-900}
ctl=cbctl
bin=$root_dir/target/release/clarity-reconcile
python=/usr/bin/python3
[ -x "$python" ] || python=python3

log() { printf '[fleet_ssh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, sshd per host)"
[[ $hosts_n =~ ^[0-9]+$ ]] && [ "$hosts_n" -ge 1 ] && [ "$hosts_n" -le 200 ] \
  || die "FLEET_SSH_HOSTS must be 1..200"
[[ $net =~ ^(10\.[0-9]{1,3}\.[0-9]{1,3}|192\.168\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])\.[0-9]{1,3})$ ]] \
  || die "FLEET_SSH_NET must be the first three octets of a private /24 (e.g. 10.77.0)"
[[ $bench =~ ^/[A-Za-z0-9._/-]+$ ]] || die "FLEET_SSH_DIR must be an absolute path without spaces"
[[ $deadline =~ ^[0-9]+$ && $cold_timeout =~ ^[0-9]+$ ]] || die "timeouts must be whole seconds"

for tool in ip unshare ssh ssh-keygen xargs timeout git awk; do
  command -v "$tool" >/dev/null || die "missing $tool"
done
if [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/lib/openssh/sftp-server ]; then
  log "installing openssh-server"
  timeout 600 apt-get install -y -q openssh-server >/dev/null || die "cannot install openssh-server"
fi

names=()
for ((n = 1; n <= hosts_n; n++)); do names+=("cb$n"); done
addr() { echo "$net.$((10 + ${1#cb}))"; }

mkdir -p "$bench"
run=$bench/run          # this run's state (removed on exit)
logs=$bench/logs        # kept
key=$bench/client/id_ed25519
venv=$bench/venv

# ---------------------------------------------------------------------------------------------
# Teardown: by PID and by the names this script creates, never by process name.

sshd_pids=()
watchdog=""
cmd_pid=""   # the measured command while it runs

own_pids_in_netns() { # NAME → the PIDs of processes inside that namespace (all started by us)
  ip netns pids "$1" 2>/dev/null || true
}

kill_and_wait() { # PIDs... → TERM, up to 5 s, then KILL; reaps our children
  local p alive i
  [ "$#" -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive=0
    for p in "$@"; do
      if [ -e "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then alive=1; fi
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

stop_services() { # the per-host `sleep` services, checked against the pidfile's start time
  local f pid start pids=()
  for f in "$bench"/hosts/cb*/var/lib/clarity/run/clarity-app.pid; do
    [ -f "$f" ] || continue
    pid=$(head -n1 "$f" 2>/dev/null || true)
    start=$(sed -n 's/^start_time=//p' "$f" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || continue
    [ -e "/proc/$pid" ] || continue
    if [ -n "$start" ] && [ "$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null)" = "$start" ]; then
      pids+=("$pid")
    fi
  done
  kill_and_wait "${pids[@]}"
}

close_masters() { # ansible's ControlPersist masters (their sockets are under $run/ansible-cp)
  local s
  for s in "$run"/ansible-cp/*/*; do
    [ -S "$s" ] && timeout 5 ssh -o ControlPath="$s" -O exit bench >/dev/null 2>&1 || true
  done
}

teardown() {
  local ns pids=() p
  close_masters
  stop_services
  kill_and_wait "${sshd_pids[@]}"
  sshd_pids=()
  # Whatever still runs inside our namespaces (sshd sessions, ssh clients of a killed tool).
  for ns in "$ctl" "${names[@]}"; do
    for p in $(own_pids_in_netns "$ns"); do pids+=("$p"); done
  done
  kill_and_wait "${pids[@]}"
  for ns in "${names[@]}" "$ctl"; do
    if [ -e "/run/netns/$ns" ]; then ip netns del "$ns" 2>/dev/null || true; fi
  done
  if [ -f "$run/created_dirs" ]; then
    while read -r d; do rmdir "$d" 2>/dev/null || true; done <"$run/created_dirs"
  fi
  rm -rf "$bench/hosts" "$bench/sshd" "$bench/repo" "$bench/clarity-wd" "$bench/ansible" \
    "$bench/pyinfra" "$run"
}

leftovers() { # a previous run that was killed before its trap: its sshds, services, namespaces
  local f p
  for f in "$bench"/sshd/cb*/sshd.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    if [[ $p =~ ^[0-9]+$ ]] && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/sshd ] &&
      tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "-f $bench/sshd/"; then
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  teardown
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  if [ -n "$watchdog" ]; then kill -TERM "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; fi
  if [ -n "$cmd_pid" ]; then kill_and_wait "$cmd_pid"; fi
  teardown
  wait 2>/dev/null
  local left_ns left_p=() f k v
  left_ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -cE '^(cb[0-9]+|cbctl)$')
  for f in /proc/[0-9]*/status; do
    while read -r k v; do
      if [ "$k" = PPid: ]; then
        [ "$v" = $$ ] && left_p+=("$(tr '\0' ' ' <"${f%/status}/cmdline" 2>/dev/null)")
        break
      fi
    done <"$f" 2>/dev/null
  done
  log "cleanup done: $left_ns bench namespaces and ${#left_p[@]} child processes left${left_p:+: ${left_p[*]}}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The whole run is bounded: after $deadline seconds this shell gets SIGTERM (and cleans up).
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$deadline" & s=$!
  wait "$s" && kill -TERM $$
) &
watchdog=$!

leftovers
mkdir -p "$run" "$logs" "$bench/client" "$bench/sshd" "$bench/hosts"

# ---------------------------------------------------------------------------------------------
# Build and peers

if [ "${FLEET_SSH_NO_BUILD:-}" != 1 ]; then
  log "cargo build --release"
  if ! (cd "$root_dir" && timeout 1800 cargo build --release --quiet) >"$logs/build.log" 2>&1; then
    [ -x "$bin" ] || die "cargo build --release failed (see $logs/build.log)"
    log "warning: cargo build --release failed (see $logs/build.log); using the existing $bin"
  fi
fi
[ -x "$bin" ] || die "no $bin"
# Clarity's first pass puts a copy of its binary (the agent) on every host, and the hosts'
# directories share this disk: refuse to start rather than fill it up for everyone on it.
need_mb=$(( ($(stat -c %s "$bin") * hosts_n / 1048576) * 11 / 10 + 1024 ))
free_mb=$(df -Pm "$bench" | awk 'NR == 2 { print $4 }')
[ "$free_mb" -ge "$need_mb" ] ||
  die "needs about $need_mb MB free in $bench for $hosts_n copies of the agent, has $free_mb MB"

peers=1
if [ ! -x "$venv/bin/ansible-playbook" ] || [ ! -x "$venv/bin/pyinfra" ]; then
  log "installing ansible-core and pyinfra into $venv"
  if ! { timeout 120 "$python" -m venv "$venv" &&
    timeout 900 "$venv/bin/pip" install -q ansible-core pyinfra; } >"$logs/pip.log" 2>&1; then
    log "warning: cannot install the peers (see $logs/pip.log); only ssh and Clarity are measured"
    peers=0
  fi
fi
if [ "$peers" = 1 ]; then
  v=$("$venv/bin/ansible-playbook" --version 2>&1 || true)
  printf '%s\n' "${v%%$'\n'*}" >"$run/versions"
  v=$("$venv/bin/pyinfra" --version 2>&1 || true)
  printf '%s\n' "${v%%$'\n'*}" >>"$run/versions"
fi

# ---------------------------------------------------------------------------------------------
# Keys, hosts, network

[ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C fleet_ssh-bench -f "$key"
cp "$key.pub" "$bench/client/authorized_keys"
: >"$bench/client/known_hosts"
: >"$run/hosts.tsv"
: >"$run/addresses"
printf '# plain ~/.bashrc for the simulated hosts (no pyenv)\n' >"$run/bashrc"
for h in "${names[@]}"; do
  d=$bench/sshd/$h
  mkdir -p "$d"
  ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$d/ssh_host_ed25519_key"
  pub=$(awk '{print $1, $2}' "$d/ssh_host_ed25519_key.pub")
  a=$(addr "$h")
  printf '%s %s\n' "$a" "$pub" >>"$bench/client/known_hosts"
  printf '%s\t%s\t%s\n' "$h" "$a" "$pub" >>"$run/hosts.tsv"
  printf '%s\n' "$a" >>"$run/addresses"
  cat >"$d/sshd_config" <<EOF
ListenAddress $a
Port 22
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
AuthorizedKeysFile $bench/client/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
done

log "converging $hosts_n host directories (Clarity, local transport)"
repo=$bench/repo
"$python" "$assets/gen_repo.py" "$repo" "$run/hosts.tsv" --phase local
timeout 600 "$bin" --repo "$repo" --rev HEAD --work-dir "$bench/hosts" \
  --ledger "$run/converge-ledger.sqlite" >"$logs/converge.log" 2>&1 \
  || die "converging the host directories failed (see $logs/converge.log)"
for h in "${names[@]}"; do
  link=$(readlink "$bench/hosts/$h/opt/clarity/app/current" || true)
  [ -n "$link" ] || die "$h: no current release after converging (see $logs/converge.log)"
  printf '%s\t%s\n' "$h" "${link#releases/}" >>"$run/releases.tsv"
done

# Mount points for each host's own /opt/clarity and /var/lib/clarity (bind-mounted in the
# host's private mount namespace only); removed on exit if this script created them.
for d in /opt/clarity /var/lib/clarity; do
  if [ ! -d "$d" ]; then mkdir -p "$d" && printf '%s\n' "$d" >>"$run/created_dirs"; fi
done
mkdir -p /run/sshd

log "network: namespace $ctl with bridge cbbr0 ($net.1/24), $hosts_n host namespaces"
ip netns add "$ctl"
ip -n "$ctl" link set lo up
ip -n "$ctl" link add cbbr0 type bridge
ip -n "$ctl" addr add "$net.1/24" dev cbbr0
ip -n "$ctl" link set cbbr0 up
for h in "${names[@]}"; do
  ip netns add "$h"
  ip -n "$ctl" link add "v$h" type veth peer name eth0 netns "$h"
  ip -n "$ctl" link set "v$h" master cbbr0 up
  ip -n "$h" addr add "$(addr "$h")/24" dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$h" link set lo up
done

log "starting $hosts_n sshd"
for h in "${names[@]}"; do
  d=$bench/sshd/$h
  # A plain environment, the host's own hostname, its own /opt/clarity and /var/lib/clarity,
  # and a plain ~/.bashrc (the machine's runs pyenv on every ssh command).
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    ip netns exec "$h" unshare --uts --mount sh -c '
      set -e
      hostname "$1"
      mount --bind "$2/opt/clarity" /opt/clarity
      mount --bind "$2/var/lib/clarity" /var/lib/clarity
      if [ -f /root/.bashrc ]; then mount --bind "$3" /root/.bashrc; fi
      exec /usr/sbin/sshd -D -f "$4" -E "$5"' \
    sh "$h" "$bench/hosts/$h" "$run/bashrc" "$d/sshd_config" "$d/sshd.log" </dev/null &
  sshd_pids+=("$!")
done

ip netns exec "$ctl" timeout 60 bash -c '
  for a in $(cat "$1"); do
    for ((i = 0; i < 100; i++)); do
      if (exec 3<>"/dev/tcp/$a/22") 2>/dev/null; then continue 2; fi
      sleep 0.1
    done
    echo "$a: sshd does not answer" >&2; exit 1
  done' bash "$run/addresses" || die "not every sshd came up (see $bench/sshd/*/sshd.log)"

ssh_opts=(-F /dev/null -i "$key" -o IdentitiesOnly=yes -o BatchMode=yes
  -o KexAlgorithms=curve25519-sha256 -o UserKnownHostsFile="$bench/client/known_hosts"
  -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o ConnectTimeout=10
  -o ControlMaster=no -o ControlPath=none -o LogLevel=ERROR)
check_cmd='test -e "/proc/$(head -n1 /var/lib/clarity/run/clarity-app.pid)"'

# Sanity: each host answers with its own name and sees its own converged release.
ip netns exec "$ctl" timeout 120 xargs -a "$run/addresses" -P "$hosts_n" -I{} \
  ssh "${ssh_opts[@]}" root@{} 'echo "$(hostname) $(readlink /opt/clarity/app/current) $PATH"' \
  >"$run/sanity" 2>&1 || die "ssh to the hosts failed: $(head -n3 "$run/sanity")"
while IFS=$'\t' read -r h rel; do
  grep -q "^$h releases/$rel /" "$run/sanity" ||
    die "$h does not look like its own host: $(head -n3 "$run/sanity")"
done <"$run/releases.tsv"
! grep -q pyenv "$run/sanity" || die "the hosts' shells still run pyenv: $(head -n1 "$run/sanity")"
log "$hosts_n hosts up, each with its own hostname, release and a plain shell"
if [ "${FLEET_SSH_DRIFT:-}" = 1 ]; then # self-test: every tool must notice this and fail its check
  log "FLEET_SSH_DRIFT=1: editing cb1's file by hand and stopping cb$hosts_n's service"
  echo "edited by hand" >>"$bench/hosts/cb1/opt/clarity/app/current/conf/motd.txt"
  p=$(head -n1 "$bench/hosts/cb$hosts_n/var/lib/clarity/run/clarity-app.pid")
  kill_and_wait "$p"
fi

# ---------------------------------------------------------------------------------------------
# Measuring

declare -A T=() NOTE=()
last_t=0 last_rc=0

timed() { # LOG CMD... → last_t (seconds), last_rc
  local log_file=$1 s e
  shift
  s=$(date +%s%N)
  set +e
  # In the background so that SIGINT/SIGTERM interrupt `wait` and clean up at once.
  "$@" >"$log_file" 2>&1 &
  cmd_pid=$!
  wait "$cmd_pid"
  last_rc=$?
  cmd_pid=""
  set -e
  e=$(date +%s%N)
  last_t=$(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
}

# measure NAME VERIFY CMD...: up to 3 runs (1 when the first takes 30 s or more); T[NAME] is the
# best time of the runs VERIFY accepted (VERIFY LOG RC prints a note, fails if the run is bad).
measure() {
  local name=$1 verify=$2 i best="" note
  shift 2
  for i in 1 2 3; do
    [ "$name" = ansible ] && export ANSIBLE_SSH_CONTROL_PATH_DIR="$run/ansible-cp/$i"
    timed "$logs/$name.$i.log" "$@"
    [ "$name" = ansible ] && close_masters
    if note=$("$verify" "$logs/$name.$i.log" "$last_rc"); then
      log "$name run $i: $last_t s ($note)"
      NOTE[$name]=$note
      if [ -z "$best" ] || awk -v a="$last_t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$last_t; fi
    else
      log "$name run $i failed after $last_t s (exit $last_rc): $note; see $logs/$name.$i.log"
      NOTE[$name]="failed: ${note:0:100}"
      best=""
      break
    fi
    awk -v t="$last_t" 'BEGIN { exit !(t >= 30) }' && break
  done
  [ -n "$best" ] && T[$name]=$best
  return 0
}

verify_ssh() { # LOG RC
  [ "$2" = 0 ] || { echo "a host failed the check: $(head -c 300 "$1")"; return 1; }
  echo "$hosts_n/$hosts_n checked"
}

verify_ansible() {
  local ok
  ok=$(grep -cE '^cb[0-9]+ +: ok=4 +changed=0 +unreachable=0 +failed=0' "$1" || true)
  [ "$2" = 0 ] && [ "$ok" = "$hosts_n" ] || {
    echo "$ok/$hosts_n hosts ok=4 changed=0: $(grep -m2 -E 'fatal|UNREACHABLE|changed=[1-9]' "$1" | head -c 300)"
    return 1
  }
  echo "$ok/$hosts_n hosts ok=4 changed=0"
}

verify_pyinfra() {
  local conn changes
  [ "$2" = 0 ] || { echo "$(grep -m3 -iE 'error|fail' "$1" | head -c 300)"; return 1; }
  conn=$(grep -cE '^ *\[cb[0-9]+\] +Ready' "$1" || true)
  # The "Detected changes" table lists each operation with "N (hosts)" where hosts would change.
  changes=$(awk '/Detected changes/ { on = 1 } on && / [0-9]+ \(/ { n++ } END { print n + 0 }' "$1")
  [ "$conn" = "$hosts_n" ] && [ "$changes" = 0 ] || {
    echo "$conn/$hosts_n hosts ready, $changes operations with changes"
    return 1
  }
  echo "$conn/$hosts_n hosts, no changes"
}

verify_clarity() {
  local summary
  summary=$(grep -m1 -E '^Plan: ' "$1" || true)
  if grep -q 'not available in this build' "$1"; then echo "ssh transport not available"; return 1; fi
  [ "$2" = 0 ] && [[ $summary == *"0 hosts to change, $hosts_n unchanged, 0 unreachable, 0 failed"* ]] || {
    echo "exit $2, ${summary:-$(tail -n3 "$1" | head -c 300)}"
    return 1
  }
  echo "${summary#Plan: }"
}

log "plain ssh: one small command on every host, xargs -P $hosts_n"
measure ssh verify_ssh ip netns exec "$ctl" timeout 300 \
  xargs -a "$run/addresses" -P "$hosts_n" -I{} ssh "${ssh_opts[@]}" root@{} "$check_cmd"

if [ "$peers" = 1 ]; then
  mkdir -p "$bench/ansible/home" "$bench/ansible/tmp"
  {
    echo "[bench]"
    while IFS=$'\t' read -r h rel; do
      printf '%s ansible_host=%s release=%s\n' "$h" "$(addr "$h")" "$rel"
    done <"$run/releases.tsv"
    printf '\n[bench:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\n' "$key"
  } >"$bench/ansible/hosts.ini"
  cat >"$bench/ansible/ansible.cfg" <<EOF
[defaults]
forks = $hosts_n
host_key_checking = True
gathering = explicit
retry_files_enabled = False
nocolor = True
timeout = 30

[ssh_connection]
pipelining = True
ssh_args = -F /dev/null -o ControlMaster=auto -o ControlPersist=30s -o KexAlgorithms=curve25519-sha256 -o IdentitiesOnly=yes -o UserKnownHostsFile=$bench/client/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
EOF
  log "ansible-playbook --check: forks $hosts_n, pipelining"
  measure ansible verify_ansible ip netns exec "$ctl" \
    env ANSIBLE_CONFIG="$bench/ansible/ansible.cfg" ANSIBLE_HOME="$bench/ansible/home" \
    ANSIBLE_LOCAL_TEMP="$bench/ansible/tmp" \
    timeout --kill-after=10 600 "$venv/bin/ansible-playbook" --check -f "$hosts_n" \
    -i "$bench/ansible/hosts.ini" -e ansible_python_interpreter=/usr/bin/python3 "$assets/site.yml"

  mkdir -p "$bench/pyinfra"
  {
    echo "# generated by benches/fleet_ssh.sh"
    echo "bench = ("
    echo "    ["
    while IFS=$'\t' read -r h rel; do
      printf '        (%s, {"ssh_hostname": %s, "release": %s}),\n' "'$h'" "'$(addr "$h")'" "'$rel'"
    done <"$run/releases.tsv"
    echo "    ],"
    printf '    {"ssh_user": "root", "ssh_key": %s, "ssh_known_hosts_file": %s,\n' "'$key'" "'$bench/client/known_hosts'"
    printf '     "ssh_strict_host_key_checking": "yes", "assets": %s},\n)\n' "'$assets'"
  } >"$bench/pyinfra/inventory.py"
  log "pyinfra --dry: parallel $hosts_n"
  measure pyinfra verify_pyinfra ip netns exec "$ctl" env HOME="$bench/pyinfra" \
    timeout --kill-after=10 600 "$venv/bin/pyinfra" --dry --parallel "$hosts_n" \
    "$bench/pyinfra/inventory.py" "$assets/deploy.py"
fi

# Clarity: the same repository with the servers switched to transport ssh.
clarity_state="measured"
help=$("$bin" --help 2>&1 || true)
clar=(--repo "$repo" --rev HEAD --dry-run --allow-unreachable --work-dir "$bench/clarity-wd"
  --ledger "$bench/clarity-wd/ledger.sqlite")
for opt in --parallel --identity; do
  grep -q -- "$opt " <<<"$help" || clarity_state="unavailable (no $opt option)"
done
if [ "$clarity_state" = measured ]; then
  clar+=(--parallel "$hosts_n" --identity "$key")
  grep -q -- '--connect-timeout ' <<<"$help" && clar+=(--connect-timeout 10)
  grep -q -- '--host-timeout ' <<<"$help" && clar+=(--host-timeout "$cold_timeout")
  "$python" "$assets/gen_repo.py" "$repo" "$run/hosts.tsv" --phase ssh
  mkdir -p "$bench/clarity-wd"
  log "clarity: first pass (cold: the agent, $(du -h "$bin" | cut -f1), is uploaded to every host)"
  timed "$logs/clarity-cold.log" ip netns exec "$ctl" \
    timeout --kill-after=10 "$cold_timeout" "$bin" "${clar[@]}"
  if grep -q 'not available in this build' "$logs/clarity-cold.log"; then
    clarity_state="unavailable"
  else
    T[clarity-cold]=$last_t
    if note=$(verify_clarity "$logs/clarity-cold.log" "$last_rc"); then
      NOTE[clarity-cold]=$note
    else
      NOTE[clarity-cold]="not a no-op: ${note:0:100}"
    fi
    log "clarity cold: $last_t s (${NOTE[clarity-cold]})"
    log "clarity: warm passes (agent already installed)"
    measure clarity verify_clarity ip netns exec "$ctl" \
      timeout --kill-after=10 600 "$bin" "${clar[@]}"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Report

fmt_t() { if [ -n "${T[$1]:-}" ]; then printf '%8.2f s' "${T[$1]}"; else printf '%10s' "n/a"; fi; }
ratio() { # A B TARGET OP → "12.3x  >= 10x  met"
  local a=${T[$1]:-} b=${T[$2]:-}
  if [ -z "$a" ] || [ -z "$b" ]; then printf '%8s   %-8s %s' "n/a" "$3" "-"; return; fi
  awk -v a="$a" -v b="$b" -v tgt="$3" -v op="$4" 'BEGIN {
    r = a / b; t = tgt; sub(/^[^0-9.]*/, "", t); sub(/x$/, "", t)
    ok = (op == "ge") ? (r >= t) : (r <= t)
    printf "%7.2fx   %-8s %s", r, tgt, ok ? "met" : "missed" }'
}
{
  echo
  echo "fleet_ssh: one no-op pass over $hosts_n hosts over SSH (wall clock; best of 3 for runs under 30 s)"
  [ -f "$run/versions" ] && sed 's/^/  peers: /' "$run/versions"
  echo "  clarity: $("$bin" --version 2>/dev/null || echo "$bin")"
  echo
  printf '%-52s %10s   %s\n' "tool" "time" "result"
  printf '%-52s %s   %s\n' "plain ssh (xargs -P $hosts_n, curve25519, 1 command)" "$(fmt_t ssh)" "${NOTE[ssh]:-}"
  printf '%-52s %s   %s\n' "ansible-playbook --check (forks $hosts_n, pipelining)" "$(fmt_t ansible)" "${NOTE[ansible]:-not run}"
  printf '%-52s %s   %s\n' "pyinfra --dry (parallel $hosts_n)" "$(fmt_t pyinfra)" "${NOTE[pyinfra]:-not run}"
  if [ "$clarity_state" = measured ]; then
    printf '%-52s %s   %s\n' "clarity --dry-run, first pass (agent upload)" "$(fmt_t clarity-cold)" "${NOTE[clarity-cold]:-}"
    printf '%-52s %s   %s\n' "clarity --dry-run --parallel $hosts_n (warm)" "$(fmt_t clarity)" "${NOTE[clarity]:-}"
  else
    echo "clarity: ssh transport not available in this build; skipped ($clarity_state)"
  fi
  echo
  printf '%-24s %9s   %-8s %s\n' "ratio" "value" "target" "verdict"
  printf '%-24s %s\n' "Ansible / Clarity" "$(ratio ansible clarity '>=10x' ge)"
  printf '%-24s %s\n' "pyinfra / Clarity" "$(ratio pyinfra clarity '>=3x' ge)"
  printf '%-24s %s\n' "Clarity / plain ssh" "$(ratio clarity ssh '<=1.5x' le)"
  echo
} | tee "$logs/results.txt"
