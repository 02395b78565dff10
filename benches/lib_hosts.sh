# Shared shell functions of the many-host benchmarks (benches/fleet500.sh, benches/b5.sh):
# simulated hosts that are one sshd each in its own network namespace, on a bridge inside a
# control namespace from which every tool connects (the same testbed as benches/fleet_ssh.sh,
# see benches/fleet_ssh/README.md and shared TESTBED.md "Lighter hosts").
#
# Sourced, never run. The caller sets, before calling anything here:
#   LH_TAG     name in log lines             LH_DIR     work directory (absolute, no spaces)
#   LH_CTL     control namespace name        LH_BRIDGE  bridge name inside LH_CTL
#   LH_BRIDGE_CIDR  the bridge's address/prefix (one of benches/harness_net.sh's ranges)
#   LH_PREFIX  the hosts' prefix length      names=(...) the host namespace names
# and defines `addr NAME` (the host's address). What this file starts (sshds, whatever runs in
# the namespaces, the services Clarity starts from its pidfiles) it stops by PID; it touches no
# process, namespace or file it did not create, and no address outside the caller's range.

log() { printf '[%s %s] %s\n' "$LH_TAG" "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Re-exec the calling script as a child subreaper (the attribute survives exec): the services
# Clarity starts detached, and ssh's ControlPersist masters, are re-parented to the script,
# which reaps them, instead of to PID 1, which on these machines does not.
# Usage, first thing in a script: lh_become_subreaper "$0" "$@"
lh_become_subreaper() {
  [ "${LH_SUBREAPER:-}" = 1 ] && return 0
  export LH_SUBREAPER=1
  exec /usr/bin/python3 -c '
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
os.execv("/bin/bash", ["bash"] + sys.argv[1:])' "$@"
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

lh_sshd_pids=()
lh_watchdog=""
lh_cmd_pid="" # the measured command while it runs

# The services Clarity's `process` manager started (its pidfiles hold the PID and the start
# time, so a recycled PID is never taken for one of ours).
lh_stop_services() {
  local f pid start pids=()
  for f in "$LH_DIR"/hosts/*/var/lib/clarity/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(head -n1 "$f" 2>/dev/null || true)
    start=$(sed -n 's/^start_time=//p' "$f" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] && [ -e "/proc/$pid" ] || continue
    if [ -n "$start" ] && [ "$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null)" = "$start" ]; then
      pids+=("$pid")
    fi
  done
  kill_and_wait "${pids[@]}"
}

lh_teardown() {
  local ns pids=() p d
  lh_stop_services
  kill_and_wait "${lh_sshd_pids[@]}"
  lh_sshd_pids=()
  # Whatever still runs inside our namespaces (sessions, services started over ssh, clients).
  for ns in "$LH_CTL" "${names[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null || true); do pids+=("$p"); done
  done
  kill_and_wait "${pids[@]}"
  for ns in "${names[@]}" "$LH_CTL"; do
    if [ -e "/run/netns/$ns" ]; then ip netns del "$ns" 2>/dev/null || true; fi
  done
  if [ -f "$LH_DIR/run/created_dirs" ]; then
    while read -r d; do rmdir "$d" 2>/dev/null || true; done <"$LH_DIR/run/created_dirs"
  fi
  rm -rf "$LH_DIR/hosts" "$LH_DIR/sshd" "$LH_DIR/repo" "$LH_DIR/clarity-wd" "$LH_DIR/run"
}

# A previous run killed before its trap: its sshds (checked by binary and config path), then
# the usual teardown.
lh_leftovers() {
  local f p
  for f in "$LH_DIR"/sshd/*/sshd.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    if [[ $p =~ ^[0-9]+$ ]] && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/sshd ] &&
      tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "-f $LH_DIR/sshd/"; then
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  lh_teardown
}

# Caller's hook run first on exit (e.g. closing Ansible's masters); default: nothing.
lh_before_teardown() { :; }

lh_cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  if [ -n "$lh_watchdog" ]; then kill -TERM "$lh_watchdog" 2>/dev/null; wait "$lh_watchdog" 2>/dev/null; fi
  if [ -n "$lh_cmd_pid" ]; then kill_and_wait "$lh_cmd_pid"; fi
  lh_before_teardown
  lh_teardown
  wait 2>/dev/null
  local left_ns=0 ns left_p=() f k v
  for ns in "$LH_CTL" "${names[@]}"; do [ -e "/run/netns/$ns" ] && left_ns=$((left_ns + 1)); done
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

# Traps, and the deadline: after $1 seconds this shell gets SIGTERM (and cleans up).
lh_arm() {
  trap lh_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$1" & s=$!
    wait "$s" && kill -TERM $$
  ) &
  lh_watchdog=$!
}

lh_require_tools() {
  local tool
  for tool in ip unshare ssh ssh-keygen xargs timeout git awk sqlite3 "$@"; do
    command -v "$tool" >/dev/null || die "missing $tool"
  done
  if [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/lib/openssh/sftp-server ]; then
    log "installing openssh-server"
    timeout 600 apt-get install -y -q openssh-server >/dev/null || die "cannot install openssh-server"
  fi
}

# Client key, one host key and sshd config per host, known_hosts, and $LH_DIR/run/hosts.tsv
# (name, address, pinned key) and run/addresses.
lh_make_hosts() {
  local key=$LH_DIR/client/id_ed25519 h d pub a
  mkdir -p "$LH_DIR/client" "$LH_DIR/sshd" "$LH_DIR/hosts" "$LH_DIR/run"
  [ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C "$LH_TAG-bench" -f "$key"
  cp "$key.pub" "$LH_DIR/client/authorized_keys"
  : >"$LH_DIR/client/known_hosts"
  : >"$LH_DIR/run/hosts.tsv"
  : >"$LH_DIR/run/addresses"
  # A plain ~/.bashrc for the simulated hosts (no pyenv) that notes, on the host, when each
  # command over ssh starts and ends ($EPOCHREALTIME: no fork): per-host times seen from the
  # host, whichever tool connected.
  cat >"$LH_DIR/run/bashrc" <<'RC'
printf 'start %s\n' "$EPOCHREALTIME" >>/srv/bench-sessions.log
trap 'printf "end %s\n" "$EPOCHREALTIME" >>/srv/bench-sessions.log' EXIT
RC
  for h in "${names[@]}"; do
    d=$LH_DIR/sshd/$h
    mkdir -p "$d" "$LH_DIR/hosts/$h/opt/clarity" "$LH_DIR/hosts/$h/var/lib/clarity" "$LH_DIR/hosts/$h/srv"
    ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$d/ssh_host_ed25519_key"
    pub=$(awk '{print $1, $2}' "$d/ssh_host_ed25519_key.pub")
    a=$(addr "$h")
    printf '%s %s\n' "$a" "$pub" >>"$LH_DIR/client/known_hosts"
    printf '%s\t%s\t%s\n' "$h" "$a" "$pub" >>"$LH_DIR/run/hosts.tsv"
    printf '%s\n' "$a" >>"$LH_DIR/run/addresses"
    cat >"$d/sshd_config" <<EOF
ListenAddress $a
Port 22
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
AuthorizedKeysFile $LH_DIR/client/authorized_keys
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
}

# The control namespace with the bridge, one namespace per host with a veth on it.
lh_net_up() {
  local h
  ip netns add "$LH_CTL"
  ip -n "$LH_CTL" link set lo up
  ip -n "$LH_CTL" link add "$LH_BRIDGE" type bridge
  ip -n "$LH_CTL" addr add "$LH_BRIDGE_CIDR" dev "$LH_BRIDGE"
  ip -n "$LH_CTL" link set "$LH_BRIDGE" up
  for h in "${names[@]}"; do
    ip netns add "$h"
    ip -n "$LH_CTL" link add "v$h" type veth peer name eth0 netns "$h"
    ip -n "$LH_CTL" link set "v$h" master "$LH_BRIDGE" up
    ip -n "$h" addr add "$(addr "$h")/$LH_PREFIX" dev eth0
    ip -n "$h" link set eth0 up
    ip -n "$h" link set lo up
  done
}

# One sshd per host: a plain environment, its own hostname, its own /opt/clarity,
# /var/lib/clarity and /srv (bind mounts in a private mount namespace; /srv holds what is not
# Clarity's: the session log, a peer's files) and a plain ~/.bashrc.
lh_sshd_up() {
  local h d
  for d in /opt/clarity /var/lib/clarity /srv; do
    if [ ! -d "$d" ]; then mkdir -p "$d" && printf '%s\n' "$d" >>"$LH_DIR/run/created_dirs"; fi
  done
  mkdir -p /run/sshd
  for h in "${names[@]}"; do
    d=$LH_DIR/sshd/$h
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      ip netns exec "$h" unshare --uts --mount sh -c '
        set -e
        hostname "$1"
        mount --bind "$2/opt/clarity" /opt/clarity
        mount --bind "$2/var/lib/clarity" /var/lib/clarity
        mount --bind "$2/srv" /srv
        if [ -f /root/.bashrc ]; then mount --bind "$3" /root/.bashrc; fi
        exec /usr/sbin/sshd -D -f "$4" -E "$5"' \
      sh "$h" "$LH_DIR/hosts/$h" "$LH_DIR/run/bashrc" "$d/sshd_config" "$d/sshd.log" </dev/null &
    lh_sshd_pids+=("$!")
  done
  ip netns exec "$LH_CTL" timeout 120 bash -c '
    for a in $(cat "$1"); do
      for ((i = 0; i < 200; i++)); do
        if (exec 3<>"/dev/tcp/$a/22") 2>/dev/null; then continue 2; fi
        sleep 0.1
      done
      echo "$a: sshd does not answer" >&2; exit 1
    done' bash "$LH_DIR/run/addresses" || die "not every sshd came up (see $LH_DIR/sshd/*/sshd.log)"
}

# Per host, from its session log: the end of its last command that started after epoch second
# $1, minus $1 (the host's time in the pass that started at $1): "NAME SECONDS" lines, in host
# order ("NAME -" for a host with no command in that pass).
lh_session_times() {
  local since=$1 h
  for h in "${names[@]}"; do
    awk -v h="$h" -v t0="$since" '
      $1 == "start" { on = ($2 >= t0) }
      $1 == "end" && on { last = $2 }
      END { if (last) printf "%s %.3f\n", h, last - t0; else printf "%s -\n", h }' \
      "$LH_DIR/hosts/$h/srv/bench-sessions.log" 2>/dev/null || printf '%s -\n' "$h"
  done
}

lh_ssh_opts() { # → LH_SSH_OPTS: plain ssh as the floor, curve25519, no multiplexing
  LH_SSH_OPTS=(-F /dev/null -i "$LH_DIR/client/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes
    -o KexAlgorithms=curve25519-sha256 -o UserKnownHostsFile="$LH_DIR/client/known_hosts"
    -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o ConnectTimeout=30
    -o ControlMaster=no -o ControlPath=none -o LogLevel=ERROR)
}

# Clarity installs its agent (this very binary, 100+ MB) on a host at first contact. The
# benches measure passes over hosts that already have it, and cannot afford a copy per host
# on a shared disk: the agent files the first host received over SSH are hard-linked into
# every other host's /var/lib/clarity/agent (same file system), whatever their names are.
lh_share_agent() {
  local first=$1 h src=$LH_DIR/hosts/$1/var/lib/clarity/agent
  [ -d "$src" ] && [ -n "$(ls -A "$src")" ] || die "$first has no agent after its first contact"
  for h in "${names[@]}"; do
    [ "$h" = "$first" ] && continue
    mkdir -p "$LH_DIR/hosts/$h/var/lib/clarity"
    cp -a --link "$src" "$LH_DIR/hosts/$h/var/lib/clarity/"
  done
}

LH_T=0 LH_RC=0
lh_timed() { # LOG CMD... → LH_T (seconds), LH_RC
  local log_file=$1 s e
  shift
  s=$(date +%s%N)
  set +e
  # In the background so that SIGINT/SIGTERM interrupt `wait` and clean up at once.
  "$@" >"$log_file" 2>&1 &
  lh_cmd_pid=$!
  wait "$lh_cmd_pid"
  LH_RC=$?
  lh_cmd_pid=""
  set -e
  e=$(date +%s%N)
  LH_T=$(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
}
