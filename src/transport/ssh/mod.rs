//! The `ssh` transport: the agent of a real host, reached with `ssh2` (libssh2) over one
//! connection per host that carries all of that host's commands in a run (inspect, agent
//! upload, apply).
//!
//! Before any credential is sent the host must prove who it is ([`super::host_key`]): a pinned
//! `agent.ssh.host_key`, or the known_hosts file. A different key is refused with both
//! fingerprints; an unknown host is refused unless the operator passed
//! `--accept-new-host-keys`, which records its key (a host certificate from a CA known_hosts
//! trusts is checked by [`super::host_cert`] and never recorded). Logging in uses the server's
//! `identity_file`, else the ssh config's `IdentityFile`, else the reconciler's `--identity`,
//! else ssh-agent. A host behind a bastion is reached through it (`jump.rs`: the
//! bastion's key is verified and it is logged into first); a host whose SSH user is not root
//! runs the agent as `sudo -n -- AGENT ...`, and a refusal names the sudoers line to add.
//!
//! The agent is this very binary, run on the host from a file named after this build,
//! `/var/lib/clarity/agent/clarity-reconcile-<version>-<12 hex of its sha256>`
//! ([`AgentBinary`]). The first agent command on a connection (normally `agent inspect`) is
//! also the version check: if that file runs, the host has this build. When it is missing or
//! cannot be run (the shell's exit 127 or 126), this binary is uploaded over SFTP beside it,
//! its sha256 checked on the host, its wire formats compared, the stable symlink
//! `clarity-reconcile` switched to it with one `rename(2)`, and the command run again. Wire formats are compared, never guessed:
//! an agent that answers in another format is reported.
//!
//! Applying never depends on the connection staying up: the agent runs the apply detached
//! (`agent apply --run ID --detach`) and this side follows its event file
//! (`agent events --run ID --follow`); when the connection drops it reconnects and reads on
//! from the last event it saw. Every command is an argv vector quoted by
//! [`super::quote::command_line`]. This module prints nothing: what an operator should know
//! (an installed agent, a recorded host key, a reconnect) goes to the `notes` callback.

pub use super::agent_binary::AgentBinary;
mod error;

pub use error::SshError;
use error::stderr_text;

use super::host_key::{self, Expected, KnownHosts, PublicKey, Verdict};
use super::pool::{Pool, Slot};
use super::quote::command_line;
use super::upload::{Codec, Payload};
use super::{HostStateError, TransportError, read_host_state};
use crate::model::apply::{AgentEvent, ApplyRequest, HostOutcome};
use crate::model::host::{ActualHost, HOST_STATE_FORMAT};
use ssh2::{ErrorCode, MethodType, Session};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the agent lives on a host: versioned binaries and the stable symlink to one.
pub const AGENT_DIR: &str = "/var/lib/clarity/agent";
pub const AGENT_LINK: &str = "/var/lib/clarity/agent/clarity-reconcile";
/// Detached applies, one directory each (see `agent::detached`).
pub const APPLIES_DIR: &str = "/var/lib/clarity/applies";

/// Key exchanges in order of preference: curve25519 costs a fraction of the CPU of OpenSSH's
/// post-quantum default, which matters when a reconciler opens hundreds of connections.
const KEX_PREFERENCE: &str = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,\
                              ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group16-sha512,\
                              diffie-hellman-group14-sha256";
/// libssh2's "timed out" code: the command may still be running, but the channel's state is
/// unknown, so the connection is dropped like a lost one.
const ERROR_TIMEOUT: i32 = -9;
/// Seconds a follower waits for news before returning (and being asked again).
const FOLLOW_IDLE_S: u64 = 10;

/// How the reconciler connects, from its command line.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// `--identity`: the key for servers without their own `identity_file`.
    pub identity: Option<PathBuf>,
    /// `--known-hosts`: the one file to read and record keys in; `None` means OpenSSH's files
    /// (`~/.ssh/known_hosts`, `/etc/ssh/ssh_known_hosts`), recording in the first.
    pub known_hosts: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    /// TCP connect plus handshake plus login.
    pub connect_timeout: Duration,
    /// Any one command on a host (a version check, inspect, an upload's each write).
    pub command_timeout: Duration,
    /// Everything one host operation may take (inspecting, or applying one part of a plan,
    /// reconnects included); the host is reported and the others carry on.
    pub host_timeout: Duration,
    /// How long to keep trying to reconnect after a connection dropped.
    pub reconnect_timeout: Duration,
    /// `--max-connections`: connections open at once; one more closes the least recently
    /// used idle one ([`super::pool`]).
    pub max_connections: usize,
    /// `--max-uploads`: agent uploads at once (first contact with many hosts).
    pub max_uploads: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            identity: None,
            known_hosts: None,
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            host_timeout: Duration::from_secs(1800),
            reconnect_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_uploads: 8,
        }
    }
}

/// One host as the transport reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The server's host name (for messages).
    pub host: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub host_key: Option<String>,
    pub identity_file: Option<PathBuf>,
    /// Run the agent as root with `sudo -n` (the SSH user is not root).
    pub sudo: bool,
    /// The bastion to reach the host through (its `host` is the server's, for messages; its
    /// own `jump` is `None`: one hop).
    pub jump: Option<Box<SshTarget>>,
}

/// The sudoers rule a sudo host needs for `user`: the agent builds and nothing else.
pub fn sudoers_line(user: &str) -> String {
    format!("{user} ALL=(root) NOPASSWD: {AGENT_DIR}/clarity-reconcile-*")
}

/// Reports something an operator should know, as one line naming the host.
pub type Notes = Arc<dyn Fn(&str) + Send + Sync>;

/// The hosts of one run (or of every pass of `--watch`: [`super::pool::fleet`]), each with
/// its connection, shared by planning and applying.
pub struct Fleet {
    options: Arc<SshOptions>,
    binary: Arc<AgentBinary>,
    notes: Notes,
    pool: Arc<Pool>,
    /// Each host with the settings it was opened with (compared without locking the host,
    /// which may be busy applying).
    hosts: Mutex<std::collections::BTreeMap<String, OpenedHost>>,
}

/// A host of the fleet and the settings it was opened with.
type OpenedHost = (SshTarget, Arc<Mutex<SshHost>>);

impl Fleet {
    pub fn new(options: SshOptions, binary: AgentBinary, notes: Notes) -> Fleet {
        Fleet {
            pool: Arc::new(Pool::new(options.max_connections, options.max_uploads)),
            options: Arc::new(options),
            binary: Arc::new(binary),
            notes,
            hosts: Mutex::new(Default::default()),
        }
    }

    /// The connection limits of this fleet's hosts.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The sha256 prefix naming this build's agent on hosts, once known.
    pub fn build(&self) -> Option<String> {
        self.binary.sha256().ok().map(|s| s[..12].to_string())
    }

    /// Closes every host's connection, saying goodbye (waits for busy hosts).
    pub fn close_all(&self) {
        let hosts: Vec<OpenedHost> =
            std::mem::take(&mut *self.hosts.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        for (_, h) in hosts {
            h.lock().unwrap_or_else(|e| e.into_inner()).conn = None;
        }
    }

    /// The host `target` names, with the connection an earlier call opened (if its settings
    /// are the same).
    pub fn host(&self, target: SshTarget) -> Arc<Mutex<SshHost>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((opened_with, h)) = hosts.get(&target.host)
            && *opened_with == target
        {
            return h.clone();
        }
        let h = Arc::new(Mutex::new(SshHost {
            target: target.clone(),
            options: self.options.clone(),
            binary: self.binary.clone(),
            notes: self.notes.clone(),
            pool: self.pool.clone(),
            conn: None,
            agent: None,
            last_used: Instant::now(),
        }));
        self.pool.register(&h);
        hosts.insert(target.host.clone(), (target, h.clone()));
        h
    }

    /// Closes a host's connection (a host with nothing to apply need not keep one open),
    /// unless connections are kept for the next pass of `--watch`
    /// ([`super::pool::keep_between_runs`]).
    pub fn release(&self, host: &str) {
        if super::pool::keeps_between_runs() {
            return;
        }
        let h = self
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host);
        if let Some((_, h)) = h
            && let Ok(mut h) = h.lock()
        {
            h.conn = None;
        }
    }
}

/// A session that says goodbye when dropped: a connection that just vanishes makes OpenSSH's
/// per-connection process exit before it reaps its own child, leaving a zombie on hosts whose
/// init does not reap them.
pub(super) struct Connection(pub(super) Session);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.set_timeout(2000);
        let _ = self.0.disconnect(None, "done", None);
    }
}

/// A host's connection and its place among the `--max-connections`.
pub(super) struct Pooled {
    conn: Connection,
    _slot: Slot,
}

impl std::ops::Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// Receives a command's stdout line by line, as it arrives.
type LineSink<'a> = &'a mut dyn FnMut(&[u8]);

/// What a command did.
struct Output {
    status: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// One host: its settings and, once contacted, its connection and verified agent.
pub struct SshHost {
    target: SshTarget,
    options: Arc<SshOptions>,
    binary: Arc<AgentBinary>,
    notes: Notes,
    pool: Arc<Pool>,
    conn: Option<Pooled>,
    /// The agent binary verified on this host (a versioned path, so a concurrent reconciler
    /// switching the symlink cannot change what we talk to).
    agent: Option<String>,
    /// When the connection last carried a command (the least recently used idle one is
    /// closed first).
    last_used: Instant,
}

impl SshHost {
    fn note(&self, message: &str) {
        (self.notes)(&format!("{}: {message}", self.target.host));
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.target.host
    }

    /// When its open connection was last used (`None`: no connection).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        self.conn.as_ref().map(|_| self.last_used)
    }

    /// Its connection, taken away to be closed (the pool needs the slot).
    pub(super) fn take_connection(&mut self) -> Option<Pooled> {
        self.conn.take()
    }

    /// Sends a keepalive when one is due on the idle connection; a connection whose keepalive
    /// cannot be sent is dead and closed here, so that the next command opens a new one.
    pub(super) fn keep_alive(&mut self) {
        let dead = self.conn.as_ref().is_some_and(|c| {
            c.0.set_timeout(2000);
            c.0.keepalive_send().is_err()
        });
        if dead {
            self.note("the kept connection answers no keepalive; closed");
            self.conn = None;
        }
    }

    /// Reads the host's actual state. On a host whose agent is this build, that is one
    /// command, which doubles as the version check (see [`Self::run_agent`]).
    pub fn inspect(&mut self) -> Result<ActualHost, TransportError> {
        let deadline = Instant::now() + self.options.host_timeout;
        // Checked again on every pass, a kept connection too: the command is the check, so
        // it costs nothing, and a build removed since the last pass is installed again.
        self.agent = None;
        let args = ["agent", "inspect", "--root", "/"];
        let (agent, out) = self.run_agent(&args, deadline)?;
        if out.status != 0 {
            return Err(self
                .command_failed(&agent_argv(self.target.sudo, &agent, &args), &out)
                .into());
        }
        let host = self.host_state(&agent, &out.stdout)?;
        self.agent = Some(agent);
        Ok(host)
    }

    /// Parses what `agent inspect` printed: our host-state format, from our agent version. The
    /// agent ran from the versioned path of this build, so anything else means the file there
    /// is not what its name says.
    fn host_state(&self, agent: &str, stdout: &[u8]) -> Result<ActualHost, SshError> {
        let protocol = |detail: String| SshError::Protocol {
            host: self.target.host.clone(),
            detail,
        };
        let not_ours = |what: String| {
            protocol(format!(
                "{agent} {what}, this reconciler {} speaks `{HOST_STATE_FORMAT}`: the file is \
                 not the build its name says; remove it and the next run installs this build",
                crate::agent::AGENT_VERSION
            ))
        };
        let host = match read_host_state(stdout) {
            Ok(host) => host,
            Err(HostStateError::Format(format)) => {
                return Err(not_ours(format!(
                    "answered in host-state format `{format}`"
                )));
            }
            Err(e) => return Err(protocol(format!("{agent}: {e}"))),
        };
        if host.agent_version != crate::agent::AGENT_VERSION {
            return Err(not_ours(format!(
                "reports agent version {}",
                host.agent_version
            )));
        }
        Ok(host)
    }

    /// Applies `req` with a detached agent and hands each event to `on_event` as it arrives;
    /// survives dropped connections by reconnecting and reading on.
    pub fn apply(
        &mut self,
        req: &ApplyRequest,
        lock_timeout_s: u64,
        on_event: &mut dyn FnMut(&AgentEvent),
    ) -> Result<HostOutcome, TransportError> {
        let deadline = Instant::now() + self.options.host_timeout;
        let agent = self.ensure_agent(deadline)?;
        let id = apply_id(&self.target.host);
        // The request holds secrets: it travels on the channel's stdin and the agent keeps it
        // (mode 0600) only until the apply has read it.
        let body = serde_json::to_vec(req).expect("requests serialize");
        let lock = lock_timeout_s.to_string();
        let sudo = self.target.sudo;
        let start = agent_argv(
            sudo,
            &agent,
            &[
                "agent",
                "apply",
                "--root",
                "/",
                "--lock-timeout",
                &lock,
                "--run",
                &id,
                "--detach",
            ],
        );
        let mut started = false;
        let mut seen = 0u64;
        let mut log_seen = 0u64;
        let mut outcome = None;
        let idle = FOLLOW_IDLE_S.min(self.options.command_timeout.as_secs() / 2 + 1);
        loop {
            if Instant::now() >= deadline {
                return Err(SshError::HostTimeout {
                    host: self.target.host.clone(),
                    seconds: self.options.host_timeout.as_secs(),
                    id,
                }
                .into());
            }
            let step = if !started {
                self.exec(&start, Some(&body), self.options.command_timeout, None)
                    .and_then(|out| {
                        if out.status == 0 {
                            started = true;
                            Ok(())
                        } else {
                            Err(self.command_failed(&start, &out))
                        }
                    })
            } else {
                let (from, log_from, idle_s) =
                    (seen.to_string(), log_seen.to_string(), idle.to_string());
                let follow = agent_argv(
                    sudo,
                    &agent,
                    &[
                        "agent",
                        "events",
                        "--root",
                        "/",
                        "--run",
                        &id,
                        "--from",
                        &from,
                        "--log-from",
                        &log_from,
                        "--follow",
                        "--idle",
                        &idle_s,
                    ],
                );
                let host = self.target.host.clone();
                let mut bad_line = None;
                let mut on_line = |line: &[u8]| match serde_json::from_slice::<AgentEvent>(line) {
                    Ok(event) => {
                        seen += 1;
                        if let AgentEvent::Done { outcome: o, .. } = &event {
                            outcome = Some(*o);
                        }
                        on_event(&event);
                    }
                    Err(e) => {
                        bad_line.get_or_insert(format!(
                            "the agent sent a line that is not an event ({e})"
                        ));
                    }
                };
                let timeout = self.options.command_timeout + Duration::from_secs(idle);
                let result = self.exec(&follow, None, timeout, Some(&mut on_line));
                match result {
                    Ok(out) => {
                        log_seen += out.stderr.len() as u64;
                        for line in String::from_utf8_lossy(&out.stderr).lines() {
                            if !line.trim().is_empty() {
                                self.note(&format!("agent: {line}"));
                            }
                        }
                        if let Some(detail) = bad_line {
                            return Err(SshError::Protocol { host, detail }.into());
                        }
                        match out.status {
                            0 => Ok(()),
                            3 => return Err(SshError::ApplyGone { host, id }.into()),
                            _ => Err(self.command_failed(&follow, &out)),
                        }
                    }
                    Err(e) => Err(e),
                }
            };
            match step {
                Ok(()) => {
                    if let Some(o) = outcome {
                        return Ok(o);
                    }
                }
                Err(e) if e.connection_lost() => {
                    self.note(&format!(
                        "{}; reconnecting to follow apply {id} (the agent goes on without us)",
                        e.without_host()
                    ));
                    if let Err(cause) = self.reconnect(deadline) {
                        return Err(SshError::Disconnected {
                            host: self.target.host.clone(),
                            id,
                            cause: Box::new(cause),
                        }
                        .into());
                    }
                    self.note(&format!(
                        "reconnected; reading apply {id} on from event {}",
                        seen + 1
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The agent to run on this host, checked once per connection: after [`Self::inspect`] it
    /// is known; otherwise `agent version` must answer with our version and wire formats.
    fn ensure_agent(&mut self, deadline: Instant) -> Result<String, SshError> {
        if let Some(a) = &self.agent {
            return Ok(a.clone());
        }
        let (agent, out) = self.run_agent(&["agent", "version"], deadline)?;
        self.check_version(&agent, &out)?;
        self.agent = Some(agent.clone());
        Ok(agent)
    }

    /// Runs this build's agent with `args` (a command that may be repeated); returns the
    /// agent's path and what the command did.
    ///
    /// Until the agent is known on this connection, the command doubles as the version check:
    /// the agent is run by its versioned path, `AGENT_DIR/clarity-reconcile-<version>-<12 hex
    /// of sha256>`, a file that exists only once this very binary was uploaded there, its
    /// sha256 checked on the host and its wire formats compared ([`Self::install`]). If it
    /// runs, the host has our build, with no separate round trip to ask. When the file is
    /// missing or cannot be run (the shell's exit 127 or 126), the agent is installed (which,
    /// finding a checked file there already, reports why it does not run) and the command run
    /// once more.
    fn run_agent(
        &mut self,
        args: &[&str],
        deadline: Instant,
    ) -> Result<(String, Output), SshError> {
        if let Some(agent) = self.agent.clone() {
            let out = self.run_idempotent(&agent_argv(self.target.sudo, &agent, args), deadline)?;
            return Ok((agent, out));
        }
        // Connected first: a host that cannot be reached is that, whatever the binary.
        self.connection(deadline)?;
        let name = self
            .binary
            .file_name()
            .map_err(|detail| SshError::Install {
                host: self.target.host.clone(),
                detail,
            })?;
        let ours = format!("{AGENT_DIR}/{name}");
        let argv = agent_argv(self.target.sudo, &ours, args);
        let ran = match self.run_idempotent(&argv, deadline) {
            // sudo matches its rule against files that exist: a build not installed yet is
            // refused like a missing rule. Installing tells the two apart.
            Err(SshError::Sudo { .. })
                if self
                    .run_idempotent(&["test", "-e", &ours], deadline)?
                    .status
                    != 0 =>
            {
                None
            }
            other => Some(other?),
        };
        if let Some(out) = ran
            && (out.status == 0 || !self.agent_missing(&ours, &out, deadline)?)
        {
            // It ran: the caller reads (or reports) what it said.
            return Ok((ours, out));
        }
        self.install(&name, deadline)?;
        let out = self.run_idempotent(&argv, deadline)?;
        Ok((ours, out))
    }

    /// Whether a failed agent command failed because the build is not on the host, or cannot
    /// be run there: the shell's "not found" (127) or "cannot execute" (126), or, for a shell
    /// that says so another way, no such file. Installing then puts it there, or finds it
    /// there and reports why it does not run.
    fn agent_missing(
        &mut self,
        path: &str,
        out: &Output,
        deadline: Instant,
    ) -> Result<bool, SshError> {
        if out.status == 127 || out.status == 126 {
            return Ok(true);
        }
        Ok(self.run_idempotent(&["test", "-e", path], deadline)?.status != 0)
    }

    /// Checks what `agent version` printed: our agent version, speaking our wire formats.
    fn check_version(&self, agent: &str, out: &Output) -> Result<(), SshError> {
        let host = self.target.host.clone();
        if out.status != 0 {
            return Err(SshError::Install {
                host,
                detail: format!(
                    "{agent} does not run on the host ({}{})",
                    exit_text(out.status),
                    stderr_text(&String::from_utf8_lossy(&out.stderr))
                ),
            });
        }
        match serde_json::from_slice::<RemoteVersion>(&out.stdout) {
            Ok(v) if v.speaks_ours() => Ok(()),
            Ok(v) => Err(SshError::Protocol {
                host,
                detail: format!(
                    "the agent {agent} is version {}, speaking host-state {}, plan {}, apply {}; \
                     this reconciler is {}, speaking {}, {}, {}",
                    v.agent_version,
                    v.host_state,
                    v.plan,
                    v.apply,
                    crate::agent::AGENT_VERSION,
                    crate::model::host::HOST_STATE_FORMAT,
                    crate::plan::PLAN_FORMAT,
                    crate::model::apply::APPLY_FORMAT
                ),
            }),
            Err(e) => Err(SshError::Install {
                host,
                detail: format!(
                    "`{agent} agent version` printed something that is not its JSON ({e})"
                ),
            }),
        }
    }

    /// Uploads this binary as `AGENT_DIR/name` (unless a checked copy is there already), checks
    /// it on the host, and points the stable symlink at it. What travels is the binary without
    /// its debug information, compressed for a program the host has ([`super::upload`]); the
    /// sha256 checked on the host is that of the decompressed file.
    fn install(&mut self, name: &str, deadline: Instant) -> Result<(), SshError> {
        let host = self.target.host.clone();
        let install_error = |detail: String| SshError::Install {
            host: host.clone(),
            detail,
        };
        let build_sha = self.binary.sha256().map_err(&install_error)?.to_string();
        let versioned = format!("{AGENT_DIR}/{name}");
        self.run_checked(&["mkdir", "-p", "--", AGENT_DIR], deadline)?;
        // A file of this build may be there already (a run that stopped before switching),
        // stripped or, from a reconciler that sent builds whole, not.
        let present = self.remote_sha256(&versioned, deadline)?;
        let stripped = self.binary.stripped().map_err(&install_error)?;
        let mut sent = None;
        if present
            .as_ref()
            .is_some_and(|p| *p == build_sha || *p == stripped.sha256)
        {
            // Checked already; it may have lost its mode since.
            self.run_checked(&["chmod", "0755", "--", &versioned], deadline)?;
        } else {
            let codec = self.host_codec(deadline)?;
            let payload = self.binary.payload(codec).map_err(&install_error)?;
            self.send(name, &payload, deadline)?;
            self.run_checked(&["mv", "-f", "--", &self.part(name), &versioned], deadline)?;
            sent = Some(payload);
        }
        let upload = sent.is_some();
        // It must run there and speak our formats before anything points at it.
        let out = self.run_idempotent(
            &agent_argv(self.target.sudo, &versioned, &["agent", "version"]),
            deadline,
        )?;
        self.check_version(&versioned, &out)?;
        let previous = self
            .run_idempotent(&["readlink", "--", AGENT_LINK], deadline)
            .ok()
            .filter(|o| o.status == 0)
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let tmp = format!("{AGENT_DIR}/.link-{}", std::process::id());
        let _ = self.run_idempotent(&["rm", "-f", "--", &tmp], deadline);
        self.run_checked(&["ln", "-s", "--", name, &tmp], deadline)?;
        // rename(2) over the old link: readers see the old agent or the new one, never none.
        self.run_checked(&["mv", "-fT", "--", &tmp, AGENT_LINK], deadline)?;
        self.remove_old_builds(name, previous.as_deref(), deadline);
        let was = match previous
            .as_deref()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
        {
            None | Some("") => "no agent was installed".to_string(),
            Some(p) if p == name && upload => "its file was missing".to_string(),
            Some(p) if p == name => "its file could not be run".to_string(),
            Some(p) => format!("replacing {p}"),
        };
        let how = match &sent {
            Some(p) => format!(
                ", sent {:.1} MB {}",
                p.size as f64 / 1_000_000.0,
                match p.codec {
                    Codec::Plain => "uncompressed".to_string(),
                    c => format!("as {c}"),
                }
            ),
            None => String::new(),
        };
        self.note(&format!(
            "installed agent {} ({}) as {versioned}; {was}{how}",
            crate::agent::AGENT_VERSION,
            &build_sha[..12]
        ));
        self.pool.installed();
        Ok(())
    }

    /// Where an upload is put together before it is checked.
    fn part(&self, name: &str) -> String {
        format!("{AGENT_DIR}/.upload-{name}-{}", std::process::id())
    }

    /// The best [`Codec`] the host can undo: the first of zstd, xz, gzip that `which` finds
    /// there (debianutils' `which` is on every Debian host; without it, none).
    fn host_codec(&mut self, deadline: Instant) -> Result<Codec, SshError> {
        let mut argv = vec!["which"];
        argv.extend(Codec::PREFERENCE.iter().filter_map(|c| c.program()));
        let out = self.run_idempotent(&argv, deadline)?;
        // `which` exits 1 when any one is missing; what it printed is what is there.
        Ok(Codec::best_of(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Sends `payload` to [`Self::part`], decompresses it there, and checks its sha256, all
    /// within one of the `--max-uploads` permits.
    fn send(&mut self, name: &str, payload: &Payload, deadline: Instant) -> Result<(), SshError> {
        let pool = self.pool.clone();
        let _permit = pool.upload_permit();
        let part = self.part(name);
        let compressed = format!("{part}{}", payload.codec.suffix());
        let cleanup = |me: &mut SshHost| {
            let _ = me.run_idempotent(&["rm", "-f", "--", &part, &compressed], deadline);
        };
        self.upload(&payload.path, &compressed, deadline)?;
        if let Some(argv) = payload.codec.decompress_argv(&compressed) {
            let out = self.run_idempotent(&argv, deadline)?;
            if out.status != 0 {
                let e = self.command_failed(&argv, &out);
                cleanup(self);
                return Err(SshError::Install {
                    host: self.target.host.clone(),
                    detail: format!("{}; the upload was removed", e.without_host()),
                });
            }
        }
        let got = self.remote_sha256(&part, deadline)?;
        if got.as_deref() != Some(payload.sha256.as_str()) {
            cleanup(self);
            return Err(SshError::Install {
                host: self.target.host.clone(),
                detail: format!(
                    "the uploaded file's sha256 is {}, expected {}; it was removed",
                    got.unwrap_or_else(|| "unknown".into()),
                    payload.sha256
                ),
            });
        }
        self.run_checked(&["chmod", "0755", "--", &part], deadline)?;
        Ok(())
    }

    /// Removes agent builds other than the new one and the one it replaced (a running apply
    /// keeps its file open, so removing it harms nothing).
    fn remove_old_builds(&mut self, keep: &str, previous: Option<&str>, deadline: Instant) {
        let Ok(out) = self.run_idempotent(&["ls", "-A", "--", AGENT_DIR], deadline) else {
            return;
        };
        let previous = previous.map(|p| p.rsplit('/').next().unwrap_or(p).to_string());
        let stale: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|f| {
                (f.starts_with("clarity-reconcile-") || f.starts_with(".upload-"))
                    && *f != keep
                    && Some(*f) != previous.as_deref()
            })
            .map(|f| format!("{AGENT_DIR}/{f}"))
            .collect();
        if !stale.is_empty() {
            let mut argv: Vec<&str> = vec!["rm", "-f", "--"];
            argv.extend(stale.iter().map(String::as_str));
            let _ = self.run_idempotent(&argv, deadline);
        }
    }

    /// The sha256 of a file on the host (`None` when it does not exist): an independent check
    /// of what arrived, before running any of it. With `openssl dgst` where the host has it
    /// (on a binary of 100+ MB it takes a quarter of the CPU of coreutils' portable
    /// `sha256sum`, which a first contact with many hosts pays on each), else `sha256sum`.
    fn remote_sha256(&mut self, path: &str, deadline: Instant) -> Result<Option<String>, SshError> {
        // Asked separately: sha256sum's "no such file" message depends on the host's locale.
        if self.run_idempotent(&["test", "-f", path], deadline)?.status != 0 {
            return Ok(None);
        }
        let digest = |out: &Output| {
            (out.status == 0)
                .then(|| first_sha256(&out.stdout))
                .flatten()
        };
        // `-r`: coreutils' format, `HEX *PATH` (the path never starts with `-`).
        let out = self.run_idempotent(&["openssl", "dgst", "-sha256", "-r", path], deadline)?;
        if let Some(sha) = digest(&out) {
            return Ok(Some(sha));
        }
        let argv = ["sha256sum", "--", path];
        let out = self.run_checked(&argv, deadline)?;
        Ok(digest(&out))
    }

    /// Copies a local file to `remote` over SFTP (mode 0600 until it is checked).
    fn upload(&mut self, local: &Path, remote: &str, deadline: Instant) -> Result<(), SshError> {
        let host = self.target.host.clone();
        let mut file = std::fs::File::open(local).map_err(|e| SshError::Install {
            host: host.clone(),
            detail: format!("cannot read {}: {e}", local.display()),
        })?;
        let command = format!("sftp upload to {remote}");
        let timeout = self.options.command_timeout;
        let host_timeout = self.options.host_timeout.as_secs();
        let conn = self.connection(deadline)?;
        let lost = |e: std::io::Error| SshError::Lost {
            host: host.clone(),
            command: command.clone(),
            detail: e.to_string(),
        };
        let result = (|| {
            conn.0.set_timeout(millis(timeout));
            let sftp = conn.0.sftp().map_err(|e| lost(e.into()))?;
            let mut remote_file = sftp
                .open_mode(
                    Path::new(remote),
                    ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                    0o600,
                    ssh2::OpenType::File,
                )
                .map_err(|e| lost(e.into()))?;
            // Large writes let libssh2 keep several SFTP packets in flight.
            let mut buf = vec![0u8; 1 << 20];
            loop {
                if Instant::now() >= deadline {
                    return Err(SshError::Timeout {
                        host: host.clone(),
                        command: command.clone(),
                        seconds: host_timeout,
                    });
                }
                let n = file.read(&mut buf).map_err(|e| SshError::Install {
                    host: host.clone(),
                    detail: format!("cannot read {}: {e}", local.display()),
                })?;
                if n == 0 {
                    break;
                }
                remote_file.write_all(&buf[..n]).map_err(lost)?;
            }
            remote_file.close().map_err(|e| lost(e.into()))?;
            Ok(())
        })();
        if let Err(e) = &result
            && e.connection_lost()
        {
            self.conn = None;
        }
        if result.is_ok() {
            tracing::debug!(host = %host, remote = remote, "ssh: uploaded {}", local.display());
        }
        result
    }

    /// Runs a command that may be repeated: after a lost connection, reconnects and runs it
    /// once more.
    fn run_idempotent(&mut self, argv: &[&str], deadline: Instant) -> Result<Output, SshError> {
        match self.exec(argv, None, self.options.command_timeout, None) {
            Err(e) if e.connection_lost() && Instant::now() < deadline => {
                self.note(&format!("{}; reconnecting", e.without_host()));
                self.reconnect(deadline)?;
                self.exec(argv, None, self.options.command_timeout, None)
            }
            other => other,
        }
    }

    /// Like [`Self::run_idempotent`], and a non-zero exit is an error.
    fn run_checked(&mut self, argv: &[&str], deadline: Instant) -> Result<Output, SshError> {
        let out = self.run_idempotent(argv, deadline)?;
        if out.status != 0 {
            return Err(self.command_failed(argv, &out));
        }
        Ok(out)
    }

    fn command_failed(&self, argv: &[&str], out: &Output) -> SshError {
        SshError::Command {
            host: self.target.host.clone(),
            command: command_line(argv),
            status: exit_text(out.status),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }

    fn connection(&mut self, deadline: Instant) -> Result<&Connection, SshError> {
        if self.conn.is_none() {
            self.conn = Some(self.open(deadline)?);
        }
        self.last_used = Instant::now();
        Ok(&self.conn.as_ref().expect("connected above").conn)
    }

    /// A new connection in a free slot of the pool (see [`Pool::acquire`]).
    fn open(&self, deadline: Instant) -> Result<Pooled, SshError> {
        let wait = deadline.min(Instant::now() + self.options.connect_timeout);
        let slot = self
            .pool
            .acquire(&self.target.host, wait)
            .ok_or_else(|| SshError::Connect {
                host: self.target.host.clone(),
                address: self.target.address.clone(),
                port: self.target.port,
                detail: format!(
                    "all {} connections (--max-connections) stayed busy for {} s",
                    self.pool.max_connections(),
                    self.options.connect_timeout.as_secs()
                ),
            })?;
        Ok(Pooled {
            conn: self.connect(deadline)?,
            _slot: slot,
        })
    }

    /// Runs `argv` on the host with `stdin`, and hands complete stdout lines to `on_line` as
    /// they arrive (when given; the output then holds no stdout). A connection-level failure
    /// drops the connection: its state is unknown, and the next command opens a new one.
    fn exec(
        &mut self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
        mut on_line: Option<LineSink>,
    ) -> Result<Output, SshError> {
        let host = self.target.host.clone();
        let user = self.target.user.clone();
        let command = command_line(argv);
        let ends = Instant::now() + timeout;
        // The command line only: what goes to stdin (a plan with secrets) is counted, not shown.
        tracing::trace!(
            host = %host,
            command = %command,
            stdin_bytes = stdin.map(|i| i.len() as u64),
            "ssh: running"
        );
        let conn = self.connection(ends)?;
        let session = &conn.0;
        let fail = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::TimedOut || Instant::now() >= ends {
                SshError::Timeout {
                    host: host.clone(),
                    command: command.clone(),
                    seconds: timeout.as_secs(),
                }
            } else {
                SshError::Lost {
                    host: host.clone(),
                    command: command.clone(),
                    detail: e.to_string(),
                }
            }
        };
        let ssh = |e: ssh2::Error| -> std::io::Error {
            if e.code() == ErrorCode::Session(ERROR_TIMEOUT) {
                std::io::Error::new(std::io::ErrorKind::TimedOut, e.message().to_string())
            } else {
                e.into()
            }
        };
        let remaining = || millis(ends.saturating_duration_since(Instant::now()));
        let result: Result<Output, SshError> = (|| {
            session.set_timeout(remaining());
            let mut channel = session.channel_session().map_err(|e| fail(ssh(e)))?;
            channel.exec(&command).map_err(|e| fail(ssh(e)))?;
            if let Some(input) = stdin {
                channel.write_all(input).map_err(fail)?;
            }
            channel.send_eof().map_err(|e| fail(ssh(e)))?;
            let mut stdout = Vec::new();
            let mut buf = [0u8; 32 * 1024];
            loop {
                session.set_timeout(remaining());
                let n = channel.read(&mut buf).map_err(fail)?;
                if n == 0 {
                    break;
                }
                stdout.extend_from_slice(&buf[..n]);
                if let Some(f) = on_line.as_mut() {
                    while let Some(i) = stdout.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = stdout.drain(..=i).collect();
                        f(&line[..line.len() - 1]);
                    }
                }
            }
            // What stderr holds is small (messages), so reading it after stdout cannot fill
            // the channel window and stall the command.
            let mut stderr = Vec::new();
            session.set_timeout(remaining());
            channel.stderr().read_to_end(&mut stderr).map_err(fail)?;
            session.set_timeout(remaining());
            channel.wait_close().map_err(|e| fail(ssh(e)))?;
            // A command killed by a signal has no exit status; report it as 128 + nothing.
            let status = match channel.exit_signal() {
                Ok(s) if s.exit_signal.is_some() => 128,
                _ => channel.exit_status().map_err(|e| fail(ssh(e)))?,
            };
            if argv.first() == Some(&"sudo")
                && let Some(detail) = sudo_refusal(status, &stderr)
            {
                return Err(SshError::Sudo {
                    host: host.clone(),
                    line: sudoers_line(&user),
                    user: user.clone(),
                    detail,
                });
            }
            Ok(Output {
                status,
                stdout,
                stderr,
            })
        })();
        if let Err(e) = &result
            && e.connection_lost()
        {
            self.conn = None;
        }
        result
    }

    /// A new connection after a lost one, tried until `--reconnect-timeout` (or the host's
    /// deadline) runs out. Refusals that reconnecting cannot fix (host key, login) end it.
    fn reconnect(&mut self, deadline: Instant) -> Result<(), SshError> {
        self.conn = None;
        let until = deadline.min(Instant::now() + self.options.reconnect_timeout);
        let mut pause = Duration::from_millis(500);
        loop {
            match self.open(until) {
                Ok(c) => {
                    self.conn = Some(c);
                    return Ok(());
                }
                Err(e) if e.unreachable() && Instant::now() + pause < until => {
                    tracing::debug!(
                        host = %self.target.host,
                        retry_in_ms = pause.as_millis() as u64,
                        "ssh: reconnecting failed, trying again: {}",
                        e.without_host()
                    );
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects (through the jump host, if there is one), checks the host key, logs in.
    fn connect(&self, deadline: Instant) -> Result<Connection, SshError> {
        let t = &self.target;
        let timeout = self
            .options
            .connect_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        tracing::debug!(
            host = %t.host,
            address = %t.address,
            port = t.port,
            user = %t.user,
            jump = t.jump.as_ref().map(|j| format!("{}@{}:{}", j.user, j.address, j.port)),
            "ssh: connecting"
        );
        let Some(jump) = &t.jump else {
            let tcp = self.tcp(t, timeout)?;
            return self.session_over(t, tcp, timeout);
        };
        // The host's address is the bastion's to resolve; a documentation address is refused
        // all the same.
        if t.address
            .parse::<std::net::IpAddr>()
            .is_ok_and(is_documentation_address)
        {
            return Err(SshError::DocumentationAddress {
                host: t.host.clone(),
                address: t.address.clone(),
            });
        }
        let via = |e: SshError| SshError::Jump {
            host: t.host.clone(),
            jump: format!("{}@{}:{}", jump.user, jump.address, jump.port),
            detail: e.without_host(),
            hint: e.hint(),
            unreachable: e.unreachable(),
        };
        let tcp = self.tcp(jump, timeout).map_err(via)?;
        let watched = tcp.try_clone().map_err(|e| {
            via(SshError::Connect {
                host: t.host.clone(),
                address: jump.address.clone(),
                port: jump.port,
                detail: e.to_string(),
            })
        })?;
        let bastion = self.session_over(jump, tcp, timeout).map_err(via)?;
        // The bastion session moves to the bridge's thread, which says goodbye itself.
        let stream = super::jump::forward(bastion, watched, &t.address, t.port, timeout).map_err(
            |detail| SshError::Connect {
                host: t.host.clone(),
                address: t.address.clone(),
                port: t.port,
                detail: format!(
                    "through the jump host {}@{}:{}: {detail}",
                    jump.user, jump.address, jump.port
                ),
            },
        )?;
        self.session_over(t, stream, timeout)
    }

    /// A TCP connection to `t`'s address and port.
    fn tcp(&self, t: &SshTarget, timeout: Duration) -> Result<TcpStream, SshError> {
        let connect_error = |detail: String| SshError::Connect {
            host: t.host.clone(),
            address: t.address.clone(),
            port: t.port,
            detail,
        };
        let addrs: Vec<_> = (t.address.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|e| connect_error(format!("cannot resolve the address: {e}")))?
            .collect();
        if addrs.iter().any(|a| is_documentation_address(a.ip())) {
            return Err(SshError::DocumentationAddress {
                host: t.host.clone(),
                address: t.address.clone(),
            });
        }
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            connect_error(
                last.map(|e| e.to_string())
                    .unwrap_or_else(|| "the address resolves to nothing".into()),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// The SSH session with `t` over `stream`: handshake, host key check, login.
    fn session_over<S: std::os::fd::AsRawFd + 'static>(
        &self,
        t: &SshTarget,
        stream: S,
        timeout: Duration,
    ) -> Result<Connection, SshError> {
        let handshake_error = |detail: String| SshError::Handshake {
            host: t.host.clone(),
            address: t.address.clone(),
            port: t.port,
            detail,
        };
        let mut session = Session::new().map_err(|e| handshake_error(e.message().to_string()))?;
        session.set_timeout(millis(timeout));
        // Best effort: a method this libssh2 lacks only means its default order is used.
        let _ = session.method_pref(MethodType::Kex, KEX_PREFERENCE);
        // Ciphers stay libssh2's choice: its ChaCha20-Poly1305 (first) encrypts a packet in one
        // call, while it feeds AES to OpenSSL 16 bytes at a time; an agent upload to ten hosts
        // cost the same CPU either way. Compression stays off: what travels is small JSON, or
        // a binary that would cost more CPU to compress than to send.
        session.set_compress(false);
        let expected = match &t.host_key {
            Some(text) => Expected::Pinned(PublicKey::parse(text).ok_or_else(|| {
                SshError::Protocol {
                    host: t.host.clone(),
                    detail: "agent.ssh.host_key is not a known_hosts-style public key (`ssh-ed25519 AAAA...`)".into(),
                }
            })?),
            None => {
                let known =
                    KnownHosts::read(self.options.known_hosts.as_deref(), &t.address, t.port);
                // A host certificate may name the server; a jump host's (which carries the
                // server's name only for messages) must name the bastion's address.
                Expected::KnownHosts(if std::ptr::eq(t, &self.target) {
                    known.also_named(&t.host)
                } else {
                    known
                })
            }
        };
        expected.negotiate(&session);
        session.set_tcp_stream(stream);
        session
            .handshake()
            .map_err(|e| handshake_error(e.message().to_string()))?;
        let conn = Connection(session);
        let presented = PublicKey::presented(&conn.0)
            .ok_or_else(|| handshake_error("the host presented no host key".into()))?;
        let verdict = host_key::verify(&conn.0, &t.address, t.port, &expected, &presented)
            .map_err(|e| handshake_error(e.message().to_string()))?;
        match verdict {
            Verdict::Trusted => {}
            Verdict::Mismatch { expected } => {
                return Err(SshError::HostKeyMismatch {
                    host: t.host.clone(),
                    address: t.address.clone(),
                    port: t.port,
                    expected,
                    actual: presented.fingerprint(),
                });
            }
            Verdict::Unknown { checked } => {
                let file = host_key::writable_file(self.options.known_hosts.as_deref());
                match file {
                    Some(file) if self.options.accept_new_host_keys => {
                        host_key::record(&file, &t.address, t.port, &presented).map_err(
                            |source| SshError::RecordHostKey {
                                host: t.host.clone(),
                                file: file.clone(),
                                source,
                            },
                        )?;
                        self.note(&format!(
                            "new host key {} for {} recorded in {} (--accept-new-host-keys)",
                            presented.fingerprint(),
                            host_key::known_host_name(&t.address, t.port),
                            file.display()
                        ));
                    }
                    _ => {
                        return Err(SshError::HostKeyUnknown {
                            host: t.host.clone(),
                            address: t.address.clone(),
                            port: t.port,
                            actual: presented.fingerprint(),
                            checked,
                        });
                    }
                }
            }
        }
        // Only now, talking to the right host, may a credential be used.
        self.authenticate(t, &conn.0)?;
        // Keepalives on idle kept connections (`pool::keep_between_runs`) are sent by the
        // pool's thread; this sets their interval.
        conn.0.set_keepalive(false, super::pool::KEEPALIVE_S);
        Ok(conn)
    }

    fn authenticate(&self, t: &SshTarget, session: &Session) -> Result<(), SshError> {
        let auth_error = |method: String, detail: String| SshError::Auth {
            host: t.host.clone(),
            user: t.user.clone(),
            address: t.address.clone(),
            method,
            detail,
        };
        let identity = t.identity_file.as_ref().or(self.options.identity.as_ref());
        if let Some(file) = identity {
            let method = format!("the key {}", file.display());
            if !file.is_file() {
                return Err(auth_error(method, "no such file".into()));
            }
            // The public half from `FILE.pub` when there is one: libssh2 otherwise derives it
            // from the private key, through OpenSSL 3's slow format probing, on every login.
            let mut public = file.as_os_str().to_os_string();
            public.push(".pub");
            let public = PathBuf::from(public);
            let with_public = public
                .is_file()
                .then(|| session.userauth_pubkey_file(&t.user, Some(&public), file, None));
            match with_public {
                Some(Ok(())) => {}
                // A `.pub` that is not this key's: without it, as if it were not there.
                _ => session
                    .userauth_pubkey_file(&t.user, None, file, None)
                    .map_err(|e| auth_error(method.clone(), e.message().to_string()))?,
            }
        } else if std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()) {
            let method = "any ssh-agent key".to_string();
            let mut agent = session
                .agent()
                .map_err(|e| auth_error(method.clone(), e.message().to_string()))?;
            agent
                .connect()
                .and_then(|()| agent.list_identities())
                .map_err(|e| auth_error(method.clone(), e.message().to_string()))?;
            let identities = agent
                .identities()
                .map_err(|e| auth_error(method.clone(), e.message().to_string()))?;
            // libssh2's own helper tries only the first key; the right one may be any.
            let accepted = identities
                .iter()
                .any(|id| agent.userauth(&t.user, id).is_ok());
            let _ = agent.disconnect();
            if !accepted {
                return Err(auth_error(
                    method,
                    format!("none of its {} keys was accepted", identities.len()),
                ));
            }
        } else {
            return Err(SshError::NoIdentity {
                host: t.host.clone(),
            });
        }
        if !session.authenticated() {
            return Err(auth_error("public key".into(), "not authenticated".into()));
        }
        Ok(())
    }
}

/// What `agent version` prints (it also names its `executable`, which the reconciler needs
/// not: the versioned path it ran names the build).
#[derive(Debug, serde::Deserialize)]
struct RemoteVersion {
    agent_version: String,
    host_state: String,
    plan: String,
    #[serde(default)]
    apply: String,
}

impl RemoteVersion {
    fn speaks_ours(&self) -> bool {
        self.agent_version == crate::agent::AGENT_VERSION
            && self.host_state == crate::model::host::HOST_STATE_FORMAT
            && self.plan == crate::plan::PLAN_FORMAT
            && self.apply == crate::model::apply::APPLY_FORMAT
    }
}

/// The sha256 a checksum tool printed first (`HEX  PATH`), in lower case.
fn first_sha256(stdout: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stdout);
    let hex = text.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_lowercase())
}

/// `AGENT ARGS...` as one argv; `sudo -n -- AGENT ARGS...` for a host whose SSH user runs the
/// agent through sudo (`-n`: never wait for a password prompt nobody can answer).
fn agent_argv<'a>(sudo: bool, agent: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = Vec::with_capacity(args.len() + 4);
    if sudo {
        argv.extend(["sudo", "-n", "--"]);
    }
    argv.push(agent);
    argv.extend_from_slice(args);
    argv
}

/// A fresh id for one detached apply: time, host and a nonce, in the agent's id alphabet.
fn apply_id(host: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let now = crate::clock::now_rfc3339().replace(['-', ':'], "");
    let nonce = crate::digest::sha256_hex(
        format!(
            "{host}{}{:?}{}",
            std::process::id(),
            std::time::SystemTime::now(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
        .as_bytes(),
    );
    format!("{now}-{}", &nonce[..10])
}

/// Why sudo refused to run a command, when it did: sudo's own messages (exit 1), or no sudo
/// at all (the shell's 127). A command sudo ran that failed, or a missing agent file ("command
/// not found", which installing fixes), is not a refusal.
fn sudo_refusal(status: i32, stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let first = text.lines().next().unwrap_or_default().trim();
    let refused = [
        "a password is required",
        "is not allowed to execute",
        "is not in the sudoers file",
        "may not run sudo",
        "a terminal is required",
    ];
    match status {
        127 if text.contains("sudo") && !text.contains("clarity-reconcile") => {
            Some("sudo is not installed on the host".into())
        }
        1 if refused.iter().any(|r| text.contains(r)) => Some(first.to_string()),
        _ => None,
    }
}

fn exit_text(status: i32) -> String {
    match status {
        127 => "exit 127: command not found".into(),
        128 => "killed by a signal".into(),
        s => format!("exit {s}"),
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().clamp(1, u128::from(u32::MAX)) as u32
}

/// The address ranges reserved for documentation (RFC 5737 for IPv4, RFC 3849 for IPv6).
/// Examples use them so that a mistaken flag never reaches a real machine; the transport
/// refuses them so that it cannot even try.
pub fn is_documentation_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => matches!(
            v4.octets(),
            [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
        ),
        std::net::IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0x0db8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_ranges_are_exactly_rfc_5737_and_3849() {
        for doc in ["192.0.2.1", "198.51.100.254", "203.0.113.0", "2001:db8::1"] {
            assert!(is_documentation_address(doc.parse().unwrap()), "{doc}");
        }
        for real in [
            "192.0.3.1",
            "198.51.101.1",
            "203.0.114.1",
            "10.0.0.1",
            "127.0.0.1",
            "2001:db9::1",
        ] {
            assert!(!is_documentation_address(real.parse().unwrap()), "{real}");
        }
    }

    #[test]
    fn apply_ids_are_valid_agent_ids_and_distinct() {
        let a = apply_id("h1");
        let b = apply_id("h1");
        assert_ne!(a, b);
        let layout = crate::agent::layout::Layout::new("/");
        assert!(
            crate::agent::detached::Detached::new(&layout, &a).is_ok(),
            "{a}"
        );
    }

    #[test]
    fn only_connection_problems_count_as_unreachable() {
        let lost = SshError::Lost {
            host: "h".into(),
            command: "x".into(),
            detail: "eof".into(),
        };
        assert!(lost.unreachable() && lost.connection_lost());
        let refused = SshError::HostKeyMismatch {
            host: "h".into(),
            address: "10.0.0.1".into(),
            port: 22,
            expected: "ssh-ed25519 SHA256:a (pinned)".into(),
            actual: "ssh-ed25519 SHA256:b".into(),
        };
        assert!(!refused.unreachable());
        let t: TransportError = refused.into();
        assert!(
            t.message.contains("SHA256:a")
                && t.message.contains("SHA256:b")
                && t.message.contains("hint:"),
            "{}",
            t.message
        );
    }

    fn fleet(connect_timeout: Duration) -> Fleet {
        Fleet::new(
            SshOptions {
                connect_timeout,
                known_hosts: Some(PathBuf::from("/dev/null")),
                ..SshOptions::default()
            },
            AgentBinary::new(PathBuf::from("/nonexistent")),
            Arc::new(|_: &str| {}),
        )
    }

    fn target(port: u16) -> SshTarget {
        SshTarget {
            host: "h1".into(),
            address: "127.0.0.1".into(),
            port,
            user: "root".into(),
            host_key: None,
            identity_file: None,
            sudo: false,
            jump: None,
        }
    }

    /// A peer that accepts the connection and never says a word is given up on after the
    /// connect timeout, and counts as unreachable.
    #[test]
    fn a_silent_peer_times_out_as_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = std::thread::spawn(move || {
            let conn = listener.accept();
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        });
        let started = Instant::now();
        let host = fleet(Duration::from_secs(1)).host(target(port));
        let e = host.lock().unwrap().inspect().unwrap_err();
        assert!(e.unreachable, "{}", e.message);
        assert!(e.message.contains("handshake"), "{}", e.message);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        holder.join().unwrap();
    }

    #[test]
    fn a_closed_port_is_unreachable_with_a_hint() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = fleet(Duration::from_secs(1)).host(target(port));
        let e = host.lock().unwrap().inspect().unwrap_err();
        assert!(e.unreachable, "{}", e.message);
        assert!(
            e.message
                .starts_with("host h1: cannot connect to 127.0.0.1:")
                && e.message.contains("hint:"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_version_must_speak_our_formats() {
        let v: RemoteVersion = serde_json::from_value(serde_json::json!({
            "agent_version": crate::agent::AGENT_VERSION,
            "host_state": crate::model::host::HOST_STATE_FORMAT,
            "plan": crate::plan::PLAN_FORMAT,
            "apply": crate::model::apply::APPLY_FORMAT,
            "executable": "/var/lib/clarity/agent/clarity-reconcile-0.1.0-abc",
        }))
        .unwrap();
        assert!(v.speaks_ours());
        let old = RemoteVersion {
            apply: String::new(),
            ..v
        };
        assert!(!old.speaks_ours());
        assert_eq!(
            agent_argv(false, "/a/b", &["agent", "inspect"]),
            ["/a/b", "agent", "inspect"]
        );
        assert_eq!(
            agent_argv(true, "/a/b", &["agent", "inspect"]),
            ["sudo", "-n", "--", "/a/b", "agent", "inspect"]
        );
        let sha = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        for out in [format!("{sha} */a/b\n"), format!("{sha}  /a/b\n")] {
            assert_eq!(first_sha256(out.as_bytes()), Some(sha.to_lowercase()));
        }
        assert_eq!(first_sha256(b"SHA256(/a/b)= e3b0c442"), None);
        assert_eq!(first_sha256(b""), None);
    }
}
