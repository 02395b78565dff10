//! `clarity-reconcile decommission`: take deployments off hosts on an operator's request, the
//! one way besides `--prune` that anything is removed. It inspects the selected servers, plans
//! the removal of what runs there (all of it, or `--deployment`), shows that plan first (and
//! only that with `--dry-run`), then has each host's agent remove it through the same removal
//! path `--prune` uses: services stopped and their definitions removed, releases removed, data
//! volumes kept unless `--purge-data`. The run is recorded in the ledger and the commit's note
//! as an apply run of kind `decommission`. It never touches a server it was not pointed at.

use super::reach::{Reach, ReachArgs};
use super::{CliError, CliResult, Exit, GlobalArgs, Output, SelectionArgs, StateArgs};
use crate::apply::Part;
use crate::apply::fleet::Hosts;
use crate::desired::{Context, DesiredHost, InventorySecrets, Selection, Templates};
use crate::model::apply::{AgentEvent, HostOutcome as AgentOutcome, StepStatus};
use crate::model::run::{
    HostOutcome, HostRecord, RUN_FORMAT, RunKind, RunMode, RunOutcome, RunRecord, StepRecord,
};
use crate::plan::{self, HostPlan, HostStatus, Plan};
use crate::source::{self, ReadMode};
use clap::Args;
use rayon::prelude::*;

/// Take deployments off servers: stop their services, remove their releases, keep their data
/// volumes (unless --purge-data). Needs --server, --client or --profile; shows the plan
/// first. Exit 0 done or nothing to remove, 1 error or a host that failed, 2 removals pending
/// (--dry-run).
#[derive(Debug, Args)]
pub struct DecommissionArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Only this deployment (artifact id); the others on the hosts stay.
    #[arg(long, value_name = "ARTIFACT")]
    pub deployment: Option<String>,
    /// Also remove the deployments' data volumes (their `shared/` directory).
    #[arg(long)]
    pub purge_data: bool,
    /// Only print what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for another reconciler's lock on a host.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// After recording, push the `refs/notes/clarity` notes to the config repository's `origin`.
    #[arg(long)]
    pub push_notes: bool,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub reach: ReachArgs,
}

pub fn run(global: &GlobalArgs, args: &DecommissionArgs) -> CliResult {
    if args.selection.server.is_none()
        && args.selection.client.is_none()
        && args.selection.profile.is_none()
    {
        return Err(
            CliError::new("decommission needs --server, --client or --profile")
                .hint("name what to take deployments off, e.g. `clarity-reconcile decommission --server web-3 --dry-run`"),
        );
    }
    let rev = global.rev.clone().unwrap_or_else(|| "HEAD".into());
    let snapshot = source::read(&global.repo, &ReadMode::Commit(rev))?;
    let loaded = crate::load::load(&snapshot);
    if loaded.has_errors() {
        for d in loaded
            .diagnostics
            .sorted()
            .iter()
            .filter(|d| d.severity == crate::diag::Severity::Error)
        {
            super::logging::diagnostic(d);
        }
        return Err(
            CliError::new("the config repository has errors; nothing was removed")
                .hint("fix them (`clarity-reconcile validate` lists them)"),
        );
    }
    let inv = &loaded.inventory;
    let (templates, _) = Templates::new(inv);
    // Reaching a host needs no secret and no environment: nothing is rendered or written.
    let secrets = InventorySecrets::new(inv, None);
    let ctx = Context {
        env: Default::default(),
        allowed_env: Vec::new(),
        secrets: &secrets,
        lenient_env: true,
        config_root: Some(snapshot.root.clone()),
    };
    let profiles = args.selection.profiles();
    let selection = Selection {
        client: args.selection.client.clone(),
        profiles: profiles.clone(),
        server: args.selection.server.clone(),
        deployment: None,
    };
    let mut hosts = Vec::new();
    for h in crate::desired::bare_hosts(inv, &templates, &selection, &ctx) {
        match h {
            Ok(h) => hosts.push(h),
            Err(errors) => {
                for e in &errors {
                    tracing::error!("{}: {}: {}", e.server, e.file, e.message);
                }
                return Err(CliError::new(
                    "some selected servers cannot be reached as configured; nothing was removed",
                ));
            }
        }
    }
    if hosts.is_empty() {
        return Err(
            CliError::new("no server of the repository matches the selection")
                .hint("check --server, --client and --profile against clients/*/servers/"),
        );
    }
    // With --profile, only what that profile deploys to the host is taken off it.
    let of_profiles = |h: &DesiredHost| -> Option<Vec<String>> {
        if profiles.is_empty() {
            return None;
        }
        let entry = inv.clients.get(&h.client)?;
        Some(
            entry
                .deployments
                .iter()
                .filter(|((_, p), d)| {
                    profiles.contains(p) && d.value.targets.iter().any(|t| t.server == h.server)
                })
                .map(|((a, _), _)| a.clone())
                .collect(),
        )
    };
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
    let work_dir = std::path::absolute(&args.state.work_dir).unwrap_or(args.state.work_dir.clone());
    let reach = Reach::new(&args.reach, &exe, &work_dir, false, None);
    let pool = args.reach.thread_pool()?;
    let plans: Vec<HostPlan> = pool.install(|| {
        hosts
            .par_iter()
            .map(|h| {
                let plan = match reach.inspect(h) {
                    Ok(mut actual) => {
                        let wanted = of_profiles(h);
                        actual.deployments.retain(|name, a| {
                            args.deployment.as_deref().is_none_or(|d| d == name)
                                && wanted.as_ref().is_none_or(|w| w.contains(name))
                                // What a decommission left behind is only data: it is
                                // removed on request, and otherwise nothing is left to do.
                                && (a.current_release.is_some() || args.purge_data)
                        });
                        plan::host_plan(h, &actual, true)
                    }
                    Err(e) => crate::apply::prepare::not_inspected(h, e),
                };
                if args.dry_run || plan.status != HostStatus::Changes {
                    reach.release(&h.server);
                }
                plan
            })
            .collect()
    });
    let commit = snapshot.commit().map(|c| c.to_string()).unwrap_or_default();
    let plan = Plan::new(snapshot.describe(), Some(commit.clone()), plans);
    match global.output {
        Output::Text => print!("{}", plan::render_text(&plan, false)),
        Output::Json => print!("{}", plan::render_json(&plan)),
        Output::Markdown => print!("{}", plan::render_markdown(&plan)),
    }
    let s = &plan.summary;
    if args.dry_run {
        if args.purge_data && s.hosts_to_change > 0 {
            println!("--purge-data: their data volumes would be removed too");
        }
        return Ok(if s.hosts_failed + s.hosts_unreachable > 0 {
            Exit::Failed
        } else if s.hosts_to_change > 0 {
            Exit::Changes
        } else {
            Exit::Ok
        });
    }
    if s.hosts_to_change == 0 && s.hosts_failed + s.hosts_unreachable == 0 {
        println!("nothing to take off the selected servers");
        return Ok(Exit::Ok);
    }
    let (started_at, run_id) = crate::clock::run_started();
    let records: Vec<HostRecord> = pool.install(|| {
        hosts
            .par_iter()
            .zip(&plan.hosts)
            .map(|(h, p)| remove_from(&reach, h, p, args))
            .collect()
    });
    println!();
    println!("{:<28} {:<14} DETAIL", "HOST", "RESULT");
    for r in &records {
        println!(
            "{:<28} {:<14} {}",
            r.server,
            r.outcome.label(),
            r.message.as_deref().unwrap_or("")
        );
    }
    let failed = records.iter().any(|r| !r.outcome.is_ok());
    let run = RunRecord {
        format: RUN_FORMAT.to_string(),
        id: run_id,
        commit,
        branch: None,
        started_at,
        finished_at: crate::clock::now_rfc3339(),
        trigger: super::reconcile::cli_trigger(),
        mode: RunMode::Apply,
        outcome: if failed {
            RunOutcome::Failed
        } else {
            RunOutcome::Success
        },
        message: Some(format!(
            "decommission{}{}",
            args.deployment
                .as_deref()
                .map(|d| format!(" of {d}"))
                .unwrap_or_default(),
            if args.purge_data {
                ", data volumes purged"
            } else {
                ", data volumes kept"
            }
        )),
        hosts: records,
        rollout: Default::default(),
        kind: RunKind::Decommission,
    };
    let ledger_path = args.state.ledger_path();
    let mut ledger = crate::ledger::Ledger::open(&ledger_path)?;
    ledger.record_run(&run)?;
    if !run.commit.is_empty() {
        crate::ledger::notes::write(&global.repo, &run.commit, &run)?;
        if args.push_notes {
            crate::ledger::notes::push(&global.repo, "origin")?;
        }
    }
    println!("recorded run {} (history show {})", run.id, run.id);
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

/// Has one host's agent remove what its plan takes off it.
fn remove_from(
    reach: &Reach,
    h: &DesiredHost,
    p: &HostPlan,
    args: &DecommissionArgs,
) -> HostRecord {
    let started = std::time::Instant::now();
    let record = |outcome, message: String, steps| HostRecord {
        server: h.server.clone(),
        client: h.client.clone(),
        outcome,
        duration_ms: started.elapsed().as_millis() as u64,
        message: (!message.is_empty()).then_some(message),
        deployments: Vec::new(),
        steps,
    };
    match p.status {
        HostStatus::Unchanged => return record(HostOutcome::Unchanged, String::new(), Vec::new()),
        HostStatus::Unreachable => {
            return record(HostOutcome::Unreachable, p.errors.join("; "), Vec::new());
        }
        HostStatus::Failed => return record(HostOutcome::Failed, p.errors.join("; "), Vec::new()),
        HostStatus::Changes => {}
    }
    let mut req = match crate::apply::request(h, p, Part::Removals, None) {
        Ok(r) => r,
        Err(e) => return record(HostOutcome::Failed, e, Vec::new()),
    };
    if args.purge_data {
        req.purge_data = req.remove.clone();
    }
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    let outcome = reach.apply(h, &req, args.lock_timeout, &mut |event| {
        if let AgentEvent::Step {
            deployment,
            action,
            target,
            status,
            message,
            duration_ms,
            ..
        } = event
        {
            let mark = match status {
                StepStatus::Ok => "ok",
                StepStatus::Failed => "FAILED",
                StepStatus::Skipped => "skipped",
            };
            println!(
                "{}: {deployment}: {} {target}: {mark}{}",
                h.server,
                action.verb(),
                message
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
            if *status == StepStatus::Failed {
                failures.push(format!(
                    "{deployment}: {}",
                    message.clone().unwrap_or_default()
                ));
            }
            steps.push(StepRecord {
                deployment: deployment.clone(),
                action: *action,
                target: target.clone(),
                status: *status,
                duration_ms: *duration_ms,
                message: message.clone(),
                bytes: None,
                repository_kind: None,
                retries: None,
            });
        }
    });
    reach.release(&h.server);
    match outcome {
        Ok(AgentOutcome::Converged) if failures.is_empty() => {
            let removed: Vec<&str> = req.remove.iter().map(String::as_str).collect();
            record(
                HostOutcome::Converged,
                format!("removed {}", removed.join(", ")),
                steps,
            )
        }
        Ok(_) => record(HostOutcome::Failed, failures.join("; "), steps),
        Err(e) => record(
            if e.unreachable {
                HostOutcome::Unreachable
            } else {
                HostOutcome::Failed
            },
            e.message,
            steps,
        ),
    }
}
