//! `agent apply`: execute one host's plan. The reconciler sends the plan's steps with the data
//! to carry them out; the agent runs them in order under the host lock, journalling before each
//! change, and streams one JSON event per step. When a step fails — fetch, install, migration,
//! start or health check — it rolls the deployment back: the previous release, the previous
//! files, down migrations (or the database backup), a restart, and a health check of what it
//! restored. If that fails too it stops and says "failed to restore" rather than flapping.

use super::files::{parse_mode, write_owned};
use super::journal::Journal;
use super::layout::Layout;
use super::lock::HostLock;
use super::state::{
    AgentState, DeploymentRecord, FileRecord, ReleaseRecord, ServiceInputs, ServiceRecord,
};
use crate::model::ServiceManager;
use crate::model::apply::{
    Action, AgentEvent, ApplyDeployment, ApplyRequest, HostOutcome, StepStatus, WireSource,
};
use crate::service::{ServiceBackend, ServiceDefinition, service_name};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct ApplyOptions {
    /// How long to wait for another agent's lock on this host.
    pub lock_timeout: Duration,
    /// Fault injection for tests: the agent kills itself with SIGKILL right after finishing
    /// this many steps (counted across the whole apply).
    pub kill_after_steps: Option<usize>,
}

/// The env var that sets `kill_after_steps`; used only by the crash tests.
pub const KILL_AFTER_STEPS_ENV: &str = "CLARITY_AGENT_KILL_AFTER_STEPS";

type Emit<'a> = &'a mut dyn FnMut(AgentEvent);

/// The service backend for a manager on this host.
pub fn backend(layout: &Layout, manager: ServiceManager) -> Box<dyn ServiceBackend> {
    crate::service::for_host(layout, manager)
}

pub fn apply(layout: &Layout, req: &ApplyRequest, opts: &ApplyOptions, emit: Emit) -> HostOutcome {
    let done = |emit: Emit, outcome, message: Option<String>| {
        emit(AgentEvent::Done { outcome, message });
        outcome
    };
    if req.format != crate::model::apply::APPLY_FORMAT {
        return done(
            emit,
            HostOutcome::Failed,
            Some(format!(
                "apply request format `{}`, this agent reads `{}`",
                req.format,
                crate::model::apply::APPLY_FORMAT
            )),
        );
    }
    if let Err(e) = super::names::check_request(req) {
        return done(emit, HostOutcome::Failed, Some(e));
    }
    let lock = match HostLock::acquire(
        &layout.state_dir().join("lock"),
        &req.host,
        opts.lock_timeout,
        &mut |m| eprintln!("{m}"),
    ) {
        Ok(l) => l,
        Err(e) => return done(emit, HostOutcome::Failed, Some(e.to_string())),
    };
    let backend = backend(layout, req.service_manager);
    let loaded = AgentState::load(&layout.state_file());
    if let Some(journal) = Journal::load(&layout.state_dir()) {
        // Only an agent that died mid-apply leaves a journal: every apply that ends clears
        // its own, whatever its outcome, so this message is true when it is shown. An
        // unreadable state must not stop the recovery: it only lacks the kept checks.
        let state = loaded.as_ref().cloned().unwrap_or_default();
        let report = rollback(layout, backend.as_ref(), &journal, None, &state, emit);
        Journal::clear(&layout.state_dir());
        emit(report.active(&journal.deployment));
        let message = if report.restored {
            format!(
                "an earlier apply of `{}` was interrupted; it was rolled back to release {}; plan again",
                journal.deployment,
                journal.previous_release.as_deref().unwrap_or("(none)")
            )
        } else {
            format!(
                "an earlier apply of `{}` was interrupted and rolling it back failed: {}",
                journal.deployment, report.health
            )
        };
        return done(
            emit,
            if report.restored {
                HostOutcome::Recovered
            } else {
                HostOutcome::RestoreFailed
            },
            Some(message),
        );
    }
    if let Some(holder) = &lock.waited_for {
        // The request was planned from what the host ran before the holder changed it:
        // applying it now could redo or undo the holder's work. Ask for a new plan instead.
        return done(
            emit,
            HostOutcome::Recovered,
            Some(format!(
                "waited for {holder} to finish with this host; planning again from what it runs now"
            )),
        );
    }
    if let Err(e) = super::owner::claim(layout, req) {
        return done(emit, HostOutcome::Failed, Some(e));
    }
    let mut state = match loaded {
        Ok(s) => s,
        Err(e) => return done(emit, HostOutcome::Failed, Some(e.to_string())),
    };
    let mut runner = Runner {
        layout,
        backend: backend.as_ref(),
        steps_done: 0,
        kill_after: opts.kill_after_steps,
        fetch_attempts: std::cell::Cell::new(None),
        host: &req.host,
        containers: req.containers.as_ref(),
    };
    for (i, dep) in req.deployments.iter().enumerate() {
        match runner.deployment(dep, &mut state, emit) {
            Ok(()) => {}
            Err(failure) => {
                for later in &req.deployments[i + 1..] {
                    for s in &later.steps {
                        emit(AgentEvent::Step {
                            deployment: later.name.clone(),
                            action: s.action,
                            target: s.target.clone(),
                            status: StepStatus::Skipped,
                            duration_ms: 0,
                            message: Some(format!(
                                "not attempted: `{}` failed before it",
                                dep.name
                            )),
                            bytes: None,
                            attempts: None,
                        });
                    }
                }
                let (outcome, message) = match failure {
                    Failure::Restored => (
                        HostOutcome::RolledBack,
                        format!(
                            "`{}` failed; its previous release runs again and passed its own health checks",
                            dep.name
                        ),
                    ),
                    Failure::NotRestored => (
                        HostOutcome::RestoreFailed,
                        format!(
                            "`{}` failed, and its previous release could not be restored healthy",
                            dep.name
                        ),
                    ),
                    Failure::FirstInstall(left) => (
                        HostOutcome::Failed,
                        format!("`{}` failed on its first install; {left}", dep.name),
                    ),
                };
                return done(emit, outcome, Some(message));
            }
        }
    }
    for name in &req.remove {
        let started = Instant::now();
        let purge = req.purge_data.contains(name);
        let result = remove_deployment(layout, backend.as_ref(), name, purge, &mut state);
        emit(step_event(
            name,
            Action::RemoveDeployment,
            name,
            &result,
            started,
            None,
        ));
    }
    if let Some(max) = req.max_cache_bytes {
        let _ = crate::fetch::Cache::new(layout.cache_dir()).prune(max);
    }
    done(emit, HostOutcome::Converged, None)
}

fn step_event(
    dep: &str,
    action: Action,
    target: &str,
    result: &Result<Option<String>, String>,
    started: Instant,
    bytes: Option<u64>,
) -> AgentEvent {
    AgentEvent::Step {
        deployment: dep.to_string(),
        action,
        target: target.to_string(),
        status: if result.is_ok() {
            StepStatus::Ok
        } else {
            StepStatus::Failed
        },
        duration_ms: started.elapsed().as_millis() as u64,
        message: match result {
            Ok(m) => m.clone(),
            Err(e) => Some(e.clone()),
        },
        bytes,
        attempts: None,
    }
}

/// How a deployment that did not converge ended.
enum Failure {
    /// The previous release runs again and passed its own health checks.
    Restored,
    /// The previous state could not be restored (or is unhealthy by its own checks).
    NotRestored,
    /// There was no previous release; the text names the state the host was left in.
    FirstInstall(String),
}

struct Runner<'a> {
    layout: &'a Layout,
    backend: &'a dyn ServiceBackend,
    steps_done: usize,
    kill_after: Option<usize>,
    /// Download attempts of the last fetch, for its step event (and the retry metrics).
    fetch_attempts: std::cell::Cell<Option<u32>>,
    host: &'a str,
    containers: Option<&'a crate::model::ContainerRuntimeSettings>,
}

impl Runner<'_> {
    /// Converges one deployment; on failure rolls it back and returns whether that worked.
    fn deployment(
        &mut self,
        dep: &ApplyDeployment,
        state: &mut AgentState,
        emit: Emit,
    ) -> Result<(), Failure> {
        let layout = self.layout;
        let state_dir = layout.state_dir();
        let previous_release = current_release(layout, &dep.name);
        let mut journal = Journal {
            deployment: dep.name.clone(),
            release: dep.release.clone(),
            container: super::container::journal_for(
                layout,
                dep,
                self.containers,
                previous_release.as_deref(),
            ),
            previous_release,
            previous_service: state
                .deployments
                .get(&dep.name)
                .and_then(|r| r.service.as_ref())
                .and_then(|s| s.definition.clone()),
            ..Journal::default()
        };
        if let Err(e) = journal.save(&state_dir) {
            // Nothing was changed yet: the deployment is as it was.
            emit(AgentEvent::Step {
                deployment: dep.name.clone(),
                action: dep
                    .steps
                    .first()
                    .map_or(Action::InstallRelease, |s| s.action),
                target: "journal".into(),
                status: StepStatus::Failed,
                duration_ms: 0,
                message: Some(format!("cannot journal the apply, nothing changed: {e}")),
                bytes: None,
                attempts: None,
            });
            return Err(if journal.previous_release.is_some() {
                Failure::Restored
            } else {
                Failure::FirstInstall("nothing was changed".into())
            });
        }
        let mut health_index = 0;
        let mut fetched: Option<PathBuf> = None;
        let mut applied_migrations = Vec::new();
        for step in &dep.steps {
            let started = Instant::now();
            let mut bytes = None;
            let result: Result<Option<String>, String> = match step.action {
                Action::FetchArtifact => self.fetch(dep, emit).map(|(path, n, cached)| {
                    fetched = Some(path);
                    bytes = Some(n);
                    Some(if cached {
                        "already in the cache".to_string()
                    } else {
                        format!("{n} bytes, sha256 verified")
                    })
                }),
                Action::InstallRelease => {
                    self.install_release(dep, &mut journal, &mut fetched, emit)
                }
                Action::WriteFile => self.write_file(dep, &step.target, &mut journal),
                Action::WriteEnv => self.write_env(dep, &mut journal),
                Action::RunMigrations => self.migrate(dep, &mut journal).map(|versions| {
                    let n = versions.len();
                    applied_migrations = versions;
                    Some(if n == 0 {
                        "none pending".into()
                    } else {
                        format!("{n} applied: {applied_migrations:?}")
                    })
                }),
                Action::InstallService => self.install_service(dep, &mut journal),
                Action::SwitchRelease => self.switch(dep, &mut journal),
                Action::StartService => self
                    .backend
                    .start(&service_name(&dep.name))
                    .map(|_| None)
                    .map_err(|e| e.to_string()),
                Action::RestartService => self
                    .backend
                    .restart(&service_name(&dep.name))
                    .map(|_| None)
                    .map_err(|e| e.to_string()),
                Action::HealthCheck => {
                    let r = self.health(dep, health_index);
                    health_index += 1;
                    r
                }
                Action::RemoveDeployment => Ok(Some("handled after the deployments".into())),
                Action::LoadImage
                | Action::CreateContainer
                | Action::StartContainer
                | Action::StopContainer
                | Action::PruneContainers => {
                    self.container_step(dep, step.action, &step.target, &mut journal, emit)
                }
            };
            let failed = result.is_err();
            let mut event = step_event(
                &dep.name,
                step.action,
                &step.target,
                &result,
                started,
                bytes,
            );
            if let AgentEvent::Step { attempts, .. } = &mut event
                && step.action == Action::FetchArtifact
            {
                *attempts = self.fetch_attempts.take();
            }
            emit(event);
            self.steps_done += 1;
            if self.kill_after == Some(self.steps_done) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::this(),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if failed {
                let report = rollback(layout, self.backend, &journal, Some(dep), state, emit);
                // The apply has ended, whatever the rollback achieved: a journal left behind
                // would make the next apply claim an interruption that did not happen.
                Journal::clear(&state_dir);
                emit(report.active(&dep.name));
                return Err(report.failure());
            }
        }
        record(state, dep, self.backend.kind(), &applied_migrations);
        let saved = serde_json::to_vec_pretty(&*state).expect("state serializes");
        if let Err(e) = write_owned(&layout.state_file(), &saved, 0o600, None) {
            // The release runs and passed its checks, but the record of it could not be
            // written (a full disk): undo it, so the host and its record agree.
            emit(AgentEvent::Step {
                deployment: dep.name.clone(),
                action: Action::SwitchRelease,
                target: "agent state".into(),
                status: StepStatus::Failed,
                duration_ms: 0,
                message: Some(format!("cannot record the new release: {e}")),
                bytes: None,
                attempts: None,
            });
            let report = rollback(layout, self.backend, &journal, Some(dep), state, emit);
            Journal::clear(&state_dir);
            emit(report.active(&dep.name));
            return Err(report.failure());
        }
        prune_releases(
            layout,
            &dep.name,
            dep.keep_releases,
            journal.previous_release.as_deref(),
        );
        Journal::clear(&state_dir);
        emit(AgentEvent::Active {
            deployment: dep.name.clone(),
            release: Some(dep.release.clone()),
            version: Some(dep.version.clone()),
            healthy: true,
            health: match health_index {
                0 => "no health check in this apply".to_string(),
                1 => "1 health check passed".to_string(),
                n => format!("{n} health checks passed"),
            },
        });
        Ok(())
    }

    fn fetch(&self, dep: &ApplyDeployment, emit: Emit) -> Result<(PathBuf, u64, bool), String> {
        let source = fetch_source(&dep.artifact.source)?;
        let cache = crate::fetch::Cache::new(self.layout.cache_dir());
        let artifact = crate::fetch::Artifact {
            repository: &dep.artifact.repository,
            location: &dep.artifact.location,
            sha256: &dep.artifact.sha256,
            size: dep.artifact.size,
            max_size: dep.artifact.max_size,
        };
        let mut last = Instant::now();
        let name = dep.name.clone();
        let mut progress = |p: crate::fetch::Progress| {
            // A progress line every 200 ms is enough for a bar and cheap on the wire.
            if last.elapsed() >= Duration::from_millis(200) {
                last = Instant::now();
                emit(AgentEvent::Progress {
                    deployment: name.clone(),
                    downloaded: p.downloaded,
                    total: p.total,
                });
            }
        };
        let f = crate::fetch::fetch(
            &source,
            &artifact,
            &cache,
            &crate::fetch::Retry::default(),
            &mut progress,
        );
        self.fetch_attempts.set(Some(match &f {
            Ok(f) => f.attempts,
            Err(crate::fetch::FetchError::GaveUp { attempts, .. }) => *attempts,
            Err(_) => 1,
        }));
        let f = f.map_err(|e| e.to_string())?;
        Ok((f.path, f.downloaded_bytes, f.from_cache))
    }

    fn install_release(
        &self,
        dep: &ApplyDeployment,
        journal: &mut Journal,
        fetched: &mut Option<PathBuf>,
        emit: Emit,
    ) -> Result<Option<String>, String> {
        let layout = self.layout;
        let target = layout.release_dir(&dep.name, &dep.release);
        if target.is_dir() {
            return Ok(Some("already installed".into()));
        }
        let artifact = match fetched.take() {
            Some(p) => p,
            // The plan skipped the fetch because the artifact was cached; it still is, or the
            // fetch below gets it again.
            None => self.fetch(dep, emit)?.0,
        };
        let releases = layout.releases_dir(&dep.name);
        let staging = releases.join(format!(".staging-{}-{}", dep.release, std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let file_name = dep
            .artifact
            .location
            .rsplit('/')
            .next()
            .unwrap_or(&dep.artifact.id)
            .to_string();
        let build = || -> Result<(), String> {
            super::container::place_artifact(dep.artifact.kind, &artifact, &file_name, &staging)?;
            for f in &dep.release_files {
                let path = staging.join(&f.destination);
                write_owned(
                    &path,
                    f.content.expose().as_bytes(),
                    parse_mode(&f.mode),
                    f.owner.as_deref(),
                )
                .map_err(|e| e.to_string())?;
            }
            for v in &dep.volumes {
                let shared = layout
                    .deployment_dir(&dep.name)
                    .join("shared")
                    .join(&v.name);
                std::fs::create_dir_all(&shared)
                    .map_err(|e| format!("create {}: {e}", shared.display()))?;
                let link = staging.join(&v.mount);
                if let Some(parent) = link.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("create {}: {e}", parent.display()))?;
                }
                let _ = std::fs::remove_dir_all(&link);
                std::os::unix::fs::symlink(&shared, &link)
                    .map_err(|e| format!("link {}: {e}", link.display()))?;
            }
            Ok(())
        };
        if let Err(e) = build() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        journal.created_release = Some(dep.release.clone());
        journal
            .save(&layout.state_dir())
            .map_err(|e| e.to_string())?;
        // Counted before the rename, on what the release really holds (an archive's entries,
        // not only the config files written into it).
        let files = count_files(&staging);
        std::fs::rename(&staging, &target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging);
            format!("rename {} into place: {e}", staging.display())
        })?;
        crate::atomic_file::sync_dir(&releases);
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        Ok(Some(format!(
            "{} from {file_name}, {}",
            plural(files, "file"),
            plural(dep.release_files.len(), "config file")
        )))
    }

    fn write_file(
        &self,
        dep: &ApplyDeployment,
        destination: &str,
        journal: &mut Journal,
    ) -> Result<Option<String>, String> {
        let layout = self.layout;
        if let Some(f) = dep.host_files.iter().find(|f| f.destination == destination) {
            let path = layout.host_path(&f.destination);
            self.replace_file(&path, f, journal)?;
            return Ok(Some(format!("{} (mode {})", path.display(), f.mode)));
        }
        let f = dep
            .release_files
            .iter()
            .find(|f| f.destination == destination)
            .ok_or_else(|| format!("the request has no file `{destination}`"))?;
        let path = layout
            .release_dir(&dep.name, &dep.release)
            .join(&f.destination);
        if journal.created_release.as_deref() == Some(dep.release.as_str()) {
            // Written while the release was staged; confirm it is what the plan showed.
            let actual = crate::digest::sha256_file(&path)
                .map(|(sha, _)| sha)
                .unwrap_or_default();
            return if actual == f.sha256 {
                Ok(Some("in the new release".into()))
            } else {
                Err(format!(
                    "{} in the new release has sha256 {actual}, expected {}",
                    path.display(),
                    f.sha256
                ))
            };
        }
        // The release was installed before (it is current, or being switched back to): make
        // sure the file is as built, repairing a hand edit.
        if crate::digest::sha256_file(&path).is_ok_and(|(sha, _)| sha == f.sha256) {
            return Ok(Some(format!("already in release {}", dep.release)));
        }
        self.replace_file(&path, f, journal)?;
        Ok(Some(format!("repaired in release {}", dep.release)))
    }

    /// Overwrites `path` with `f` atomically, after journalling its previous content.
    fn replace_file(
        &self,
        path: &Path,
        f: &crate::model::apply::WireFile,
        journal: &mut Journal,
    ) -> Result<(), String> {
        journal
            .back_up(&self.layout.state_dir(), path)
            .map_err(|e| e.to_string())?;
        write_owned(
            path,
            f.content.expose().as_bytes(),
            parse_mode(&f.mode),
            f.owner.as_deref(),
        )
        .map_err(|e| e.to_string())
    }

    fn write_env(
        &self,
        dep: &ApplyDeployment,
        journal: &mut Journal,
    ) -> Result<Option<String>, String> {
        let path = self.layout.env_file(&dep.name);
        journal
            .back_up(&self.layout.state_dir(), &path)
            .map_err(|e| e.to_string())?;
        let text = dep
            .env_file
            .as_ref()
            .map(|e| e.expose().to_string())
            .unwrap_or_default();
        let owner = dep.service.as_ref().and_then(|s| s.user.as_deref());
        write_owned(&path, text.as_bytes(), 0o600, owner).map_err(|e| e.to_string())?;
        Ok(None)
    }

    fn migrate(&self, dep: &ApplyDeployment, journal: &mut Journal) -> Result<Vec<i64>, String> {
        let Some(m) = &dep.migrations else {
            return Ok(Vec::new());
        };
        let release = self.layout.release_dir(&dep.name, &dep.release);
        let shared = self.layout.deployment_dir(&dep.name).join("shared");
        let backups = self.layout.deployment_dir(&dep.name).join("backups");
        let result = super::migrate::step::run(
            m,
            &release,
            &shared,
            &backups,
            self.layout.env_file(&dep.name).as_path(),
        );
        // Journal what was done even when it failed part-way: the rollback must undo it.
        let (outcome, error) = match result {
            Ok(o) => (o, None),
            Err((e, o)) => (o, Some(e)),
        };
        journal.migrations_applied = outcome.applied.clone();
        journal.database_backup = outcome.backup.map(|p| p.display().to_string());
        journal
            .save(&self.layout.state_dir())
            .map_err(|e| e.to_string())?;
        match error {
            Some(e) => Err(e),
            None => Ok(outcome.applied),
        }
    }

    fn install_service(
        &self,
        dep: &ApplyDeployment,
        journal: &mut Journal,
    ) -> Result<Option<String>, String> {
        let inputs = service_inputs(dep).ok_or("the request has no service definition")?;
        let def = service_definition(self.layout, &dep.name, &inputs);
        journal.service_installed = true;
        journal
            .save(&self.layout.state_dir())
            .map_err(|e| e.to_string())?;
        let changed = self.backend.install(&def).map_err(|e| e.to_string())?;
        Ok(Some(if changed {
            format!("{} installed", def.name)
        } else {
            "unchanged".into()
        }))
    }

    fn switch(
        &self,
        dep: &ApplyDeployment,
        journal: &mut Journal,
    ) -> Result<Option<String>, String> {
        // Journal first: if we die between these two lines, recovery switching "back" to the
        // previous release is harmless.
        journal.switched = true;
        journal
            .save(&self.layout.state_dir())
            .map_err(|e| e.to_string())?;
        switch_current(self.layout, &dep.name, Some(&dep.release))?;
        Ok(Some(format!(
            "{} → {}",
            journal.previous_release.as_deref().unwrap_or("none"),
            dep.release
        )))
    }

    /// The container steps (`super::container::step`), fetching again when the cache lost
    /// the archive.
    fn container_step(
        &self,
        dep: &ApplyDeployment,
        action: Action,
        target: &str,
        journal: &mut Journal,
        emit: Emit,
    ) -> Result<Option<String>, String> {
        let ctx = super::container::StepContext {
            layout: self.layout,
            host: self.host,
            settings: self.containers,
            dep,
        };
        super::container::step(&ctx, action, target, journal, &mut || {
            self.fetch(dep, emit).map(|f| f.0)
        })
    }

    fn health(&self, dep: &ApplyDeployment, index: usize) -> Result<Option<String>, String> {
        let Some(check) = dep.health_checks.get(index) else {
            return Ok(Some("no such check".into()));
        };
        let dir = self.layout.current_link(&dep.name);
        let runtime = dep.container.as_ref().map(|_| {
            super::container::Runtime::new(self.layout, dep.artifact.kind, self.containers)
        });
        let check = super::container::check_for(
            check,
            runtime.as_ref(),
            dep.container.as_ref().map(|c| c.name.as_str()),
        );
        let report = crate::agent::health::run(&check, &dir);
        if report.passed {
            Ok(Some(report.summary()))
        } else {
            Err(report.summary())
        }
    }
}

/// The inputs of a deployment's service definition, as the request gives them.
fn service_inputs(dep: &ApplyDeployment) -> Option<ServiceInputs> {
    let s = dep.service.as_ref()?;
    Some(ServiceInputs {
        command: s.command.iter().map(|c| c.expose().to_string()).collect(),
        user: s.user.clone(),
        restart: s.restart,
        autostart: s.autostart,
        limits: s.limits.clone(),
        env_file: dep.env_file.is_some(),
    })
}

fn service_definition(layout: &Layout, name: &str, inputs: &ServiceInputs) -> ServiceDefinition {
    ServiceDefinition {
        name: service_name(name),
        command: inputs.command.clone(),
        working_dir: layout.current_link(name),
        env_file: inputs.env_file.then(|| layout.env_file(name)),
        user: inputs.user.clone(),
        restart: inputs.restart,
        autostart: inputs.autostart,
        limits: inputs.limits.clone(),
        log_file: layout.deployment_dir(name).join("logs").join("service.log"),
    }
}

fn fetch_source(w: &WireSource) -> Result<crate::fetch::Source, String> {
    use crate::fetch::{HttpAuth, Source, SshAuth};
    let secret = |s: &crate::model::apply::WireSecret| s.0.clone();
    Ok(match w {
        WireSource::File { dir } => Source::File {
            dir: PathBuf::from(dir),
        },
        WireSource::Http {
            base_url,
            username,
            password,
            token,
            header,
        } => Source::Http {
            base_url: base_url.clone(),
            auth: match (username, password, token) {
                _ if header.is_some() => {
                    let (name, value) = header.as_ref().expect("checked");
                    HttpAuth::Header {
                        name: name.clone(),
                        value: secret(value),
                    }
                }
                (Some(u), Some(p), _) => HttpAuth::Basic {
                    username: u.clone(),
                    password: secret(p),
                },
                (_, _, Some(t)) => HttpAuth::Bearer { token: secret(t) },
                _ => HttpAuth::None,
            },
        },
        WireSource::Sftp {
            host,
            port,
            dir,
            username,
            password,
            private_key,
            host_key,
        } => Source::Sftp {
            host: host.clone(),
            port: *port,
            dir: dir.clone(),
            username: username.clone(),
            auth: match (private_key, password) {
                (Some(k), _) => SshAuth::Key(secret(k)),
                (None, Some(p)) => SshAuth::Password(secret(p)),
                (None, None) => return Err("sftp repository without a password or key".into()),
            },
            host_key: host_key.clone(),
            known_hosts: None,
        },
        WireSource::Ftp {
            host,
            port,
            dir,
            username,
            password,
            passive,
        } => Source::Ftp {
            host: host.clone(),
            port: *port,
            dir: dir.clone(),
            login: match (username, password) {
                (Some(u), Some(p)) => Some((u.clone(), secret(p))),
                _ => None,
            },
            passive: *passive,
        },
        WireSource::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            path_style,
            access_key_id,
            secret_access_key,
            session_token,
        } => Source::S3 {
            endpoint: endpoint.clone(),
            bucket: bucket.clone(),
            region: region.clone(),
            prefix: prefix.clone(),
            path_style: *path_style,
            credentials: match (access_key_id, secret_access_key) {
                (Some(id), Some(key)) => Some(crate::fetch::S3Credentials {
                    access_key_id: secret(id),
                    secret_access_key: secret(key),
                    session_token: session_token.as_ref().map(secret),
                }),
                _ => None,
            },
        },
        WireSource::GoogleDrive {
            api_url,
            token_url,
            folder_id,
            client_id,
            client_secret,
            refresh_token,
            service_account,
        } => Source::GoogleDrive {
            api_url: api_url.clone(),
            token_url: token_url.clone(),
            folder_id: folder_id.clone(),
            auth: match (service_account, client_id, client_secret, refresh_token) {
                (Some(key), ..) => crate::fetch::DriveAuth::ServiceAccount {
                    key_json: secret(key),
                },
                (None, Some(id), Some(client_secret), Some(refresh)) => {
                    crate::fetch::DriveAuth::OAuth {
                        client_id: secret(id),
                        client_secret: secret(client_secret),
                        refresh_token: secret(refresh),
                    }
                }
                _ => {
                    return Err(
                        "google-drive repository without a service account key or OAuth \
                         client id, client secret and refresh token"
                            .into(),
                    );
                }
            },
        },
        WireSource::Unsupported { kind } => {
            return Err(format!(
                "this agent cannot fetch from `{kind}` repositories yet"
            ));
        }
    })
}

fn current_release(layout: &Layout, name: &str) -> Option<String> {
    std::fs::read_link(layout.current_link(name))
        .ok()
        .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()))
}

/// Points `current` at `release` (or removes it for `None`) with one atomic rename.
fn switch_current(layout: &Layout, name: &str, release: Option<&str>) -> Result<(), String> {
    let link = layout.current_link(name);
    match release {
        Some(r) => {
            let tmp = layout
                .deployment_dir(name)
                .join(format!(".current-{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(Path::new("releases").join(r), &tmp)
                .map_err(|e| format!("link {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &link).map_err(|e| format!("switch {}: {e}", link.display()))?;
        }
        None => match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("remove {}: {e}", link.display()));
            }
            _ => {}
        },
    }
    crate::atomic_file::sync_dir(&layout.deployment_dir(name));
    Ok(())
}

/// What a rollback left on the host, as the agent reports it.
struct RollbackReport {
    /// The previous state is back and healthy by the previous release's own checks (for a
    /// first install: the new one was cleaned away).
    restored: bool,
    /// There was no previous release.
    first_install: bool,
    release: Option<String>,
    version: Option<String>,
    healthy: bool,
    /// Why it is (not) healthy, or for a first install the state the host was left in.
    health: String,
}

impl RollbackReport {
    /// How the failed apply ended, once its changes were undone.
    fn failure(self) -> Failure {
        if self.first_install {
            Failure::FirstInstall(self.health)
        } else if self.restored {
            Failure::Restored
        } else {
            Failure::NotRestored
        }
    }

    fn active(&self, deployment: &str) -> AgentEvent {
        AgentEvent::Active {
            deployment: deployment.to_string(),
            release: self.release.clone(),
            version: self.version.clone(),
            healthy: self.healthy,
            health: self.health.clone(),
        }
    }
}

/// Regular files below `dir`, links not followed (what a release directory holds).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// Undoes an interrupted or failed deployment apply: the previous release, files, migrations
/// and service definition, then verifies the restored release with the health checks kept
/// with it (not the failed request's). A first install is cleaned away instead: the service
/// stopped and removed, the new release removed.
fn rollback(
    layout: &Layout,
    backend: &dyn ServiceBackend,
    j: &Journal,
    dep: Option<&ApplyDeployment>,
    state: &AgentState,
    emit: Emit,
) -> RollbackReport {
    let mut problems = Vec::new();
    // What a first install leaves behind on purpose (named in its outcome, not a failure).
    let mut left = Vec::new();
    let name = &j.deployment;
    if j.switched
        && let Err(e) = switch_current(layout, name, j.previous_release.as_deref())
    {
        problems.push(e);
    }
    problems.extend(j.restore_files());
    if !j.migrations_applied.is_empty() || j.database_backup.is_some() {
        if let Some(m) = dep.and_then(|d| d.migrations.as_ref()) {
            let release = layout.release_dir(name, &j.release);
            let shared = layout.deployment_dir(name).join("shared");
            if let Err(e) = super::migrate::step::revert(
                m,
                &release,
                &shared,
                &j.migrations_applied,
                j.database_backup.as_deref().map(Path::new),
            ) {
                if j.previous_release.is_some() {
                    problems.push(format!("migrations: {e}"));
                } else {
                    left.push(format!(
                        "migrations {:?} left applied ({e})",
                        j.migrations_applied
                    ));
                }
            } else if !j.migrations_applied.is_empty() {
                left.push(format!("migrations {:?} reverted", j.migrations_applied));
            }
        } else if j.previous_release.is_some() {
            problems.push(
                "migrations were applied but their definition is not available to revert them"
                    .into(),
            );
        } else {
            left.push(format!(
                "migrations {:?} left applied (their definition is not available to revert them)",
                j.migrations_applied
            ));
        }
    }
    let service = service_name(name);
    let previous_runs = j.previous_release.is_some();
    if j.service_installed
        && let Some(prev) = &j.previous_service
    {
        // The new definition may run a program only the new release has.
        if let Err(e) = backend.install(&service_definition(layout, name, prev)) {
            problems.push(e.to_string());
        }
    }
    super::container::rollback(j, &mut problems);
    // A container deployment has no service: its containers are the rollback above.
    if (j.service_installed || j.switched) && j.container.is_none() {
        if previous_runs {
            if let Err(e) = backend.restart(&service) {
                problems.push(e.to_string());
            }
        } else {
            let _ = backend.stop(&service);
            if j.service_installed {
                let _ = backend.remove(&service);
            }
        }
    }
    if let Some(created) = &j.created_release
        && j.previous_release.as_deref() != Some(created.as_str())
    {
        let _ = std::fs::remove_dir_all(layout.release_dir(name, created));
    }
    let kept = j
        .previous_release
        .as_ref()
        .and_then(|r| state.deployments.get(name)?.releases.get(r));
    // The restored release is judged by the checks it was verified with when it was
    // installed; only a release from an agent that did not keep them falls back to the
    // request's checks (and says so).
    let (checks, whose): (&[crate::model::HealthCheck], &str) =
        match (kept.and_then(|k| k.health_checks.as_deref()), dep) {
            (Some(own), _) => (own, "its own"),
            (None, Some(d)) => (
                &d.health_checks,
                "the new commit's (none were kept with it)",
            ),
            (None, None) => (&[], "none kept with it"),
        };
    let mut passed = 0;
    if problems.is_empty() && previous_runs {
        // A container release is checked inside its kept container.
        let runtime = j.container.as_ref().and_then(|c| c.runtime.as_ref());
        let previous = j.container.as_ref().and_then(|c| c.previous.as_deref());
        for check in checks {
            let check = super::container::check_for(check, runtime, previous);
            let report = crate::agent::health::run(&check, &layout.current_link(name));
            if !report.passed {
                problems.push(format!(
                    "the previous release is unhealthy too (by {whose} health checks): {}",
                    report.summary()
                ));
                break;
            }
            passed += 1;
        }
    }
    let restored = problems.is_empty();
    let first_install = !previous_runs;
    let health = if first_install {
        let mut state_left = vec![if j.service_installed || j.switched {
            "nothing ran before: the service is stopped and removed".to_string()
        } else {
            "nothing ran before and nothing was started".to_string()
        }];
        if let Some(created) = &j.created_release {
            state_left.push(format!("release {created} removed"));
        }
        state_left.extend(left);
        state_left.extend(problems.iter().cloned());
        state_left.join(", ")
    } else if restored {
        format!(
            "restored; {passed} of {} health checks passed ({whose})",
            checks.len()
        )
    } else {
        problems.join("; ")
    };
    emit(AgentEvent::Rollback {
        deployment: name.clone(),
        restored,
        message: if first_install {
            format!("first install cleaned away: {health}")
        } else if restored {
            format!(
                "restored release {} ({health})",
                j.previous_release.as_deref().unwrap_or("(none)")
            )
        } else {
            format!("failed to restore: {}", problems.join("; "))
        },
    });
    let release = current_release(layout, name);
    RollbackReport {
        restored,
        first_install,
        version: release
            .as_ref()
            .and_then(|r| state.deployments.get(name)?.releases.get(r))
            .map(|k| k.version.clone()),
        release,
        healthy: !first_install && restored,
        health,
    }
}

fn record(
    state: &mut AgentState,
    dep: &ApplyDeployment,
    manager: ServiceManager,
    migrations: &[i64],
) {
    let rec: &mut DeploymentRecord = state.deployments.entry(dep.name.clone()).or_default();
    let file = |f: &crate::model::apply::WireFile| FileRecord {
        destination: f.destination.clone(),
        sha256: f.sha256.clone(),
        redacted: f.redacted.clone(),
    };
    rec.releases.insert(
        dep.release.clone(),
        ReleaseRecord {
            version: dep.version.clone(),
            files: dep.release_files.iter().map(file).collect(),
            health_checks: Some(dep.health_checks.clone()),
        },
    );
    rec.host_files = dep.host_files.iter().map(file).collect();
    rec.service = dep.service.as_ref().map(|s| ServiceRecord {
        manager,
        definition_sha256: s.definition_sha256.clone(),
        autostart: s.autostart,
        definition: service_inputs(dep),
    });
    for v in migrations {
        rec.migrations_applied.push(v.to_string());
    }
    rec.migrations_dir = dep.migrations.as_ref().map(|m| m.directory.clone());
}

/// Keeps the newest `keep` releases (by install time), never the current or the previous one.
fn prune_releases(layout: &Layout, name: &str, keep: u32, previous: Option<&str>) {
    let kept = releases_kept(layout, name, keep, previous);
    let Ok(entries) = std::fs::read_dir(layout.releases_dir(name)) else {
        return;
    };
    for e in entries.flatten() {
        let r = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && !r.starts_with('.') && !kept.contains(&r) {
            let _ = std::fs::remove_dir_all(layout.release_dir(name, &r));
        }
    }
}

/// The releases [`prune_releases`] keeps: the newest `keep`, the current and the previous one.
pub(crate) fn releases_kept(
    layout: &Layout,
    name: &str,
    keep: u32,
    previous: Option<&str>,
) -> Vec<String> {
    let current = current_release(layout, name);
    let Ok(entries) = std::fs::read_dir(layout.releases_dir(name)) else {
        return Vec::new();
    };
    let mut releases: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
                e.file_name().to_string_lossy().into_owned(),
            )
        })
        .collect();
    releases.sort();
    let excess = releases.len().saturating_sub(keep.max(1) as usize);
    releases
        .into_iter()
        .enumerate()
        .filter(|(i, (_, r))| {
            *i >= excess || Some(r.as_str()) == current.as_deref() || Some(r.as_str()) == previous
        })
        .map(|(_, (_, r))| r)
        .collect()
}

fn remove_deployment(
    layout: &Layout,
    backend: &dyn ServiceBackend,
    name: &str,
    purge_data: bool,
    state: &mut AgentState,
) -> Result<Option<String>, String> {
    let service = service_name(name);
    let containers = super::container::remove_all(layout, name);
    if !containers.is_empty() {
        return Err(containers.join("; "));
    }
    let _ = backend.stop(&service);
    backend.remove(&service).map_err(|e| e.to_string())?;
    let dir = layout.deployment_dir(name);
    // Volumes (shared/) are data: they stay unless an operator removes them.
    for sub in ["releases", "current", "env", "logs"] {
        let p = dir.join(sub);
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
    if purge_data {
        // Asked for by name (`decommission --purge-data`): the data goes with the rest.
        std::fs::remove_dir_all(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    state.deployments.remove(name);
    let saved = serde_json::to_vec_pretty(&*state).expect("state serializes");
    write_owned(&layout.state_file(), &saved, 0o600, None).map_err(|e| e.to_string())?;
    if purge_data {
        return Ok(Some(format!(
            "removed with its data ({} is gone)",
            dir.display()
        )));
    }
    Ok(Some(format!(
        "removed; volumes kept under {}",
        dir.join("shared").display()
    )))
}
