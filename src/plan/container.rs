//! The container steps of a plan (`docker` and `lxc` artifacts): load the image, create the
//! release's container, start it, stop the previous one and prune, with "known after apply"
//! where only the runtime can tell (the image id inside an archive). Also the values both the
//! plan and the agent derive from a desired container: its name and its configuration hash.
//! Pure, like the rest of `plan`.

use super::{Change, Step, step};
use crate::desired::DesiredDeployment;
use crate::model::ArtifactType;
use crate::model::apply::{Action, WireContainer, WireSecret};
use crate::model::host::{ActualDeployment, ContainerState};

/// The container of one release: `clarity-<deployment>-<release>`.
pub fn name(deployment: &str, release: &str) -> String {
    format!("clarity-{deployment}-{release}")
}

/// Hash of everything the container is created from, stored as its `clarity.config` label, so
/// that a container re-created by hand with other settings shows as drift. Env values are
/// hashed, never stored.
pub fn config_sha256(d: &DesiredDeployment) -> String {
    let env: Vec<(&String, String)> = d
        .env
        .iter()
        .map(|(k, v)| (k, crate::digest::sha256_hex(v.exposed().as_bytes())))
        .collect();
    crate::digest::sha256_hex(
        serde_json::to_string(&(&d.release, &d.container, &env, &d.artifact.sha256))
            .unwrap_or_default()
            .as_bytes(),
    )
}

/// What the agent needs to create the release's container.
pub fn wire(d: &DesiredDeployment) -> Option<WireContainer> {
    let c = d.container.as_ref()?;
    Some(WireContainer {
        name: name(&d.name, &d.release),
        settings: c.settings.clone(),
        env: d
            .env
            .iter()
            .map(|(k, v)| (k.clone(), WireSecret::new(v.exposed())))
            .collect(),
        restart: c.restart_policy,
        autostart: c.autostart,
        config_sha256: config_sha256(d),
    })
}

/// A container deployment's steps, in the groups the plan interleaves with the other steps.
#[derive(Default)]
pub(super) struct ContainerSteps {
    /// After the release is installed: load the image.
    pub load: Vec<Step>,
    /// After the files are written, before the switch: create the container.
    pub create: Vec<Step>,
    /// After the switch: stop the old container first (when it holds a port the new one
    /// needs), then start the new one.
    pub start: Vec<Step>,
    /// After the health checks: stop the old container and prune.
    pub finish: Vec<Step>,
}

pub(super) fn steps(
    d: &DesiredDeployment,
    actual: Option<&ActualDeployment>,
    release_changes: bool,
) -> ContainerSteps {
    let mut out = ContainerSteps::default();
    let Some(spec) = &d.container else {
        return out;
    };
    let settings = &spec.settings;
    let docker = d.artifact.kind == ArtifactType::Docker;
    let new = name(&d.name, &d.release);
    let ac = actual.and_then(|a| a.container.as_ref());
    let kept = ac.is_some_and(|c| c.kept.contains(&new));
    let load = || {
        step(
            Action::LoadImage,
            Change::Create,
            format!("{} {}", d.artifact.id, d.artifact.version),
        )
        .detail(format!(
            "image archive sha256 {}…, checked against its manifest",
            &d.artifact.sha256[..12.min(d.artifact.sha256.len())]
        ))
        .unknown("the image id is known once the archive is loaded")
    };
    let create = |change: Change, why: Option<String>| {
        let mut parts = Vec::new();
        for p in &settings.ports {
            parts.push(format!(
                "port {} → {}/{}",
                p.host_side(),
                p.internal(),
                p.protocol.as_str()
            ));
        }
        for v in &settings.volumes {
            parts.push(format!(
                "volume {} → {}{}",
                v.host_path,
                v.container_path,
                if v.read_only { " (ro)" } else { "" }
            ));
        }
        parts.push(format!("network {}", settings.network.mode.as_str()));
        if !settings.dns.is_empty() {
            parts.push(format!("dns {}", settings.dns.join(",")));
        }
        if let Some(l) = &settings.limits {
            if let Some(m) = l.memory_mb {
                parts.push(format!("memory {m} MiB"));
            }
            if let Some(c) = l.cpu_percent {
                parts.push(format!("cpu {c}%"));
            }
        }
        if docker {
            parts.push(format!("restart {}", spec.restart_policy.as_str()));
        }
        if spec.autostart && !docker {
            parts.push("start at boot".into());
        }
        if !d.env.is_empty() {
            parts.push(format!(
                "{} env var{} {}",
                d.env.len(),
                if d.env.len() == 1 { "" } else { "s" },
                if docker {
                    "from a root-only file"
                } else {
                    "in the container's root-only config"
                }
            ));
        }
        if let Some(why) = why {
            parts.insert(0, why);
        }
        step(Action::CreateContainer, change, new.clone()).detail(parts.join(", "))
    };
    if release_changes {
        let old = ac.filter(|c| c.state == ContainerState::Running);
        if !kept {
            if docker {
                out.load.push(load());
            }
            out.create.push(create(Change::Create, None));
        }
        let clash: Vec<String> = old
            .map(|c| {
                settings
                    .ports
                    .iter()
                    .map(|p| p.host_port())
                    .filter(|p| c.ports.contains(p))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(old) = old
            && !clash.is_empty()
        {
            out.start.push(
                step(Action::StopContainer, Change::Update, old.name.clone()).detail(format!(
                    "before starting the new one: both bind host port {}; kept for rollback",
                    clash.join(", ")
                )),
            );
        }
        out.start.push(
            step(Action::StartContainer, Change::Update, new.clone()).detail(if kept {
                "the kept container of this release (nothing is loaded again)".to_string()
            } else {
                "the new release's container".to_string()
            }),
        );
        if let Some(old) = old
            && clash.is_empty()
        {
            out.finish.push(
                step(Action::StopContainer, Change::Update, old.name.clone())
                    .detail("once the new one is healthy; kept for rollback"),
            );
        }
    } else {
        let recreate = match ac {
            None => Some("missing on the host".to_string()),
            Some(c) if c.state == ContainerState::Missing => {
                Some("missing on the host".to_string())
            }
            Some(c) if docker && c.image != c.recorded_image => Some(format!(
                "runs image {} instead of {}",
                short(c.image.as_deref()),
                short(c.recorded_image.as_deref())
            )),
            Some(c) if c.config_sha256 != c.recorded_config_sha256 => {
                Some("created with another configuration than the release's".to_string())
            }
            _ => None,
        };
        match recreate {
            Some(why) => {
                if docker {
                    out.load.push(load());
                }
                out.create.push(create(Change::Update, Some(why)));
                out.start.push(
                    step(Action::StartContainer, Change::Update, new.clone())
                        .detail("the re-created container"),
                );
            }
            None => {
                let state = ac.map(|c| c.state);
                if state != Some(ContainerState::Running) {
                    out.start.push(
                        step(Action::StartContainer, Change::Update, new.clone()).detail(
                            match state {
                                Some(ContainerState::Stopped) => "currently stopped",
                                _ => "state unknown",
                            },
                        ),
                    );
                }
            }
        }
    }
    let acting = !(out.load.is_empty()
        && out.create.is_empty()
        && out.start.is_empty()
        && out.finish.is_empty());
    if acting && release_changes {
        out.finish.push(
            step(Action::PruneContainers, Change::Update, d.name.clone()).detail(format!(
                "keep {} previous container{} stopped for rollback; remove older ones and images no kept container uses",
                d.keep_releases.saturating_sub(1).max(1),
                if d.keep_releases.saturating_sub(1).max(1) == 1 { "" } else { "s" }
            )),
        );
    }
    out
}

fn short(image: Option<&str>) -> String {
    match image {
        Some(i) => {
            let hex = i.strip_prefix("sha256:").unwrap_or(i);
            hex[..12.min(hex.len())].to_string()
        }
        None => "(none)".to_string(),
    }
}

/// How the current release's container differs from what was applied.
pub(super) fn drift(
    d: &DesiredDeployment,
    a: &ActualDeployment,
) -> Vec<(super::drift::DriftKind, String)> {
    use super::drift::DriftKind;
    let mut out = Vec::new();
    if d.container.is_none() || a.current_release.as_deref() != Some(d.release.as_str()) {
        return out;
    }
    let expected = name(&d.name, &d.release);
    let Some(c) = &a.container else {
        out.push((
            DriftKind::ContainerMissing,
            format!("container {expected} is not recorded on the host"),
        ));
        return out;
    };
    match c.state {
        ContainerState::Missing => out.push((
            DriftKind::ContainerMissing,
            format!("container {} is gone", c.name),
        )),
        ContainerState::Stopped => out.push((
            DriftKind::ContainerStopped,
            format!("container {} is stopped", c.name),
        )),
        ContainerState::Unknown => out.push((
            DriftKind::ContainerStopped,
            format!(
                "the {} runtime could not be asked about {}",
                c.runtime, c.name
            ),
        )),
        ContainerState::Running => {}
    }
    if c.state != ContainerState::Missing {
        if d.artifact.kind == ArtifactType::Docker && c.image != c.recorded_image {
            out.push((
                DriftKind::ContainerImage,
                format!(
                    "container {} runs image {}, the release loaded {}",
                    c.name,
                    short(c.image.as_deref()),
                    short(c.recorded_image.as_deref())
                ),
            ));
        }
        if c.config_sha256 != c.recorded_config_sha256 {
            out.push((
                DriftKind::ContainerConfig,
                format!(
                    "container {} was created with another configuration than the release's",
                    c.name
                ),
            ));
        }
    }
    out
}
