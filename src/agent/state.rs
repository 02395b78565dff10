//! The agent's record of what it installed (`var/lib/clarity/state.json`). Inspect starts from
//! it but checks every fact against the disk and the service manager, so hand edits and
//! stopped services show up; the record only supplies what the disk cannot (redacted texts,
//! definition hashes, migration history).

use crate::model::ServiceManager;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const AGENT_STATE_FORMAT: &str = "clarity.agent-state/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentState {
    pub format: String,
    #[serde(default)]
    pub deployments: BTreeMap<String, DeploymentRecord>,
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            format: AGENT_STATE_FORMAT.to_string(),
            deployments: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeploymentRecord {
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseRecord>,
    #[serde(default)]
    pub host_files: Vec<FileRecord>,
    #[serde(default)]
    pub service: Option<ServiceRecord>,
    /// Versions of the migrations applied, as decimal strings.
    #[serde(default)]
    pub migrations_applied: Vec<String>,
    /// Where the deployment's migrations live inside a release.
    #[serde(default)]
    pub migrations_dir: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub version: String,
    #[serde(default)]
    pub files: Vec<FileRecord>,
    /// The health checks this release was verified with, so a rollback to it is judged by
    /// its own checks, not the failing commit's. `None`: installed by an agent that did not
    /// keep them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<Vec<crate::model::HealthCheck>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    pub destination: String,
    pub sha256: String,
    /// Content with secrets replaced by `(sensitive)`.
    pub redacted: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub manager: ServiceManager,
    pub definition_sha256: String,
    pub autostart: bool,
    /// What the definition was made from, so a rollback can put it back. (The state file is
    /// readable by the agent's user only.)
    #[serde(default)]
    pub definition: Option<ServiceInputs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInputs {
    pub command: Vec<String>,
    pub user: Option<String>,
    pub restart: crate::model::RestartPolicy,
    pub autostart: bool,
    pub limits: Option<crate::model::Limits>,
    pub env_file: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read agent state {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("agent state {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl AgentState {
    pub fn load(path: &std::path::Path) -> Result<AgentState, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentState::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let state: AgentState = serde_json::from_str(&text).map_err(|e| StateError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if state.format != AGENT_STATE_FORMAT {
            return Err(StateError::Invalid {
                path: path.display().to_string(),
                message: format!(
                    "format `{}`, this agent reads `{AGENT_STATE_FORMAT}`",
                    state.format
                ),
            });
        }
        Ok(state)
    }
}
