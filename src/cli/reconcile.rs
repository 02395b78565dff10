//! The reconcile command itself (no subcommand): read the repository at a commit, compute every
//! selected host's desired state, inspect what runs, and print the plan (`--dry-run`).

use super::reach::Reach;
use super::{CliError, CliResult, Exit, GlobalArgs, Output};
use crate::apply::fleet;
use crate::desired::{self, Context, DesiredHost, InventorySecrets, Selection, Templates};
use crate::model::host::ActualHost;
use crate::plan::{self, HostPlan, HostStatus, Plan};
use crate::plan_cache::{self, PlanCache, Reuse};
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
    /// Only print the plan; change nothing. Exit 0 nothing to do, 2 changes pending (or, with
    /// --allow-unreachable, a host that could not be inspected), 1 error.
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
    /// The watch loop runs it: the loop sends the notifications from its record of the run.
    pub watch: bool,
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
    let work_dir = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    // Only a plan against empty hosts is the same whenever its inputs are: one that inspects
    // hosts depends on what they run.
    let cache = (args.dry_run && args.assume_empty_hosts)
        .then(|| PlanCache::open(&work_dir, &snapshot.root))
        .flatten();
    let (Computed { inventory, desired }, reuse) = compute_reusing(
        global,
        &snapshot,
        args.age_identity.as_deref(),
        args.deployment.as_deref(),
        cache,
    )?;
    let inv = &inventory;
    if desired.is_empty() {
        eprintln!("note: no deployment targets the selected servers");
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
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
                    let mut plan = plan_host(&reach, &host, args.prune);
                    if let Some(reuse) = &reuse {
                        reuse.complete(&mut plan);
                    }
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
    if let Some(reuse) = reuse {
        reuse.finish(&plan.hosts);
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
            let (n, were) = if s.hosts_unreachable == 1 {
                ("", "was")
            } else {
                ("s", "were")
            };
            eprintln!(
                "note: {} host{n} {were} not inspected (unreachable) and may have changes pending; exit 2",
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
    let desired: Vec<DesiredHost> = desired.into_iter().flatten().collect();
    let options = fleet::Options {
        lock_timeout_s: args.lock_timeout,
        max_cache_bytes: args.max_cache,
        skip_promotion_gate: args.skip_promotion_gate,
        allow_unreachable: args.allow_unreachable,
    };
    let transports = Transports {
        reach: &reach,
        prune: args.prune,
    };
    let report = fleet::run(
        &fleet::Reach {
            hosts: &transports,
            pool: &pool,
            observer: &Printer,
        },
        &ledger,
        &inv.settings,
        &options,
        &desired,
        &plan.hosts,
    );
    for (client, deployment, profile) in fleet::pins_to_release(&ledger, &desired, &report) {
        if ledger.unpin(&client, &deployment, &profile)? {
            println!("released the emergency pin of {client}/{deployment}/{profile}");
        }
    }
    println!();
    println!("{:<28} {:<14} DETAIL", "HOST", "RESULT");
    for r in &report.hosts {
        println!("{:<28} {:<14} {}", r.host, r.outcome.label(), r.detail);
    }
    let ok = report.ok(args.allow_unreachable);
    let mut trigger = args.context.trigger();
    if args.skip_promotion_gate && !inv.settings.promotion.is_empty() {
        trigger.push_str(" (promotion gate skipped)");
    }
    let run = fleet::record(
        fleet::RunHeader {
            id: run_id,
            started_at,
            commit: commit.to_string(),
            branch: args.context.branch(global),
            trigger,
        },
        &desired,
        &plan.hosts,
        report,
        args.allow_unreachable,
    );
    record_run(global, args, &mut ledger, &run)?;
    println!("recorded run {} (history show {})", run.id, run.id);
    if !args.context.watch {
        // The watch loop notifies from its own record of the run; a one-shot run does here.
        crate::notify::deliver_now(&inv.settings.notify, &run, 0);
    }
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

/// The command line's transports for the fleet apply.
struct Transports<'a> {
    reach: &'a Reach<'a>,
    prune: bool,
}

impl fleet::Hosts for Transports<'_> {
    fn apply(
        &self,
        host: &DesiredHost,
        req: &crate::model::apply::ApplyRequest,
        lock_timeout_s: u64,
        on_event: &mut dyn FnMut(&crate::model::apply::AgentEvent),
    ) -> Result<crate::model::apply::HostOutcome, crate::transport::TransportError> {
        self.reach.apply(host, req, lock_timeout_s, on_event)
    }

    fn replan(&self, host: &DesiredHost) -> HostPlan {
        plan_host(self.reach, host, self.prune)
    }
}

/// Prints the fleet apply's progress: steps on stdout, a download bar on a terminal's stderr.
struct Printer;

impl fleet::Observer for Printer {
    fn line(&self, text: &str) {
        println!("{text}");
    }

    fn progress(&self, server: &str, deployment: &str, downloaded: u64, total: Option<u64>) {
        if std::io::stderr().is_terminal() {
            eprint!(
                "\r{server}: {deployment}: downloading {}",
                progress_bar(downloaded, total)
            );
        }
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
    compute_reusing(global, snapshot, age_identity, deployment, None).map(|(c, _)| c)
}

/// `compute`, leaving out the deployments whose plans `cache` holds. The cache is not used
/// with an age identity: nothing derived from a decrypted secret is cached.
fn compute_reusing(
    global: &GlobalArgs,
    snapshot: &source::Snapshot,
    age_identity: Option<&std::path::Path>,
    deployment: Option<&str>,
    cache: Option<PlanCache>,
) -> Result<(Computed, Option<Reuse>), CliError> {
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
    let identities_given = identities.as_ref().map(drop);
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
        profiles: global.profiles(),
        server: global.server.clone(),
        deployment: deployment.map(str::to_string),
    };
    let reuse = cache.filter(|_| identities_given.is_none()).map(|cache| {
        let global = plan_cache::key::Global::new(
            snapshot,
            plan_cache::build(),
            &ctx.env,
            &ctx.allowed_env,
            ctx.config_root.as_deref(),
        );
        Reuse::new(
            cache,
            &global,
            snapshot,
            inv,
            &desired::targets(inv, &selection),
        )
    });
    let desired = match &reuse {
        Some(r) => desired::hosts_except(inv, &templates, &selection, &ctx, &|t| r.has(t)),
        None => desired::hosts(inv, &templates, &selection, &ctx),
    };
    Ok((
        Computed {
            inventory: loaded.inventory,
            desired,
        },
        reuse,
    ))
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
