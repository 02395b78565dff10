//! Applying a planned fleet: rollout units in dependency order, batch by batch, each host's
//! agent called once per unit through the transports it is given; pins and the promotion gate
//! consulted first; the worst outcome of each host kept. It returns a run report of typed
//! host outcomes with what each host's agent said it runs at the end — never what was asked
//! for — and turns that report into the run record. It prints nothing itself (an observer
//! does), reads no arguments and decides no exit code: the command line and the watch loop
//! both call it. It logs what the observer is told as `tracing` events too, inside a `host`
//! (and `deployment`) span under the caller's run span, with ids, paths and versions only.

use super::gate;
use super::rollout::{self, Next, Unit};
use crate::desired::DesiredHost;
use crate::ledger::Ledger;
use crate::model::Settings;
use crate::model::apply::{AgentEvent, ApplyRequest, StepStatus};
use crate::model::host::ActualHost;
use crate::model::run::{
    BatchRecord, BatchState, DeploymentRecord, HostOutcome, HostRecord, RUN_FORMAT, RunMode,
    RunOutcome, RunRecord, StepRecord,
};
use crate::plan::{Change, HostPlan, HostStatus};
use crate::transport::TransportError;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// How runs reach hosts (the command line's SSH and local transports).
pub trait Hosts: Sync {
    /// The host's actual state, from its agent.
    fn inspect(&self, host: &DesiredHost) -> Result<ActualHost, TransportError>;
    /// Sends `req` to the host's agent and hands back its events as they arrive.
    fn apply(
        &self,
        host: &DesiredHost,
        req: &ApplyRequest,
        lock_timeout_s: u64,
        on_event: &mut dyn FnMut(&AgentEvent),
    ) -> Result<crate::model::apply::HostOutcome, TransportError>;
    /// Closes the host's connection, if it has one: it has nothing more to do in this run.
    fn release(&self, server: &str);
    /// Plans as if every host were empty, contacting none (`--assume-empty-hosts`).
    fn assume_empty(&self) -> bool {
        false
    }
    /// `--deployment`: the host's other deployments are out of this run's sight, so they are
    /// neither reported as no longer desired nor pruned.
    fn only(&self) -> Option<&str> {
        None
    }
}

/// Where the fleet apply reports progress: one line per step, rollback, halt or held unit,
/// and download progress.
pub trait Observer: Sync {
    fn line(&self, text: &str);
    fn progress(&self, _server: &str, _deployment: &str, _downloaded: u64, _total: Option<u64>) {}
}

/// How a run reaches the hosts and reports its progress.
pub struct Reach<'a> {
    pub hosts: &'a dyn Hosts,
    /// Hosts of a batch run in parallel on it.
    pub pool: &'a rayon::ThreadPool,
    pub observer: &'a dyn Observer,
}

/// The choices of one apply run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub lock_timeout_s: u64,
    pub max_cache_bytes: Option<u64>,
    /// Apply where the promotion gate would refuse (the run's trigger says so).
    pub skip_promotion_gate: bool,
    /// Unreachable hosts do not make the run fail.
    pub allow_unreachable: bool,
    /// `--prune`: a host re-planned during the run (after its agent recovered an interrupted
    /// apply) is planned with removals too, as it was the first time.
    pub prune: bool,
    /// The run continues a rollout paused after its canary (`resume`): the canary is not
    /// cut again and the rollout does not pause again. Set from the plan by
    /// `reconcile::apply`, never by its callers.
    pub resume: bool,
}

/// What one host's agent said a deployment runs at the end of its apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub release: Option<String>,
    pub version: Option<String>,
    pub healthy: bool,
    pub health: String,
}

/// One host's part of a run.
#[derive(Debug, Clone)]
pub struct HostResult {
    pub host: String,
    pub outcome: HostOutcome,
    pub detail: String,
    pub steps: Vec<StepRecord>,
    pub duration_ms: u64,
    /// Per deployment the agent touched: what runs there now.
    pub active: BTreeMap<String, Active>,
}

/// What an apply run did, per host, in server order, and the batches it ran.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub hosts: Vec<HostResult>,
    pub batches: Vec<BatchRecord>,
    /// Paused after a canary with a timeout: when (RFC 3339) the watch loop may resume it.
    pub pause_deadline: Option<String>,
}

impl RunReport {
    /// Every host ended where the run wanted it (unreachable ones forgiven when asked).
    pub fn ok(&self, allow_unreachable: bool) -> bool {
        self.hosts.iter().all(|h| {
            h.outcome.is_ok() || (h.outcome == HostOutcome::Unreachable && allow_unreachable)
        })
    }

    /// No host failed; some may wait for `resume` (unreachable ones forgiven when asked).
    pub fn no_failures(&self, allow_unreachable: bool) -> bool {
        self.hosts.iter().all(|h| {
            h.outcome.is_ok()
                || h.outcome == HostOutcome::AwaitingApproval
                || (h.outcome == HostOutcome::Unreachable && allow_unreachable)
        })
    }

    /// The rollout paused after a canary: some hosts wait for `resume`.
    pub fn paused(&self) -> bool {
        self.hosts
            .iter()
            .any(|h| h.outcome == HostOutcome::AwaitingApproval)
    }
}

/// What one agent call did.
struct AgentRun {
    outcome: HostOutcome,
    detail: String,
    steps: Vec<StepRecord>,
    duration_ms: u64,
    active: BTreeMap<String, Active>,
}

impl AgentRun {
    fn early(outcome: HostOutcome, detail: String) -> AgentRun {
        AgentRun {
            outcome,
            detail,
            steps: Vec::new(),
            duration_ms: 0,
            active: BTreeMap::new(),
        }
    }
}

fn merge(results: &mut BTreeMap<String, HostResult>, host: &str, run: AgentRun) {
    let Some(r) = results.get_mut(host) else {
        return;
    };
    r.outcome = r.outcome.max(run.outcome);
    if !run.detail.is_empty() {
        if !r.detail.is_empty() {
            r.detail.push_str("; ");
        }
        r.detail.push_str(&run.detail);
    }
    r.steps.extend(run.steps);
    r.duration_ms += run.duration_ms;
    r.active.extend(run.active);
}

/// Applies every planned change: one rollout unit (a deployment file) at a time in dependency
/// order, batch by batch; hosts within a batch run in parallel. `desired` and `plans` are the
/// planned hosts, pairwise.
pub fn run(
    reach: &Reach,
    ledger: &Ledger,
    settings: &Settings,
    options: &Options,
    desired: &[DesiredHost],
    plans: &[HostPlan],
) -> RunReport {
    let Reach {
        hosts,
        pool,
        observer,
    } = *reach;
    let mut results: BTreeMap<String, HostResult> = BTreeMap::new();
    let mut by_name: BTreeMap<&str, &DesiredHost> = BTreeMap::new();
    let mut plan_of: BTreeMap<&str, &HostPlan> = BTreeMap::new();
    for (d, p) in desired.iter().zip(plans) {
        let outcome = match p.status {
            // Until an agent call says otherwise: each call merges in what it did.
            HostStatus::Unchanged | HostStatus::Changes => HostOutcome::Unchanged,
            HostStatus::Unreachable => HostOutcome::Unreachable,
            HostStatus::Failed => HostOutcome::Failed,
        };
        results.insert(
            p.server.clone(),
            HostResult {
                host: p.server.clone(),
                outcome,
                detail: p.errors.join("; "),
                steps: Vec::new(),
                duration_ms: 0,
                active: BTreeMap::new(),
            },
        );
        by_name.insert(&d.server, d);
        plan_of.insert(&d.server, p);
    }
    let units: Vec<Unit> = rollout::units(desired.iter().zip(plans))
        .into_iter()
        .map(|u| if options.resume { u.resumed() } else { u })
        .collect();
    let mut halted: Option<String> = None;
    let mut batches: Vec<BatchRecord> = Vec::new();
    // Per paused unit: how long it may wait (`None`: until `resume`).
    let mut pauses: Vec<Option<u64>> = Vec::new();
    // Hosts run on the pool's threads: their spans hang under the caller's (the run's) by hand.
    let run_span = tracing::Span::current();
    for unit in units {
        let version = unit
            .hosts
            .first()
            .and_then(|h| {
                by_name[h.as_str()]
                    .deployments
                    .iter()
                    .find(|d| d.name == unit.deployment)
            })
            .map(|d| d.artifact.version.clone())
            .unwrap_or_default();
        let budget = match unit.failure_budget() {
            usize::MAX => None,
            n => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let batch_record = |batch: &rollout::Batch, state: BatchState, failed: usize| BatchRecord {
            unit: unit.key.clone(),
            canary: batch.canary,
            hosts: batch.hosts.clone(),
            state,
            failed: failed as u32,
            failure_budget: budget,
        };
        if let Some(why) = held(ledger, settings, options, &unit, &version, observer) {
            for h in &unit.hosts {
                merge(&mut results, h, AgentRun::early(why.0, why.1.clone()));
            }
            for batch in unit.batches() {
                batches.push(batch_record(&batch, BatchState::Held, 0));
            }
            continue;
        }
        let mut failed = 0;
        let mut paused = false;
        for batch in unit.batches() {
            if paused {
                let detail = format!(
                    "{}: waits for `resume` after a healthy canary",
                    unit.deployment
                );
                for h in &batch.hosts {
                    merge(
                        &mut results,
                        h,
                        AgentRun::early(HostOutcome::AwaitingApproval, detail.clone()),
                    );
                }
                batches.push(batch_record(&batch, BatchState::AwaitingApproval, 0));
                continue;
            }
            if halted.is_none() && super::stop_requested() {
                let why =
                    "the reconciler is stopping (SIGTERM); hosts in flight finished".to_string();
                observer.line(&format!("halt: {why}"));
                tracing::info!(deployment = %unit.key, "halt: {why}");
                halted = Some(why);
            }
            if let Some(why) = &halted {
                for h in &batch.hosts {
                    let detail = format!("{}: {why}", unit.deployment);
                    merge(
                        &mut results,
                        h,
                        AgentRun::early(HostOutcome::NotAttempted, detail),
                    );
                }
                batches.push(batch_record(&batch, BatchState::NotAttempted, 0));
                continue;
            }
            let outcomes: Vec<(String, AgentRun)> = pool.install(|| {
                batch
                    .hosts
                    .par_iter()
                    .map(|h| {
                        let _host =
                            tracing::info_span!(parent: &run_span, "host", host = %h).entered();
                        let _deployment =
                            tracing::info_span!("deployment", deployment = %unit.deployment)
                                .entered();
                        let run = agent_run(
                            hosts,
                            options,
                            observer,
                            by_name[h.as_str()],
                            plan_of[h.as_str()],
                            super::Part::Deployment(&unit.deployment),
                        );
                        (h.clone(), run)
                    })
                    .collect()
            });
            let failed_here = outcomes
                .iter()
                .filter(|(_, r)| !r.outcome.settled())
                .count();
            for (h, run) in outcomes {
                merge(&mut results, &h, run);
            }
            batches.push(batch_record(&batch, BatchState::Applied, failed_here));
            match rollout::after_batch(&unit, &batch, failed_here, failed) {
                Next::Halt(why) => {
                    observer.line(&format!("halt: {why}"));
                    tracing::info!(deployment = %unit.key, "halt: {why}");
                    halted = Some(why);
                }
                Next::Pause(timeout) => {
                    observer.line(&format!(
                        "pause: the canary of `{}` is healthy; its other hosts wait for `clarity-reconcile resume`{}",
                        unit.key,
                        timeout
                            .map(|t| format!(" (or the watch loop, after {t} s)"))
                            .unwrap_or_default()
                    ));
                    tracing::info!(deployment = %unit.key, timeout_s = timeout, "pause after the canary");
                    pauses.push(timeout);
                    paused = true;
                }
                Next::Continue => {}
            }
            failed += failed_here;
        }
    }
    // A run with several paused units goes on by itself only when every one of them may.
    let pause_deadline = match pauses.iter().copied().collect::<Option<Vec<u64>>>() {
        Some(t) if !t.is_empty() => {
            let wait = t.into_iter().max().unwrap_or(0);
            Some(crate::clock::rfc3339(crate::clock::now_secs() + wait))
        }
        _ => None,
    };
    for (server, p) in &plan_of {
        if !p.deployments.iter().any(|d| d.change == Change::Delete) {
            continue;
        }
        if halted.is_some() || super::stop_requested() {
            let detail = "removals not attempted: the run halted before them".to_string();
            merge(
                &mut results,
                server,
                AgentRun::early(HostOutcome::NotAttempted, detail),
            );
        } else {
            let _host = tracing::info_span!("host", host = %server).entered();
            let run = agent_run(
                hosts,
                options,
                observer,
                by_name[server],
                p,
                super::Part::Removals,
            );
            merge(&mut results, server, run);
        }
    }
    RunReport {
        hosts: results.into_values().collect(),
        batches,
        pause_deadline,
    }
}

/// Why a unit is not applied at all: pinned by an emergency rollback, or refused by the
/// promotion gate.
fn held(
    ledger: &Ledger,
    settings: &Settings,
    options: &Options,
    unit: &Unit,
    version: &str,
    observer: &dyn Observer,
) -> Option<(HostOutcome, String)> {
    match ledger.pinned(&unit.client, &unit.deployment, &unit.profile) {
        Ok(Some(pin)) if pin.version != version => {
            let why = format!(
                "pinned at {} by an emergency rollback ({}); applying a commit that sets version {} releases it",
                pin.version, pin.commit, pin.version
            );
            observer.line(&format!("{}: {why}", unit.key));
            tracing::info!(deployment = %unit.key, version = %pin.version, "held: {why}");
            return Some((HostOutcome::Pinned, why));
        }
        Ok(_) => {}
        Err(e) => return Some((HostOutcome::Failed, format!("cannot read pins: {e}"))),
    }
    if options.skip_promotion_gate {
        return None;
    }
    let previous = gate::previous_profile(settings, &unit.profile)?;
    let verdict = ledger
        .deployment_history(&unit.client, &unit.deployment, previous)
        .map_err(|e| format!("promotion gate: cannot read the ledger: {e}"))
        .and_then(|history| {
            gate::check(
                settings,
                &unit.client,
                &unit.deployment,
                &unit.profile,
                version,
                &history,
                crate::clock::now_secs(),
            )
        });
    match verdict {
        Ok(()) => None,
        Err(why) => {
            observer.line(&format!(
                "{}: {why} (--skip-promotion-gate overrides)",
                unit.key
            ));
            tracing::info!(deployment = %unit.key, version, "held by the promotion gate: {why}");
            Some((HostOutcome::Failed, why))
        }
    }
}

/// One agent call for one part of a host's plan.
fn agent_run(
    hosts: &dyn Hosts,
    options: &Options,
    observer: &dyn Observer,
    d: &DesiredHost,
    first_plan: &HostPlan,
    part: super::Part,
) -> AgentRun {
    use crate::model::apply::HostOutcome as Agent;
    let started = std::time::Instant::now();
    let mut plan = first_plan.clone();
    let mut steps = Vec::new();
    let mut active = BTreeMap::new();
    // An agent that finds the host changed since the plan (an interrupted apply it rolled
    // back, another reconciler's apply it waited for) asks for a new plan: once.
    for attempt in 0..2 {
        let req = match super::request(d, &plan, part, options.max_cache_bytes) {
            Ok(r) => r,
            Err(e) => return AgentRun::early(HostOutcome::Failed, e),
        };
        if req.deployments.is_empty() && req.remove.is_empty() {
            // Planned again after the host changed under this run: already where it should be.
            return match attempt {
                0 => AgentRun::early(HostOutcome::Converged, String::new()),
                _ => AgentRun {
                    outcome: HostOutcome::Unchanged,
                    detail: "already converged when planned again".into(),
                    steps,
                    duration_ms: started.elapsed().as_millis() as u64,
                    active,
                },
            };
        }
        let mut failures = Vec::new();
        let outcome = hosts.apply(d, &req, options.lock_timeout_s, &mut |event| match event {
            AgentEvent::Step {
                deployment,
                action,
                target,
                status,
                message,
                duration_ms,
                bytes,
                attempts,
            } => {
                let fetch = *action == crate::model::apply::Action::FetchArtifact;
                steps.push(StepRecord {
                    deployment: deployment.clone(),
                    action: *action,
                    target: target.clone(),
                    status: *status,
                    duration_ms: *duration_ms,
                    message: message.clone(),
                    bytes: *bytes,
                    repository_kind: d
                        .deployments
                        .iter()
                        .find(|x| fetch && x.name == *deployment)
                        .map(|x| x.artifact.source.kind.as_str().to_string()),
                    retries: attempts.map(|a| a.saturating_sub(1)),
                });
                let mark = match status {
                    StepStatus::Ok => "ok",
                    StepStatus::Failed => "FAILED",
                    StepStatus::Skipped => "skipped",
                };
                let msg = message
                    .as_ref()
                    .map(|m| format!(" ({})", brief(m)))
                    .unwrap_or_default();
                observer.line(&format!(
                    "{}: {deployment}: {} {target}: {mark}{msg}",
                    d.server,
                    action.verb()
                ));
                // The same line as the observer's, as data: the message is what the agent
                // reported for the run record, which never holds a secret value.
                tracing::info!(
                    deployment = %deployment,
                    step = %format!("{} {target}", action.verb()),
                    action = action.verb(),
                    status = mark,
                    duration_ms = *duration_ms,
                    bytes = *bytes,
                    detail = message.as_deref(),
                    "{} {target}: {mark}",
                    action.verb()
                );
                if *status == StepStatus::Failed {
                    // A health check's message starts with its own name: say it once.
                    let message = message.as_deref().unwrap_or_default();
                    let message = message
                        .strip_prefix(&format!("{target}: "))
                        .unwrap_or(message);
                    failures.push(format!(
                        "{deployment}: {} {target}: {message}",
                        action.verb()
                    ));
                }
            }
            AgentEvent::Progress {
                deployment,
                downloaded,
                total,
            } => observer.progress(&d.server, deployment, *downloaded, *total),
            AgentEvent::Rollback {
                deployment,
                restored,
                message,
            } => {
                observer.line(&format!(
                    "{}: {deployment}: rollback: {}",
                    d.server,
                    brief(message)
                ));
                tracing::info!(
                    deployment = %deployment,
                    restored = *restored,
                    "rollback: {message}"
                );
                if !restored {
                    failures.push(format!("{deployment}: {message}"));
                }
            }
            AgentEvent::Active {
                deployment,
                release,
                version,
                healthy,
                health,
            } => {
                active.insert(
                    deployment.clone(),
                    Active {
                        release: release.clone(),
                        version: version.clone(),
                        healthy: *healthy,
                        health: health.clone(),
                    },
                );
            }
            AgentEvent::Done {
                message: Some(m),
                outcome,
            } => {
                observer.line(&format!("{}: {}", d.server, brief(m)));
                tracing::info!(outcome = ?outcome, "{m}");
                if *outcome != Agent::Converged {
                    failures.push(m.clone());
                }
            }
            AgentEvent::Done { .. } => {}
        });
        let duration_ms = started.elapsed().as_millis() as u64;
        let (o, detail) = match outcome {
            Ok(Agent::Converged) => (
                HostOutcome::Converged,
                converged_detail(part, &steps, duration_ms),
            ),
            Ok(Agent::Recovered) if attempt == 0 => {
                tracing::info!("the agent recovered an interrupted apply; planning the host again");
                plan = super::prepare::plan_host(hosts, d, options.prune);
                continue;
            }
            Ok(Agent::RolledBack) => (HostOutcome::RolledBack, failures.join("; ")),
            Ok(Agent::RestoreFailed) => (HostOutcome::RestoreFailed, failures.join("; ")),
            Ok(Agent::Failed | Agent::Recovered) => (HostOutcome::Failed, failures.join("; ")),
            Err(e) => (
                if e.unreachable {
                    HostOutcome::Unreachable
                } else {
                    HostOutcome::Failed
                },
                e.message,
            ),
        };
        tracing::info!(
            outcome = o.label(),
            duration_ms,
            "agent finished: {}",
            o.label()
        );
        return AgentRun {
            outcome: o,
            detail,
            steps,
            duration_ms,
            active,
        };
    }
    AgentRun::early(
        HostOutcome::Failed,
        "the host changed again while it was planned again (interrupted applies or other reconcilers); nothing more was attempted".into(),
    )
}

/// A step's message as one progress line: a stack trace or an error page would bury the other
/// hosts' lines, and the run's record keeps the whole text (`history show RUN`).
fn brief(message: &str) -> String {
    let (line, cut) = crate::failure_text::first_line(message, crate::failure_text::LINE_LIMIT);
    if cut {
        format!("{line} [more in the run's history]")
    } else {
        line
    }
}

/// What a converged part of a host says in the summary: which deployment, how long the apply
/// took, and how long its health checks took to pass (`web applied in 0.3s, healthy after
/// 1.3s`): a host with two deployments reads as two labelled parts, not `0.3s; 1.3s`.
fn converged_detail(part: super::Part, steps: &[StepRecord], duration_ms: u64) -> String {
    let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
    let what = match part {
        super::Part::Deployment(name) => name.to_string(),
        super::Part::Removals => "removals".to_string(),
    };
    let health: u64 = steps
        .iter()
        .filter(|s| s.action == crate::model::apply::Action::HealthCheck)
        .map(|s| s.duration_ms)
        .sum();
    let checked = steps
        .iter()
        .any(|s| s.action == crate::model::apply::Action::HealthCheck);
    if checked {
        format!(
            "{what} applied in {}, healthy after {}",
            secs(duration_ms),
            secs(health)
        )
    } else {
        format!("{what} applied in {}", secs(duration_ms))
    }
}

/// Pins whose version this run brought from the repository and that every host of the
/// deployment now runs: the revert has been applied, so the pin has done its job.
pub fn pins_to_release(
    ledger: &Ledger,
    desired: &[DesiredHost],
    report: &RunReport,
) -> Vec<(String, String, String)> {
    let mut deployments: BTreeMap<(String, String, String), (String, bool)> = BTreeMap::new();
    for d in desired {
        let ok = report
            .hosts
            .iter()
            .any(|r| r.host == d.server && r.outcome.settled());
        for dep in &d.deployments {
            let e = deployments
                .entry((d.client.clone(), dep.name.clone(), dep.profile.clone()))
                .or_insert((dep.artifact.version.clone(), true));
            e.1 &= ok;
        }
    }
    deployments
        .into_iter()
        .filter(|((c, d, p), (version, all_ok))| {
            *all_ok
                && ledger
                    .pinned(c, d, p)
                    .ok()
                    .flatten()
                    .is_some_and(|pin| &pin.version == version)
        })
        .map(|(k, _)| k)
        .collect()
}

/// Where a run record comes from besides its hosts.
pub struct RunHeader {
    pub id: String,
    pub started_at: String,
    pub commit: String,
    pub branch: Option<String>,
    pub trigger: String,
}

/// The run record of an apply: per host, what its agent reported it runs at the end. A
/// deployment the plan left alone is recorded as desired (the plan found it so); one the
/// agent touched as the agent reported it (a rolled-back host on the release it went back
/// to); one never attempted, or on a host never reached, is left out, so the host keeps its
/// previous record.
pub fn record(
    header: RunHeader,
    desired: &[DesiredHost],
    plans: &[HostPlan],
    report: RunReport,
    allow_unreachable: bool,
) -> RunRecord {
    let ok = report.no_failures(allow_unreachable);
    let paused = report.paused();
    let batches = report.batches;
    let pause_deadline = report.pause_deadline;
    let changed = report
        .hosts
        .iter()
        .any(|r| r.outcome != HostOutcome::Unchanged);
    let hosts = report
        .hosts
        .into_iter()
        .map(|r| {
            let d = desired.iter().find(|d| d.server == r.host);
            let plan = plans.iter().find(|p| p.server == r.host);
            let inspected = plan
                .is_some_and(|p| matches!(p.status, HostStatus::Unchanged | HostStatus::Changes));
            let untouched = |name: &str| {
                plan.is_some_and(|p| {
                    !p.deployments
                        .iter()
                        .any(|x| x.name == name && !x.steps.is_empty())
                })
            };
            let deployments = d
                .map(|d| {
                    d.deployments
                        .iter()
                        .filter_map(|dep| match r.active.get(&dep.name) {
                            Some(a) => Some(DeploymentRecord {
                                name: dep.name.clone(),
                                profile: dep.profile.clone(),
                                version: a.version.clone()?,
                                release: a.release.clone()?,
                                healthy: a.healthy,
                                health: Some(a.health.clone()),
                            }),
                            None if inspected && untouched(&dep.name) => Some(DeploymentRecord {
                                name: dep.name.clone(),
                                profile: dep.profile.clone(),
                                version: dep.artifact.version.clone(),
                                release: dep.release.clone(),
                                healthy: true,
                                health: None,
                            }),
                            None => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            HostRecord {
                server: r.host,
                client: plan.map(|p| p.client.clone()).unwrap_or_default(),
                outcome: r.outcome,
                duration_ms: r.duration_ms,
                message: (!r.detail.is_empty()).then_some(r.detail),
                deployments,
                steps: r.steps,
            }
        })
        .collect();
    RunRecord {
        format: RUN_FORMAT.to_string(),
        message: None,
        id: header.id,
        commit: header.commit,
        branch: header.branch,
        started_at: header.started_at,
        finished_at: crate::clock::now_rfc3339(),
        trigger: header.trigger,
        mode: RunMode::Apply,
        outcome: if !ok {
            RunOutcome::Failed
        } else if paused {
            RunOutcome::AwaitingApproval
        } else if changed {
            RunOutcome::Success
        } else {
            RunOutcome::NoChanges
        },
        hosts,
        rollout: crate::model::run::RolloutRecord {
            batches,
            // Only a run that still waits can time out.
            pause_deadline: pause_deadline.filter(|_| paused && ok),
            resumes: None,
            resumed: None,
        },
        kind: Default::default(),
    }
}
