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
            let want = crate::digest::sha256_hex(env_file_text(d, true).as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Context, DesiredDeployment, InventorySecrets, Selection, Templates};
    use crate::model::ServiceManager;
    use crate::model::host::{ActualDeployment, ActualFile, ActualService, Listener};

    /// One server, one deployment with a config file, an env var, a port and a service: its
    /// desired state computed from a real (tiny) config repository.
    fn desired() -> DesiredHost {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("clarity.yml", "profiles: [prod]\n"),
            (
                "clients/acme/client.yml",
                "id: acme\ncode: ACME\nname: Acme\nstatus: active\n",
            ),
            (
                "clients/acme/datacenters/fra1.yml",
                "code: fra1\nname: Frankfurt 1\ntype: primary\n",
            ),
            (
                "clients/acme/servers/web-1.yml",
                "hostname: web-1\ndatacenter: fra1\nip_addresses:\n  - address: 10.0.0.11\n\
                 agent:\n  transport: ssh\n  service_manager: systemd\n",
            ),
            (
                "repositories/releases.yml",
                "name: releases\ntype: http\nurl: https://releases.acme.example/artifacts\n",
            ),
            (
                "artifacts/shop.yml",
                "id: shop\ntype: jar\nrepository: releases\nversions:\n  - version: \"1.0.0\"\n    \
                 sha256: 0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9\n    \
                 location: shop/1.0.0/shop.jar\nrun:\n  command: [\"java\", \"-jar\", \"shop.jar\"]\n",
            ),
            (
                "clients/acme/deployments/shop/prod.yml",
                "artifact: shop\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n  - server: web-1\n\
                 env_vars:\n  SHOP_PORT: \"8080\"\nconfig_files:\n  - destination: conf/app.conf\n    \
                 content: \"listen=8080\\n\"\n    mode: \"0640\"\nports:\n  - port: 8080\n",
            ),
        ];
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let snapshot =
            crate::source::read(dir.path(), &crate::source::ReadMode::WorkingTree).unwrap();
        let loaded = crate::load::load(&snapshot);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics.sorted());
        let inv = loaded.inventory;
        let (templates, diags) = Templates::new(&inv);
        assert!(diags.is_empty(), "{diags:?}");
        let secrets = InventorySecrets::new(&inv, None);
        let ctx = Context {
            env: Default::default(),
            allowed_env: Vec::new(),
            secrets: &secrets,
            lenient_env: false,
            config_root: None,
        };
        let mut hosts = crate::desired::hosts(&inv, &templates, &Selection::default(), &ctx);
        assert_eq!(hosts.len(), 1);
        let host = hosts.pop().unwrap().expect("the host resolves");
        assert_eq!(host.deployments.len(), 1);
        host
    }

    /// The host exactly as applying `desired` leaves it.
    fn converged(desired: &DesiredHost) -> ActualHost {
        let mut actual = ActualHost::empty("test");
        for d in &desired.deployments {
            actual.deployments.insert(d.name.clone(), in_sync(d));
        }
        actual
    }

    fn in_sync(d: &DesiredDeployment) -> ActualDeployment {
        ActualDeployment {
            current_release: Some(d.release.clone()),
            current_version: Some(d.artifact.version.clone()),
            releases: vec![d.release.clone()],
            known_releases: vec![d.release.clone()],
            files: d
                .release_files
                .iter()
                .chain(&d.host_files)
                .map(|f| ActualFile {
                    destination: f.destination.clone(),
                    exists: true,
                    sha256: Some(f.content.sha256.clone()),
                    mode: Some(f.mode.clone()),
                    owner: None,
                    recorded: None,
                })
                .collect(),
            env_sha256: Some(crate::digest::sha256_hex(env_file_text(d, true).as_bytes())),
            service: Some(ActualService {
                manager: ServiceManager::Systemd,
                definition_sha256: service_definition_sha256(d),
                state: ServiceState::Running,
                enabled: true,
            }),
            ..Default::default()
        }
    }

    /// The drift of `desired` against the converged host changed by `change`, as kinds.
    fn kinds_after(desired: &DesiredHost, change: impl FnOnce(&mut ActualHost)) -> Vec<DriftKind> {
        let mut actual = converged(desired);
        change(&mut actual);
        drift(desired, &actual)
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }

    fn shop(actual: &mut ActualHost) -> &mut ActualDeployment {
        actual.deployments.get_mut("shop").unwrap()
    }

    #[test]
    fn a_converged_host_has_no_drift() {
        let desired = desired();
        assert_eq!(drift(&desired, &converged(&desired)), Vec::new());
    }

    #[test]
    fn each_difference_is_one_finding_of_its_kind() {
        let d = desired();
        let release = d.deployments[0].release.clone();
        assert_eq!(
            kinds_after(&d, |a| a.deployments.clear()),
            [DriftKind::Missing]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).current_release = Some("other".into())),
            [DriftKind::WrongRelease]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).current_release = None),
            [DriftKind::WrongRelease]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).files[0].sha256 = Some("0".repeat(64))),
            [DriftKind::FileModified]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).files[0].exists = false),
            [DriftKind::FileMissing]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).files[0].mode = Some("0666".into())),
            [DriftKind::FileMetadata]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).env_sha256 = None),
            [DriftKind::EnvModified]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).service = None),
            [DriftKind::ServiceDefinition]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a)
                .service
                .as_mut()
                .unwrap()
                .definition_sha256 = None),
            [DriftKind::ServiceDefinition]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).service.as_mut().unwrap().state =
                ServiceState::Failed),
            [DriftKind::ServiceStopped]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).service.as_mut().unwrap().enabled = false),
            [DriftKind::ServiceDisabled]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).migrations_pending =
                vec!["002_add_index".into()]),
            [DriftKind::MigrationPending]
        );
        assert_eq!(
            kinds_after(&d, |a| shop(a).releases =
                vec![release.clone(), "r-by-hand".into()]),
            [DriftKind::UnknownRelease]
        );
        assert_eq!(
            kinds_after(&d, |a| {
                a.deployments
                    .insert("legacy".into(), ActualDeployment::default());
            }),
            [DriftKind::UnknownDeployment]
        );
    }

    #[test]
    fn findings_name_the_host_the_deployment_and_what_differs() {
        let d = desired();
        let mut actual = converged(&d);
        shop(&mut actual).files[0].sha256 = Some("f".repeat(64));
        let found = drift(&d, &actual);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(
            (f.server.as_str(), f.client.as_str(), f.deployment.as_str()),
            ("web-1", "acme", "shop")
        );
        let expected = &d.deployments[0].release_files[0].content.sha256;
        assert_eq!(
            f.detail,
            format!(
                "conf/app.conf was changed on the host (sha256 {}…, expected {}…)",
                "f".repeat(12),
                &expected[..12]
            )
        );
    }

    #[test]
    fn what_cannot_be_judged_is_not_drift() {
        let d = desired();
        // Release directories without the agent's record: nothing to compare with.
        assert_eq!(
            kinds_after(&d, |a| {
                shop(a).known_releases.clear();
                shop(a).releases.push("r-old".into());
            }),
            []
        );
        // A managed file the agent did not report on is not said to be missing.
        assert_eq!(kinds_after(&d, |a| shop(a).files.clear()), []);
        // A file whose content is not exactly known (an undecryptable secret) is not compared.
        let mut unknown = d.clone();
        unknown.deployments[0].release_files[0].content.known = false;
        let mut actual = converged(&unknown);
        shop(&mut actual).files[0].sha256 = Some("0".repeat(64));
        assert_eq!(drift(&unknown, &actual), Vec::new());
    }

    #[test]
    fn a_port_held_by_another_process_is_a_conflict() {
        let d = desired();
        let listener = |pid: Option<u32>, deployment: Option<&str>| Listener {
            port: 8080,
            protocol: "tcp".into(),
            pid,
            process: Some("nginx".into()),
            deployment: deployment.map(str::to_string),
        };
        let found = {
            let mut actual = converged(&d);
            actual.listeners = vec![listener(Some(42), None)];
            drift(&d, &actual)
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, DriftKind::PortConflict);
        assert_eq!(
            found[0].detail,
            "port 8080/tcp is held by nginx (pid 42), not by shop"
        );
        let of_other = kinds_after(&d, |a| {
            a.listeners = vec![listener(Some(7), Some("cleanup"))]
        });
        assert_eq!(of_other, [DriftKind::PortConflict]);
        // Its own process, an unseen holder and another protocol are no conflict.
        assert_eq!(
            kinds_after(&d, |a| a.listeners = vec![listener(Some(42), Some("shop"))]),
            []
        );
        assert_eq!(
            kinds_after(&d, |a| a.listeners = vec![listener(None, None)]),
            []
        );
        let udp = kinds_after(&d, |a| {
            a.listeners = vec![Listener {
                protocol: "udp".into(),
                ..listener(Some(42), None)
            }]
        });
        assert_eq!(udp, []);
    }

    /// Every name the schema gives a kind (so a new kind is covered without listing it here).
    fn names_in(schema: &serde_json::Value, out: &mut Vec<String>) {
        match schema {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("const", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("enum", serde_json::Value::Array(a)) => {
                            out.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)));
                        }
                        _ => names_in(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| names_in(x, out)),
            _ => {}
        }
    }

    #[test]
    fn kinds_read_as_they_serialize() {
        let schema = serde_json::to_value(schemars::schema_for!(DriftKind)).unwrap();
        let mut names = Vec::new();
        names_in(&schema, &mut names);
        assert!(names.len() >= 17, "{schema}");
        for name in names {
            let kind: DriftKind = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn short_hashes_are_twelve_characters_at_most() {
        assert_eq!(short(Some("0123456789abcdef")), "0123456789ab");
        assert_eq!(short(Some("abc")), "abc");
        assert_eq!(short(None), "none");
    }
}
