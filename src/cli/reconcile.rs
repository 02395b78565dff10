//! The reconcile command itself (no subcommand): read the repository at a commit, compute every
//! selected host's desired state, inspect what runs, and print the plan (`--dry-run`).

use super::{CliError, CliResult, Exit, GlobalArgs, Output};
use crate::desired::{self, Context, InventorySecrets, Selection, Templates};
use crate::model::Transport;
use crate::model::host::ActualHost;
use crate::plan::{self, HostPlan, HostStatus, Plan};
use crate::source::{self, ReadMode};
use clap::Args;
use rayon::prelude::*;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Reconcile: compute what every selected server should run, compare it with what runs, and
/// show (`--dry-run`) the difference.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
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
    /// age identity file for decrypting secrets (default: $CLARITY_AGE_IDENTITY). Without one,
    /// plans show secrets as unknown.
    #[arg(long, value_name = "FILE")]
    pub age_identity: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: &ReconcileArgs) -> CliResult {
    if !args.dry_run {
        return Err(CliError::new("applying is not available in this build yet")
            .hint("use --dry-run to see the plan; apply arrives with the agent's converge step"));
    }
    let mode = match &global.rev {
        Some(rev) => ReadMode::Commit(rev.clone()),
        None => ReadMode::WorkingTree,
    };
    let snapshot = source::read(&global.repo, &mode)?;
    for w in &snapshot.warnings {
        eprintln!("warning: {w}");
    }
    let loaded = crate::load::load(&snapshot);
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
    let identities = crate::secret::identities_from(args.age_identity.as_deref()).map_err(|e| {
        let hint = e.hint();
        let err = CliError::from_error(&e);
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    })?;
    let secrets = InventorySecrets::new(inv, identities);
    let ctx = Context {
        env: std::env::vars().collect(),
        secrets: &secrets,
        lenient_env: false,
    };
    let selection = Selection {
        client: global.client.clone(),
        profile: global.profile.clone(),
        server: global.server.clone(),
    };
    let desired = desired::hosts(inv, &templates, &selection, &ctx);
    if desired.is_empty() {
        eprintln!("note: no deployment targets the selected servers");
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
    let work_dir = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    let hosts: Vec<HostPlan> = desired
        .into_par_iter()
        .map(|d| match d {
            Err(errors) => HostPlan {
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
            },
            Ok(host) => {
                let actual = if args.assume_empty_hosts {
                    Ok(ActualHost::empty(crate::agent::AGENT_VERSION))
                } else {
                    match (host.transport, &host.local_root) {
                        (Transport::Local, Some(root)) => {
                            crate::transport::Local::new(&host.server, &exe, work_dir.join(root))
                                .inspect()
                        }
                        _ => Err(crate::transport::TransportError {
                            host: host.server.clone(),
                            message: "the ssh transport is not available in this build".into(),
                            unreachable: true,
                        }),
                    }
                };
                match actual {
                    Ok(actual) => plan::host_plan(&host, &actual, args.prune),
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
        })
        .collect();
    let mut plan = Plan::new(
        snapshot.describe(),
        snapshot.commit().map(|c| c.to_string()),
        hosts,
    );
    if let Some(base) = &args.base {
        plan.changed_since_base = Some(changed_since(global, base, &snapshot, inv)?);
    }
    match global.output {
        Output::Text => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!("{}", plan::render_text(&plan, colour));
        }
        Output::Json => print!("{}", plan::render_json(&plan)),
        Output::Markdown => print!("{}", plan::render_markdown(&plan)),
    }
    let s = &plan.summary;
    if s.hosts_failed > 0 || (s.hosts_unreachable > 0 && !args.allow_unreachable) {
        if s.hosts_unreachable > 0 && !args.allow_unreachable {
            eprintln!(
                "error: {} host{} unreachable (pass --allow-unreachable to plan the others anyway)",
                s.hosts_unreachable,
                if s.hosts_unreachable == 1 {
                    " is"
                } else {
                    "s are"
                }
            );
        }
        return Ok(Exit::Failed);
    }
    Ok(if s.hosts_to_change > 0 {
        Exit::Changes
    } else {
        Exit::Ok
    })
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
