//! The reconcile commands `plan` and `apply` (and the bare form without a subcommand, their
//! alias): their options, the plan and results they print, and their exit code. The run itself (compute, inspect, plan, apply, record) is `crate::apply`'s.

use super::reach::{Reach, ReachArgs};
use super::{
    CliError, CliResult, Exit, GlobalArgs, IdentityArgs, Output, SelectionArgs, StateArgs,
};
use crate::apply::{fleet, prepare, reconcile};
use crate::model::run::RunOutcome;
use crate::plan;
use crate::source::{self, ReadMode};
use clap::Args;

/// Which hosts and deployments a plan or an apply is about, and how they are reached.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Only this deployment (artifact id); the others on the selected hosts are left alone.
    #[arg(long, value_name = "ARTIFACT")]
    pub deployment: Option<String>,
    /// Also remove deployments that are on a host but no longer in the repository.
    #[arg(long)]
    pub prune: bool,
    /// An unreachable host is reported but does not make the run fail (a plan exits 2 for it:
    /// it may have changes pending).
    #[arg(long)]
    pub allow_unreachable: bool,
    /// Also list which deployments changed between this revision and REV.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Plan without contacting any host, as if every host were empty (for pull-request CI
    /// without access to the fleet).
    #[arg(long)]
    pub assume_empty_hosts: bool,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub reach: ReachArgs,
}

impl TargetArgs {
    /// These options, with the selection and reach given before the subcommand where these
    /// say nothing (`clarity-reconcile --profile mock plan`).
    pub(super) fn or(mut self, before: &TargetArgs) -> TargetArgs {
        self.selection = self.selection.or(&before.selection);
        self.reach = self.reach.or(&before.reach);
        self
    }
}

/// What only applying needs.
#[derive(Debug, Clone, Args)]
pub struct ApplyOptions {
    /// Seconds to wait for another reconciler's lock on a host.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// Prune each host's artifact cache to this many bytes after applying (least recently used
    /// first).
    #[arg(long, value_name = "BYTES")]
    pub max_cache: Option<u64>,
    /// Apply even where the promotion gate (`promotion` in clarity.yml) would refuse; the run
    /// records that the gate was skipped.
    #[arg(long)]
    pub skip_promotion_gate: bool,
    /// After applying, push the `refs/notes/clarity` notes to the config repository's `origin`.
    #[arg(long)]
    pub push_notes: bool,
}

impl ApplyOptions {
    /// The fleet apply's options from these and the run's target options.
    pub(super) fn fleet_options(&self, target: &TargetArgs) -> fleet::Options {
        fleet::Options {
            lock_timeout_s: self.lock_timeout,
            max_cache_bytes: self.max_cache,
            skip_promotion_gate: self.skip_promotion_gate,
            allow_unreachable: target.allow_unreachable,
            prune: target.prune,
            ..Default::default()
        }
    }
}

/// Show what applying would change: compute what every selected server should run, compare it
/// with what runs, and print the plan; change nothing (`--dry-run` without a subcommand). Exit
/// 0 nothing to do, 2 changes pending (or, with --allow-unreachable, a host that could not be
/// inspected), 1 error.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Compute what every selected server should run, compare it with what runs, print the plan
/// and apply the difference (also what runs without a subcommand). Exit 0 converged or nothing
/// to do, 1 error or a host that failed or rolled back, 4 the rollout paused after a healthy
/// canary (`rollout.pause_after_canary`; continue with `resume RUN`).
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub apply: ApplyOptions,
}

/// Without a subcommand: `apply`, `plan` with `--dry-run`, `watch` with `--watch`.
#[derive(Debug, Clone, Args)]
pub struct BareArgs {
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    /// Only print the plan; change nothing (as `plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Run as a service (as `watch`; see `watch --help`).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub watch_args: super::watch::WatchArgs,
}

/// Who started a run: `cli:<user>@<host>`.
pub(super) fn cli_trigger() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("cli:{user}@{machine}")
}

/// Plans, and applies unless `apply` is `None` (a plan only).
pub fn run(global: &GlobalArgs, target: &TargetArgs, apply: Option<&ApplyOptions>) -> CliResult {
    run_resuming(global, target, apply, None)
}

/// `run`, continuing the paused rollout `resume` (its waiting hosts only) when given.
pub(super) fn run_resuming(
    global: &GlobalArgs,
    args: &TargetArgs,
    apply: Option<&ApplyOptions>,
    resume: Option<&super::resume::Plan>,
) -> CliResult {
    let dry_run = apply.is_none();
    // Applying always means one commit; a dry-run while editing may include uncommitted work
    // (and says so in its header).
    let mode = match (&global.rev, dry_run) {
        (Some(rev), _) => ReadMode::Commit(rev.clone()),
        (None, true) => ReadMode::WorkingTree,
        (None, false) => ReadMode::Commit("HEAD".into()),
    };
    let snapshot = source::read(&global.repo, &mode)?;
    if !dry_run && let source::Origin::Commit { .. } = snapshot.origin {
        let changed = source::uncommitted_changes(&global.repo).unwrap_or_default();
        if !changed.is_empty() {
            tracing::warn!(
                "{} uncommitted change{} in the config repository {} not applied (apply uses {})",
                changed.len(),
                if changed.len() == 1 { "" } else { "s" },
                if changed.len() == 1 { "is" } else { "are" },
                snapshot.describe()
            );
        }
    }
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    let mut inputs = global.inputs(
        &args.selection,
        args.identity.age_identity.as_deref(),
        args.deployment.as_deref(),
    );
    inputs.resuming = resume.map(|r| r.resuming.clone());
    let work_dir = std::path::absolute(&args.state.work_dir).unwrap_or(args.state.work_dir.clone());
    // Only a plan against empty hosts is the same whenever its inputs are: one that inspects
    // hosts depends on what they run.
    let cache = (dry_run && args.assume_empty_hosts)
        .then(|| crate::plan_cache::PlanCache::open(&work_dir, &snapshot.root))
        .flatten();
    let computed = prepare::compute_reusing(&snapshot, &inputs, cache)?;
    if computed.desired.is_empty() {
        tracing::info!("no deployment targets the selected servers");
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
    let reach = Reach::new(
        &args.reach,
        &exe,
        &work_dir,
        args.assume_empty_hosts,
        args.deployment.as_deref(),
    );
    let pool = args.reach.thread_pool()?;
    let mut planned = prepare::plan(&reach, &pool, snapshot, computed, args.prune, !dry_run);
    if let Some(base) = &args.base {
        let comparison =
            prepare::changed_since(&global.repo, base, &planned.snapshot, &planned.inventory)?;
        planned.plan.changed_since_base = Some(comparison);
    }
    let plan = &planned.plan;
    let colour = global.color.stdout();
    match global.output {
        Output::Text => print!("{}", plan::render_text(plan, colour)),
        Output::Json => print!("{}", plan::render_json(plan)),
        Output::Markdown => print!("{}", plan::render_markdown(plan)),
    }
    let s = &plan.summary;
    let unreachable_fails = s.hosts_unreachable > 0 && !args.allow_unreachable;
    if unreachable_fails {
        let (n, are) = if s.hosts_unreachable == 1 {
            ("", "is")
        } else {
            ("s", "are")
        };
        if dry_run {
            tracing::error!(
                "{}",
                unreachable_in_dry_run(s.hosts_unreachable, plan.hosts.len())
            );
        } else {
            tracing::error!(
                "{} host{n} {are} unreachable; the others are applied, and the run fails (pass --allow-unreachable to not count unreachable hosts as failures)",
                s.hosts_unreachable
            );
        }
    }
    let Some(apply) = apply else {
        if s.hosts_failed > 0 || unreachable_fails {
            return Ok(Exit::Failed);
        }
        // A host that could not be inspected may have changes pending: never "nothing to do".
        if s.hosts_unreachable > 0 {
            let (n, were) = if s.hosts_unreachable == 1 {
                ("", "was")
            } else {
                ("s", "were")
            };
            tracing::info!(
                "{} host{n} {were} not inspected (unreachable) and may have changes pending; exit 2",
                s.hosts_unreachable
            );
        }
        return Ok(if s.hosts_to_change > 0 || s.hosts_unreachable > 0 {
            Exit::Changes
        } else {
            Exit::Ok
        });
    };
    // A repository that cannot be computed for a host is applied nowhere. A host that cannot
    // be reached or inspected is that host's problem only: it is reported with the results and
    // fails the run, and the others are applied.
    let Some(desired) = planned.applicable() else {
        return Err(CliError::new(
            "nothing was applied: the config repository has errors for some hosts",
        )
        .hint("fix the errors above, or narrow the run with --server/--client/--profile"));
    };
    let Some(commit) = planned.snapshot.commit().map(|c| c.to_string()) else {
        return Err(CliError::new("nothing was applied: applying needs a commit, and the config repository is not a git repository")
            .hint("run `git init` and commit the config repository; `--dry-run` works on plain directories"));
    };
    let (started_at, id) = crate::clock::run_started();
    let _run = tracing::info_span!("run", run_id = %id).entered();
    crate::apply::stop_on_signals()
        .map_err(|e| CliError::new(format!("cannot handle SIGTERM: {e}")))?;
    let ledger_path = args.state.ledger_path();
    let mut ledger = crate::ledger::Ledger::open(&ledger_path)?;
    let progress = super::progress::Progress::new();
    let run = reconcile::apply(
        &fleet::Reach {
            hosts: &reach,
            pool: &pool,
            observer: &progress,
        },
        &mut ledger,
        &planned,
        &desired,
        &commit,
        &apply.fleet_options(args),
        reconcile::Start {
            id,
            started_at,
            branch: match resume {
                Some(r) => r.branch.clone(),
                None => source::branch_of(&global.repo, global.rev.as_deref()),
            },
            trigger: cli_trigger(),
        },
        &reconcile::Recording {
            repo: &global.repo,
            push_notes: apply.push_notes,
            notify: true,
        },
    );
    progress.finish();
    let run = run?;
    println!();
    print!("{}", super::summary::table(&run, colour));
    println!("recorded run {} (history show {})", run.id, run.id);
    Ok(match run.outcome {
        RunOutcome::Failed => Exit::Failed,
        RunOutcome::AwaitingApproval => {
            super::resume::say_paused(&run);
            Exit::Paused
        }
        _ => Exit::Ok,
    })
}

/// The error of a dry-run that could not inspect some hosts. The others were planned (their
/// plan is printed above), so the hint says what `--allow-unreachable` changes: the exit code.
fn unreachable_in_dry_run(unreachable: usize, hosts: usize) -> String {
    let (n, are) = if unreachable == 1 {
        ("", "is")
    } else {
        ("s", "are")
    };
    let others = hosts.saturating_sub(unreachable);
    let above = match others {
        0 => String::new(),
        1 => "; the plan of the other host is above".to_string(),
        _ => format!("; the plan of the other {others} hosts is above"),
    };
    format!(
        "{unreachable} host{n} {are} unreachable{above} (pass --allow-unreachable to not fail the run for an unreachable host)"
    )
}
