//! `--watch`: the options of the long-running loop and the bridge that lets it run the reconcile
//! and drift commands in-process.

use super::drift::DriftArgs;
use super::reconcile::{ReconcileArgs, RunContext};
use super::{CliError, CliResult, Exit, GlobalArgs};
use crate::watch::{Job, Runs};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `--watch`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Watch mode")]
pub struct WatchArgs {
    /// Run as a service: follow the config repository's branches (`--repo` is a local path,
    /// watched for ref changes, or a URL, fetched every --poll-interval), apply each new approved
    /// commit once to the profiles its branch may deploy (`branches` in clarity.yml), check for
    /// drift every --drift-interval, and serve the status API. Stops gracefully on SIGTERM.
    #[arg(long)]
    pub watch: bool,
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

pub fn run(global: &GlobalArgs, args: &ReconcileArgs, watch: &WatchArgs) -> CliResult {
    // Every pass reuses the SSH connections of the one before (transport::pool).
    crate::transport::pool::keep_between_runs();
    let usage = |what: &str| {
        Err(CliError::new(format!("--watch cannot be combined with {what}"))
            .hint("--watch follows branches and applies their new commits; run a one-shot reconcile for the rest"))
    };
    if args.dry_run {
        return usage("--dry-run");
    }
    if global.rev.is_some() {
        return usage("--rev");
    }
    if args.base.is_some() || args.assume_empty_hosts {
        return usage("--base or --assume-empty-hosts");
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
            .hint("pass --api-token-file FILE (or CLARITY_API_TOKEN_FILE)"));
    }
    if watch.dashboard_require_token && api_token.is_none() {
        return Err(
            CliError::new("--dashboard-require-token needs a token to require")
                .hint("give the token with --api-token-file FILE (or $CLARITY_API_TOKEN_FILE)"),
        );
    }
    let configured = crate::approval::TrustedKeys::load(&watch.trusted_keys)
        .map_err(|e| CliError::hinted(&e, e.hint()))?;
    let work_dir = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    let ledger = crate::ledger::resolve_path(args.ledger.as_deref(), &work_dir);
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
        profiles: global.profile.is_some().then(|| global.profiles()),
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
        push_notes: args.push_notes,
    };
    let runs = Arc::new(InProcess {
        global: global.clone(),
        reconcile: ReconcileArgs {
            work_dir,
            ledger: Some(ledger),
            push_notes: false,
            ..args.clone()
        },
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

/// Runs the watch loop's jobs with the reconcile and drift commands, as if typed with the
/// loop's own options plus the job's commit, branch and profiles.
struct InProcess {
    global: GlobalArgs,
    reconcile: ReconcileArgs,
}

impl InProcess {
    fn global(&self, job: &Job) -> GlobalArgs {
        GlobalArgs {
            repo: job.repo.clone(),
            rev: Some(job.commit.clone()),
            profile: Some(job.profiles.join(",")),
            ..self.global.clone()
        }
    }

    fn context(job: &Job) -> RunContext {
        RunContext {
            branch: Some(job.branch.clone()),
            trigger: Some(job.trigger.clone()),
            run: Some(job.run.clone()),
            signals_handled: true,
            watch: true,
        }
    }
}

fn outcome(result: CliResult) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let mut text = e.message;
            for c in e.causes {
                text.push_str(&format!(": {c}"));
            }
            Err(text)
        }
    }
}

impl Runs for InProcess {
    fn apply(&self, job: &Job) -> Result<(), String> {
        let args = ReconcileArgs {
            deployment: job.deployment.clone(),
            context: Self::context(job),
            ..self.reconcile.clone()
        };
        outcome(super::reconcile::run(&self.global(job), &args))
    }

    fn drift(&self, job: &Job) -> Result<(), String> {
        let args = DriftArgs {
            work_dir: self.reconcile.work_dir.clone(),
            ledger: self.reconcile.ledger.clone(),
            age_identity: self.reconcile.age_identity.clone(),
            allow_unreachable: true,
            context: Self::context(job),
        };
        // No --rev: the drift command judges each host by the commit it last converged on,
        // exactly as a one-shot `drift` does, never by a commit that failed there.
        let global = GlobalArgs {
            rev: None,
            ..self.global(job)
        };
        outcome(super::drift::run(&global, &args))
    }
}
