//! `clarity-reconcile drift`: its options, the report it prints and its exit code. The check
//! itself (inspect every selected host, compare with the commit it last converged on, record)
//! is `crate::apply::drift`'s, which the watch loop runs too.

use super::reach::{Reach, ReachArgs};
use super::{
    CliError, CliResult, Exit, GlobalArgs, IdentityArgs, Output, SelectionArgs, StateArgs,
};
use crate::apply::drift::{self, HostFindings};
use crate::apply::reconcile::Start;
use crate::plan::drift::Finding;
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Report drift: inspect every selected host (changing nothing) and list each difference from
/// the desired state of the last applied commit — files edited by hand or missing, the wrong
/// release active, services stopped or disabled, unapplied migrations, releases and
/// deployments Clarity did not install. Recorded in the ledger. Exit 0 no drift, 2 drift
/// found, 1 error. A --repo URL (the watch loop's) is read from the loop's mirror under the
/// work directory.
#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// An unreachable host is reported but does not make the run fail.
    #[arg(long)]
    pub allow_unreachable: bool,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub reach: ReachArgs,
}

pub fn run(global: &GlobalArgs, args: &DriftArgs) -> CliResult {
    // The drift timer's service is given the loop's --repo: a URL is read from the loop's
    // mirror, which holds every commit the loop applied.
    let mirror =
        crate::watch::mirror::mirror_root(&global.repo.to_string_lossy(), &args.state.work_dir)
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
    let ledger_path = args.state.ledger_path();
    let mut ledger = crate::ledger::Ledger::open(&ledger_path)?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
    let work_dir = std::path::absolute(&args.state.work_dir).unwrap_or(args.state.work_dir.clone());
    let reach = Reach::new(&args.reach, &exe, &work_dir, false, None);
    let pool = args.reach.thread_pool()?;
    let (started_at, id) = crate::clock::run_started();
    let _run = tracing::info_span!("run", run_id = %id).entered();
    let report = drift::check(
        drift::Request {
            repo: &global.repo,
            rev: global.rev.as_deref(),
            branch: None,
            inputs: &global.inputs(&args.selection, args.identity.age_identity.as_deref(), None),
            start: Start {
                id,
                started_at,
                branch: None,
                trigger: super::reconcile::cli_trigger(),
            },
            notify: true,
        },
        &reach,
        &pool,
        &mut ledger,
        &|line| tracing::info!("{line}"),
    )?;
    let findings: Vec<&Finding> = report.findings().collect();
    let errors: Vec<(&str, &str)> = report.errors().collect();
    let snapshot = &report.snapshot;
    match global.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({
            "commit": snapshot.commit().map(|c| c.to_string()),
            "findings": findings,
            "errors": errors.iter().map(|(s, e)| serde_json::json!({"server": s, "error": e})).collect::<Vec<_>>(),
        })).expect("serializes")),
        Output::Text => print!(
            "{}",
            text(&snapshot.describe(), &report.per_host, global.color.stdout())
        ),
        Output::Markdown => print!("{}", markdown(&snapshot.describe(), &findings)),
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

pub(super) fn text(source: &str, per_host: &[HostFindings], colour: bool) -> String {
    use super::terminal::{green, red, yellow};
    let mut out = format!("Drift report for {source}\n");
    let mut by_client: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (server, client, r) in per_host {
        let _ = writeln!(out);
        match r {
            Err(e) => {
                let _ = writeln!(out, "host {server}: {}: {e}", red("UNREACHABLE", colour));
            }
            Ok(f) if f.is_empty() => {
                let _ = writeln!(
                    out,
                    "host {server} ({client}): {}",
                    green("no drift", colour)
                );
                by_client.entry(client).or_default().0 += 1;
            }
            Ok(f) => {
                let count = format!("{} finding{}", f.len(), if f.len() == 1 { "" } else { "s" });
                let _ = writeln!(out, "host {server} ({client}): {}", yellow(&count, colour));
                for x in f {
                    let finding = format!("! {} [{}] {}", x.deployment, x.kind.as_str(), x.detail);
                    let _ = writeln!(out, "  {}", yellow(&finding, colour));
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
