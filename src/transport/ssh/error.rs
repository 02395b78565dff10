//! What can go wrong with an SSH host, as one error type: each variant names the host and
//! says what failed, whether the host was reachable at all, whether reconnecting may help, and
//! what the operator can do (a hint). It only describes failures; it never connects.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "host {host}: {address} is a documentation address (RFC 5737 / RFC 3849): this server \
         exists only on paper, so Clarity does not connect to it"
    )]
    DocumentationAddress { host: String, address: String },
    #[error("host {host}: cannot connect to {address}:{port}: {detail}")]
    Connect {
        host: String,
        address: String,
        port: u16,
        detail: String,
    },
    #[error("host {host}: SSH handshake with {address}:{port} failed: {detail}")]
    Handshake {
        host: String,
        address: String,
        port: u16,
        detail: String,
    },
    #[error(
        "host {host}: the SSH host key of {address}:{port} does not match: expected {expected}, \
         the host presented {actual}; refusing to connect"
    )]
    HostKeyMismatch {
        host: String,
        address: String,
        port: u16,
        expected: String,
        actual: String,
    },
    #[error(
        "host {host}: the SSH host key of {address}:{port} ({actual}) is not known ({checked}); \
         refusing to trust it on first use"
    )]
    HostKeyUnknown {
        host: String,
        address: String,
        port: u16,
        actual: String,
        checked: String,
    },
    #[error("host {host}: cannot record its new host key in {}: {source}", .file.display())]
    RecordHostKey {
        host: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host {host}: {user}@{address} did not accept {method}: {detail}")]
    Auth {
        host: String,
        user: String,
        address: String,
        method: String,
        detail: String,
    },
    #[error(
        "host {host}: sudo refused to run the agent as root for {user} ({detail}); add this \
         line to the host's sudoers (`visudo -f /etc/sudoers.d/clarity`): {line}"
    )]
    Sudo {
        host: String,
        user: String,
        detail: String,
        line: String,
    },
    #[error("host {host}: jump host {jump}: {detail}")]
    Jump {
        host: String,
        /// `user@address:port`.
        jump: String,
        /// The bastion's own error, without the host name.
        detail: String,
        hint: Option<String>,
        unreachable: bool,
    },
    #[error("host {host}: no SSH key to log in with")]
    NoIdentity { host: String },
    #[error("host {host}: the connection was lost while running `{command}`: {detail}")]
    Lost {
        host: String,
        command: String,
        detail: String,
    },
    #[error("host {host}: `{command}` did not finish within {seconds} s")]
    Timeout {
        host: String,
        command: String,
        seconds: u64,
    },
    #[error("host {host}: `{command}` failed ({status}){}", stderr_text(.stderr))]
    Command {
        host: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("host {host}: {detail}")]
    Protocol { host: String, detail: String },
    #[error("host {host}: installing the agent failed: {detail}")]
    Install { host: String, detail: String },
    #[error(
        "host {host}: no outcome after {seconds} s (--host-timeout); apply {id} goes on on the \
         host"
    )]
    HostTimeout {
        host: String,
        seconds: u64,
        id: String,
    },
    #[error(
        "host {host}: apply {id} ended without reporting an outcome (the agent was killed, or \
         the host restarted)"
    )]
    ApplyGone { host: String, id: String },
    #[error(
        "host {host}: the connection dropped during apply {id} and reconnecting failed: {}",
        .cause.without_host()
    )]
    Disconnected {
        host: String,
        id: String,
        cause: Box<SshError>,
    },
}

pub(super) fn stderr_text(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

impl SshError {
    /// The host could not be reached at all (as opposed to refusing us or failing).
    pub fn unreachable(&self) -> bool {
        match self {
            SshError::Connect { .. }
            | SshError::Handshake { .. }
            | SshError::Lost { .. }
            | SshError::Timeout { .. } => true,
            SshError::Disconnected { cause, .. } => cause.unreachable(),
            SshError::Jump { unreachable, .. } => *unreachable,
            _ => false,
        }
    }

    /// The message without its leading `host NAME: `, for text that names the host already.
    pub(super) fn without_host(&self) -> String {
        let text = self.to_string();
        let prefix = format!("host {}: ", self.host());
        text.strip_prefix(&prefix)
            .map(str::to_string)
            .unwrap_or(text)
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            SshError::DocumentationAddress { .. } => {
                "the example repository's non-`mock` servers do not exist: plan them with --dry-run --assume-empty-hosts, or give the server its real address".into()
            }
            SshError::Connect { .. } => {
                "is the host up and sshd listening on that address and port (agent.ssh.address, agent.ssh.port)?".into()
            }
            SshError::HostKeyMismatch { .. } => {
                "if the host's key really changed (a reinstall), update its pinned agent.ssh.host_key or its known_hosts line; otherwise someone may be intercepting the connection".into()
            }
            SshError::HostKeyUnknown { address, .. } => format!(
                "pin the key as agent.ssh.host_key, add it to known_hosts (`ssh-keyscan -t ed25519 {address}` and compare the fingerprint with the host's console), or pass --accept-new-host-keys once"
            ),
            SshError::Auth { user, .. } => format!(
                "is the public key in ~{user}/.ssh/authorized_keys on the host? An encrypted key must be loaded into ssh-agent"
            ),
            SshError::NoIdentity { .. } => {
                "set agent.ssh.identity_file, pass --identity FILE, or load a key into ssh-agent (SSH_AUTH_SOCK)".into()
            }
            SshError::Install { .. } => {
                "the agent is this binary: the host needs the same CPU architecture and a C library at least as new as the reconciler's machine, and the SSH user must be able to write /var/lib/clarity".into()
            }
            SshError::HostTimeout { id, .. } => format!(
                "the next run waits for the host lock until it ends; its events are in {APPLIES_DIR}/{id}/events.jsonl on the host"
            ),
            SshError::Disconnected { id, .. } => format!(
                "apply {id} goes on, or was cut short, on the host: its events are in {APPLIES_DIR}/{id}/events.jsonl there, and the next apply rolls back whatever an interrupted one left unfinished"
            ),
            SshError::Sudo { .. } => {
                "sudo -n never asks for a password: the rule needs NOPASSWD, and the agent directory must be writable by the SSH user (`install -d -o USER -m 0755 /var/lib/clarity/agent`)".into()
            }
            SshError::Jump { hint, .. } => return hint.clone(),
            SshError::ApplyGone { .. } => {
                "run again: the agent's journal makes the next apply roll back whatever the interrupted one started, then converge".into()
            }
            _ => return None,
        })
    }

    pub(super) fn host(&self) -> &str {
        match self {
            SshError::DocumentationAddress { host, .. }
            | SshError::Connect { host, .. }
            | SshError::Handshake { host, .. }
            | SshError::HostKeyMismatch { host, .. }
            | SshError::HostKeyUnknown { host, .. }
            | SshError::RecordHostKey { host, .. }
            | SshError::Auth { host, .. }
            | SshError::NoIdentity { host }
            | SshError::Sudo { host, .. }
            | SshError::Jump { host, .. }
            | SshError::Lost { host, .. }
            | SshError::Timeout { host, .. }
            | SshError::Command { host, .. }
            | SshError::Protocol { host, .. }
            | SshError::Install { host, .. }
            | SshError::HostTimeout { host, .. }
            | SshError::ApplyGone { host, .. }
            | SshError::Disconnected { host, .. } => host,
        }
    }

    /// A connection-level failure after which reconnecting may help.
    pub(super) fn connection_lost(&self) -> bool {
        matches!(self, SshError::Lost { .. } | SshError::Timeout { .. })
    }
}

impl From<SshError> for TransportError {
    fn from(e: SshError) -> TransportError {
        let message = match e.hint() {
            Some(h) => format!("{e} (hint: {h})"),
            None => e.to_string(),
        };
        TransportError {
            host: e.host().to_string(),
            message,
            unreachable: e.unreachable(),
        }
    }
}
