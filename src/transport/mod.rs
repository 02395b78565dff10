//! Reaching a host's agent. A transport starts the agent (the same binary) for one host and
//! exchanges versioned JSON with it: `local` runs it on this machine against a sandbox
//! directory (the `mock` profile), [`ssh`] on a real host over one SSH connection per host,
//! installing the agent there first when its build ([`agent_binary`]) is missing, through a
//! jump host when one is configured. Host keys (and host certificates, [`host_cert`]) are
//! checked by [`host_key`] before any credential is sent; [`ssh_config`] reads the operator's
//! OpenSSH client config for what a server file leaves out. The agent travels stripped and
//! compressed ([`upload`]); [`pool`] bounds and keeps the connections (across `--watch` passes).

pub mod agent_binary;
pub(crate) mod base64;
pub mod host_cert;
pub mod host_key;
mod jump;
pub mod pool;
pub mod quote;
pub mod ssh;
pub mod ssh_config;
pub mod upload;

use crate::model::apply::{AgentEvent, ApplyRequest, HostOutcome};
use crate::model::host::{ActualHost, HOST_STATE_FORMAT};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub host: String,
    pub message: String,
    /// The host could not be reached at all (as opposed to answering with an error).
    pub unreachable: bool,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.host, self.message)
    }
}

/// The agent of a `local` server: this binary run against the sandbox directory.
pub struct Local {
    pub host: String,
    pub exe: PathBuf,
    pub root: PathBuf,
}

impl Local {
    pub fn new(host: &str, exe: &Path, root: PathBuf) -> Local {
        Local {
            host: host.to_string(),
            exe: exe.to_path_buf(),
            root,
        }
    }

    fn error(&self, message: String, unreachable: bool) -> TransportError {
        TransportError {
            host: self.host.clone(),
            message,
            unreachable,
        }
    }

    pub fn inspect(&self) -> Result<ActualHost, TransportError> {
        tracing::debug!(host = %self.host, root = %self.root.display(), "local: agent inspect");
        let out = Command::new(&self.exe)
            .args(["agent", "inspect", "--root"])
            .arg(&self.root)
            .output()
            .map_err(|e| {
                self.error(
                    format!("cannot start the agent {}: {e}", self.exe.display()),
                    true,
                )
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.error(
                format!("agent inspect failed ({}): {}", out.status, stderr.trim()),
                false,
            ));
        }
        parse_host_state(&out.stdout).map_err(|m| self.error(m, false))
    }
}

impl Local {
    /// Runs `agent apply` with `req` on stdin and hands each event line to `on_event` as it
    /// arrives. Returns the outcome the agent reported at the end.
    pub fn apply(
        &self,
        req: &ApplyRequest,
        lock_timeout_s: u64,
        on_event: &mut dyn FnMut(&AgentEvent),
    ) -> Result<HostOutcome, TransportError> {
        let mut child = Command::new(&self.exe)
            .args(["agent", "apply", "--root"])
            .arg(&self.root)
            .args(["--lock-timeout", &lock_timeout_s.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                self.error(
                    format!("cannot start the agent {}: {e}", self.exe.display()),
                    true,
                )
            })?;
        // The request holds secrets: it goes to the agent's stdin and nowhere else.
        let body = serde_json::to_vec(req).expect("requests serialize");
        tracing::debug!(
            host = %self.host,
            root = %self.root.display(),
            plan_bytes = body.len() as u64,
            "local: agent apply"
        );
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&body).map_err(|e| {
                self.error(format!("cannot send the plan to the agent: {e}"), false)
            })?;
        }
        let stderr = child.stderr.take();
        let stderr_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let _ = std::io::Read::read_to_string(&mut e, &mut s);
            }
            s
        });
        let mut outcome = None;
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<AgentEvent>(&line) {
                    Ok(event) => {
                        if let AgentEvent::Done { outcome: o, .. } = &event {
                            outcome = Some(*o);
                        }
                        on_event(&event);
                    }
                    Err(e) => {
                        return Err(self.error(
                            format!("the agent sent a line that is not an event ({e})"),
                            false,
                        ));
                    }
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| self.error(format!("waiting for the agent: {e}"), false))?;
        let stderr = stderr_reader.join().unwrap_or_default();
        match outcome {
            Some(o) => Ok(o),
            None => Err(self.error(
                format!(
                    "the agent ended ({status}) without reporting an outcome; the next run finds its journal and rolls back what it started{}",
                    if stderr.trim().is_empty() { String::new() } else { format!(": {}", stderr.trim()) }
                ),
                false,
            )),
        }
    }
}

/// Parses and version-checks what `agent inspect` printed.
pub fn parse_host_state(bytes: &[u8]) -> Result<ActualHost, String> {
    read_host_state(bytes).map_err(|e| match e {
        HostStateError::Format(format) => format!(
            "agent speaks host-state format `{format}`, this reconciler reads `{HOST_STATE_FORMAT}`: upgrade the agent"
        ),
        other => other.to_string(),
    })
}

/// Why what an agent printed is not a host state this reconciler reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostStateError {
    #[error("agent answered with something that is not JSON: {0}")]
    NotJson(String),
    /// Another format (the value of its `format`, or `(none)`).
    #[error("agent speaks host-state format `{0}`, this reconciler reads `{HOST_STATE_FORMAT}`")]
    Format(String),
    #[error("agent's host state is malformed: {0}")]
    Malformed(String),
}

/// What `agent inspect` printed, read straight into [`ActualHost`] (one pass over what can be
/// a large document); only when that fails is it looked at again for the reason, a format this
/// reconciler does not read being the one to name.
pub(crate) fn read_host_state(bytes: &[u8]) -> Result<ActualHost, HostStateError> {
    match serde_json::from_slice::<ActualHost>(bytes) {
        Ok(host) if host.format == HOST_STATE_FORMAT => Ok(host),
        Ok(host) => Err(HostStateError::Format(host.format)),
        Err(e) => {
            let value: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| HostStateError::NotJson(e.to_string()))?;
            let format = value
                .get("format")
                .and_then(|f| f.as_str())
                .unwrap_or("(none)");
            if format != HOST_STATE_FORMAT {
                return Err(HostStateError::Format(format.to_string()));
            }
            Err(HostStateError::Malformed(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_states_are_read_in_our_format_only() {
        let ours = serde_json::to_vec(&ActualHost::empty("0.1.0")).unwrap();
        assert_eq!(parse_host_state(&ours).unwrap(), ActualHost::empty("0.1.0"));
        let other = br#"{"format":"clarity.host-state/v9","agent_version":"9","hosts":[]}"#;
        let e = parse_host_state(other).unwrap_err();
        assert!(
            e.contains("`clarity.host-state/v9`") && e.contains("upgrade"),
            "{e}"
        );
        let same_shape = br#"{"format":"clarity.host-state/v0","agent_version":"0.0.1"}"#;
        assert!(parse_host_state(same_shape).unwrap_err().contains("v0"));
        let malformed = format!(r#"{{"format":"{HOST_STATE_FORMAT}","agent_version":1}}"#);
        assert!(
            parse_host_state(malformed.as_bytes())
                .unwrap_err()
                .contains("malformed")
        );
        assert!(
            parse_host_state(b"bash: agent: not found")
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
