//! Containers on a host: the agent's side of `docker` artifacts (Docker or Podman) and `lxc`
//! artifacts (LXC). One container per release, named `clarity-<deployment>-<release>` and
//! labelled with both; the release directory holds `container.json`, the agent's record of
//! which runtime, image and configuration made it. Every runtime command is an argv vector;
//! env values reach the runtime through a root-only file, never a command line. This module
//! drives runtimes only: which steps run is the plan's decision, and it never touches
//! containers, images or files that are not a Clarity deployment's.

pub mod docker;
pub mod lxc;

use super::files::write_owned;
use super::layout::Layout;
use crate::model::apply::{ApplyDeployment, WireContainer};
use crate::model::host::{ActualContainer, ContainerState};
use crate::model::{ArtifactType, ContainerRuntimeSettings, DockerRuntime, HealthCheck};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one runtime command may take before the agent gives up on it (a `load` of a big
/// image is the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Which runtime a container lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Podman,
    Lxc,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Podman => "podman",
            RuntimeKind::Lxc => "lxc",
        }
    }
}

/// A runtime as the agent drives it: the client program, its global options and environment,
/// and (LXC) the container directory. Saved in records and journals so that inspect and crash
/// recovery reach the runtime that made a container without the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub kind: RuntimeKind,
    /// The client (`docker`, `podman`) or the directory of the `lxc-*` tools.
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `lxc-* -P`.
    #[serde(default)]
    pub lxc_path: Option<PathBuf>,
}

impl Runtime {
    /// The runtime for an artifact kind under a server's settings.
    pub fn new(
        layout: &Layout,
        kind: ArtifactType,
        settings: Option<&ContainerRuntimeSettings>,
    ) -> Runtime {
        let s = settings.cloned().unwrap_or_default();
        let kind = match (kind, s.runtime) {
            (ArtifactType::Lxc, _) => RuntimeKind::Lxc,
            (_, DockerRuntime::Podman) => RuntimeKind::Podman,
            _ => RuntimeKind::Docker,
        };
        let program = match kind {
            RuntimeKind::Lxc => PathBuf::from("/usr/bin"),
            _ => s
                .program
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/usr/bin/{}", kind.as_str()))),
        };
        Runtime {
            kind,
            program,
            args: s.args,
            env: s.env,
            lxc_path: (kind == RuntimeKind::Lxc)
                .then(|| layout.host_path(s.lxc_path.as_deref().unwrap_or("/var/lib/lxc"))),
        }
    }

    fn lxc_tool(&self, tool: &str) -> PathBuf {
        self.program.join(tool)
    }

    /// The program a runtime needs, checked before the first command so that a host without
    /// it gets a message naming what to install.
    pub fn check_installed(&self, host: &str) -> Result<(), String> {
        let (program, package) = match self.kind {
            RuntimeKind::Docker => (self.program.clone(), "docker.io"),
            RuntimeKind::Podman => (self.program.clone(), "podman"),
            RuntimeKind::Lxc => (self.lxc_tool("lxc-create"), "lxc"),
        };
        if program.is_file() {
            return Ok(());
        }
        let alternative = match self.kind {
            RuntimeKind::Docker => {
                " (or install `podman` and set `agent.containers.runtime: podman`; or point `agent.containers.program` at the client)"
            }
            RuntimeKind::Podman => " (or point `agent.containers.program` at the client)",
            RuntimeKind::Lxc => "",
        };
        Err(format!(
            "host {host} has no {} runtime: {} is not installed; install the `{package}` package{alternative}",
            self.kind.as_str(),
            program.display()
        ))
    }

    /// The argv of a runtime subcommand: `docker <args> <sub...>`, `lxc-<tool> -P <path> ...`.
    pub fn argv(&self, sub: &[&str]) -> Vec<String> {
        match self.kind {
            RuntimeKind::Lxc => {
                let mut v = vec![self.lxc_tool(sub[0]).display().to_string()];
                if let Some(p) = &self.lxc_path {
                    v.push("-P".into());
                    v.push(p.display().to_string());
                }
                v.extend(sub[1..].iter().map(|s| s.to_string()));
                v
            }
            _ => {
                let mut v = vec![self.program.display().to_string()];
                v.extend(self.args.iter().cloned());
                v.extend(sub.iter().map(|s| s.to_string()));
                v
            }
        }
    }

    /// Runs a subcommand; its stdout on success, or an error naming the command, its status
    /// and what it printed.
    pub fn run(&self, sub: &[&str]) -> Result<String, String> {
        let argv = self.argv(sub);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).envs(&self.env);
        let shown = shown_command(&argv);
        let captured = super::health::run_captured(&mut cmd, Some(COMMAND_TIMEOUT))
            .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        if captured.status.is_some_and(|s| s.success()) {
            return Ok(String::from_utf8_lossy(&captured.stdout).into_owned());
        }
        let status = match captured.status {
            _ if captured.timed_out => "timed out".to_string(),
            Some(s) => s.to_string(),
            None => "no exit status".to_string(),
        };
        Err(format!(
            "`{shown}` failed ({status}): {}",
            last_lines(&captured.stderr_or_stdout())
        ))
    }

    /// Argv that runs `command` inside a container, for `command` health checks. The client's
    /// environment travels through `env(1)`, so the check needs no shell.
    pub fn exec_argv(&self, container: &str, command: &[String]) -> Vec<String> {
        let mut v = Vec::new();
        if !self.env.is_empty() {
            v.push("/usr/bin/env".to_string());
            v.extend(self.env.iter().map(|(k, val)| format!("{k}={val}")));
        }
        match self.kind {
            RuntimeKind::Lxc => {
                v.extend(self.argv(&["lxc-attach", "-n", container, "--"]));
            }
            _ => v.extend(self.argv(&["exec", container])),
        }
        v.extend(command.iter().cloned());
        v
    }

    pub fn state(&self, name: &str) -> ContainerState {
        match self.kind {
            RuntimeKind::Lxc => lxc::state(self, name),
            _ => docker::inspect(self, name).map_or_else(|s| s, |i| i.state),
        }
    }

    pub fn start(&self, name: &str) -> Result<(), String> {
        match self.kind {
            RuntimeKind::Lxc => lxc::start(self, name),
            _ => docker::start(self, name),
        }
    }

    pub fn stop(&self, name: &str) -> Result<(), String> {
        match self.kind {
            RuntimeKind::Lxc => lxc::stop(self, name),
            _ => self.run(&["stop", name]).map(|_| ()),
        }
    }

    /// Removes a container (stopping it first); a missing one is fine.
    pub fn remove(&self, name: &str) -> Result<(), String> {
        if self.state(name) == ContainerState::Missing {
            return Ok(());
        }
        match self.kind {
            RuntimeKind::Lxc => lxc::destroy(self, name),
            _ => self.run(&["rm", "-f", name]).map(|_| ()),
        }
    }
}

/// A command line for messages: the argv joined, nothing secret is ever in it.
fn shown_command(argv: &[String]) -> String {
    argv.join(" ")
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// `<release>/container.json`: which runtime, image and configuration made the release's
/// container. Written when the container is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub runtime: Runtime,
    pub name: String,
    /// The image id the container was created from (docker/podman).
    #[serde(default)]
    pub image: Option<String>,
    pub config_sha256: String,
    /// `external/protocol` of every published port.
    #[serde(default)]
    pub ports: Vec<String>,
}

const RECORD_FILE: &str = "container.json";

pub fn record_path(layout: &Layout, deployment: &str, release: &str) -> PathBuf {
    layout.release_dir(deployment, release).join(RECORD_FILE)
}

pub fn load_record(layout: &Layout, deployment: &str, release: &str) -> Option<ContainerRecord> {
    let text = std::fs::read_to_string(record_path(layout, deployment, release)).ok()?;
    serde_json::from_str(&text).ok()
}

/// What the journal keeps about an apply's containers, for a rollback even after a crash.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerJournal {
    pub runtime: Option<Runtime>,
    /// The container the previous release ran in.
    pub previous: Option<String>,
    /// The container this apply created (removed on rollback).
    pub created: Option<String>,
    /// The container this apply started.
    pub started: Option<String>,
}

/// The journal entry for a container deployment, `None` for every other deployment.
pub fn journal_for(
    layout: &Layout,
    dep: &ApplyDeployment,
    settings: Option<&ContainerRuntimeSettings>,
    previous_release: Option<&str>,
) -> Option<ContainerJournal> {
    dep.container.as_ref()?;
    Some(ContainerJournal {
        runtime: Some(Runtime::new(layout, dep.artifact.kind, settings)),
        previous: previous_release
            .and_then(|r| load_record(layout, &dep.name, r))
            .map(|r| r.name),
        created: None,
        started: None,
    })
}

/// What a step works with.
pub struct StepContext<'a> {
    pub layout: &'a Layout,
    pub host: &'a str,
    pub settings: Option<&'a ContainerRuntimeSettings>,
    pub dep: &'a ApplyDeployment,
}

impl StepContext<'_> {
    fn runtime(&self) -> Runtime {
        Runtime::new(self.layout, self.dep.artifact.kind, self.settings)
    }

    fn wire(&self) -> Result<&WireContainer, String> {
        self.dep
            .container
            .as_ref()
            .ok_or_else(|| "the request has no container settings for this deployment".into())
    }
}

/// Runs one container step. The journal is saved before each change with what a rollback
/// (even after a crash) needs to undo it. `fetch` gets the archive when the cache lost it.
pub fn step(
    ctx: &StepContext,
    action: crate::model::apply::Action,
    target: &str,
    journal: &mut super::journal::Journal,
    fetch: &mut dyn FnMut() -> Result<PathBuf, String>,
) -> Result<Option<String>, String> {
    use crate::model::apply::Action;
    let state_dir = ctx.layout.state_dir();
    let cached = || crate::fetch::Cache::new(ctx.layout.cache_dir()).get(&ctx.dep.artifact.sha256);
    let mut cj = journal.container.clone().unwrap_or_default();
    let save = |journal: &mut super::journal::Journal, cj: &ContainerJournal| {
        journal.container = Some(cj.clone());
        journal.save(&state_dir).map_err(|e| e.to_string())
    };
    let result = match action {
        Action::LoadImage => {
            let archive = match cached() {
                Some(p) => p,
                None => fetch()?,
            };
            load_image(ctx, &archive)
        }
        Action::CreateContainer => {
            cj.created = ctx.dep.container.as_ref().map(|c| c.name.clone());
            save(journal, &cj)?;
            create(ctx, cached().as_deref())
        }
        Action::StartContainer => {
            cj.started = Some(target.to_string());
            save(journal, &cj)?;
            start(ctx, target)
        }
        Action::StopContainer => stop(ctx, target),
        _ => prune(ctx, journal.previous_release.as_deref()),
    };
    save(journal, &cj)?;
    result
}

/// `load image`: loads the verified archive and checks the image id against its manifest.
fn load_image(ctx: &StepContext, archive: &Path) -> Result<Option<String>, String> {
    let rt = ctx.runtime();
    rt.check_installed(ctx.host)?;
    let id = docker::load(&rt, archive)?;
    Ok(Some(format!("image {id}")))
}

/// `create container`: the release's container, from its image (docker) or its metadata and
/// rootfs tarballs (lxc). An existing container of the release is kept when it was made from
/// the same image and configuration, and replaced otherwise.
fn create(ctx: &StepContext, cached_archive: Option<&Path>) -> Result<Option<String>, String> {
    let rt = ctx.runtime();
    rt.check_installed(ctx.host)?;
    let wire = ctx.wire()?;
    let dep = ctx.dep;
    let release_dir = ctx.layout.release_dir(&dep.name, &dep.release);
    if !release_dir.is_dir() {
        return Err(format!(
            "release {} is not installed on the host",
            dep.release
        ));
    }
    for v in &wire.settings.volumes {
        let dir = ctx.layout.host_path(&v.host_path);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let image = match rt.kind {
        RuntimeKind::Lxc => None,
        _ => Some(match cached_archive {
            Some(a) => docker::manifest_image_id(a)?,
            None => {
                return Err(format!(
                    "the image archive (sha256 {}) is not in the cache: plan again to fetch it",
                    dep.artifact.sha256
                ));
            }
        }),
    };
    let existing = match rt.kind {
        RuntimeKind::Lxc => (lxc::state(&rt, &wire.name) != ContainerState::Missing)
            .then(|| lxc::config_label(&rt, &wire.name)),
        _ => docker::inspect(&rt, &wire.name)
            .ok()
            .map(|i| i.config_sha256.filter(|_| i.image == image)),
    };
    let message = match existing {
        Some(Some(sha)) if sha == wire.config_sha256 => "already exists".to_string(),
        other => {
            if other.is_some() {
                rt.remove(&wire.name)?;
            }
            match rt.kind {
                RuntimeKind::Lxc => lxc::create(&rt, ctx, wire, &release_dir)?,
                _ => docker::create(&rt, ctx, wire, &release_dir, image.as_deref().unwrap_or(""))?,
            }
            if other.is_some() {
                "re-created".to_string()
            } else {
                "created".to_string()
            }
        }
    };
    let record = ContainerRecord {
        runtime: rt,
        name: wire.name.clone(),
        image: image.clone(),
        config_sha256: wire.config_sha256.clone(),
        ports: wire.settings.ports.iter().map(|p| p.host_port()).collect(),
    };
    let text = serde_json::to_vec_pretty(&record).expect("record serializes");
    write_owned(
        &record_path(ctx.layout, &dep.name, &dep.release),
        &text,
        0o600,
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok(Some(match image {
        Some(i) => format!("{message} from image {i}"),
        None => message,
    }))
}

/// `start container`: starts the release's container and waits until the runtime says it
/// runs.
fn start(ctx: &StepContext, target: &str) -> Result<Option<String>, String> {
    let rt = ctx.runtime();
    rt.check_installed(ctx.host)?;
    rt.start(target)?;
    Ok(None)
}

/// `stop container`: stops a previous release's container; it stays for rollback.
fn stop(ctx: &StepContext, target: &str) -> Result<Option<String>, String> {
    let rt = ctx.runtime();
    if rt.state(target) != ContainerState::Running {
        return Ok(Some("not running".into()));
    }
    rt.stop(target)?;
    Ok(Some("stopped, kept for rollback".into()))
}

/// `prune containers`: removes the containers of releases that release pruning will remove
/// (the newest `keep_releases` stay, and always the current and the previous one), then the
/// images that only those containers used. A runtime refuses to remove an image some
/// container still uses, which is what keeps every kept container's image.
fn prune(ctx: &StepContext, previous_release: Option<&str>) -> Result<Option<String>, String> {
    let layout = ctx.layout;
    let dep = ctx.dep;
    let kept = super::apply::releases_kept(layout, &dep.name, dep.keep_releases, previous_release);
    let mut removed = Vec::new();
    let mut images = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(layout.releases_dir(&dep.name)) else {
        return Ok(Some("nothing to prune".into()));
    };
    for e in entries.flatten() {
        let release = e.file_name().to_string_lossy().into_owned();
        if release.starts_with('.') || kept.contains(&release) || release == dep.release {
            continue;
        }
        let Some(record) = load_record(layout, &dep.name, &release) else {
            continue;
        };
        match record.runtime.remove(&record.name) {
            Ok(()) => {
                removed.push(record.name.clone());
                let _ = std::fs::remove_file(record_path(layout, &dep.name, &release));
                if let Some(i) = record.image {
                    images.push((record.runtime.clone(), i));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    let mut removed_images = 0;
    for (rt, image) in images {
        let in_use = docker::image_in_use(&rt, &image);
        if !in_use && rt.run(&["image", "rm", &image]).is_ok() {
            removed_images += 1;
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Some(if removed.is_empty() {
        "nothing to prune".to_string()
    } else {
        format!(
            "removed {} ({removed_images} image{})",
            removed.join(", "),
            if removed_images == 1 { "" } else { "s" }
        )
    }))
}

/// Undoes an apply's container changes: the new container is stopped (and removed when this
/// apply created it for a new release) and the previous release's container is started again.
pub fn rollback(j: &super::journal::Journal, problems: &mut Vec<String>) {
    let Some(cj) = &j.container else { return };
    let Some(rt) = &cj.runtime else { return };
    let switching = j.previous_release.as_deref() != Some(j.release.as_str());
    if let Some(started) = &cj.started
        && Some(started) != cj.previous.as_ref()
        && switching
        && rt.state(started) == ContainerState::Running
        && let Err(e) = rt.stop(started)
    {
        problems.push(e);
    }
    if let Some(created) = &cj.created
        && switching
        && let Err(e) = rt.remove(created)
    {
        problems.push(e);
    }
    if let Some(prev) = &cj.previous
        && (switching || cj.started.is_some())
        && rt.state(prev) != ContainerState::Running
        && let Err(e) = rt.start(prev)
    {
        problems.push(format!("restart the previous container: {e}"));
    }
}

/// A health check as it runs against a container: a `command` check runs inside it.
pub fn check_for(
    check: &HealthCheck,
    runtime: Option<&Runtime>,
    container: Option<&str>,
) -> HealthCheck {
    let (Some(rt), Some(name)) = (runtime, container) else {
        return check.clone();
    };
    let mut c = check.clone();
    if let Some(cmd) = &check.command {
        c.command = Some(rt.exec_argv(name, cmd));
    }
    c
}

/// The current release's container as the runtime sees it, and which earlier releases'
/// containers still exist.
pub fn inspect(
    layout: &Layout,
    deployment: &str,
    current: Option<&str>,
    releases: &[String],
) -> Option<ActualContainer> {
    let current = current?;
    let record = load_record(layout, deployment, current)?;
    let rt = &record.runtime;
    let (state, image, config) = match rt.kind {
        RuntimeKind::Lxc => {
            let state = lxc::state(rt, &record.name);
            let config = (state != ContainerState::Missing)
                .then(|| lxc::config_label(rt, &record.name))
                .flatten();
            (state, None, config)
        }
        _ => match docker::inspect(rt, &record.name) {
            Ok(i) => (i.state, i.image, i.config_sha256),
            Err(state) => (state, None, None),
        },
    };
    let kept = releases
        .iter()
        .filter(|r| r.as_str() != current)
        .filter_map(|r| load_record(layout, deployment, r))
        .filter(|r| !matches!(r.runtime.state(&r.name), ContainerState::Missing))
        .map(|r| r.name)
        .collect();
    Some(ActualContainer {
        runtime: rt.kind.as_str().to_string(),
        name: record.name.clone(),
        state,
        image,
        recorded_image: record.image.clone(),
        config_sha256: config,
        recorded_config_sha256: Some(record.config_sha256.clone()),
        ports: record.ports.clone(),
        kept,
    })
}

/// Places a container artifact into a staged release: nothing for `docker` (the image is
/// loaded from the cache), the metadata and rootfs tarballs for `lxc`; other kinds as before.
pub fn place_artifact(
    kind: ArtifactType,
    artifact: &Path,
    file_name: &str,
    dir: &Path,
) -> Result<(), String> {
    match kind {
        ArtifactType::Docker => {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))
        }
        ArtifactType::Lxc => {
            super::release::place_artifact(
                ArtifactType::Tarball,
                artifact,
                file_name,
                &dir.join(lxc::IMAGE_DIR),
            )
            .map_err(|e| e.to_string())?;
            lxc::image_files(&dir.join(lxc::IMAGE_DIR)).map(|_| ())
        }
        other => super::release::place_artifact(other, artifact, file_name, dir)
            .map_err(|e| e.to_string()),
    }
}

/// Removes every container of a deployment (`--prune` of the deployment); volumes stay.
pub fn remove_all(layout: &Layout, deployment: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(layout.releases_dir(deployment)) else {
        return problems;
    };
    for e in entries.flatten() {
        let release = e.file_name().to_string_lossy().into_owned();
        if let Some(r) = load_record(layout, deployment, &release)
            && let Err(e) = r.runtime.remove(&r.name)
        {
            problems.push(e);
        }
    }
    problems
}
