//! Reaching a host's agent. A transport starts the agent (the same binary) for one host and
//! exchanges versioned JSON with it. Only `local` exists in this build (the `mock` sandboxes);
//! SSH hosts are reported unreachable rather than silently skipped.

use crate::model::host::{ActualHost, HOST_STATE_FORMAT};
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Parses and version-checks what `agent inspect` printed.
pub fn parse_host_state(bytes: &[u8]) -> Result<ActualHost, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("agent answered with something that is not JSON: {e}"))?;
    let format = value
        .get("format")
        .and_then(|f| f.as_str())
        .unwrap_or("(none)");
    if format != HOST_STATE_FORMAT {
        return Err(format!(
            "agent speaks host-state format `{format}`, this reconciler reads `{HOST_STATE_FORMAT}`: upgrade the agent"
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("agent's host state is malformed: {e}"))
}
