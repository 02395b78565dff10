//! The agent wire format: what a host actually runs, as `agent inspect` reports it. Versioned
//! JSON; the reconciler refuses a format it does not know instead of guessing. Contains hashes
//! and redacted texts only, never file contents that could carry secrets.

use super::ServiceManager;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `format` value of the current host-state version.
pub const HOST_STATE_FORMAT: &str = "clarity.host-state/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActualHost {
    /// Always `clarity.host-state/v1` for this version.
    pub format: String,
    /// Version of the agent that inspected the host.
    pub agent_version: String,
    /// Deployments the agent manages, by name.
    #[serde(default)]
    pub deployments: BTreeMap<String, ActualDeployment>,
    /// SHA-256 of every artifact in the host's download cache.
    #[serde(default)]
    pub cached_artifacts: Vec<String>,
    /// Every listening socket on the host and who holds it (drift compares them with the ports
    /// deployments claim). Empty when the host has no /proc to read them from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

/// A listening TCP socket or bound UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The process holding it, when the agent may see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its process name (`comm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The managed deployment the process belongs to (it runs inside its directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

impl ActualHost {
    /// The state of a host the agent has never touched.
    pub fn empty(agent_version: &str) -> ActualHost {
        ActualHost {
            format: HOST_STATE_FORMAT.to_string(),
            agent_version: agent_version.to_string(),
            deployments: BTreeMap::new(),
            cached_artifacts: Vec::new(),
            listeners: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActualDeployment {
    /// Release the `current` link points at, if any.
    #[serde(default)]
    pub current_release: Option<String>,
    /// Version of the current release, as recorded at install.
    #[serde(default)]
    pub current_version: Option<String>,
    /// Every release directory present, oldest first.
    #[serde(default)]
    pub releases: Vec<String>,
    /// Managed files: the current release's config files and the absolute ones.
    #[serde(default)]
    pub files: Vec<ActualFile>,
    /// SHA-256 of the env file the service reads.
    #[serde(default)]
    pub env_sha256: Option<String>,
    #[serde(default)]
    pub service: Option<ActualService>,
    /// Migrations recorded as applied (`NNN_name`).
    #[serde(default)]
    pub migrations_applied: Vec<String>,
    /// Migrations shipped in the current release that are not recorded as applied.
    #[serde(default)]
    pub migrations_pending: Vec<String>,
    /// Releases the agent installed (from its record); a release directory not in this list
    /// was put there by something else.
    #[serde(default)]
    pub known_releases: Vec<String>,
    /// SHA-256 of the health checks the current release was last verified with (kept with
    /// the release on the host); absent when its agent did not keep them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks_sha256: Option<String>,
    /// The current release's container (`docker` and `lxc` artifacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ActualContainer>,
}

/// A deployment's containers as the runtime reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActualContainer {
    /// `docker`, `podman` or `lxc`.
    pub runtime: String,
    /// The current release's container name.
    pub name: String,
    pub state: ContainerState,
    /// Image id the container runs (`docker`/`podman`), as the runtime reports it.
    #[serde(default)]
    pub image: Option<String>,
    /// Image id the agent loaded and created the container from.
    #[serde(default)]
    pub recorded_image: Option<String>,
    /// The container's `clarity.config` label (a hash of how it was created).
    #[serde(default)]
    pub config_sha256: Option<String>,
    /// The hash the agent recorded when it created the container.
    #[serde(default)]
    pub recorded_config_sha256: Option<String>,
    /// Host ports (`external/protocol`) the current container publishes.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Containers of earlier releases that exist (kept stopped for rollback).
    #[serde(default)]
    pub kept: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Running,
    Stopped,
    /// The runtime has no such container.
    Missing,
    /// The runtime could not be asked (not installed, daemon down).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActualFile {
    /// Destination as written in the deployment (relative = inside the release).
    pub destination: String,
    pub exists: bool,
    /// SHA-256 of the bytes on disk now.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    /// What the agent wrote last time, with secrets already redacted.
    #[serde(default)]
    pub recorded: Option<RecordedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordedFile {
    pub sha256: String,
    /// The content with every secret value replaced by `(sensitive)`.
    pub redacted: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActualService {
    pub manager: ServiceManager,
    /// Hash of the service definition the agent installed.
    #[serde(default)]
    pub definition_sha256: Option<String>,
    pub state: ServiceState,
    /// Starts at boot.
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
    Failed,
    /// The service manager does not know the service.
    Missing,
    /// The service manager could not be asked.
    Unknown,
}
