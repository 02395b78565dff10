//! `clarity-reconcile validate`: loads the repository, runs every check (the operator's too)
//! and reports all diagnostics at once with file:line:column and hints; changes nothing and
//! contacts no host.

use super::{CliResult, Exit, GlobalArgs, Output};
use crate::diag::Severity;
use crate::source::{self, ReadMode};
use clap::Args;

/// Check the config repository: every file against its schema, then every cross-reference,
/// path and uniqueness rule, then every template rendered for every host that uses it. Prints every problem at once as `file:line:column: error[code]`;
/// exits 0 when valid, 1 otherwise.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Treat warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
}

pub fn run(global: &GlobalArgs, args: &ValidateArgs) -> CliResult {
    let mode = match &global.rev {
        Some(rev) => ReadMode::Commit(rev.clone()),
        None => ReadMode::WorkingTree,
    };
    let snapshot = source::read(&global.repo, &mode)?;
    let mut loaded = crate::load::load(&snapshot);
    let operator_diags = global
        .inputs(&Default::default(), None, None)
        .operator_checks(&loaded.inventory);
    loaded.diagnostics.extend(operator_diags);
    if !loaded.has_errors() {
        loaded
            .diagnostics
            .extend(crate::desired::check(&loaded.inventory, &global.allow_env));
    }
    let errors = loaded.diagnostics.error_count();
    let warnings = loaded.diagnostics.warning_count();
    let failed = errors > 0 || (args.deny_warnings && warnings > 0);
    let mut diags = loaded.diagnostics.sorted();
    if args.deny_warnings {
        for d in &mut diags {
            d.severity = Severity::Error;
        }
    }
    match global.output {
        Output::Json => {
            for w in &snapshot.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!("note: validated {}", snapshot.describe());
            println!(
                "{}",
                serde_json::to_string_pretty(&diags).expect("diagnostics serialize")
            );
        }
        Output::Text | Output::Markdown => {
            for w in &snapshot.warnings {
                println!("warning: {w}");
            }
            for d in &diags {
                println!("{d}");
            }
            let files = snapshot.files.len();
            let summary = format!(
                "{} error{}, {} warning{} in {files} files ({})",
                errors,
                if errors == 1 { "" } else { "s" },
                warnings,
                if warnings == 1 { "" } else { "s" },
                snapshot.describe()
            );
            if failed {
                println!("validation failed: {summary}");
            } else {
                println!("valid: {summary}");
            }
        }
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}
