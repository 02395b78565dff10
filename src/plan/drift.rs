//! Drift: how a host differs from the desired state of the commit last applied to it, found by
//! inspecting without changing anything. Each finding names the deployment, a kind operators
//! can filter on, and a detail line. Pure, like the plan: the same desired/actual pair, read
//! for reporting instead of converging.

use super::{env_file_text, service_definition_sha256};
use crate::desired::{DesiredFile, DesiredHost};
use crate::model::host::{ActualHost, ServiceState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    pub server: String,
    pub client: String,
    pub deployment: String,
    pub kind: DriftKind,
    pub detail: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    /// The deployment is not on the host at all.
    Missing,
    /// `current` points at another release than the one applied.
    WrongRelease,
    /// A managed file's content differs from what Clarity wrote (edited by hand).
    FileModified,
    /// A managed file is gone.
    FileMissing,
    /// A managed file's mode or owner changed.
    FileMetadata,
    /// The env file differs.
    EnvModified,
    /// The service is not running.
    ServiceStopped,
    /// The service will not start at boot although it should.
    ServiceDisabled,
    /// The service definition differs from the one Clarity installed.
    ServiceDefinition,
    /// A migration shipped in the current release has not been applied.
    MigrationPending,
    /// A release directory Clarity did not install.
    UnknownRelease,
    /// A deployment on the host that the repository does not describe.
    UnknownDeployment,
    /// A port the deployment claims is held by another process.
    PortConflict,
    /// The current release's container is gone.
    ContainerMissing,
    /// The current release's container is not running.
    ContainerStopped,
    /// The container runs another image than the one loaded for the release.
    ContainerImage,
    /// The container was created with another configuration than the release's.
    ContainerConfig,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::WrongRelease => "wrong-release",
            DriftKind::FileModified => "file-modified",
            DriftKind::FileMissing => "file-missing",
            DriftKind::FileMetadata => "file-metadata",
            DriftKind::EnvModified => "env-modified",
            DriftKind::ServiceStopped => "service-stopped",
            DriftKind::ServiceDisabled => "service-disabled",
            DriftKind::ServiceDefinition => "service-definition",
            DriftKind::MigrationPending => "migration-pending",
            DriftKind::UnknownRelease => "unknown-release",
            DriftKind::UnknownDeployment => "unknown-deployment",
            DriftKind::PortConflict => "port-conflict",
            DriftKind::ContainerMissing => "container-missing",
            DriftKind::ContainerStopped => "container-stopped",
            DriftKind::ContainerImage => "container-image",
            DriftKind::ContainerConfig => "container-config",
        }
    }
}

/// The ports `d` claims that a process outside it listens on, with who holds them. A holder
/// the agent could not see (no pid) is not counted: it may be the service itself.
fn port_conflicts(
    d: &crate::desired::DesiredDeployment,
    actual: &ActualHost,
) -> Vec<(u16, &'static str, String)> {
    let Some(spec) = &d.service else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in &spec.ports {
        let protocol = match p.protocol {
            crate::model::Protocol::Tcp => "tcp",
            crate::model::Protocol::Udp => "udp",
        };
        let other = actual.listeners.iter().find(|l| {
            l.port == p.port
                && l.protocol == protocol
                && l.pid.is_some()
                && l.deployment.as_deref() != Some(d.name.as_str())
        });
        if let Some(l) = other {
            let who = match (&l.process, &l.deployment) {
                (Some(name), Some(dep)) => format!("{name} (pid {}) of {dep}", l.pid.unwrap_or(0)),
                (Some(name), None) => format!("{name} (pid {})", l.pid.unwrap_or(0)),
                (None, _) => format!("pid {}", l.pid.unwrap_or(0)),
            };
            out.push((p.port, protocol, who));
        }
    }
    out
}

pub fn drift(desired: &DesiredHost, actual: &ActualHost) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut find = |deployment: &str, kind: DriftKind, detail: String| {
        out.push(Finding {
            server: desired.server.clone(),
            client: desired.client.clone(),
            deployment: deployment.to_string(),
            kind,
            detail,
        })
    };
    for d in &desired.deployments {
        let Some(a) = actual.deployments.get(&d.name) else {
            find(
                &d.name,
                DriftKind::Missing,
                format!("{} {} is not installed", d.name, d.artifact.version),
            );
            continue;
        };
        match a.current_release.as_deref() {
            Some(r) if r == d.release => {}
            Some(r) => find(
                &d.name,
                DriftKind::WrongRelease,
                format!("release {r} is active, {} was applied", d.release),
            ),
            None => find(
                &d.name,
                DriftKind::WrongRelease,
                format!("no release is active, {} was applied", d.release),
            ),
        }
        let files: Vec<&DesiredFile> = d.release_files.iter().chain(&d.host_files).collect();
        for f in files {
            let Some(af) = a.files.iter().find(|x| x.destination == f.destination) else {
                continue;
            };
            if !af.exists {
                find(
                    &d.name,
                    DriftKind::FileMissing,
                    format!("{} is missing", f.destination),
                );
                continue;
            }
            if af.sha256.as_deref() != Some(f.content.sha256.as_str()) && f.content.known {
                // A hash of a file holding a secret lets anyone who reads the finding test
                // guesses of the secret offline: such a file is only said to have changed.
                let message = if f.content.sensitive {
                    format!(
                        "{} was changed on the host (sensitive file changed)",
                        f.destination
                    )
                } else {
                    format!(
                        "{} was changed on the host (sha256 {}…, expected {}…)",
                        f.destination,
                        short(af.sha256.as_deref()),
                        short(Some(&f.content.sha256))
                    )
                };
                find(&d.name, DriftKind::FileModified, message);
            }
            if af.mode.as_deref() != Some(f.mode.as_str()) {
                find(
                    &d.name,
                    DriftKind::FileMetadata,
                    format!(
                        "{} has mode {}, expected {}",
                        f.destination,
                        af.mode.as_deref().unwrap_or("?"),
                        f.mode
                    ),
                );
            }
        }
        if !d.env.is_empty() && d.release_known {
            let want = crate::desired::sha256_hex(env_file_text(d, true).as_bytes());
            if a.env_sha256.as_deref() != Some(want.as_str()) {
                find(
                    &d.name,
                    DriftKind::EnvModified,
                    "the env file differs from what was applied".into(),
                );
            }
        }
        if let Some(spec) = &d.service {
            match &a.service {
                None => find(
                    &d.name,
                    DriftKind::ServiceDefinition,
                    "no service definition is installed".into(),
                ),
                Some(s) => {
                    if s.definition_sha256 != service_definition_sha256(d) {
                        find(
                            &d.name,
                            DriftKind::ServiceDefinition,
                            "the service definition differs from the one applied".into(),
                        );
                    }
                    if spec.autostart && s.state != ServiceState::Running {
                        find(
                            &d.name,
                            DriftKind::ServiceStopped,
                            format!("the service is {}", format!("{:?}", s.state).to_lowercase()),
                        );
                    }
                    if spec.autostart && !s.enabled {
                        find(
                            &d.name,
                            DriftKind::ServiceDisabled,
                            "the service does not start at boot".into(),
                        );
                    }
                }
            }
        }
        for (port, protocol, holder) in port_conflicts(d, actual) {
            find(
                &d.name,
                DriftKind::PortConflict,
                format!(
                    "port {port}/{protocol} is held by {holder}, not by {}",
                    d.name
                ),
            );
        }
        for (kind, detail) in super::container::drift(d, a) {
            find(&d.name, kind, detail);
        }
        for m in &a.migrations_pending {
            find(
                &d.name,
                DriftKind::MigrationPending,
                format!("migration {m} has not been applied"),
            );
        }
        for r in &a.releases {
            if !a.known_releases.is_empty() && !a.known_releases.contains(r) {
                find(
                    &d.name,
                    DriftKind::UnknownRelease,
                    format!("release directory {r} was not installed by Clarity"),
                );
            }
        }
    }
    for name in actual.deployments.keys() {
        if !desired.deployments.iter().any(|d| &d.name == name) {
            find(
                name,
                DriftKind::UnknownDeployment,
                format!("{name} is on the host but not in the repository"),
            );
        }
    }
    out
}

fn short(s: Option<&str>) -> &str {
    s.map(|s| &s[..12.min(s.len())]).unwrap_or("none")
}
