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
