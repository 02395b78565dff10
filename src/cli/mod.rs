//! The command line: one file per command, each with its `<Verb>Args` (whose doc comment is the
//! `--help` text) and a `run` function. This module parses arguments and dispatches; `error`
//! turns errors into `error:` / `caused by:` / `hint:` lines and holds the exit-code table:
//! 0 nothing to do or success, 1 error, 2 changes pending (`plan`) or drift found, 3 a
//! detached apply without an outcome, 4 a rollout paused after its canary, 64 a usage error.

mod agent;
pub mod completions;
mod decommission;
pub(crate) mod drift;
mod error;
pub use error::{CliError, CliResult, EXIT_USAGE, ErrorKind, Exit};
mod history;
pub mod logging;
mod options;
pub use options::{IdentityArgs, SelectionArgs, StateArgs};
mod progress;
mod reach;
pub(crate) mod reconcile;
mod resume;
mod rollback;
mod schema;
pub use schema::all_schemas;
mod secret;
mod summary;
pub(crate) mod terminal;
mod validate;
mod watch;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Clarity reconciles servers with a git config repository: it reads the repository at a
/// commit, computes what every server should run, compares it with what runs, and shows
/// (`plan`) or applies (`apply`) the difference, once or as a service (`watch`). Without a
/// subcommand it is `apply` (`--dry-run`: `plan`, `--watch`: `watch`), as in earlier versions.
#[derive(Debug, Parser)]
#[command(name = "clarity-reconcile", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub bare: reconcile::BareArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options every command understands.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Config repository (a directory inside a git work tree, or a plain directory).
    #[arg(long, global = true, default_value = ".", value_name = "PATH")]
    pub repo: PathBuf,
    /// Revision to read (branch, tag or commit). Without it, `validate` and `plan` read
    /// HEAD plus uncommitted changes and say so.
    #[arg(long, global = true, value_name = "REV")]
    pub rev: Option<String>,
    /// An environment variable of the reconciler that the repository may read with
    /// `${ENV:NAME}` (repeatable; CLARITY_ALLOW_ENV takes a comma-separated list). By default
    /// none: a repository cannot read the reconciler's or CI's environment, and any other
    /// `${ENV:..}` is a validation error.
    #[arg(
        long = "allow-env",
        global = true,
        value_name = "NAME",
        env = "CLARITY_ALLOW_ENV",
        value_delimiter = ','
    )]
    pub allow_env: Vec<String>,
    /// A directory on the reconciler that an absolute `file` repository path may lie under
    /// (repeatable; CLARITY_ALLOW_FILE_ROOTS takes a comma-separated list). By default a
    /// `file` repository must be inside the config repository.
    #[arg(
        long = "allow-file-root",
        global = true,
        value_name = "DIR",
        env = "CLARITY_ALLOW_FILE_ROOTS",
        value_delimiter = ','
    )]
    pub allow_file_root: Vec<String>,
    /// Accept `prod` deployments fetching from an `http://` repository with credentials (they
    /// travel readable by anyone on the path). Without it that is a validation error; for other
    /// profiles it is a warning.
    #[arg(long, global = true)]
    pub allow_http_credentials: bool,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Colour in plans, summaries and drift reports: `auto` colours a terminal unless
    /// NO_COLOR is set, `always` forces it (even piped), `never` refuses it.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CLARITY_COLOR",
        default_value_t = terminal::ColorChoice::Auto,
        value_name = "WHEN"
    )]
    pub color: terminal::ColorChoice,
    #[command(flatten)]
    pub log: logging::LogArgs,
}

impl GlobalArgs {
    /// What the operator decides about a run, from these options and the command's: the
    /// selection, what the repository may read, and how secrets are decrypted.
    pub(crate) fn inputs(
        &self,
        selection: &SelectionArgs,
        age_identity: Option<&std::path::Path>,
        deployment: Option<&str>,
    ) -> crate::apply::prepare::Inputs {
        crate::apply::prepare::Inputs {
            selection: crate::desired::Selection {
                client: selection.client.clone(),
                profiles: selection.profiles(),
                server: selection.server.clone(),
                deployment: deployment.map(str::to_string),
            },
            allow_env: self.allow_env.clone(),
            policy: crate::load::operator_policy::OperatorPolicy {
                file_roots: self.allow_file_root.clone(),
                allow_http_credentials: self.allow_http_credentials,
            },
            age_identity: age_identity.map(std::path::Path::to_path_buf),
            resuming: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Plan(reconcile::PlanArgs),
    Apply(reconcile::ReconcileArgs),
    Watch(watch::WatchCommand),
    Validate(validate::ValidateArgs),
    Schema(schema::SchemaArgs),
    Secret(secret::SecretArgs),
    #[command(hide = true)]
    Agent(agent::AgentArgs),
    History(history::HistoryArgs),
    Drift(drift::DriftArgs),
    Rollback(rollback::RollbackArgs),
    Resume(resume::ResumeArgs),
    Decommission(decommission::DecommissionArgs),
    Completions(completions::CompletionsArgs),
}

/// docs/cli-reference.md: the `--help` text of every command, generated from the argument
/// definitions so the docs cannot drift from the binary.
pub fn cli_reference() -> String {
    use clap::CommandFactory;
    fn render(cmd: &mut clap::Command, path: &str, out: &mut String) {
        let help = cmd.render_long_help().to_string();
        out.push_str(&format!(
            "\n## `{path}`\n\n```text\n{}\n```\n",
            help.trim_end()
        ));
        let names: Vec<String> = cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect();
        for name in names {
            if let Some(sub) = cmd.find_subcommand_mut(&name) {
                render(sub, &format!("{path} {name}"), out);
            }
        }
    }
    let mut out = String::from(
        "# CLI reference\n\n<!-- Generated from the argument definitions by \
         tests/generated_files.rs (CLARITY_UPDATE_GENERATED=1 rewrites it); do not edit by hand. -->\n",
    );
    let mut cmd = Cli::command().term_width(100);
    cmd.build();
    render(&mut cmd, "clarity-reconcile", &mut out);
    out
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                // --help and --version print to stdout and succeed.
                ExitCode::SUCCESS
            };
        }
    };
    let agent = matches!(cli.command, Some(Command::Agent(_)));
    if let Err(e) = logging::init(&cli.global.log, agent) {
        e.print();
        return ExitCode::from(EXIT_USAGE);
    }
    let result = run(cli);
    // Goodbye to every SSH connection still open (kept for reuse within the run).
    crate::transport::pool::close_all();
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            e.print();
            e.exit_code()
        }
    }
}

pub fn run(cli: Cli) -> CliResult {
    let global = &cli.global;
    let bare = &cli.bare;
    // Options given before the subcommand (`--profile mock drift`), which every command took
    // when the selection and the SSH options were global.
    let before = &bare.reconcile.target;
    match cli.command {
        Some(Command::Plan(args)) => reconcile::run(global, &args.target.or(before), None),
        Some(Command::Apply(args)) => {
            reconcile::run(global, &args.target.or(before), Some(&args.apply))
        }
        Some(Command::Watch(mut args)) => {
            args.reconcile.target = args.reconcile.target.or(before);
            watch::run(global, &args.reconcile, &args.watch)
        }
        Some(Command::Validate(args)) => validate::run(global, &args),
        Some(Command::Schema(args)) => schema::run(&args),
        Some(Command::Secret(mut args)) => {
            args.selection = args.selection.or(&before.selection);
            secret::run(global, &args)
        }
        Some(Command::Agent(args)) => agent::run(&args),
        Some(Command::History(mut args)) => {
            args.selection = args.selection.or(&before.selection);
            history::run(global, &args)
        }
        Some(Command::Drift(mut args)) => {
            carry(&mut args.selection, &mut args.reach, before);
            drift::run(global, &args)
        }
        Some(Command::Rollback(mut args)) => {
            carry(&mut args.selection, &mut args.reach, before);
            rollback::run(global, &args)
        }
        Some(Command::Resume(mut args)) => {
            carry(&mut args.selection, &mut args.reach, before);
            resume::run(global, &args)
        }
        Some(Command::Decommission(mut args)) => {
            carry(&mut args.selection, &mut args.reach, before);
            decommission::run(global, &args)
        }
        Some(Command::Completions(args)) => completions::run(&args),
        None if bare.watch && bare.dry_run => watch::refused("--dry-run"),
        None if bare.watch => watch::run(global, &bare.reconcile, &bare.watch_args),
        None if bare.dry_run => reconcile::run(global, before, None),
        None => reconcile::run(global, before, Some(&bare.reconcile.apply)),
    }
}

/// Carries the selection and SSH options given before a subcommand over to it.
fn carry(
    selection: &mut SelectionArgs,
    reach: &mut reach::ReachArgs,
    before: &reconcile::TargetArgs,
) {
    *selection = selection.or(&before.selection);
    *reach = reach.or(&before.reach);
}
