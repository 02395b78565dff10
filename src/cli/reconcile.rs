//! The reconcile command itself (no subcommand): read the repository at a commit, compute every
//! selected host's desired state, inspect what runs, and print the plan (`--dry-run`).

use super::reach::Reach;
use super::{CliError, CliResult, Exit, GlobalArgs, Output};
use crate::desired::{self, Context, DesiredHost, InventorySecrets, Selection, Templates};
use crate::model::host::ActualHost;
use crate::plan::{self, HostPlan, HostStatus, Plan};
use crate::source::{self, ReadMode};
use clap::Args;
use rayon::prelude::*;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Reconcile: compute what every selected server should run, compare it with what runs, and
/// show (`--dry-run`) or apply the difference. Exit 0 converged or nothing to do, 1 error or a
/// host that failed or rolled back, 2 changes pending (`--dry-run`).
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// Only this deployment (artifact id); the others on the selected hosts are left alone.
    #[arg(long, value_name = "ARTIFACT")]
    pub deployment: Option<String>,
    /// Only print the plan; change nothing. Exit 0 nothing to do, 2 changes pending, 1 error.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove deployments that are on a host but no longer in the repository.
    #[arg(long)]
    pub prune: bool,
    /// An unreachable host is reported but does not make the run fail.
    #[arg(long)]
    pub allow_unreachable: bool,
    /// Also list which deployments changed between this revision and REV.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Plan without contacting any host, as if every host were empty (for pull-request CI
    /// without access to the fleet).
    #[arg(long)]
    pub assume_empty_hosts: bool,
    /// The reconciler's working directory; `local` sandboxes live below it.
    #[arg(
        long,
        env = "CLARITY_WORK_DIR",
        default_value = ".clarity",
        value_name = "DIR"
    )]
    pub work_dir: PathBuf,
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
    /// The run ledger (SQLite); default `<work-dir>/ledger.sqlite` or `$CLARITY_STATE_DIR`.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// After applying, push the `refs/notes/clarity` notes to the config repository's `origin`.
    #[arg(long)]
    pub push_notes: bool,
    /// age identity file for decrypting secrets (default: $CLARITY_AGE_IDENTITY, else the
    /// service's `age-identity` systemd credential). Without one,
    /// plans show secrets as unknown.
    #[arg(long, value_name = "FILE")]
    pub age_identity: Option<PathBuf>,
    #[arg(skip)]
    pub context: RunContext,
}

/// How the watch loop starts a run in-process (not command-line options).
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// The followed branch the commit came from, recorded with the run.
    pub branch: Option<String>,
    /// What started the run (`watch`, `watch:api`, `watch:heal`); default `cli:<user>@<host>`.
    pub trigger: Option<String>,
    /// The run's start time and id, chosen by the caller so it can read the record back.
    pub run: Option<(String, String)>,
    /// The caller handles SIGTERM itself (the watch loop).
    pub signals_handled: bool,
}

impl RunContext {
    pub(super) fn started(&self) -> (String, String) {
        self.run.clone().unwrap_or_else(crate::agent::run_started)
    }

    pub(super) fn trigger(&self) -> String {
        self.trigger.clone().unwrap_or_else(|| {
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            format!("cli:{user}@{machine}")
        })
    }

    pub(super) fn branch(&self, global: &GlobalArgs) -> Option<String> {
        self.branch
            .clone()
            .or_else(|| source::branch_of(&global.repo, global.rev.as_deref()))
    }
}

pub fn run(global: &GlobalArgs, args: &ReconcileArgs) -> CliResult {
    // Applying always means one commit; a dry-run while editing may include uncommitted work
    // (and says so in its header).
    let mode = match (&global.rev, args.dry_run) {
        (Some(rev), _) => ReadMode::Commit(rev.clone()),
        (None, true) => ReadMode::WorkingTree,
        (None, false) => ReadMode::Commit("HEAD".into()),
    };
    let snapshot = source::read(&global.repo, &mode)?;
    if !args.dry_run
        && let source::Origin::Commit { .. } = snapshot.origin
    {
        let changed = source::uncommitted_changes(&global.repo).unwrap_or_default();
        if !changed.is_empty() {
            eprintln!(
                "warning: {} uncommitted change{} in the config repository {} not applied (apply uses {})",
                changed.len(),
                if changed.len() == 1 { "" } else { "s" },
                if changed.len() == 1 { "is" } else { "are" },
                snapshot.describe()
            );
        }
    }
    for w in &snapshot.warnings {
        eprintln!("warning: {w}");
    }
    let Computed { inventory, desired } = compute(
        global,
        &snapshot,
        args.age_identity.as_deref(),
        args.deployment.as_deref(),
    )?;
    let inv = &inventory;
    if desired.is_empty() {
        eprintln!("note: no deployment targets the selected servers");
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
    let work_dir = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    let reach = Reach::new(
        &global.reach,
        &exe,
        &work_dir,
        args.assume_empty_hosts,
        args.deployment.as_deref(),
    );
    let pool = global.reach.thread_pool()?;
    let planned: Vec<(Option<DesiredHost>, HostPlan)> = pool.install(|| {
        desired
            .into_par_iter()
            .map(|d| match d {
                Err(errors) => (None, failed_host(&errors)),
                Ok(host) => {
                    let plan = plan_host(&reach, &host, args.prune);
                    // Only hosts with changes talk to their agent again in this run.
                    if args.dry_run || plan.status != HostStatus::Changes {
                        reach.release(&host.server);
                    }
                    (Some(host), plan)
                }
            })
            .collect()
    });
    let (desired, hosts): (Vec<_>, Vec<_>) = planned.into_iter().unzip();
    let mut plan = Plan::new(
        snapshot.describe(),
        snapshot.commit().map(|c| c.to_string()),
        hosts,
    );
    if let Some(base) = &args.base {
        plan.changed_since_base = Some(changed_since(global, base, &snapshot, inv)?);
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match global.output {
        Output::Text => print!("{}", plan::render_text(&plan, colour)),
        Output::Json => print!("{}", plan::render_json(&plan)),
        Output::Markdown => print!("{}", plan::render_markdown(&plan)),
    }
    let s = &plan.summary;
    let unreachable_fails = s.hosts_unreachable > 0 && !args.allow_unreachable;
    if unreachable_fails {
        let (n, are) = if s.hosts_unreachable == 1 {
            ("", "is")
        } else {
            ("s", "are")
        };
        if args.dry_run {
            eprintln!(
                "error: {} host{n} {are} unreachable (pass --allow-unreachable to plan the others anyway)",
                s.hosts_unreachable
            );
        } else {
            eprintln!(
                "error: {} host{n} {are} unreachable; the others are applied, and the run fails (pass --allow-unreachable to not count unreachable hosts as failures)",
                s.hosts_unreachable
            );
        }
    }
    if args.dry_run {
        if s.hosts_failed > 0 || unreachable_fails {
            return Ok(Exit::Failed);
        }
        // A host that could not be inspected may have changes pending: never "nothing to do".
        if s.hosts_unreachable > 0 {
            eprintln!(
                "note: {} host(s) could not be inspected; changes may be pending there (exit 2)",
                s.hosts_unreachable
            );
        }
        return Ok(if s.hosts_to_change > 0 || s.hosts_unreachable > 0 {
            Exit::Changes
        } else {
            Exit::Ok
        });
    }
    // A repository that cannot be computed for a host is applied nowhere. A host that cannot
    // be reached or inspected is that host's problem only: it is reported with the results and
    // fails the run, and the others are applied.
    if desired.iter().any(Option::is_none) {
        return Err(CliError::new(
            "nothing was applied: the config repository has errors for some hosts",
        )
        .hint("fix the errors above, or narrow the run with --server/--client/--profile"));
    }
    let Some(commit) = snapshot.commit() else {
        return Err(CliError::new("nothing was applied: applying needs a commit, and the config repository is not a git repository")
            .hint("run `git init` and commit the config repository; `--dry-run` works on plain directories"));
    };
    let (started_at, run_id) = args.context.started();
    if !args.context.signals_handled {
        crate::apply::stop_on_signals()
            .map_err(|e| CliError::new(format!("cannot handle SIGTERM: {e}")))?;
    }
    let ledger_path = crate::ledger::resolve_path(args.ledger.as_deref(), &args.work_dir);
    let mut ledger = crate::ledger::Ledger::open(&ledger_path)?;
    let gate = Gate {
        settings: &inv.settings,
        ledger: &ledger,
        skip: args.skip_promotion_gate,
    };
    let results = apply_hosts(&reach, &pool, args, &gate, &desired, &plan.hosts);
    for (client, deployment, profile) in pins_to_release(&ledger, &desired, &results) {
        if ledger.unpin(&client, &deployment, &profile)? {
            println!("released the emergency pin of {client}/{deployment}/{profile}");
        }
    }
    println!();
    println!("{:<28} {:<14} DETAIL", "HOST", "RESULT");
    let mut ok = true;
    for r in &results {
        ok &= matches!(r.outcome, "converged" | "unchanged" | "pinned")
            || (r.outcome == "unreachable" && args.allow_unreachable);
        println!("{:<28} {:<14} {}", r.host, r.outcome, r.detail);
    }
    let mut run = run_record(
        global,
        args,
        commit,
        (started_at, run_id),
        ok,
        &desired,
        &plan.hosts,
        results,
    );
    if args.skip_promotion_gate && !inv.settings.promotion.is_empty() {
        run.trigger.push_str(" (promotion gate skipped)");
    }
    record_run(global, args, &mut ledger, &run)?;
    println!("recorded run {} (history show {})", run.id, run.id);
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

/// The record of this apply run, for the ledger and the commit's git note.
#[allow(clippy::too_many_arguments)]
fn run_record(
    global: &GlobalArgs,
    args: &ReconcileArgs,
    commit: git2::Oid,
    (started_at, run_id): (String, String),
    ok: bool,
    desired: &[Option<DesiredHost>],
    plans: &[HostPlan],
    results: Vec<HostResult>,
) -> crate::model::run::RunRecord {
    use crate::model::apply::StepStatus;
    use crate::model::run::{
        DeploymentRecord, HostRecord, RUN_FORMAT, RunMode, RunOutcome, RunRecord,
    };
    let changed = results.iter().any(|r| r.outcome != "unchanged");
    let hosts = results
        .into_iter()
        .map(|r| {
            let d = desired.iter().flatten().find(|d| d.server == r.host);
            let plan = plans.iter().find(|p| p.server == r.host);
            let client = plan.map(|p| p.client.clone()).unwrap_or_default();
            // A deployment the plan changed is healthy when every step it ran succeeded; one
            // the plan left alone was already converged.
            let healthy = |name: &str| {
                let planned = plan.is_some_and(|p| {
                    p.deployments
                        .iter()
                        .any(|x| x.name == name && !x.steps.is_empty())
                });
                let ran: Vec<_> = r.steps.iter().filter(|s| s.deployment == name).collect();
                !planned || (!ran.is_empty() && ran.iter().all(|s| s.status == StepStatus::Ok))
            };
            let deployments = d
                .map(|d| {
                    d.deployments
                        .iter()
                        .map(|dep| DeploymentRecord {
                            name: dep.name.clone(),
                            profile: dep.profile.clone(),
                            version: dep.artifact.version.clone(),
                            release: dep.release.clone(),
                            healthy: healthy(&dep.name),
                        })
                        .collect()
                })
                .unwrap_or_default();
            HostRecord {
                server: r.host,
                client,
                outcome: r.outcome.to_lowercase().replace(' ', "_"),
                duration_ms: r.duration_ms,
                message: (!r.detail.is_empty()).then_some(r.detail),
                deployments,
                steps: r.steps,
            }
        })
        .collect();
    let finished_at = crate::agent::now_rfc3339();
    RunRecord {
        format: RUN_FORMAT.to_string(),
        message: None,
        id: run_id,
        commit: commit.to_string(),
        branch: args.context.branch(global),
        started_at,
        finished_at,
        trigger: args.context.trigger(),
        mode: RunMode::Apply,
        outcome: if !ok {
            RunOutcome::Failed
        } else if changed {
            RunOutcome::Success
        } else {
            RunOutcome::NoChanges
        },
        hosts,
    }
}

/// Writes the run to the ledger and as a note on its commit (and pushes the notes if asked).
fn record_run(
    global: &GlobalArgs,
    args: &ReconcileArgs,
    ledger: &mut crate::ledger::Ledger,
    run: &crate::model::run::RunRecord,
) -> Result<(), CliError> {
    ledger.record_run(run)?;
    crate::ledger::notes::write(&global.repo, &run.commit, run)?;
    if args.push_notes {
        crate::ledger::notes::push(&global.repo, "origin")?;
    }
    Ok(())
}

/// The inventory and every selected host's desired state at `snapshot`; stops with every
/// validation error when the repository has any.
pub(super) struct Computed {
    pub inventory: crate::load::Inventory,
    pub desired: Vec<Result<DesiredHost, Vec<desired::DesiredError>>>,
}

pub(super) fn compute(
    global: &GlobalArgs,
    snapshot: &source::Snapshot,
    age_identity: Option<&std::path::Path>,
    deployment: Option<&str>,
) -> Result<Computed, CliError> {
    let mut loaded = crate::load::load(snapshot);
    let operator_diags = global.operator_checks(&loaded.inventory);
    loaded.diagnostics.extend(operator_diags);
    let (templates, template_diags) = Templates::new(&loaded.inventory);
    if loaded.has_errors() || !template_diags.is_empty() {
        let mut all = loaded.diagnostics;
        all.extend(template_diags);
        let count = all.error_count();
        for d in all
            .sorted()
            .iter()
            .filter(|d| d.severity == crate::diag::Severity::Error)
        {
            eprintln!("{d}");
        }
        return Err(CliError::new(format!(
            "the config repository has {count} error{}; nothing was planned",
            if count == 1 { "" } else { "s" }
        ))
        .hint("fix them (`clarity-reconcile validate` lists them with file:line:column)"));
    }
    let inv = &loaded.inventory;
    let identities =
        crate::secret::identities_from(age_identity).map_err(|e| CliError::hinted(&e, e.hint()))?;
    let secrets = InventorySecrets::new(inv, identities);
    let ctx = Context {
        // Only what the operator allowed is visible to the repository at all.
        env: std::env::vars()
            .filter(|(k, _)| global.allow_env.contains(k))
            .collect(),
        allowed_env: global.allow_env.clone(),
        secrets: &secrets,
        lenient_env: false,
        config_root: Some(snapshot.root.clone()),
    };
    let selection = Selection {
        client: global.client.clone(),
        profile: global.profile.clone(),
        server: global.server.clone(),
        deployment: deployment.map(str::to_string),
    };
    let desired = desired::hosts(inv, &templates, &selection, &ctx);
    Ok(Computed {
        inventory: loaded.inventory,
        desired,
    })
}

/// The promotion gate: a version reaches a profile only after it ran healthy, for the same
/// client, on every host of the profile before it in `promotion`, for the soak time.
struct Gate<'a> {
    settings: &'a crate::model::Settings,
    ledger: &'a crate::ledger::Ledger,
    skip: bool,
}

impl Gate<'_> {
    fn check(
        &self,
        client: &str,
        deployment: &str,
        profile: &str,
        version: &str,
    ) -> Result<(), String> {
        let promotion = &self.settings.promotion;
        let Some(i) = promotion
            .iter()
            .position(|p| p == profile)
            .filter(|i| *i > 0)
        else {
            return Ok(());
        };
        let previous = &promotion[i - 1];
        let history = self
            .ledger
            .deployment_history(client, deployment, previous)
            .map_err(|e| format!("promotion gate: cannot read the ledger: {e}"))?;
        let runs: Vec<_> = history.iter().filter(|h| h.version == version).collect();
        let soak = u64::from(self.settings.promotion_soak_minutes) * 60;
        let now = crate::agent::now_secs();
        let healthy_since = runs
            .iter()
            .filter(|h| h.healthy_everywhere)
            .filter_map(|h| crate::agent::parse_rfc3339(&h.finished_at))
            .min();
        match (runs.first(), healthy_since) {
            (Some(latest), Some(since))
                if latest.healthy_everywhere && now.saturating_sub(since) >= soak =>
            {
                Ok(())
            }
            (Some(latest), Some(since)) if latest.healthy_everywhere => Err(format!(
                "promotion gate: {deployment} {version} has run healthy in {previous} for {} min, {} min are required",
                now.saturating_sub(since) / 60,
                soak / 60
            )),
            (Some(_), _) => Err(format!(
                "promotion gate: {deployment} {version} was not healthy on every {previous} host in its last run there"
            )),
            (None, _) => Err(format!(
                "promotion gate: {deployment} {version} has not been applied to {previous} for {client} yet"
            )),
        }
    }
}

fn failed_host(errors: &[desired::DesiredError]) -> HostPlan {
    HostPlan {
        server: errors.first().map(|e| e.server.clone()).unwrap_or_default(),
        client: String::new(),
        status: HostStatus::Failed,
        errors: errors
            .iter()
            .map(|e| {
                let line = e.line.map(|l| format!(":{l}")).unwrap_or_default();
                let hint = e
                    .hint
                    .as_ref()
                    .map(|h| format!(" (hint: {h})"))
                    .unwrap_or_default();
                format!("{}{line}: {}{hint}", e.file, e.message)
            })
            .collect(),
        deployments: Vec::new(),
        no_longer_desired: Vec::new(),
    }
}

/// Inspects one host and plans it.
fn plan_host(reach: &Reach, host: &DesiredHost, prune: bool) -> HostPlan {
    let actual = if reach.assume_empty {
        Ok(ActualHost::empty(crate::agent::AGENT_VERSION))
    } else {
        reach.inspect(host)
    };
    match actual {
        Ok(mut actual) => {
            if let Some(only) = reach.only {
                actual.deployments.retain(|name, _| name == only);
            }
            plan::host_plan(host, &actual, prune)
        }
        Err(e) => HostPlan {
            server: host.server.clone(),
            client: host.client.clone(),
            status: if e.unreachable {
                HostStatus::Unreachable
            } else {
                HostStatus::Failed
            },
            errors: vec![e.message],
            deployments: Vec::new(),
            no_longer_desired: Vec::new(),
        },
    }
}

struct HostResult {
    host: String,
    outcome: &'static str,
    detail: String,
    steps: Vec<crate::model::run::StepRecord>,
    duration_ms: u64,
}

/// What one agent call did.
struct AgentRun {
    outcome: &'static str,
    detail: String,
    steps: Vec<crate::model::run::StepRecord>,
    duration_ms: u64,
}

impl AgentRun {
    fn early(outcome: &'static str, detail: String) -> AgentRun {
        AgentRun {
            outcome,
            detail,
            steps: Vec::new(),
            duration_ms: 0,
        }
    }
}

/// How bad a host outcome is, to keep the worst of a host's rollout units.
fn severity(outcome: &str) -> u8 {
    match outcome {
        "unchanged" => 0,
        "converged" | "pinned" => 1,
        "not attempted" => 2,
        "unreachable" => 3,
        "failed" => 4,
        "rolled back" => 5,
        _ => 6,
    }
}

/// Applies every change, one rollout unit (a deployment file) at a time in dependency order,
/// batch by batch; hosts within a batch run in parallel and print each step as it finishes.
fn apply_hosts(
    reach: &Reach,
    pool: &rayon::ThreadPool,
    args: &ReconcileArgs,
    gate: &Gate,
    desired: &[Option<DesiredHost>],
    plans: &[HostPlan],
) -> Vec<HostResult> {
    use crate::apply::rollout::{self, Next, Unit};
    use std::collections::BTreeMap;
    let mut results: BTreeMap<String, HostResult> = BTreeMap::new();
    let mut hosts: BTreeMap<&str, &DesiredHost> = BTreeMap::new();
    let mut host_plans: BTreeMap<&str, &HostPlan> = BTreeMap::new();
    let mut units: BTreeMap<String, (Unit, Vec<(i32, String)>)> = BTreeMap::new();
    for (d, p) in desired.iter().zip(plans) {
        let outcome = match p.status {
            HostStatus::Unchanged => "unchanged",
            HostStatus::Changes => "converged",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Failed => "failed",
        };
        results.insert(
            p.server.clone(),
            HostResult {
                host: p.server.clone(),
                outcome,
                detail: p.errors.join("; "),
                steps: Vec::new(),
                duration_ms: 0,
            },
        );
        let Some(d) = d else { continue };
        hosts.insert(&d.server, d);
        host_plans.insert(&d.server, p);
        for dp in p
            .deployments
            .iter()
            .filter(|dp| !dp.steps.is_empty() && dp.change != crate::plan::Change::Delete)
        {
            let Some(dd) = d.deployments.iter().find(|x| x.name == dp.name) else {
                continue;
            };
            let key = format!("{}/{}/{}", d.client, dd.name, dd.profile);
            let entry = units.entry(key.clone()).or_insert_with(|| {
                (
                    Unit {
                        key,
                        client: d.client.clone(),
                        deployment: dd.name.clone(),
                        profile: dd.profile.clone(),
                        hosts: Vec::new(),
                        rollout: dd.rollout.clone(),
                        depends_on: dd.depends_on.clone(),
                    },
                    Vec::new(),
                )
            });
            entry.1.push((dd.priority, d.server.clone()));
        }
    }
    let units: Vec<Unit> = units
        .into_values()
        .map(|(mut u, mut hs)| {
            hs.sort();
            u.hosts = hs.into_iter().map(|(_, h)| h).collect();
            u
        })
        .collect();
    let mut halted: Option<String> = None;
    let record = |results: &mut BTreeMap<String, HostResult>, host: &str, run: AgentRun| {
        if let Some(r) = results.get_mut(host) {
            if severity(run.outcome) > severity(r.outcome) {
                r.outcome = run.outcome;
            }
            if !run.detail.is_empty() {
                if !r.detail.is_empty() {
                    r.detail.push_str("; ");
                }
                r.detail.push_str(&run.detail);
            }
            r.steps.extend(run.steps);
            r.duration_ms += run.duration_ms;
        }
    };
    for unit in rollout::order(units) {
        let version = unit
            .hosts
            .first()
            .and_then(|h| {
                hosts[h.as_str()]
                    .deployments
                    .iter()
                    .find(|d| d.name == unit.deployment)
            })
            .map(|d| d.artifact.version.clone())
            .unwrap_or_default();
        match gate
            .ledger
            .pinned(&unit.client, &unit.deployment, &unit.profile)
        {
            Ok(Some(pin)) if pin.version != version => {
                let why = format!(
                    "pinned at {} by an emergency rollback ({}); applying a commit that sets version {} releases it",
                    pin.version, pin.commit, pin.version
                );
                println!("{}: {why}", unit.key);
                for h in &unit.hosts {
                    record(&mut results, h, AgentRun::early("pinned", why.clone()));
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                for h in &unit.hosts {
                    record(
                        &mut results,
                        h,
                        AgentRun::early("failed", format!("cannot read pins: {e}")),
                    );
                }
                continue;
            }
        }
        if !gate.skip
            && let Err(why) = gate.check(&unit.client, &unit.deployment, &unit.profile, &version)
        {
            println!("{}: {why} (--skip-promotion-gate overrides)", unit.key);
            for h in &unit.hosts {
                record(&mut results, h, AgentRun::early("failed", why.clone()));
            }
            continue;
        }
        let mut failed = 0;
        for batch in unit.batches() {
            if halted.is_none() && crate::apply::stop_requested() {
                let why =
                    "the reconciler is stopping (SIGTERM); hosts in flight finished".to_string();
                println!("halt: {why}");
                halted = Some(why);
            }
            if let Some(why) = &halted {
                for h in &batch.hosts {
                    let detail = format!("{}: {why}", unit.deployment);
                    record(&mut results, h, AgentRun::early("not attempted", detail));
                }
                continue;
            }
            let outcomes: Vec<(String, AgentRun)> = pool.install(|| {
                batch
                    .hosts
                    .par_iter()
                    .map(|h| {
                        let run = run_agent(
                            reach,
                            args,
                            hosts[h.as_str()],
                            host_plans[h.as_str()],
                            crate::apply::Part::Deployment(&unit.deployment),
                        );
                        (h.clone(), run)
                    })
                    .collect()
            });
            let failed_here = outcomes
                .iter()
                .filter(|(_, r)| r.outcome != "converged")
                .count();
            for (h, run) in outcomes {
                record(&mut results, &h, run);
            }
            if let Next::Halt(why) = rollout::after_batch(&unit, &batch, failed_here, failed) {
                println!("halt: {why}");
                halted = Some(why);
            }
            failed += failed_here;
        }
    }
    for (server, p) in &host_plans {
        if p.deployments
            .iter()
            .any(|d| d.change == crate::plan::Change::Delete)
            && halted.is_none()
            && !crate::apply::stop_requested()
        {
            let run = run_agent(reach, args, hosts[server], p, crate::apply::Part::Removals);
            record(&mut results, server, run);
        }
    }
    results.into_values().collect()
}

/// Pins whose version this run brought from the repository and that every host of the
/// deployment now runs: the revert has been applied, so the pin has done its job.
fn pins_to_release(
    ledger: &crate::ledger::Ledger,
    desired: &[Option<DesiredHost>],
    results: &[HostResult],
) -> Vec<(String, String, String)> {
    use std::collections::BTreeMap;
    let mut deployments: BTreeMap<(String, String, String), (String, bool)> = BTreeMap::new();
    for d in desired.iter().flatten() {
        let ok = results
            .iter()
            .any(|r| r.host == d.server && matches!(r.outcome, "converged" | "unchanged"));
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

/// One agent call for one part of a host's plan; returns the host outcome and a detail.
fn run_agent(
    reach: &Reach,
    args: &ReconcileArgs,
    d: &DesiredHost,
    first_plan: &HostPlan,
    part: crate::apply::Part,
) -> AgentRun {
    use crate::model::apply::{AgentEvent, HostOutcome, StepStatus};
    let started = std::time::Instant::now();
    let mut plan = first_plan.clone();
    let mut steps = Vec::new();
    // An agent that finds an interrupted apply rolls it back and asks for a new plan: once.
    for attempt in 0..2 {
        let req = match crate::apply::request(d, &plan, part, args.max_cache) {
            Ok(r) => r,
            Err(e) => return AgentRun::early("failed", e),
        };
        if req.deployments.is_empty() && req.remove.is_empty() {
            return AgentRun::early("converged", String::new());
        }
        let mut failures = Vec::new();
        let outcome = reach.apply(d, &req, args.lock_timeout, &mut |event| match event {
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
                steps.push(crate::model::run::StepRecord {
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
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default();
                println!(
                    "{}: {deployment}: {} {target}: {mark}{msg}",
                    d.server,
                    action.verb()
                );
                if *status == StepStatus::Failed {
                    failures.push(format!(
                        "{deployment}: {} {target}: {}",
                        action.verb(),
                        message.clone().unwrap_or_default()
                    ));
                }
            }
            AgentEvent::Progress {
                deployment,
                downloaded,
                total,
            } => {
                if std::io::stderr().is_terminal() {
                    eprint!(
                        "\r{}: {deployment}: downloading {}",
                        d.server,
                        progress_bar(*downloaded, *total)
                    );
                }
            }
            AgentEvent::Rollback {
                deployment,
                restored,
                message,
            } => {
                println!("{}: {deployment}: rollback: {message}", d.server);
                if !restored {
                    failures.push(format!("{deployment}: {message}"));
                }
            }
            AgentEvent::Done {
                message: Some(m),
                outcome,
            } => {
                println!("{}: {m}", d.server);
                if *outcome == HostOutcome::Failed {
                    failures.push(m.clone());
                }
            }
            AgentEvent::Done { .. } => {}
        });
        let duration_ms = started.elapsed().as_millis() as u64;
        let (o, detail) = match outcome {
            Ok(HostOutcome::Converged) => {
                ("converged", format!("{:.1}s", duration_ms as f64 / 1000.0))
            }
            Ok(HostOutcome::Recovered) if attempt == 0 => {
                plan = plan_host(reach, d, args.prune);
                continue;
            }
            Ok(HostOutcome::RolledBack) => ("rolled back", failures.join("; ")),
            Ok(HostOutcome::RestoreFailed) => ("RESTORE FAILED", failures.join("; ")),
            Ok(HostOutcome::Failed | HostOutcome::Recovered) => ("failed", failures.join("; ")),
            Err(e) => (
                if e.unreachable {
                    "unreachable"
                } else {
                    "failed"
                },
                e.message,
            ),
        };
        return AgentRun {
            outcome: o,
            detail,
            steps,
            duration_ms,
        };
    }
    AgentRun::early(
        "failed",
        "the host kept reporting interrupted applies".into(),
    )
}

fn progress_bar(done: u64, total: Option<u64>) -> String {
    match total.filter(|t| *t > 0) {
        Some(t) => {
            let width = 30;
            let filled = ((done as f64 / t as f64) * width as f64).round() as usize;
            format!(
                "[{}{}] {:>3}%",
                "#".repeat(filled.min(width)),
                " ".repeat(width - filled.min(width)),
                done * 100 / t
            )
        }
        None => format!("{done} bytes"),
    }
}

/// Deployments whose inputs differ between `base` and the snapshot being planned: the
/// deployment file, its artifact and repository, the templates it renders and its client's
/// secrets for the profile. Deployments that exist only in `base` count as changed (removed).
fn changed_since(
    global: &GlobalArgs,
    base: &str,
    head: &source::Snapshot,
    inv: &crate::load::Inventory,
) -> Result<plan::BaseComparison, CliError> {
    let old = source::read(&global.repo, &ReadMode::Commit(base.to_string()))?;
    let differs = |path: &str| old.text(path) != head.text(path);
    let mut deployments = std::collections::BTreeSet::new();
    for (client, entry) in &inv.clients {
        for ((artifact, profile), doc) in &entry.deployments {
            let d = &doc.value;
            let repository = d
                .repository
                .clone()
                .or_else(|| {
                    inv.artifacts
                        .get(artifact)
                        .map(|a| a.value.repository.clone())
                })
                .unwrap_or_default();
            let mut inputs = vec![
                doc.file.clone(),
                format!("artifacts/{artifact}.yml"),
                format!("repositories/{repository}.yml"),
                format!("secrets/{client}/{profile}.yml"),
            ];
            inputs.extend(
                d.config_files
                    .iter()
                    .filter_map(|f| f.template.as_ref())
                    .map(|t| format!("templates/{t}")),
            );
            if inputs.iter().any(|p| differs(p)) {
                deployments.insert(format!("{client}/{artifact}/{profile}"));
            }
        }
    }
    for path in old.files.keys() {
        if let ["clients", client, "deployments", artifact, file] =
            path.split('/').collect::<Vec<_>>().as_slice()
            && !head.files.contains_key(path)
        {
            deployments.insert(format!(
                "{client}/{artifact}/{} (removed)",
                file.trim_end_matches(".yml")
            ));
        }
    }
    Ok(plan::BaseComparison {
        base: base.to_string(),
        deployments: deployments.into_iter().collect(),
    })
}
