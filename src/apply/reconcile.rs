//! A reconcile run after its plan: apply the planned fleet (`fleet::run`), release the pins it
//! made redundant, record what the hosts report (ledger and git note), and send the
//! notifications. The command line and the watch loop both end their runs here, so a run is
//! recorded and announced the same way whoever started it. Rendering and exit codes stay with
//! the caller; progress goes to the caller's observer.

use super::error::RunError;
use super::fleet::{self, Options, RunHeader};
use super::prepare::Planned;
use crate::desired::DesiredHost;
use crate::ledger::Ledger;
use crate::model::run::RunRecord;
use std::path::Path;

/// Where a run is recorded besides the ledger.
pub struct Recording<'a> {
    /// The config repository whose commit gets the run's note.
    pub repo: &'a Path,
    /// Push `refs/notes/clarity` to `origin` afterwards.
    pub push_notes: bool,
    /// Send the `notify:` webhooks now; the watch loop sends them from its own reading of the
    /// record instead (with retries in the background).
    pub notify: bool,
}

/// What the caller says about a run besides its plan: its id and start, its commit's branch
/// and what started it.
pub struct Start {
    pub id: String,
    pub started_at: String,
    pub branch: Option<String>,
    pub trigger: String,
}

/// Applies `planned` (every host of which could be computed: `desired`), records the run and
/// notifies. The run record is what the hosts reported, never what was asked for.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    reach: &fleet::Reach,
    ledger: &mut Ledger,
    planned: &Planned,
    desired: &[DesiredHost],
    commit: &str,
    options: &Options,
    start: Start,
    recording: &Recording,
) -> Result<RunRecord, RunError> {
    let settings = &planned.inventory.settings;
    let options = &Options {
        resume: planned.resuming.is_some(),
        ..options.clone()
    };
    let report = fleet::run(
        reach,
        ledger,
        settings,
        options,
        desired,
        &planned.plan.hosts,
    );
    for (client, deployment, profile) in fleet::pins_to_release(ledger, desired, &report) {
        if ledger.unpin(&client, &deployment, &profile)? {
            reach.observer.line(&format!(
                "released the emergency pin of {client}/{deployment}/{profile}"
            ));
        }
    }
    let mut trigger = start.trigger;
    if options.skip_promotion_gate && !settings.promotion.is_empty() {
        trigger.push_str(" (promotion gate skipped)");
    }
    let mut run = fleet::record(
        RunHeader {
            id: start.id,
            started_at: start.started_at,
            commit: commit.to_string(),
            branch: start.branch,
            trigger,
        },
        desired,
        &planned.plan.hosts,
        report,
        options.allow_unreachable,
    );
    run.rollout.resumes = planned.resuming.as_ref().map(|r| r.run.clone());
    ledger.record_run(&run)?;
    crate::ledger::notes::write(recording.repo, &run.commit, &run)?;
    if recording.push_notes {
        crate::ledger::notes::push(recording.repo, "origin")?;
    }
    if recording.notify {
        crate::notify::deliver_now(&settings.notify, &run, 0);
    }
    Ok(run)
}
