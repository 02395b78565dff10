//! `clarity-reconcile --watch`: the long-running GitOps loop. It follows branches of the config
//! repository, reconciles each new approved commit once, checks for drift on an interval, and
//! serves the status API (`serve`).

use serde::Serialize;

/// Something asking the loop to act. Requests coalesce: a burst of pushes leads to one fetch
/// and one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Fetch the remote (or re-read the local refs), then reconcile commits not applied yet.
    Fetch { reason: String },
    /// Reconcile the followed branches' heads now, even when they were applied already.
    Reconcile { reason: String },
    /// Run a drift check now.
    Drift { reason: String },
}

/// What the loop is doing, for `/healthz` and the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchStatus {
    /// RFC 3339 UTC time the loop started.
    pub started_at: String,
    /// What runs now (`reconcile main@1a2b3c4d`, `drift`), if anything.
    pub busy: Option<String>,
    /// The id of the last run the loop recorded.
    pub last_run: Option<String>,
    /// A stop (SIGTERM) was requested; the loop finishes the run in flight and exits.
    pub stopping: bool,
}

mod cycle;
mod daemon;
pub mod mirror;
pub use daemon::run;

use crate::approval;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The loop's settings, from the command line.
pub struct Config {
    /// The config repository: a local path (watched for ref changes) or a URL (fetched).
    pub source: String,
    pub work_dir: PathBuf,
    pub ledger: PathBuf,
    /// The branch whose `clarity.yml` maps branches to profiles.
    pub default_branch: String,
    pub poll_interval: Duration,
    /// `None`: no drift checks.
    pub drift_interval: Option<Duration>,
    pub allow_rewrite: bool,
    /// `--trust-from`: the base to record for a branch whose ledger has none.
    pub trust_from: Option<String>,
    /// Narrowing from the command line (`--profile`), intersected with each branch's profiles.
    pub profiles: Option<Vec<String>>,
    pub listen: Option<SocketAddr>,
    pub api_token: Option<String>,
    /// Who may reach the status API (Host names, token for reads).
    pub api_access: crate::serve::Access,
    pub webhook_secret: Option<String>,
    /// The dashboard's pages need the API token too.
    pub dashboard_require_token: bool,
    pub approval: approval::Policy,
    /// Push notes to a remote source (a local source always gets them).
    pub push_notes: bool,
}

/// One run the loop asks for: a commit of a followed branch, checked out in the mirror.
#[derive(Debug, Clone)]
pub struct Job {
    /// The config root in the mirror.
    pub repo: PathBuf,
    pub commit: String,
    pub branch: String,
    pub profiles: Vec<String>,
    /// Only this deployment (drift healing).
    pub deployment: Option<String>,
    pub trigger: String,
    /// Start time and id for the run's record.
    pub run: (String, String),
    /// Continue this paused run (its pause timed out) instead of applying `commit` afresh.
    pub resume: Option<String>,
}

/// How runs are carried out: the command line's reconcile and drift commands, in-process.
pub trait Runs: Send + Sync + 'static {
    /// Applies the job; the run is recorded under `job.run`'s id unless an error stopped it
    /// before it reached the hosts (returned).
    fn apply(&self, job: &Job) -> Result<(), String>;
    /// Checks the job's hosts for drift, recorded under `job.run`'s id.
    fn drift(&self, job: &Job) -> Result<(), String>;
}

/// Work collected from triggers; a burst of them becomes one of each.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pending {
    pub fetch: bool,
    /// Re-apply heads even when applied already (`POST /api/v1/reconcile`).
    pub force: bool,
    pub drift: bool,
    pub reasons: Vec<String>,
}

impl Pending {
    pub(crate) fn add(&mut self, t: Trigger) {
        let reason = match t {
            Trigger::Fetch { reason } => {
                self.fetch = true;
                reason
            }
            Trigger::Reconcile { reason } => {
                self.fetch = true;
                self.force = true;
                reason
            }
            Trigger::Drift { reason } => {
                self.drift = true;
                reason
            }
        };
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.fetch && !self.drift
    }
}
