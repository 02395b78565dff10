//! `clarity-reconcile drift`: inspect every selected host without changing anything and report
//! how it differs from the desired state of the commit last applied (from the ledger).

use super::reach::Reach;
use super::reconcile::{Computed, compute};
use super::{CliError, CliResult, Exit, GlobalArgs, Output};
use crate::model::run::{
    DriftFinding, HostOutcome, HostRecord, RUN_FORMAT, RunMode, RunOutcome, RunRecord,
};
use crate::plan::drift::{Finding, drift};
use crate::source::{self, ReadMode};
use clap::Args;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// Report drift: inspect every selected host (changing nothing) and list each difference from
/// the desired state of the last applied commit — files edited by hand or missing, the wrong
/// release active, services stopped or disabled, unapplied migrations, releases and
/// deployments Clarity did not install. Recorded in the ledger. Exit 0 no drift, 2 drift
/// found, 1 error. A --repo URL (the watch loop's) is read from the loop's mirror under the
/// work directory.
#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    /// The reconciler's working directory (sandboxes and the ledger live below it).
    #[arg(
        long,
        env = "CLARITY_WORK_DIR",
        default_value = ".clarity",
        value_name = "DIR"
    )]
    pub work_dir: PathBuf,
    /// The run ledger; default `<work-dir>/ledger.sqlite` or `$CLARITY_STATE_DIR`.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// age identity file, to compare files that contain secrets exactly.
    #[arg(long, value_name = "FILE")]
    pub age_identity: Option<PathBuf>,
    /// An unreachable host is reported but does not make the run fail.
    #[arg(long)]
    pub allow_unreachable: bool,
    #[arg(skip)]
    pub context: super::reconcile::RunContext,
}

pub fn run(global: &GlobalArgs, args: &DriftArgs) -> CliResult {
    // The drift timer's service is given the loop's --repo: a URL is read from the loop's
    // mirror, which holds every commit the loop applied.
    let mirror = crate::watch::mirror::mirror_root(&global.repo.to_string_lossy(), &args.work_dir)
        .map_err(|e| {
            CliError::new(e).hint(
                "start clarity-reconcile.service (or `clarity-reconcile --watch --repo URL` with \
                 the same work directory) first, or pass --repo a local clone",
            )
        })?;
    let mirrored;
    let global = match mirror {
        Some(root) => {
            mirrored = GlobalArgs {
                repo: root,
                ..global.clone()
            };
            &mirrored
        }
        None => global,
    };
    let ledger_path = crate::ledger::resolve_path(args.ledger.as_deref(), &args.work_dir);
    let mut ledger = crate::ledger::Ledger::open(&ledger_path)?;
    // Compare against what was applied, not against whatever HEAD says now.
    let rev = match &global.rev {
        Some(r) => r.clone(),
        None => {
            let last = ledger.last_applied_commit(&crate::ledger::AppliedFilter {
                branch: args.context.branch.clone(),
                client: global.client.clone(),
                profiles: global.profiles(),
                server: global.server.clone(),
                successful_only: true,
            })?;
            match last {
                Some(a) => a.commit,
                None => {
                    eprintln!(
                        "note: the ledger has no successful apply for this selection; comparing with HEAD"
                    );
                    "HEAD".into()
                }
            }
        }
    };
    let snapshot = source::read(&global.repo, &ReadMode::Commit(rev))?;
    let (started_at, run_id) = args.context.started();
    let Computed {
        mut desired,
        inventory,
    } = compute(global, &snapshot, args.age_identity.as_deref(), None)?;
    if global.rev.is_none() {
        judge_by_baselines(global, args, &ledger, &snapshot, &mut desired)?;
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
    let work_dir = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    let reach = Reach::new(&global.reach, &exe, &work_dir, false, None);
    let pool = global.reach.thread_pool()?;
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
                    let actual = reach.inspect(&host);
                    let found = actual.map(|a| drift(&host, &a)).map_err(|e| e.message);
                    (host.server.clone(), host.client.clone(), found)
                }
            })
            .collect()
    });
    let findings: Vec<&Finding> = per_host
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok())
        .flatten()
        .collect();
    let errors: Vec<(&str, &str)> = per_host
        .iter()
        .filter_map(|(s, _, r)| r.as_ref().err().map(|e| (s.as_str(), e.as_str())))
        .collect();
    match global.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({
            "commit": snapshot.commit().map(|c| c.to_string()),
            "findings": findings,
            "errors": errors.iter().map(|(s, e)| serde_json::json!({"server": s, "error": e})).collect::<Vec<_>>(),
        })).expect("serializes")),
        Output::Text => print!("{}", text(&snapshot.describe(), &per_host)),
        Output::Markdown => print!("{}", markdown(&snapshot.describe(), &findings)),
    }
    let record = RunRecord {
        format: RUN_FORMAT.to_string(),
        message: None,
        id: run_id,
        commit: snapshot.commit().map(|c| c.to_string()).unwrap_or_default(),
        branch: None,
        started_at,
        finished_at: crate::agent::now_rfc3339(),
        trigger: args.context.trigger(),
        mode: RunMode::Drift,
        outcome: if !errors.is_empty() {
            RunOutcome::Failed
        } else if findings.is_empty() {
            RunOutcome::NoChanges
        } else {
            RunOutcome::DriftFound
        },
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
        rollout: Default::default(),
        kind: Default::default(),
    };
    let stored: Vec<DriftFinding> = findings
        .iter()
        .map(|f| DriftFinding {
            server: f.server.clone(),
            client: f.client.clone(),
            deployment: f.deployment.clone(),
            kind: f.kind.as_str().to_string(),
            detail: f.detail.clone(),
        })
        .collect();
    ledger.record_drift(&record, &stored)?;
    // The notes hold drift runs too, so `history rebuild` restores them with their findings.
    if !record.commit.is_empty() {
        crate::ledger::notes::write_drift(&global.repo, &record.commit, &record, &stored)?;
    }
    if !args.context.watch {
        // The watch loop notifies from its own reading of the record.
        crate::notify::deliver_now(&inventory.settings.notify, &record, stored.len());
    }
    if !errors.is_empty() && !args.allow_unreachable {
        return Ok(Exit::Failed);
    }
    Ok(if findings.is_empty() {
        Exit::Ok
    } else {
        Exit::Changes
    })
}

/// Replaces the desired state of every host whose last settled commit (the newest apply it
/// converged in) is not `snapshot`'s with the desired state at that commit: a host that rolled
/// back, or was not attempted, is judged by what it runs, not by the commit that failed.
fn judge_by_baselines(
    global: &GlobalArgs,
    args: &DriftArgs,
    ledger: &crate::ledger::Ledger,
    snapshot: &source::Snapshot,
    desired: &mut [Result<crate::desired::DesiredHost, Vec<crate::desired::DesiredError>>],
) -> Result<(), CliError> {
    let baselines = ledger.host_baselines(args.context.branch.as_deref())?;
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
        let Ok(then) = source::read(&global.repo, &ReadMode::Commit(commit.to_string())) else {
            eprintln!(
                "note: the commit {commit} some hosts last converged on is not in the repository any more; they are compared with {}",
                snapshot.describe()
            );
            continue;
        };
        let Computed { desired: at, .. } =
            compute(global, &then, args.age_identity.as_deref(), None)?;
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

/// Per host: server, client, and its findings or why it could not be inspected.
type HostFindings = (String, String, Result<Vec<Finding>, String>);

fn text(source: &str, per_host: &[HostFindings]) -> String {
    let mut out = format!("Drift report for {source}\n");
    let mut by_client: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (server, client, r) in per_host {
        let _ = writeln!(out);
        match r {
            Err(e) => {
                let _ = writeln!(out, "host {server}: UNREACHABLE: {e}");
            }
            Ok(f) if f.is_empty() => {
                let _ = writeln!(out, "host {server} ({client}): no drift");
                by_client.entry(client).or_default().0 += 1;
            }
            Ok(f) => {
                let _ = writeln!(
                    out,
                    "host {server} ({client}): {} finding{}",
                    f.len(),
                    if f.len() == 1 { "" } else { "s" }
                );
                for x in f {
                    let _ = writeln!(
                        out,
                        "  ! {} [{}] {}",
                        x.deployment,
                        x.kind.as_str(),
                        x.detail
                    );
                }
                let e = by_client.entry(client).or_default();
                e.0 += 1;
                e.1 += 1;
            }
        }
    }
    let _ = writeln!(out);
    for (client, (hosts, drifted)) in by_client {
        let _ = writeln!(
            out,
            "client {client}: {drifted} of {hosts} host{} drifted",
            if hosts == 1 { "" } else { "s" }
        );
    }
    out
}

fn markdown(source: &str, findings: &[&Finding]) -> String {
    let mut out = format!("### Clarity drift report for {source}\n\n");
    if findings.is_empty() {
        out.push_str("No drift.\n");
        return out;
    }
    out.push_str("| host | client | deployment | kind | detail |\n|---|---|---|---|---|\n");
    for f in findings {
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | {} | {} |",
            f.server,
            f.client,
            f.deployment,
            f.kind.as_str(),
            f.detail.replace('|', "\\|")
        );
    }
    out
}
