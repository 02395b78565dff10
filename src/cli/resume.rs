//! `clarity-reconcile resume RUN`: continue a rollout that paused after its canary
//! (`rollout.pause_after_canary`). The paused run's recorded commit is applied again to the
//! hosts that wait, and only to them: they are inspected and planned anew (a host may have
//! moved since), the canary is not redone and the rollout does not pause again. The resuming
//! run is an ordinary recorded run whose `resumes` names the paused one; its trigger and start
//! say who resumed it and when. This module decides what to resume; the reconcile command
//! applies it. It never touches a host that did not wait.

use super::reach::ReachArgs;
use super::reconcile::{ApplyOptions, TargetArgs};
use super::{CliError, CliResult, GlobalArgs, IdentityArgs, SelectionArgs, StateArgs};
use crate::apply::prepare::Resuming;
use crate::ledger::Ledger;
use crate::model::run::{BatchState, RunOutcome, RunRecord};
use clap::Args;

/// Continue a rollout that paused after a healthy canary: apply the paused run's commit to
/// the hosts that wait (re-planned; the canary is not redone), and record who resumed it.
/// Exit codes as for reconcile.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The paused run's id (a unique prefix is enough), as the apply printed it.
    #[arg(value_name = "RUN")]
    pub run: String,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Seconds to wait for another reconciler's lock on a host.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// An unreachable host is reported but does not make the run fail.
    #[arg(long)]
    pub allow_unreachable: bool,
    /// After applying, push the `refs/notes/clarity` notes to the config repository's `origin`.
    #[arg(long)]
    pub push_notes: bool,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// What resuming a paused run applies: its commit and branch, the waiting hosts, and the
/// profiles and (when only one) deployment of the units that paused.
pub(super) struct Plan {
    pub commit: String,
    pub branch: Option<String>,
    pub resuming: Resuming,
    pub profiles: Vec<String>,
    pub deployment: Option<String>,
}

/// Checks that `id` (or a unique prefix) is a paused run nobody resumed or overtook, and says
/// what resuming it applies.
pub(super) fn plan(ledger: &Ledger, id: &str) -> Result<Plan, CliError> {
    let ids = ledger.run_ids_with_prefix(id)?;
    let id = match ids.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(CliError::new(format!("no run `{id}` in the ledger"))
                .hint("`clarity-reconcile history list` shows the runs; pass --ledger if it lives elsewhere"));
        }
        many => {
            return Err(CliError::new(format!(
                "`{id}` names {} runs; give more of the id",
                many.len()
            )));
        }
    };
    let Some(run) = ledger.run(&id)? else {
        return Err(CliError::new(format!("no run `{id}` in the ledger")));
    };
    if run.outcome != RunOutcome::AwaitingApproval {
        return Err(CliError::new(format!(
            "run {id} is not paused: it ended `{}`",
            serde_json::to_value(run.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ))
        .hint("only a run that paused after its canary (exit 4, outcome awaiting_approval) can be resumed"));
    }
    if let Some(r) = &run.rollout.resumed {
        return Err(CliError::new(format!(
            "run {id} was resumed already, by {} at {}, as run {}",
            r.by, r.at, r.run
        ))
        .hint(format!(
            "`clarity-reconcile history show {}` shows what it did",
            r.run
        )));
    }
    let hosts = run.rollout.waiting_hosts();
    if let Some((newer, host)) = ledger.superseding_run(&id, &hosts)? {
        return Err(CliError::new(format!(
            "run {id} was overtaken: the newer run {newer} applied waiting host `{host}` since, so resuming the older commit would move it backwards"
        ))
        .hint("apply the branch's current commit instead (its own canary runs first)"));
    }
    Ok(Plan {
        commit: run.commit.clone(),
        branch: run.branch.clone(),
        profiles: waiting_units(&run).map(|(_, _, p)| p.to_string()).collect(),
        deployment: {
            let mut names: Vec<&str> = waiting_units(&run).map(|(_, d, _)| d).collect();
            names.dedup();
            match names.as_slice() {
                [one] => Some(one.to_string()),
                _ => None,
            }
        },
        resuming: Resuming { run: id, hosts },
    })
}

/// `(client, deployment, profile)` of each unit that paused, sorted, each once.
fn waiting_units(run: &RunRecord) -> impl Iterator<Item = (&str, &str, &str)> {
    let mut units: Vec<(&str, &str, &str)> = run
        .rollout
        .batches
        .iter()
        .filter(|b| b.state == BatchState::AwaitingApproval)
        .filter_map(|b| {
            let mut parts = b.unit.splitn(3, '/');
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect();
    units.sort();
    units.dedup();
    units.into_iter()
}

pub fn run(global: &GlobalArgs, args: &ResumeArgs) -> CliResult {
    let ledger_path = args.state.ledger_path();
    let plan = plan(&Ledger::open_existing(&ledger_path)?, &args.run)?;
    println!(
        "resuming run {} at commit {}: {} waiting host{} ({})",
        plan.resuming.run,
        &plan.commit[..plan.commit.len().min(12)],
        plan.resuming.hosts.len(),
        if plan.resuming.hosts.len() == 1 {
            ""
        } else {
            "s"
        },
        plan.resuming.hosts.join(", ")
    );
    let apply_global = GlobalArgs {
        rev: Some(plan.commit.clone()),
        ..global.clone()
    };
    let target = TargetArgs {
        selection: SelectionArgs {
            profile: Some(plan.profiles.join(",")),
            server: None,
            ..args.selection.clone()
        },
        deployment: plan.deployment.clone(),
        prune: false,
        allow_unreachable: args.allow_unreachable,
        base: None,
        assume_empty_hosts: false,
        state: args.state.clone(),
        identity: args.identity.clone(),
        reach: args.reach.clone(),
    };
    let apply = ApplyOptions {
        lock_timeout: args.lock_timeout,
        max_cache: None,
        // The canary of this very commit passed the gate when the paused run began.
        skip_promotion_gate: false,
        push_notes: args.push_notes,
    };
    super::reconcile::run_resuming(&apply_global, &target, Some(&apply), Some(&plan))
}

/// Tells the operator that the rollout paused, who waits, and how it goes on.
pub(super) fn say_paused(run: &RunRecord) {
    let waiting = run.rollout.waiting_hosts();
    println!(
        "paused: the canary is healthy; {} host{} wait{} for approval: {}",
        waiting.len(),
        if waiting.len() == 1 { "" } else { "s" },
        if waiting.len() == 1 { "s" } else { "" },
        waiting.join(", ")
    );
    println!("continue with: clarity-reconcile resume {}", run.id);
    if let Some(deadline) = &run.rollout.pause_deadline {
        println!(
            "(a watch loop on this ledger resumes it by itself after {deadline}; this one-shot run does not wait)"
        );
    }
}
