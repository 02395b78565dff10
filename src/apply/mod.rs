//! Runs, from a commit to a record: `prepare` computes the desired state and plans it through
//! the hosts' agents; the request for one host is built here from the same `HostPlan` that
//! `--dry-run` prints (its steps, in its order) plus the desired state's data, so apply cannot
//! do something the plan did not show; `fleet` runs a whole planned fleet (rollout, pins, the
//! promotion gate of `gate`) and returns typed host outcomes; `reconcile` records and
//! announces the run. None of it prints or decides an exit code: the command line and the
//! watch loop both drive runs through it.

mod base_artifact;
pub mod drift;
pub mod error;
pub mod fleet;
pub mod gate;
pub mod prepare;
pub mod reconcile;
pub mod rollout;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

/// Set when the reconciler is asked to stop (SIGTERM, SIGINT): an apply finishes the hosts it
/// is working on and starts no others, so every host stays on a whole release.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Asks the apply in progress to stop after the batch in flight.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// For a one-shot apply: the first SIGTERM or SIGINT asks for a graceful stop; a second one
/// ends the process at once (the agents' journals recover any host it interrupts).
pub fn stop_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        for sig in [SIGTERM, SIGINT] {
            let registered = signal_hook::flag::register_conditional_shutdown(sig, 1, STOP.clone())
                .and_then(|_| signal_hook::flag::register(sig, STOP.clone()));
            if let Err(e) = registered {
                result = Err(e);
            }
        }
    });
    result
}

use crate::desired::{DesiredDeployment, DesiredFile, DesiredHost};
use crate::model::apply::{
    APPLY_FORMAT, ApplyDeployment, ApplyRequest, WireArtifact, WireFile, WireMigrations,
    WireSecret, WireService, WireStep,
};
use crate::plan::{Change, HostPlan};

/// Which part of a host's plan one agent call carries: hosts receive one rollout unit (one
/// deployment) at a time, and removals (`--prune`) last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Deployment(&'a str),
    Removals,
}

/// The request for one part of `host`'s plan, or why it cannot be built (credentials that
/// were not decrypted).
pub fn request(
    desired: &DesiredHost,
    plan: &HostPlan,
    part: Part,
    max_cache_bytes: Option<u64>,
) -> Result<ApplyRequest, String> {
    let mut deployments = Vec::new();
    let mut remove = Vec::new();
    for dp in &plan.deployments {
        match part {
            Part::Removals if dp.change == Change::Delete => {
                remove.push(dp.name.clone());
                continue;
            }
            Part::Deployment(name) if name == dp.name && dp.change != Change::Delete => {}
            _ => continue,
        }
        if dp.steps.is_empty() {
            continue;
        }
        let d = desired
            .deployments
            .iter()
            .find(|d| d.name == dp.name)
            .ok_or_else(|| {
                format!(
                    "the plan names `{}` but the desired state does not",
                    dp.name
                )
            })?;
        let fetches = dp.steps.iter().any(|s| {
            matches!(
                s.action,
                crate::plan::Action::FetchArtifact | crate::plan::Action::InstallRelease
            )
        });
        if fetches && !d.artifact.source.missing_credentials.is_empty() {
            return Err(format!(
                "`{}` is fetched from repository `{}`, whose credentials ({}) could not be decrypted: pass --age-identity",
                d.name,
                d.artifact.source.repository,
                d.artifact.source.missing_credentials.join(", ")
            ));
        }
        if dp.steps.iter().any(|_| !d.release_known) {
            return Err(format!(
                "`{}` uses secrets that could not be decrypted: pass --age-identity (or set CLARITY_AGE_IDENTITY)",
                d.name
            ));
        }
        deployments.push(deployment(d, dp));
    }
    Ok(ApplyRequest {
        format: APPLY_FORMAT.to_string(),
        host: desired.server.clone(),
        client: desired.client.clone(),
        service_manager: desired.service_manager,
        deployments,
        remove,
        purge_data: Vec::new(),
        max_cache_bytes,
        containers: desired.containers.clone(),
    })
}

fn wire_file(f: &DesiredFile) -> WireFile {
    WireFile {
        destination: f.destination.clone(),
        mode: f.mode.clone(),
        owner: f.owner.clone(),
        content: WireSecret::new(f.content.exposed()),
        sha256: f.content.sha256.clone(),
        redacted: f.content.redacted.clone(),
    }
}

fn deployment(d: &DesiredDeployment, plan: &crate::plan::DeploymentPlan) -> ApplyDeployment {
    ApplyDeployment {
        name: d.name.clone(),
        version: d.artifact.version.clone(),
        release: d.release.clone(),
        steps: plan
            .steps
            .iter()
            .map(|s| WireStep {
                action: s.action,
                target: s.target.clone(),
            })
            .collect(),
        artifact: WireArtifact {
            id: d.artifact.id.clone(),
            kind: d.artifact.kind,
            sha256: d.artifact.sha256.clone(),
            size: d.artifact.size,
            location: d.artifact.source.location.clone(),
            repository: d.artifact.source.repository.clone(),
            source: d.artifact.source.wire.clone(),
            max_size: d.artifact.source.max_size,
        },
        release_files: d.release_files.iter().map(wire_file).collect(),
        host_files: d.host_files.iter().map(wire_file).collect(),
        env_file: (!d.env.is_empty()).then(|| WireSecret::new(crate::plan::env_file_text(d, true))),
        service: d.service.as_ref().map(|s| WireService {
            command: s
                .command_exposed
                .iter()
                .map(|c| WireSecret(c.clone()))
                .collect(),
            user: s.user.clone(),
            restart: s.restart_policy,
            autostart: s.autostart,
            limits: s.limits.clone(),
            definition_sha256: crate::plan::service_definition_sha256(d).unwrap_or_default(),
        }),
        volumes: d
            .service
            .as_ref()
            .map(|s| s.volumes.clone())
            .unwrap_or_default(),
        migrations: d.migrations.as_ref().map(|m| WireMigrations {
            engine: m.engine,
            directory: m.directory.clone(),
            database: m.database_exposed.clone().map(WireSecret),
            command: m.command.clone(),
            backup: m.backup,
        }),
        health_checks: d.health_checks.clone(),
        keep_releases: d.keep_releases,
        container: crate::plan::container::wire(d),
    }
}
