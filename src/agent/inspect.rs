//! `agent inspect`: the host's actual state, read from reality: release directories and the
//! `current` link on disk, hashes, modes and owners of managed files, the env file, and the
//! service manager's view of each service. The state file only adds what the disk cannot say.

use super::layout::Layout;
use super::state::{AgentState, FileRecord, StateError};
use crate::model::ServiceManager;
use crate::model::host::{
    ActualDeployment, ActualFile, ActualHost, ActualService, RecordedFile, ServiceState,
};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub fn inspect(layout: &Layout) -> Result<ActualHost, StateError> {
    let state = AgentState::load(&layout.state_file())?;
    let mut host = ActualHost::empty(super::AGENT_VERSION);
    let names = Names::load();
    let mut deployment_names: Vec<String> = state.deployments.keys().cloned().collect();
    // Directories without a record are reported too (an unknown extra deployment is drift).
    if let Ok(entries) = std::fs::read_dir(layout.deployments_dir()) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !deployment_names.contains(&name) {
                    deployment_names.push(name);
                }
            }
        }
    }
    for name in deployment_names {
        let record = state.deployments.get(&name).cloned().unwrap_or_default();
        let current = std::fs::read_link(layout.current_link(&name))
            .ok()
            .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()));
        let mut releases: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(layout.releases_dir(&name))
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| {
                            let t = e
                                .metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH);
                            (t, e.file_name().to_string_lossy().into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
        releases.sort();
        let mut files = Vec::new();
        if let Some(rel) = &current
            && let Some(r) = record.releases.get(rel)
        {
            let dir = layout.release_dir(&name, rel);
            for f in &r.files {
                files.push(actual_file(&dir.join(&f.destination), f, &names));
            }
        }
        for f in &record.host_files {
            files.push(actual_file(&layout.host_path(&f.destination), f, &names));
        }
        let service = record.service.as_ref().map(|s| {
            let (state, enabled) = service_state(layout, &name, s.manager, s.autostart);
            ActualService {
                manager: s.manager,
                definition_sha256: Some(s.definition_sha256.clone()),
                state,
                enabled,
            }
        });
        let migrations_pending = current
            .as_ref()
            .zip(record.migrations_dir.as_ref())
            .map(|(rel, dir)| {
                pending_migrations(
                    &layout.release_dir(&name, rel).join(dir),
                    &record.migrations_applied,
                )
            })
            .unwrap_or_default();
        let release_names: Vec<String> = releases.iter().map(|(_, r)| r.clone()).collect();
        let container =
            super::container::inspect(layout, &name, current.as_deref(), &release_names);
        host.deployments.insert(
            name.clone(),
            ActualDeployment {
                current_version: current
                    .as_ref()
                    .and_then(|c| record.releases.get(c))
                    .map(|r| r.version.clone()),
                current_release: current.clone(),
                releases: releases.into_iter().map(|(_, r)| r).collect(),
                files,
                env_sha256: crate::digest::sha256_file(&layout.env_file(&name))
                    .ok()
                    .map(|(sha, _)| sha),
                service,
                migrations_pending,
                known_releases: record.releases.keys().cloned().collect(),
                container,
                migrations_applied: record.migrations_applied.clone(),
                health_checks_sha256: current
                    .as_ref()
                    .and_then(|c| record.releases.get(c)?.health_checks.as_deref())
                    .map(crate::plan::health_checks_sha256),
            },
        );
    }
    if let Ok(entries) = std::fs::read_dir(layout.cache_dir()) {
        let mut cached: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        cached.sort();
        host.cached_artifacts = cached;
    }
    let managed: Vec<String> = host.deployments.keys().cloned().collect();
    host.listeners = super::ports::listeners(layout, &managed);
    Ok(host)
}

/// `NNN_name` of every `NNN_name.up.sql` in `dir` whose version is not in `applied`.
fn pending_migrations(dir: &Path, applied: &[String]) -> Vec<String> {
    let mut pending: Vec<(u64, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".up.sql")?.to_string();
            let version: u64 = stem.split('_').next()?.parse().ok()?;
            (!applied
                .iter()
                .any(|a| a.parse::<u64>().ok() == Some(version)))
            .then_some((version, stem))
        })
        .collect();
    pending.sort();
    pending.into_iter().map(|(_, s)| s).collect()
}

fn actual_file(path: &Path, record: &FileRecord, names: &Names) -> ActualFile {
    // symlink_metadata: a link swapped in by hand must not make us hash its target.
    let meta = std::fs::symlink_metadata(path).ok().filter(|m| m.is_file());
    ActualFile {
        destination: record.destination.clone(),
        exists: meta.is_some(),
        sha256: meta
            .as_ref()
            .and_then(|_| crate::digest::sha256_file(path).ok())
            .map(|(sha, _)| sha),
        mode: meta.as_ref().map(|m| format!("{:04o}", m.mode() & 0o7777)),
        owner: meta.as_ref().map(|m| names.owner(m.uid(), m.gid())),
        recorded: Some(RecordedFile {
            sha256: record.sha256.clone(),
            redacted: record.redacted.clone(),
        }),
    }
}

/// What the host's service manager says about a deployment's service: its state and whether
/// it starts at boot. The manager recorded at install picks the backend, so a host that moved
/// between managers is still asked about the service where it was installed. When the manager
/// cannot say whether the service is enabled, the recorded `autostart` stands in.
fn service_state(
    layout: &Layout,
    name: &str,
    manager: ServiceManager,
    recorded_autostart: bool,
) -> (ServiceState, bool) {
    let backend = crate::service::for_host(layout, manager);
    let service = crate::service::service_name(name);
    let state = backend.state(&service);
    let enabled = match state {
        ServiceState::Missing => false,
        _ => backend.enabled(&service).unwrap_or(recorded_autostart),
    };
    (state, enabled)
}

/// User and group names from /etc/passwd and /etc/group (no libc calls needed).
struct Names {
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl Names {
    fn load() -> Names {
        let parse = |path: &str| -> BTreeMap<u32, String> {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let id = f.nth(1)?.parse().ok()?;
                    Some((id, name.to_string()))
                })
                .collect()
        };
        Names {
            users: parse("/etc/passwd"),
            groups: parse("/etc/group"),
        }
    }

    fn owner(&self, uid: u32, gid: u32) -> String {
        let u = self
            .users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string());
        let g = self
            .groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string());
        format!("{u}:{g}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_an_empty_host() {
        let dir = tempfile::tempdir().unwrap();
        let host = inspect(&Layout::new(dir.path().join("nothing-here"))).unwrap();
        assert!(host.deployments.is_empty());
        assert_eq!(host.format, crate::model::host::HOST_STATE_FORMAT);
    }

    #[test]
    fn hand_edit_shows_in_hash() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let rel = layout.release_dir("app", "1.0-abc");
        std::fs::create_dir_all(rel.join("conf")).unwrap();
        std::fs::write(rel.join("conf/a.yml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink(&rel, layout.current_link("app")).unwrap();
        let record = format!(
            r#"{{"format":"clarity.agent-state/v1","deployments":{{"app":{{"releases":{{"1.0-abc":{{"version":"1.0","files":[{{"destination":"conf/a.yml","sha256":"{}","redacted":"a: 1\n"}}]}}}}}}}}}}"#,
            crate::digest::sha256_hex(b"a: 1\n")
        );
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        std::fs::write(layout.state_file(), record).unwrap();
        let before = inspect(&layout).unwrap();
        let f = &before.deployments["app"].files[0];
        assert_eq!(f.sha256, f.recorded.as_ref().map(|r| r.sha256.clone()));
        std::fs::write(rel.join("conf/a.yml"), "a: 2\n").unwrap();
        let after = inspect(&layout).unwrap();
        let f = &after.deployments["app"].files[0];
        assert_ne!(f.sha256, f.recorded.as_ref().map(|r| r.sha256.clone()));
        assert_eq!(
            after.deployments["app"].current_release.as_deref(),
            Some("1.0-abc")
        );
        assert_eq!(
            after.deployments["app"].current_version.as_deref(),
            Some("1.0")
        );
    }

    #[test]
    fn service_state_comes_from_the_recorded_manager() {
        use crate::service::{ProcessBackend, ServiceBackend, ServiceDefinition};
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let state = || service_state(&layout, "app", ServiceManager::Process, true);
        assert_eq!(state(), (ServiceState::Missing, false));
        let backend = ProcessBackend::new(layout.run_dir());
        backend
            .install(&ServiceDefinition {
                name: crate::service::service_name("app"),
                command: vec!["/bin/sleep".into(), "30".into()],
                working_dir: layout.current_link("app"),
                env_file: None,
                user: None,
                restart: crate::model::RestartPolicy::Always,
                autostart: false,
                limits: None,
                log_file: layout.deployment_dir("app").join("logs/service.log"),
            })
            .unwrap();
        assert_eq!(state(), (ServiceState::Stopped, false));
        let pid = layout.pid_file("clarity-app");
        std::fs::write(&pid, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(state().0, ServiceState::Running);
        std::fs::write(&pid, "999999999\n").unwrap();
        assert_eq!(state().0, ServiceState::Failed);
    }
}
