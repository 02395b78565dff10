//! A drift run: inspect every selected host without changing anything, compare it with the
//! desired state of the commit it last converged on (from the ledger, host by host), and
//! record the findings (ledger and git note) and notify. The one-shot `drift` command and the
//! watch loop's drift checks both run here, so they always give the same answer. Rendering
//! and exit codes stay with the caller.

use super::error::RunError;
use super::fleet::Hosts;
use super::prepare::{self, Computed, Inputs};
use super::reconcile::Start;
use crate::desired::{DesiredError, DesiredHost};
use crate::ledger::Ledger;
use crate::model::run::{
    DriftFinding, HostOutcome, HostRecord, RUN_FORMAT, RunMode, RunOutcome, RunRecord,
};
use crate::plan::drift::{Finding, drift};
use crate::source::{self, ReadMode, Snapshot};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Per host: server, client, and its findings or why it could not be inspected.
pub type HostFindings = (String, String, Result<Vec<Finding>, String>);

/// What a drift run is asked to do.
pub struct Request<'a> {
    /// The config repository (the watch loop's mirror for a URL).
    pub repo: &'a Path,
    /// Compare every host with this revision; `None`: each host with the commit it last
    /// converged on, never a commit that failed there.
    pub rev: Option<&'a str>,
    /// The followed branch whose applies count (the watch loop's), or every branch.
    pub branch: Option<&'a str>,
    pub inputs: &'a Inputs,
    pub start: Start,
    /// Send the `notify:` webhooks now (the watch loop sends them from its own reading).
    pub notify: bool,
}

/// What a drift run found, as recorded.
pub struct Report {
    /// The commit the selection was compared with (hosts with another baseline aside).
    pub snapshot: Snapshot,
    pub per_host: Vec<HostFindings>,
    pub record: RunRecord,
}

impl Report {
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.per_host
            .iter()
            .filter_map(|(_, _, r)| r.as_ref().ok())
            .flatten()
    }

    /// Hosts that could not be inspected, with why.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &str)> {
        self.per_host
            .iter()
            .filter_map(|(s, _, r)| r.as_ref().err().map(|e| (s.as_str(), e.as_str())))
    }
}

/// Runs the drift check and records it; `note` hears what the caller should tell the
/// operator (a missing baseline, a baseline commit that is gone).
pub fn check(
    req: Request,
    hosts: &dyn Hosts,
    pool: &rayon::ThreadPool,
    ledger: &mut Ledger,
    note: &dyn Fn(&str),
) -> Result<Report, RunError> {
    let selection = &req.inputs.selection;
    // Compare against what was applied, not against whatever HEAD says now.
    let rev = match req.rev {
        Some(r) => r.to_string(),
        None => {
            let last = ledger.last_applied_commit(&crate::ledger::AppliedFilter {
                branch: req.branch.map(str::to_string),
                client: selection.client.clone(),
                profiles: selection.profiles.clone(),
                server: selection.server.clone(),
                successful_only: true,
            })?;
            match last {
                Some(a) => a.commit,
                None => {
                    note(
                        "the ledger has no successful apply for this selection; comparing with HEAD",
                    );
                    "HEAD".into()
                }
            }
        }
    };
    let snapshot = source::read(req.repo, &ReadMode::Commit(rev))?;
    let Computed {
        mut desired,
        inventory,
        ..
    } = prepare::compute(&snapshot, req.inputs)?;
    if req.rev.is_none() {
        judge_by_baselines(&req, ledger, &snapshot, &mut desired, note)?;
    }
    let per_host: Vec<HostFindings> = pool.install(|| {
        desired
            .into_par_iter()
            .map(|d| match d {
                Err(errors) => {
                    let server = errors.first().map(|e| e.server.clone()).unwrap_or_default();
                    (
                        server,
                        String::new(),
                        Err(errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")),
                    )
                }
                Ok(host) => {
                    let actual = hosts.inspect(&host);
                    let found = actual.map(|a| drift(&host, &a)).map_err(|e| e.message);
                    (host.server.clone(), host.client.clone(), found)
                }
            })
            .collect()
    });
    let mut report = Report {
        record: RunRecord {
            format: RUN_FORMAT.to_string(),
            message: None,
            id: req.start.id,
            commit: snapshot.commit().map(|c| c.to_string()).unwrap_or_default(),
            branch: None,
            started_at: req.start.started_at,
            finished_at: crate::clock::now_rfc3339(),
            trigger: req.start.trigger,
            mode: RunMode::Drift,
            kind: Default::default(),
            rollout: Default::default(),
            outcome: RunOutcome::NoChanges,
            hosts: per_host
                .iter()
                .map(|(server, client, r)| HostRecord {
                    server: server.clone(),
                    client: client.clone(),
                    outcome: match r {
                        Ok(f) if f.is_empty() => HostOutcome::NoDrift,
                        Ok(_) => HostOutcome::Drift,
                        Err(_) => HostOutcome::Unreachable,
                    },
                    duration_ms: 0,
                    message: r.as_ref().err().cloned(),
                    deployments: Vec::new(),
                    steps: Vec::new(),
                })
                .collect(),
        },
        snapshot,
        per_host,
    };
    let stored: Vec<DriftFinding> = report
        .findings()
        .map(|f| DriftFinding {
            server: f.server.clone(),
            client: f.client.clone(),
            deployment: f.deployment.clone(),
            kind: f.kind.as_str().to_string(),
            detail: f.detail.clone(),
        })
        .collect();
    report.record.outcome = if report.errors().next().is_some() {
        RunOutcome::Failed
    } else if stored.is_empty() {
        RunOutcome::NoChanges
    } else {
        RunOutcome::DriftFound
    };
    let record = &report.record;
    ledger.record_drift(record, &stored)?;
    // The notes hold drift runs too, so `history rebuild` restores them with their findings.
    if !record.commit.is_empty() {
        crate::ledger::notes::write_drift(req.repo, &record.commit, record, &stored)?;
    }
    if req.notify {
        crate::notify::deliver_now(&inventory.settings.notify, record, stored.len());
    }
    Ok(report)
}

/// Replaces the desired state of every host whose last settled commit (the newest apply it
/// converged in) is not `snapshot`'s with the desired state at that commit: a host that rolled
/// back, or was not attempted, is judged by what it runs, not by the commit that failed.
fn judge_by_baselines(
    req: &Request,
    ledger: &Ledger,
    snapshot: &Snapshot,
    desired: &mut [Result<DesiredHost, Vec<DesiredError>>],
    note: &dyn Fn(&str),
) -> Result<(), RunError> {
    let baselines = ledger.host_baselines(req.branch)?;
    let here = snapshot.commit().map(|c| c.to_string()).unwrap_or_default();
    let mut by_commit: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, d) in desired.iter().enumerate() {
        if let Ok(host) = d
            && let Some(commit) = baselines.get(&host.server)
            && *commit != here
        {
            by_commit.entry(commit).or_default().push(i);
        }
    }
    for (commit, hosts) in by_commit {
        let Ok(then) = source::read(req.repo, &ReadMode::Commit(commit.to_string())) else {
            note(&format!(
                "the commit {commit} some hosts last converged on is not in the repository any more; they are compared with {}",
                snapshot.describe()
            ));
            continue;
        };
        let Computed { desired: at, .. } = prepare::compute(&then, req.inputs)?;
        for i in hosts {
            let server = desired[i]
                .as_ref()
                .map(|h| h.server.clone())
                .unwrap_or_default();
            if let Some(d) = at
                .iter()
                .find(|d| d.as_ref().is_ok_and(|h| h.server == server))
            {
                desired[i] = d.clone();
            }
        }
    }
    Ok(())
}
