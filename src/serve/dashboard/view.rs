//! The pages' data, read from the ledger (and, where the ledger has no such fact, from the
//! config repository at a recorded commit): the fleet, one host, one run, one deployment's
//! history. Each function is one read on the request's blocking thread and returns plain
//! serializable values for the templates. Nothing here writes, and nothing contacts a host:
//! what a host runs is what its last recorded run said.

use super::config;
use super::status::{self, HostState, Signals};
use crate::ledger::{Ledger, LedgerError, RunFilter, RunSummary};
use crate::model::apply::{Action, StepStatus};
use crate::model::run::{DriftFinding, HostOutcome, RunMode, RunOutcome, RunRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How many apply runs the fleet page folds (the newest): a host whose last apply is older
/// shows its last run but no apply outcome.
const FLEET_RUNS: usize = 500;
/// How many drift runs it looks at for each host's newest drift check.
const DRIFT_RUNS: usize = 50;
/// How many of a host's runs its page lists.
pub const HOST_RUNS: usize = 10;

/// What the pages need besides the ledger.
pub struct Context<'a> {
    pub repo: Option<&'a Path>,
    /// `reconcile main@1a2b3c4d` while the loop applies.
    pub busy: Option<String>,
    /// Twice the drift interval, in seconds: older than this is stale.
    pub stale_after: Option<u64>,
    pub now: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetHost {
    pub server: String,
    pub client: String,
    pub datacenter: String,
    pub profiles: Vec<String>,
    pub state: HostState,
    pub state_name: &'static str,
    pub state_label: &'static str,
    /// The host's outcome in its last apply run, as recorded.
    pub outcome: Option<HostOutcome>,
    pub last_apply_run: Option<String>,
    pub last_commit: Option<String>,
    pub branch: Option<String>,
    pub last_seen: String,
    pub message: Option<String>,
    pub drift_findings: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CountRow {
    pub name: String,
    /// In [`HostState::ALL`] order.
    pub counts: Vec<usize>,
    pub total: usize,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FleetFilter {
    pub client: Option<String>,
    pub datacenter: Option<String>,
    pub profile: Option<String>,
    pub outcome: Option<String>,
}

impl FleetFilter {
    fn keeps(&self, h: &FleetHost) -> bool {
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.is_empty())
        }
        set(&self.client).is_none_or(|c| c == h.client)
            && set(&self.datacenter).is_none_or(|d| d == h.datacenter)
            && set(&self.profile).is_none_or(|p| h.profiles.iter().any(|x| x == p))
            && set(&self.outcome).is_none_or(|o| o == h.state_name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub run_id: String,
    pub branch: Option<String>,
    pub commit: String,
    pub message: Option<String>,
    pub at: String,
}

/// A rollout that waits after its canary, as the fleet page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PausedRollout {
    pub run_id: String,
    pub branch: Option<String>,
    pub commit: String,
    pub waiting: Vec<String>,
    pub resume_command: String,
    pub deadline: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub hosts: Vec<FleetHost>,
    pub attention: Vec<FleetHost>,
    pub by_client: Vec<CountRow>,
    pub by_datacenter: Vec<CountRow>,
    /// Every value each filter can take, for the filter form.
    pub clients: Vec<String>,
    pub datacenters: Vec<String>,
    pub profiles: Vec<String>,
    /// Newest refused run per branch, when newer than the branch's last apply.
    pub refusals: Vec<Refusal>,
    /// Rollouts paused after their canary that nobody resumed or overtook yet.
    pub paused: Vec<PausedRollout>,
    pub newest_run: Option<String>,
    /// Why datacenters are unknown, when they are.
    pub config_note: Option<String>,
}

struct Fold {
    host: FleetHost,
    /// (started_at, id) of the host's newest apply run.
    apply: Option<(String, String)>,
    drift_seen: bool,
}

pub fn fleet(l: &Ledger, ctx: &Context, filter: &FleetFilter) -> Result<Fleet, LedgerError> {
    // Apply and drift runs are read apart: frequent drift checks must not push a host's last
    // apply out of the window.
    let applies = l.runs(&RunFilter {
        mode: Some(RunMode::Apply),
        limit: Some(FLEET_RUNS),
        ..RunFilter::default()
    })?;
    let drifts = l.runs(&RunFilter {
        mode: Some(RunMode::Drift),
        limit: Some(DRIFT_RUNS),
        ..RunFilter::default()
    })?;
    let mut hosts: BTreeMap<String, Fold> = BTreeMap::new();
    for last in l.server_last_runs(None)? {
        hosts.insert(
            last.server.clone(),
            Fold {
                host: FleetHost {
                    server: last.server,
                    client: last.client,
                    datacenter: String::new(),
                    profiles: Vec::new(),
                    state: HostState::Converged,
                    state_name: "",
                    state_label: "",
                    outcome: None,
                    last_apply_run: None,
                    last_commit: None,
                    branch: None,
                    last_seen: last.finished_at,
                    message: None,
                    drift_findings: 0,
                },
                apply: None,
                drift_seen: false,
            },
        );
    }
    // branch → (refused run, newer than every apply of the branch)
    let mut refused: BTreeMap<Option<String>, (&RunSummary, bool)> = BTreeMap::new();
    let mut applied_branches: Vec<Option<String>> = Vec::new();
    // Runs come newest first: the first one listing a host is the one that counts.
    for run in &applies {
        if run.outcome == RunOutcome::Refused {
            let newer = !applied_branches.contains(&run.branch);
            refused.entry(run.branch.clone()).or_insert((run, newer));
            continue;
        }
        applied_branches.push(run.branch.clone());
        for h in &run.hosts {
            let Some(fold) = hosts.get_mut(&h.server) else {
                continue;
            };
            if fold.apply.is_some() {
                continue;
            }
            fold.apply = Some((run.started_at.clone(), run.id.clone()));
            let f = &mut fold.host;
            f.outcome = Some(h.outcome);
            f.last_apply_run = Some(run.id.clone());
            f.last_commit = Some(run.commit.clone());
            f.branch = run.branch.clone();
            f.message = h.message.clone();
            let mut profiles: Vec<String> =
                h.deployments.iter().map(|d| d.profile.clone()).collect();
            profiles.sort();
            profiles.dedup();
            f.profiles = profiles;
        }
    }
    for run in &drifts {
        if run
            .hosts
            .iter()
            .all(|h| hosts.get(&h.server).is_none_or(|f| f.drift_seen))
        {
            continue;
        }
        let findings = l.drift_findings(&run.id)?;
        for h in &run.hosts {
            let Some(fold) = hosts.get_mut(&h.server) else {
                continue;
            };
            if fold.drift_seen {
                continue;
            }
            fold.drift_seen = true;
            // Only a drift check newer than the last apply says something about now.
            let key = (run.started_at.clone(), run.id.clone());
            if fold.apply.as_ref().is_none_or(|a| key > *a) {
                fold.host.drift_findings = findings.iter().filter(|f| f.server == h.server).count();
            }
        }
    }
    let (datacenters, config_note) = datacenter_map(ctx, &applies);
    // `reconcile <branch>@<short commit>`: that branch's hosts are mid-rollout until the run
    // for that commit is recorded (the loop stays busy a moment after recording it).
    let busy: Option<(String, String)> = ctx
        .busy
        .as_deref()
        .and_then(|b| b.strip_prefix("reconcile "))
        .and_then(|b| b.rsplit_once('@'))
        .map(|(branch, commit)| (branch.to_string(), commit.to_string()));
    let mut all: Vec<FleetHost> = hosts
        .into_values()
        .map(|fold| {
            let mut h = fold.host;
            h.datacenter = datacenters
                .get(&h.server)
                .cloned()
                .unwrap_or_else(|| "unknown".to_string());
            let refused_since = refused.get(&h.branch).is_some_and(|(_, newer)| *newer);
            let stale = ctx.stale_after.is_some_and(|limit| {
                crate::clock::parse_rfc3339(&h.last_seen)
                    .is_some_and(|seen| ctx.now.saturating_sub(seen) > limit)
            });
            let signals = Signals {
                drift_findings: h.drift_findings,
                refused_since,
                rolling_out: busy.as_ref().is_some_and(|(branch, commit)| {
                    h.branch.as_deref() == Some(branch.as_str())
                        && !h
                            .last_commit
                            .as_deref()
                            .is_some_and(|c| c.starts_with(commit.as_str()))
                }),
                stale,
            };
            h.state = status::classify(h.outcome, signals);
            h.state_name = h.state.name();
            h.state_label = h.state.label();
            h
        })
        .collect();
    let distinct = |f: &dyn Fn(&FleetHost) -> Vec<String>| {
        let mut v: Vec<String> = all.iter().flat_map(f).collect();
        v.sort();
        v.dedup();
        v
    };
    let clients = distinct(&|h| vec![h.client.clone()]);
    let datacenter_names = distinct(&|h| vec![h.datacenter.clone()]);
    let profiles = distinct(&|h| h.profiles.clone());
    all.retain(|h| filter.keeps(h));
    let mut attention: Vec<FleetHost> = all
        .iter()
        .filter(|h| h.state != HostState::Converged)
        .cloned()
        .collect();
    attention.sort_by(|a, b| (a.state, &a.server).cmp(&(b.state, &b.server)));
    let mut refusals = Vec::new();
    for (r, newer) in refused.values() {
        if !newer {
            continue;
        }
        // Summaries do not carry the run's message (why it was refused); the record does.
        refusals.push(Refusal {
            run_id: r.id.clone(),
            branch: r.branch.clone(),
            commit: r.commit.clone(),
            message: l.run(&r.id)?.and_then(|run| run.message),
            at: r.finished_at.clone(),
        });
    }
    let mut paused = Vec::new();
    for p in l.paused_runs()? {
        let Some(run) = l.run(&p.id)? else {
            continue;
        };
        let waiting = run.rollout.waiting_hosts();
        if l.superseding_run(&p.id, &waiting)?.is_some() {
            continue;
        }
        paused.push(PausedRollout {
            resume_command: format!("clarity-reconcile resume {}", p.id),
            run_id: p.id,
            branch: p.branch,
            commit: p.commit,
            waiting,
            deadline: p.deadline,
        });
    }
    Ok(Fleet {
        paused,
        by_client: count_rows(&all, |h| h.client.clone()),
        by_datacenter: count_rows(&all, |h| h.datacenter.clone()),
        hosts: all,
        attention,
        clients,
        datacenters: datacenter_names,
        profiles,
        refusals,
        newest_run: l.newest_run(None)?.map(|r| r.id),
        config_note,
    })
}

fn count_rows(hosts: &[FleetHost], key: impl Fn(&FleetHost) -> String) -> Vec<CountRow> {
    let mut rows: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for h in hosts {
        let counts = rows
            .entry(key(h))
            .or_insert_with(|| vec![0; HostState::ALL.len()]);
        let i = HostState::ALL
            .iter()
            .position(|s| *s == h.state)
            .unwrap_or(0);
        counts[i] += 1;
    }
    rows.into_iter()
        .map(|(name, counts)| CountRow {
            total: counts.iter().sum(),
            name,
            counts,
        })
        .collect()
}

/// A unit enum value as the ledger and the API spell it (`dry_run`, `no_changes`).
fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// Server → datacenter from the inventory at the newest applied commit.
fn datacenter_map(
    ctx: &Context,
    runs: &[RunSummary],
) -> (BTreeMap<String, String>, Option<String>) {
    let Some(repo) = ctx.repo else {
        return (
            BTreeMap::new(),
            Some(
                "datacenters are unknown: the dashboard was started without the config repository"
                    .into(),
            ),
        );
    };
    let Some(commit) = runs
        .iter()
        .find(|r| r.mode == RunMode::Apply && r.outcome != RunOutcome::Refused)
        .map(|r| r.commit.as_str())
    else {
        return (BTreeMap::new(), None);
    };
    match config::inventory_at(repo, commit) {
        Ok(inv) => (config::datacenters(&inv), None),
        Err(e) => (
            BTreeMap::new(),
            Some(format!("datacenters are unknown: {e}")),
        ),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthResult {
    pub name: String,
    pub ok: bool,
    pub output: Option<String>,
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortClaim {
    pub port: u16,
    pub protocol: String,
    pub name: Option<String>,
    /// A drift finding says another process holds it.
    pub conflict: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostDeploymentView {
    pub name: String,
    pub profile: String,
    pub desired_version: String,
    pub desired_release: String,
    pub running_version: Option<String>,
    pub running_release: Option<String>,
    pub differs: bool,
    pub health: Vec<HealthResult>,
    pub drift: Vec<DriftFinding>,
    pub rollback_target: Option<String>,
    pub ports: Vec<PortClaim>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostRunView {
    pub id: String,
    pub mode: String,
    pub commit: String,
    pub finished_at: String,
    pub outcome: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub fleet: FleetHost,
    pub deployments: Vec<HostDeploymentView>,
    pub runs: Vec<HostRunView>,
    pub config_note: Option<String>,
}

pub fn host(l: &Ledger, ctx: &Context, server: &str) -> Result<Option<HostView>, LedgerError> {
    let fleet = fleet(l, ctx, &FleetFilter::default())?;
    let Some(fh) = fleet.hosts.into_iter().find(|h| h.server == server) else {
        return Ok(None);
    };
    let summaries = l.runs(&RunFilter {
        server: Some(server.to_string()),
        limit: Some(HOST_RUNS),
        ..RunFilter::default()
    })?;
    let runs: Vec<HostRunView> = summaries
        .iter()
        .map(|r| {
            let h = r.hosts.first();
            HostRunView {
                id: r.id.clone(),
                mode: text(&r.mode),
                commit: r.commit.clone(),
                finished_at: r.finished_at.clone(),
                outcome: h
                    .map(|h| h.outcome.as_str().to_string())
                    .unwrap_or_default(),
                message: h.and_then(|h| h.message.clone()),
            }
        })
        .collect();
    // The newest apply run's record says what the host should run; the newest one where the
    // host ended converged and the deployment healthy says what it ran when last seen well.
    let of_mode = |mode: RunMode, limit: usize| {
        l.runs(&RunFilter {
            server: Some(server.to_string()),
            mode: Some(mode),
            limit: Some(limit),
            ..RunFilter::default()
        })
    };
    // Read apart from the list above: drift checks every few minutes must not push the host's
    // apply runs out of it.
    let records: Vec<RunRecord> = of_mode(RunMode::Apply, HOST_RUNS)?
        .iter()
        .filter_map(|r| l.run(&r.id).transpose())
        .collect::<Result<_, _>>()?;
    let host_of = |r: &RunRecord| r.hosts.iter().find(|h| h.server == server).cloned();
    // Run ids start with their start time, so they order like it.
    let newest_drift = of_mode(RunMode::Drift, 1)?.into_iter().next().filter(|d| {
        fh.last_apply_run
            .as_deref()
            .is_none_or(|a| d.id.as_str() > a)
    });
    let findings: Vec<DriftFinding> = match newest_drift {
        Some(d) => l
            .drift_findings(&d.id)?
            .into_iter()
            .filter(|f| f.server == server)
            .collect(),
        None => Vec::new(),
    };
    let (inventory, config_note) = match (ctx.repo, fh.last_commit.as_deref()) {
        (Some(repo), Some(c)) => match config::inventory_at(repo, c) {
            Ok(inv) => (Some(inv), None),
            Err(e) => (None, Some(format!("ports are unknown: {e}"))),
        },
        (None, _) => (
            None,
            Some(
                "ports are unknown: the dashboard was started without the config repository".into(),
            ),
        ),
        _ => (None, None),
    };
    let mut deployments = Vec::new();
    if let Some(newest) = records.first().and_then(host_of) {
        for d in &newest.deployments {
            let running = records.iter().find_map(|r| {
                let h = host_of(r)?;
                if status::from_apply_outcome(h.outcome) != HostState::Converged {
                    return None;
                }
                h.deployments
                    .into_iter()
                    .find(|x| x.name == d.name && x.healthy)
            });
            let mut health: Vec<HealthResult> = Vec::new();
            for r in &records {
                let Some(h) = host_of(r) else { continue };
                let checks: Vec<HealthResult> = h
                    .steps
                    .iter()
                    .filter(|s| s.deployment == d.name && s.action == Action::HealthCheck)
                    .map(|s| HealthResult {
                        name: s.target.clone(),
                        ok: s.status == StepStatus::Ok,
                        output: s.message.clone(),
                        run_id: r.id.clone(),
                    })
                    .collect();
                if !checks.is_empty() {
                    health = checks;
                    break;
                }
            }
            let running_version = running.as_ref().map(|r| r.version.clone());
            let rollback_target = l
                .deployment_history(&fh.client, &d.name, &d.profile)?
                .into_iter()
                .find(|e| e.healthy_everywhere && Some(&e.version) != running_version.as_ref())
                .map(|e| e.version);
            let drift: Vec<DriftFinding> = findings
                .iter()
                .filter(|f| f.deployment == d.name)
                .cloned()
                .collect();
            let ports = inventory
                .as_ref()
                .and_then(|inv| inv.clients.get(&fh.client))
                .and_then(|c| c.deployments.get(&(d.name.clone(), d.profile.clone())))
                .map(|doc| {
                    doc.value
                        .ports
                        .iter()
                        .map(|p| PortClaim {
                            port: p.port,
                            protocol: text(&p.protocol),
                            name: p.name.clone(),
                            conflict: drift
                                .iter()
                                .find(|f| {
                                    f.kind == "port-conflict"
                                        && f.detail.starts_with(&format!("port {}/", p.port))
                                })
                                .map(|f| f.detail.clone()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            deployments.push(HostDeploymentView {
                name: d.name.clone(),
                profile: d.profile.clone(),
                desired_version: d.version.clone(),
                desired_release: d.release.clone(),
                differs: running.as_ref().is_none_or(|r| r.release != d.release),
                running_release: running.as_ref().map(|r| r.release.clone()),
                running_version,
                health,
                drift,
                rollback_target,
                ports,
            });
        }
    }
    Ok(Some(HostView {
        fleet: fh,
        deployments,
        runs,
        config_note,
    }))
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    pub key: String,
    pub configured: bool,
    pub batches: Vec<BatchView>,
    pub budget: Option<usize>,
    pub failed: usize,
    pub budget_left: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchView {
    pub canary: bool,
    /// `applied`, `awaiting_approval`, `not_attempted`, `held`.
    pub state: &'static str,
    pub hosts: Vec<(String, String)>,
}

/// A rollout paused after its canary: who waits and how it goes on.
#[derive(Debug, Clone, Serialize)]
pub struct PauseView {
    pub waiting: Vec<String>,
    pub resume_command: String,
    /// When a watch loop resumes it by itself.
    pub deadline: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run: RunRecord,
    pub mode: String,
    pub outcome: String,
    pub findings: Vec<DriftFinding>,
    /// The batches the run recorded, per rollout unit, in the order applied.
    pub rollouts: Vec<RolloutView>,
    /// An apply run recorded before batches were kept: its batches are not known.
    pub batches_unrecorded: bool,
    pub pause: Option<PauseView>,
    /// Why the run is blocked or halted, in the words of the record.
    pub reasons: Vec<String>,
}

pub fn run(l: &Ledger, id: &str) -> Result<Option<RunView>, LedgerError> {
    let Some(run) = l.run(id)? else {
        return Ok(None);
    };
    let findings = l.drift_findings(id)?;
    let mut reasons = Vec::new();
    if let Some(m) = &run.message {
        reasons.push(format!(
            "commit {} refused: {m}",
            config::short(&run.commit)
        ));
    }
    for h in &run.hosts {
        if status::from_apply_outcome(h.outcome) != HostState::Converged
            && let Some(m) = &h.message
        {
            reasons.push(format!("{} ({}): {m}", h.server, h.outcome));
        }
    }
    let outcome_of: BTreeMap<&str, HostOutcome> = run
        .hosts
        .iter()
        .map(|h| (h.server.as_str(), h.outcome))
        .collect();
    // The batches as the run recorded them when it applied them; a run recorded before
    // batches were kept says so rather than having them cut anew from today's settings.
    let mut rollouts: Vec<RolloutView> = Vec::new();
    for b in &run.rollout.batches {
        if rollouts.last().is_none_or(|u| u.key != b.unit) {
            let budget = b.failure_budget.map(|n| n as usize);
            rollouts.push(RolloutView {
                key: b.unit.clone(),
                configured: budget.is_some(),
                batches: Vec::new(),
                budget,
                failed: 0,
                budget_left: budget,
            });
        }
        let u = rollouts.last_mut().expect("pushed above");
        u.failed += b.failed as usize;
        u.budget_left = u.budget.map(|n| n.saturating_sub(u.failed));
        u.batches.push(BatchView {
            canary: b.canary,
            state: b.state.as_str(),
            hosts: b
                .hosts
                .iter()
                .map(|h| {
                    let o = outcome_of
                        .get(h.as_str())
                        .map(|o| o.as_str().to_string())
                        .unwrap_or_default();
                    (h.clone(), o)
                })
                .collect(),
        });
    }
    let batches_unrecorded = rollouts.is_empty()
        && run.mode == RunMode::Apply
        && run.hosts.iter().any(|h| !h.steps.is_empty());
    let waiting = run.rollout.waiting_hosts();
    let pause = (!waiting.is_empty()).then(|| PauseView {
        resume_command: format!("clarity-reconcile resume {}", run.id),
        waiting,
        deadline: run.rollout.pause_deadline.clone(),
    });
    if let Some(p) = &pause {
        reasons.push(match &run.rollout.resumed {
            Some(r) => format!(
                "the rollout paused after a healthy canary; {} resumed it at {} (run {})",
                r.by, r.at, r.run
            ),
            None => format!(
                "the rollout paused after a healthy canary: {} wait{} for approval; continue with `{}`{}",
                p.waiting.join(", "),
                if p.waiting.len() == 1 { "s" } else { "" },
                p.resume_command,
                p.deadline
                    .as_deref()
                    .map(|d| format!(" (a watch loop resumes it by itself after {d})"))
                    .unwrap_or_default()
            ),
        });
    }
    Ok(Some(RunView {
        mode: text(&run.mode),
        outcome: text(&run.outcome),
        run,
        findings,
        rollouts,
        batches_unrecorded,
        pause,
        reasons,
    }))
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub run_id: String,
    pub commit: String,
    pub finished_at: String,
    pub outcome: String,
    pub hosts: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    pub client: String,
    pub deployment: String,
    pub profile: String,
    pub runs: Vec<HistoryRow>,
    /// Distinct applied commits, newest first.
    pub commits: Vec<String>,
    pub servers: Vec<String>,
}

pub fn deployment(
    l: &Ledger,
    client: &str,
    deployment: &str,
    profile: &str,
) -> Result<Option<DeploymentView>, LedgerError> {
    let runs = l.runs(&RunFilter {
        client: Some(client.to_string()),
        deployment: Some(deployment.to_string()),
        mode: Some(RunMode::Apply),
        limit: Some(100),
        ..RunFilter::default()
    })?;
    let mut rows = Vec::new();
    let mut commits: Vec<String> = Vec::new();
    let mut servers: Vec<String> = Vec::new();
    for r in runs {
        let hosts: Vec<(String, String, String)> = r
            .hosts
            .iter()
            .filter_map(|h| {
                let d = h
                    .deployments
                    .iter()
                    .find(|d| d.name == deployment && d.profile == profile)?;
                Some((
                    h.server.clone(),
                    d.version.clone(),
                    h.outcome.as_str().to_string(),
                ))
            })
            .collect();
        if hosts.is_empty() {
            continue;
        }
        for (s, _, _) in &hosts {
            if !servers.contains(s) {
                servers.push(s.clone());
            }
        }
        if !commits.contains(&r.commit) {
            commits.push(r.commit.clone());
        }
        rows.push(HistoryRow {
            run_id: r.id,
            commit: r.commit,
            finished_at: r.finished_at,
            outcome: text(&r.outcome),
            hosts,
        });
    }
    if rows.is_empty() {
        return Ok(None);
    }
    servers.sort();
    Ok(Some(DeploymentView {
        client: client.to_string(),
        deployment: deployment.to_string(),
        profile: profile.to_string(),
        runs: rows,
        commits,
        servers,
    }))
}
