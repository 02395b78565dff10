//! `clients/<id>/deployments/<artifact>/<profile>.yml`: what runs where: the artifact version,
//! targets, config files, env, service, migrations, health checks, rollout and drift policy.
//! File types only (serde and schema); cross-file checks live in `load`.

use super::{CountOrPercent, RunSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `clients/<client>/deployments/<artifact>/<profile>.yml`: what runs where, for one artifact
/// of one client in one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Artifact id; must equal the folder name. It names the deployment's directory and
    /// service on hosts.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub artifact: String,
    /// Profile; must equal the file name and be one of `clarity.yml` `profiles`.
    pub profile: String,
    /// One of the artifact's `versions` (quote it: `"2.4.1"`); one name, as there.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$"))]
    pub version: String,
    /// Repository override for this profile (e.g. a local `file` repository for `mock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Servers of this client that run the deployment.
    #[schemars(length(min = 1))]
    pub targets: Vec<Target>,
    /// Values available to templates (`config.*`) and `${CONFIG:dotted.path}` references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configuration: BTreeMap<String, serde_json::Value>,
    /// Environment variables for the service; values may use `${...}` references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    /// Files written for the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_files: Vec<ConfigFile>,
    /// Ports the service listens on; an external port may be claimed by one deployment per
    /// server and profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Persistent directories kept outside releases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Start the service at boot.
    #[serde(default = "default_true")]
    pub autostart: bool,
    /// When the service manager restarts the process.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Service definition; defaults to the artifact's `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Checks that must pass after a switch, or the release is rolled back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    /// Database migrations run before the service switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<Migrations>,
    /// How the deployment is rolled out across its targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// What the watch loop does about drift: report it only, or correct it.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// How the container runs (deployments of `docker` and `lxc` artifacts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<super::ContainerSettings>>,
    /// Releases kept on the host; defaults to `clarity.yml` `keep_releases`. For containers:
    /// previous containers kept stopped for rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_releases: Option<u32>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Host name of one of this client's servers.
    pub server: String,
    /// Rollout order: lower numbers go first.
    #[serde(default)]
    pub priority: i32,
}

/// A file written on the host, from a template or inline content (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Relative paths land inside the release; absolute paths must lie under one of
    /// `clarity.yml` `allowed_absolute_roots`. `..` is never allowed.
    pub destination: String,
    /// Template path under `templates/`, rendered with minijinja in strict mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Inline content; may use `${...}` references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Octal file mode, e.g. `"0640"`.
    #[serde(default = "default_mode")]
    #[schemars(regex(pattern = r"^0?[0-7]{3}$"))]
    pub mode: String,
    /// Owner as `user` or `user:group`; defaults to the agent's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn default_mode() -> String {
    "0644".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port number the service listens on (the external port on the host).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Name for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The name in files and in `PORT/PROTOCOL` notation.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Name of the persistent directory (kept under the deployment's `shared/` directory):
    /// one name, never `.` or `..`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"))]
    pub name: String,
    /// Relative path inside each release where the volume appears.
    pub mount: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Command as an argv vector; overrides the artifact's `run.command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// User the service runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

impl ServiceSpec {
    pub fn run(&self) -> Option<RunSpec> {
        self.command.clone().map(|command| RunSpec { command })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory ceiling in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Open file descriptors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
    /// CPU quota in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
}

/// A health check. `type` decides which fields apply: `http` needs `url`; `tcp` needs `port`;
/// `command` needs `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Name for reports; defaults to the type and target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kind of probe.
    #[serde(rename = "type")]
    pub kind: HealthCheckType,
    /// URL to GET (`http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Expected HTTP status (`http`, default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// Substring the response body must contain (`http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Host to connect to (`tcp`, default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port to connect to (`tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Argv run inside the release directory; exit 0 is healthy (`command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Seconds to wait after start before the first probe.
    #[serde(default)]
    pub start_period_s: u32,
    /// Seconds between probes (doubled after each failure, capped at 8× this).
    #[serde(default = "default_interval")]
    pub interval_s: u32,
    /// Seconds one probe may take.
    #[serde(default = "default_timeout")]
    pub timeout_s: u32,
    /// Probes before the check counts as failed.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_interval() -> u32 {
    1
}
fn default_timeout() -> u32 {
    5
}
fn default_retries() -> u32 {
    5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    Http,
    Tcp,
    Command,
}

/// Migrations shipped in the artifact. `sqlite` and `postgresql` run `NNN_name.up.sql` files
/// from `directory` in order; `command` runs an argv inside the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Migrations {
    /// Engine.
    pub engine: MigrationEngine,
    /// Directory inside the release holding the SQL files (`sqlite`, `postgresql`).
    #[serde(default = "default_migrations_dir")]
    pub directory: String,
    /// Database: a file path for `sqlite` (relative paths are inside the deployment's shared
    /// directory), a connection string for `postgresql`; may use `${...}` references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Argv for `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Back up the database before migrating (default: on for `prod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
}

fn default_migrations_dir() -> String {
    "migrations".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationEngine {
    Sqlite,
    Postgresql,
    Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Hosts per batch, a count or a percentage of the targets.
    #[serde(default = "default_batch")]
    pub batch_size: CountOrPercent,
    /// Size of a first batch that must be healthy before the rest are touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CountOrPercent>,
    /// Failed hosts allowed across the whole rollout before it halts.
    #[serde(default = "default_failures")]
    pub max_failures: CountOrPercent,
    /// Stop after a healthy canary batch until an operator runs `clarity-reconcile resume
    /// RUN`: `true`, or `{timeout: 30m}` to let the watch loop go on by itself once the
    /// timeout has passed. Needs `canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_canary: Option<PauseAfterCanary>,
}

/// `rollout.pause_after_canary`: `true` (wait for `resume`), `false` (do not pause), or a
/// timeout after which the watch loop resumes the rollout itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PauseAfterCanary {
    Flag(bool),
    Timeout(PauseTimeout),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseTimeout {
    /// How long the rollout waits for `resume` before the watch loop resumes it: a number
    /// with `s`, `m` or `h` (`90s`, `30m`, `2h`).
    pub timeout: Seconds,
}

impl PauseAfterCanary {
    /// Whether the rollout pauses, and for how long at most (`None`: until `resume`).
    pub fn pause(&self) -> Option<Option<u64>> {
        match self {
            PauseAfterCanary::Flag(false) => None,
            PauseAfterCanary::Flag(true) => Some(None),
            PauseAfterCanary::Timeout(t) => Some(Some(t.timeout.0)),
        }
    }
}

/// A duration written as a quoted number with a unit, `"90s"`, `"30m"`, `"2h"`; held in
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Seconds(pub u64);

impl JsonSchema for Seconds {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as \"90s\", \"30m\" or \"2h\".",
            "type": "string",
            "pattern": "^[1-9][0-9]{0,6}[smh]$"
        })
    }
}

impl TryFrom<String> for Seconds {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let unit = match s.chars().last() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            _ => 0,
        };
        s[..s.len().saturating_sub(1)]
            .parse::<u64>()
            .ok()
            .filter(|n| unit > 0 && *n > 0 && *n < 10_000_000)
            .map(|n| Seconds(n * unit))
            .ok_or_else(|| format!("`{s}` is not a duration such as \"90s\", \"30m\" or \"2h\""))
    }
}

impl From<Seconds> for String {
    fn from(s: Seconds) -> String {
        match s.0 {
            n if n % 3600 == 0 => format!("{}h", n / 3600),
            n if n % 60 == 0 => format!("{}m", n / 60),
            n => format!("{n}s"),
        }
    }
}

fn default_batch() -> CountOrPercent {
    CountOrPercent::Count(1)
}

fn default_failures() -> CountOrPercent {
    CountOrPercent::Count(0)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    #[default]
    Detect,
    Heal,
}
