//! The apply wire format: what the reconciler sends an agent on stdin (`clarity.apply/v1`) and
//! the JSON lines the agent streams back. This is the one place plaintext secrets leave the
//! reconciler: file contents, env values and repository credentials travel as `WireSecret`,
//! whose `Debug` redacts; the request is written only to the agent's stdin, never to disk or a
//! log.

use super::{
    ArtifactType, HealthCheck, Limits, MigrationEngine, RestartPolicy, ServiceManager, Volume,
};
use crate::secret::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const APPLY_FORMAT: &str = "clarity.apply/v1";

/// A secret on the wire: serialized in clear (the agent needs it), redacted everywhere else.
#[derive(Clone)]
pub struct WireSecret(pub SecretString);

impl std::fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl Serialize for WireSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

impl<'de> Deserialize<'de> for WireSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(WireSecret(SecretString::new(String::deserialize(d)?)))
    }
}

impl WireSecret {
    pub fn new(s: impl Into<String>) -> WireSecret {
        WireSecret(SecretString::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub format: String,
    pub host: String,
    /// The client the host's deployments are applied for; the agent records it in each
    /// deployment directory and refuses another client's apply there.
    pub client: String,
    pub service_manager: ServiceManager,
    /// In plan order (dependencies first).
    pub deployments: Vec<ApplyDeployment>,
    /// Deployments to remove (`--prune`, `decommission`).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Of `remove`, those whose data volumes (`shared/`) go too (`decommission --purge-data`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purge_data: Vec<String>,
    /// Prune the download cache to this many bytes after applying.
    #[serde(default)]
    pub max_cache_bytes: Option<u64>,
    /// The server's `agent.containers` settings (for `docker` and `lxc` artifacts).
    #[serde(default)]
    pub containers: Option<super::ContainerRuntimeSettings>,
}

/// What a plan step does; the agent executes steps by this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    FetchArtifact,
    InstallRelease,
    WriteFile,
    WriteEnv,
    RunMigrations,
    InstallService,
    SwitchRelease,
    StartService,
    RestartService,
    HealthCheck,
    RemoveDeployment,
    LoadImage,
    CreateContainer,
    StartContainer,
    StopContainer,
    PruneContainers,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::FetchArtifact => "fetch artifact",
            Action::InstallRelease => "install release",
            Action::WriteFile => "write",
            Action::WriteEnv => "write env file",
            Action::RunMigrations => "run migrations",
            Action::InstallService => "install service definition",
            Action::SwitchRelease => "switch release",
            Action::StartService => "start service",
            Action::RestartService => "restart service",
            Action::HealthCheck => "health check",
            Action::RemoveDeployment => "remove deployment",
            Action::LoadImage => "load image",
            Action::CreateContainer => "create container",
            Action::StartContainer => "start container",
            Action::StopContainer => "stop container",
            Action::PruneContainers => "prune containers",
        }
    }
}

/// One deployment to converge, with exactly the steps the plan listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyDeployment {
    pub name: String,
    pub version: String,
    pub release: String,
    pub steps: Vec<WireStep>,
    pub artifact: WireArtifact,
    pub release_files: Vec<WireFile>,
    pub host_files: Vec<WireFile>,
    /// The env file's exact content (`KEY="VALUE"` lines).
    pub env_file: Option<WireSecret>,
    pub service: Option<WireService>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    pub migrations: Option<WireMigrations>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    pub keep_releases: u32,
    /// How the release's container runs (`docker` and `lxc` artifacts).
    #[serde(default)]
    pub container: Option<WireContainer>,
}

/// A release's container: the deployment's `container:` settings with the values the agent
/// needs to create it. Env values are secrets: the agent hands them to the runtime in a file
/// readable by root only, never on a command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireContainer {
    /// `clarity-<deployment>-<release>`.
    pub name: String,
    pub settings: super::ContainerSettings,
    pub env: std::collections::BTreeMap<String, WireSecret>,
    pub restart: RestartPolicy,
    pub autostart: bool,
    /// Hash of everything the container is created from (the `clarity.config` label).
    pub config_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireStep {
    pub action: Action,
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireArtifact {
    pub id: String,
    pub kind: ArtifactType,
    pub sha256: String,
    pub size: Option<u64>,
    /// Path within the source; its last component names the file in the release.
    pub location: String,
    pub repository: String,
    pub source: WireSource,
    /// The most bytes accepted when `size` is not declared (the repository's
    /// `max_download_size`); absent means the agent's default.
    #[serde(default)]
    pub max_size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WireSource {
    File {
        dir: String,
    },
    Http {
        base_url: String,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<WireSecret>,
        #[serde(default)]
        token: Option<WireSecret>,
        /// A named header carrying a secret (`header` auth).
        #[serde(default)]
        header: Option<(String, WireSecret)>,
    },
    Sftp {
        host: String,
        port: u16,
        dir: String,
        username: String,
        #[serde(default)]
        password: Option<WireSecret>,
        #[serde(default)]
        private_key: Option<WireSecret>,
        #[serde(default)]
        host_key: Option<String>,
    },
    Ftp {
        host: String,
        port: u16,
        dir: String,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<WireSecret>,
        passive: bool,
    },
    S3 {
        #[serde(default)]
        endpoint: Option<String>,
        bucket: String,
        region: String,
        prefix: String,
        path_style: bool,
        #[serde(default)]
        access_key_id: Option<WireSecret>,
        #[serde(default)]
        secret_access_key: Option<WireSecret>,
        #[serde(default)]
        session_token: Option<WireSecret>,
    },
    GoogleDrive {
        api_url: String,
        token_url: String,
        #[serde(default)]
        folder_id: Option<String>,
        #[serde(default)]
        client_id: Option<WireSecret>,
        #[serde(default)]
        client_secret: Option<WireSecret>,
        #[serde(default)]
        refresh_token: Option<WireSecret>,
        #[serde(default)]
        service_account: Option<WireSecret>,
    },
    /// A kind this agent cannot fetch from: the step fails with this text.
    Unsupported {
        kind: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFile {
    pub destination: String,
    pub mode: String,
    pub owner: Option<String>,
    pub content: WireSecret,
    pub sha256: String,
    /// What the agent records and may show: secrets replaced by `(sensitive)`.
    pub redacted: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireService {
    pub command: Vec<WireSecret>,
    pub user: Option<String>,
    pub restart: RestartPolicy,
    pub autostart: bool,
    pub limits: Option<Limits>,
    pub definition_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMigrations {
    pub engine: MigrationEngine,
    pub directory: String,
    pub database: Option<WireSecret>,
    pub command: Option<Vec<String>>,
    pub backup: bool,
}

/// One line of the agent's output stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentEvent {
    Step {
        deployment: String,
        action: Action,
        target: String,
        status: StepStatus,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
        /// Download attempts a `fetch_artifact` step made (1 when the first one did it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempts: Option<u32>,
    },
    Progress {
        deployment: String,
        downloaded: u64,
        total: Option<u64>,
    },
    Rollback {
        deployment: String,
        restored: bool,
        message: String,
    },
    /// What a deployment the apply touched runs when the apply ends: the release `current`
    /// points at (none after a failed first install), its version, and whether it is healthy
    /// by that release's own checks and why. The reconciler records this, never what it asked
    /// for.
    Active {
        deployment: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        healthy: bool,
        health: String,
    },
    Done {
        outcome: HostOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOutcome {
    /// Every deployment converged and is healthy.
    Converged,
    /// A deployment failed and its previous release was restored and is healthy.
    RolledBack,
    /// A deployment failed and could not be restored: needs a person.
    RestoreFailed,
    /// Failed before changing anything (lock held, bad request), or a first install failed
    /// and was cleaned away (the message names what was left).
    Failed,
    /// The host's state changed since the request was planned (an interrupted earlier apply
    /// was found and rolled back, or another apply held the host until now); plan again.
    Recovered,
}
