//! `watch` (and `--watch`): the options of the long-running loop, and the runner that carries out its jobs
//! through the same run functions (`crate::apply`) as the one-shot commands.

use super::reach::{Reach, ReachArgs};
use super::reconcile::ReconcileArgs;
use super::{CliError, CliResult, Exit, GlobalArgs};
use crate::apply::error::RunError;
use crate::apply::reconcile::{self, Start};
use crate::apply::{drift, fleet, prepare};
use crate::ledger::Ledger;
use crate::source::{self, ReadMode};
use crate::watch::{Job, Runs};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Run as a service: follow the config repository's branches (`--repo` is a local path,
/// watched for ref changes, or a URL, fetched every --poll-interval), apply each new approved
/// commit once to the profiles its branch may deploy (`branches` in clarity.yml), check for
/// drift every --drift-interval, and serve the status API. Stops gracefully on SIGTERM. Also
/// `--watch` without a subcommand.
#[derive(Debug, Clone, Args)]
pub struct WatchCommand {
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// The options of the watch loop itself.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Watch mode")]
pub struct WatchArgs {
    /// The branch whose clarity.yml maps branches to profiles.
    #[arg(long, default_value = "main", value_name = "BRANCH")]
    pub default_branch: String,
    /// Seconds between fetches of a remote repository (±10% jitter); a local one is also
    /// re-read this often in case a change notification was missed.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub poll_interval: u64,
    /// Seconds between drift checks (detect-only, except deployments with `drift: heal`);
    /// 0 turns them off.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub drift_interval: u64,
    /// Apply a branch whose history was rewritten (force-pushed) instead of refusing it. When
    /// signed commits are required, the new commits are still judged from the last trusted
    /// commit.
    #[arg(long)]
    pub allow_rewrite: bool,
    /// A commit the operator vouches for, recorded in the ledger as the base signed-commit
    /// approval judges from, for a branch whose ledger knows none (a first start, or a ledger
    /// that was deleted, rebuilt from notes or moved aside). Without a known base a branch
    /// whose repository requires signed commits is refused.
    #[arg(long, value_name = "COMMIT")]
    pub trust_from: Option<String>,
    /// Address of the status API, /metrics and the push webhook; `off` serves nothing.
    #[arg(long, default_value = "127.0.0.1:8420", value_name = "ADDR")]
    pub listen: String,
    /// A host name the status API answers besides the loopback names (repeatable): the name a
    /// reverse proxy forwards in `Host`. Requests for any other `Host` get 421, so a web page
    /// cannot read the API through DNS rebinding.
    #[arg(long, value_name = "NAME")]
    pub api_allowed_host: Vec<String>,
    /// Reads of the status API and /metrics need the bearer token as well (`/healthz` stays
    /// open). Without it, readers without the token see URLs and paths hidden.
    #[arg(long)]
    pub api_token_for_reads: bool,
    /// File holding the bearer token that `POST /api/v1/reconcile` requires (without one the
    /// endpoint is disabled). Default: the service's `api-token` credential
    /// (`$CREDENTIALS_DIRECTORY/clarity_api-token`), when it has one.
    #[arg(long, env = "CLARITY_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// File holding the shared secret of the push webhook `POST /hooks/git` (GitHub's
    /// X-Hub-Signature-256 or GitLab's X-Gitlab-Token); without one the hook is disabled.
    /// Default: the service's `webhook-secret` credential, when it has one.
    #[arg(long, env = "CLARITY_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Require the API token (--api-token-file) for the dashboard's pages and live events too,
    /// as a bearer token or as the password a browser asks for; without this flag they are
    /// open to whoever reaches --listen, like the read-only API.
    #[arg(long)]
    pub dashboard_require_token: bool,
    /// Apply only commits signed by a trusted key (every commit since the last applied one).
    #[arg(long)]
    pub require_signed_commits: bool,
    /// Trusted signing keys: an SSH allowed_signers file or an armored OpenPGP public key.
    /// Repeatable. The repository can add keys (`approval` in clarity.yml), trusted from the
    /// last applied commit on.
    #[arg(long, value_name = "FILE")]
    pub trusted_keys: Vec<PathBuf>,
}

/// The usage error for an option the watch loop does not take.
pub(super) fn refused(what: &str) -> CliResult {
    Err(CliError::new(format!("--watch cannot be combined with {what}"))
        .hint("--watch follows branches and applies their new commits; run a one-shot reconcile for the rest")
        .usage())
}

pub fn run(global: &GlobalArgs, run: &ReconcileArgs, watch: &WatchArgs) -> CliResult {
    // Every pass reuses the SSH connections of the one before (transport::pool).
    crate::transport::pool::keep_between_runs();
    let (args, apply) = (&run.target, &run.apply);
    if global.rev.is_some() {
        return refused("--rev");
    }
    if args.base.is_some() || args.assume_empty_hosts {
        return refused("--base or --assume-empty-hosts");
    }
    let source = global.repo.display().to_string();
    if source.trim().is_empty() {
        return Err(
            CliError::new("--repo is empty: no config repository to follow").hint(
                "the service passes CLARITY_REPO as --repo: set it in /etc/clarity/reconciler.env",
            ),
        );
    }
    // libgit2 would only say "not owned by current user"; say whose it is and what to do.
    if !source.contains("://")
        && let Err(e) = git2::Repository::discover(&global.repo)
        && let Some(refused) = crate::source::ownership::refusal(&global.repo, &e)
    {
        return Err(refused.into());
    }
    let listen = match watch.listen.as_str() {
        "off" | "" => None,
        addr => Some(addr.parse().map_err(|e| {
            CliError::new(format!("--listen `{addr}` is not an address: {e}"))
                .hint("write it like 127.0.0.1:8420")
                .usage()
        })?),
    };
    // An explicit file wins; the service gets them as systemd credentials.
    let credential = crate::secret::credentials::path;
    let api_token = read_secret_file(
        watch
            .api_token_file
            .clone()
            .or_else(|| credential("api-token"))
            .as_deref(),
        "--api-token-file",
    )?;
    let webhook_secret = read_secret_file(
        watch
            .webhook_secret_file
            .clone()
            .or_else(|| credential("webhook-secret"))
            .as_deref(),
        "--webhook-secret-file",
    )?;
    if watch.api_token_for_reads && api_token.is_none() {
        return Err(CliError::new("--api-token-for-reads needs a token")
            .hint("pass --api-token-file FILE (or CLARITY_API_TOKEN_FILE)")
            .usage());
    }
    if watch.dashboard_require_token && api_token.is_none() {
        return Err(
            CliError::new("--dashboard-require-token needs a token to require")
                .hint("give the token with --api-token-file FILE (or $CLARITY_API_TOKEN_FILE)")
                .usage(),
        );
    }
    let configured = crate::approval::TrustedKeys::load(&watch.trusted_keys)
        .map_err(|e| CliError::hinted(&e, e.hint()))?;
    let work_dir = std::path::absolute(&args.state.work_dir).unwrap_or(args.state.work_dir.clone());
    let ledger = crate::ledger::resolve_path(args.state.ledger.as_deref(), &work_dir);
    let config = crate::watch::Config {
        source,
        work_dir: work_dir.clone(),
        ledger: ledger.clone(),
        default_branch: watch.default_branch.clone(),
        poll_interval: Duration::from_secs(watch.poll_interval.max(1)),
        drift_interval: (watch.drift_interval > 0)
            .then(|| Duration::from_secs(watch.drift_interval)),
        allow_rewrite: watch.allow_rewrite,
        trust_from: watch.trust_from.clone(),
        profiles: args
            .selection
            .profile
            .is_some()
            .then(|| args.selection.profiles()),
        listen,
        api_token,
        api_access: crate::serve::Access {
            allowed_hosts: watch.api_allowed_host.clone(),
            token_for_reads: watch.api_token_for_reads,
        },
        webhook_secret,
        dashboard_require_token: watch.dashboard_require_token,
        approval: crate::approval::Policy {
            require_signed: watch.require_signed_commits,
            configured,
        },
        push_notes: apply.push_notes,
    };
    let runs = Arc::new(InProcess {
        reach: args.reach.clone(),
        inputs: global.inputs(&args.selection, args.identity.age_identity.as_deref(), None),
        exe: std::env::current_exe()
            .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?,
        work_dir,
        ledger,
        options: apply.fleet_options(args),
    });
    crate::watch::run(config, runs).map_err(CliError::new)?;
    Ok(Exit::Ok)
}

/// A token or secret from a file (trailing newline removed); never printed.
fn read_secret_file(
    path: Option<&std::path::Path>,
    flag: &str,
) -> Result<Option<String>, CliError> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new(format!("{flag} {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(CliError::new(format!("{flag} {} is empty", path.display())));
    }
    Ok(Some(secret))
}

/// Runs the watch loop's jobs in-process, through the same run functions as the one-shot
/// commands, with the loop's own options plus the job's commit, branch and profiles. Plans and
/// results go to stdout (the service's journal), as a one-shot run prints them.
struct InProcess {
    reach: ReachArgs,
    /// The loop's selection and operator inputs; each job sets its profiles and deployment.
    inputs: prepare::Inputs,
    exe: PathBuf,
    work_dir: PathBuf,
    ledger: PathBuf,
    options: fleet::Options,
}

impl InProcess {
    fn inputs(&self, job: &Job) -> prepare::Inputs {
        let mut inputs = self.inputs.clone();
        inputs.selection.profiles = job.profiles.clone();
        inputs.selection.deployment = job.deployment.clone();
        inputs
    }

    fn start(job: &Job) -> Start {
        Start {
            id: job.run.1.clone(),
            started_at: job.run.0.clone(),
            branch: Some(job.branch.clone()),
            trigger: job.trigger.clone(),
        }
    }

    fn reach<'a>(&'a self, only: Option<&'a str>) -> Reach<'a> {
        Reach::new(&self.reach, &self.exe, &self.work_dir, false, only)
    }

    fn pool(&self) -> Result<rayon::ThreadPool, String> {
        self.reach.thread_pool().map_err(|e| e.message)
    }

    fn ledger(&self) -> Result<Ledger, String> {
        Ledger::open(&self.ledger).map_err(|e| e.to_string())
    }
}

/// A run error as one line of the loop's log, with its hint.
fn error_line(e: RunError) -> String {
    if let RunError::Invalid(errors) = &e {
        for d in errors {
            super::logging::diagnostic(d);
        }
    }
    match e.hint() {
        Some(hint) => format!("{e} (hint: {hint})"),
        None => e.to_string(),
    }
}

impl Runs for InProcess {
    fn apply(&self, job: &Job) -> Result<(), String> {
        let _run = tracing::info_span!("run", run_id = %job.run.1).entered();
        let snapshot = source::read(&job.repo, &ReadMode::Commit(job.commit.clone()))
            .map_err(|e| error_line(e.into()))?;
        let mut inputs = self.inputs(job);
        if let Some(paused) = &job.resume {
            // A timed-out pause: the paused run's waiting hosts only, as `resume` does.
            let plan = Ledger::open_existing(&self.ledger)
                .map_err(|e| e.to_string())
                .and_then(|l| super::resume::plan(&l, paused).map_err(|e| e.message))?;
            inputs.selection.profiles = plan.profiles;
            inputs.selection.deployment = plan.deployment;
            inputs.resuming = Some(plan.resuming);
        }
        let computed = prepare::compute(&snapshot, &inputs).map_err(error_line)?;
        let reach = self.reach(inputs.selection.deployment.as_deref());
        let pool = self.pool()?;
        let planned = prepare::plan(&reach, &pool, snapshot, computed, self.options.prune, true);
        print!("{}", crate::plan::render_text(&planned.plan, false));
        let Some(desired) = planned.applicable() else {
            return Err(
                "nothing was applied: the config repository has errors for some hosts (see the plan above)"
                    .into(),
            );
        };
        let run = reconcile::apply(
            &fleet::Reach {
                hosts: &reach,
                pool: &pool,
                observer: &super::progress::Progress::new(),
            },
            &mut self.ledger()?,
            &planned,
            &desired,
            &job.commit,
            &self.options,
            Self::start(job),
            // The loop notifies from its own reading of the record, with retries.
            &reconcile::Recording {
                repo: &job.repo,
                push_notes: false,
                notify: false,
            },
        )
        .map_err(error_line)?;
        println!();
        print!("{}", super::summary::table(&run, false));
        println!("recorded run {}", run.id);
        Ok(())
    }

    fn drift(&self, job: &Job) -> Result<(), String> {
        let _run = tracing::info_span!("run", run_id = %job.run.1).entered();
        let report = drift::check(
            drift::Request {
                repo: &job.repo,
                // Each host is judged by the commit it last converged on, exactly as a
                // one-shot `drift` does, never by a commit that failed there.
                rev: None,
                branch: Some(&job.branch),
                inputs: &self.inputs(job),
                start: Self::start(job),
                notify: false,
            },
            &self.reach(None),
            &self.pool()?,
            &mut self.ledger()?,
            &|line| tracing::info!("{line}"),
        )
        .map_err(error_line)?;
        print!(
            "{}",
            super::drift::text(&report.snapshot.describe(), &report.per_host, false)
        );
        Ok(())
    }
}
