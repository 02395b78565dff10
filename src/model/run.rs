//! What one reconcile run did, as recorded in the ledger and in git notes: per host, per
//! deployment, per step. Built from the agent's events, which carry only redacted text, so a
//! record can never contain a secret.

use super::apply::{Action, StepStatus};
use serde::{Deserialize, Serialize};

pub const RUN_FORMAT: &str = "clarity.run/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: String,
    /// Unique, sortable by start time: `YYYYMMDDTHHMMSSZ-<8 hex>`.
    pub id: String,
    /// The commit applied (full hex).
    pub commit: String,
    pub branch: Option<String>,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    /// Who or what started it: `cli:<user>@<host>`, `watch`, `webhook`, ...
    pub trigger: String,
    pub mode: RunMode,
    pub outcome: RunOutcome,
    /// Why the run ended as it did when no host says so: the reason a commit was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub hosts: Vec<HostRecord>,
    /// How the run rolled out: its batches, a pause after a canary, a resumption.
    #[serde(default, flatten)]
    pub rollout: RolloutRecord,
    /// What an apply run did: reconcile to the commit, or take deployments off hosts.
    #[serde(default, skip_serializing_if = "RunKind::is_reconcile")]
    pub kind: RunKind,
}

/// What an apply run was for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Bring hosts to what the commit says (reconcile, resume, heal).
    #[default]
    Reconcile,
    /// `clarity-reconcile decommission`: deployments taken off hosts on request.
    Decommission,
}

impl RunKind {
    pub fn is_reconcile(&self) -> bool {
        *self == RunKind::Reconcile
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Reconcile => "reconcile",
            RunKind::Decommission => "decommission",
        }
    }
}

/// The rollout side of a run record (all optional, so records from before it still read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The rollout batches as this run cut and ran them, unit by unit in the order applied
    /// (empty: a run that applied nothing, or one recorded before batches were).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<BatchRecord>,
    /// A run paused after its canary with a timeout (`rollout.pause_after_canary.timeout`):
    /// when (RFC 3339 UTC) the watch loop resumes it by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_deadline: Option<String>,
    /// This run continues the paused run with this id (`clarity-reconcile resume RUN`, or the
    /// watch loop when the pause timed out); its trigger says who resumed it, its start when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumes: Option<String>,
    /// For a paused run: the run that resumed it, as the ledger knows it when read (never
    /// written into a note, which is written when the run ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
}

impl RolloutRecord {
    /// Hosts that wait for `resume`, in batch order.
    pub fn waiting_hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for b in &self.batches {
            if b.state == BatchState::AwaitingApproval {
                for h in &b.hosts {
                    if !out.contains(h) {
                        out.push(h.clone());
                    }
                }
            }
        }
        out
    }
}

/// Who resumed a paused run, when, and as which run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub run: String,
    /// The resuming run's trigger: `cli:<user>@<host>`, `watch:timeout`.
    pub by: String,
    /// RFC 3339 UTC.
    pub at: String,
}

/// One rollout batch of one unit (a deployment file), as run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// `client/deployment/profile`.
    pub unit: String,
    pub canary: bool,
    pub hosts: Vec<String>,
    pub state: BatchState,
    /// Hosts of this batch that did not converge.
    #[serde(default)]
    pub failed: u32,
    /// Failed hosts the unit tolerates across its rollout (`None`: no `rollout:`, no budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<u32>,
}

/// What became of a batch in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Its hosts were applied.
    Applied,
    /// The rollout paused after the canary: these hosts wait for `resume`.
    AwaitingApproval,
    /// The rollout halted (or the reconciler stopped) before this batch.
    NotAttempted,
    /// Held by a pin or the promotion gate.
    Held,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Applied => "applied",
            BatchState::AwaitingApproval => "awaiting_approval",
            BatchState::NotAttempted => "not_attempted",
            BatchState::Held => "held",
        }
    }

    pub fn parse(text: &str) -> Option<BatchState> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Apply,
    DryRun,
    Drift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every host converged (or had nothing to do).
    Success,
    /// Some hosts failed, rolled back or were unreachable.
    Failed,
    /// Nothing needed doing.
    NoChanges,
    /// Nothing was applied because the commit was not approved (unsigned, signed by an
    /// untrusted key, rewritten history); `message` says which commit and why.
    Refused,
    /// A drift run that found differences between the hosts and their last applied commit.
    DriftFound,
    /// The rollout stopped after a healthy canary (`rollout.pause_after_canary`); the hosts
    /// marked `awaiting_approval` wait for `clarity-reconcile resume RUN`.
    AwaitingApproval,
}

/// What one host ended as in a run, ordered by severity (the derived order is the severity:
/// a host's outcome over several rollout units is the worst of them). Serialized with the
/// ledger's stable names, so ledgers and notes written before this type still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOutcome {
    /// Nothing needed doing.
    Unchanged,
    /// A drift run found the host as its last applied commit says.
    NoDrift,
    /// Every change was applied and verified.
    Converged,
    /// Held at a version by an emergency rollback; the commit's version was not applied.
    Pinned,
    /// The rollout paused after its canary before this host's turn; it waits for
    /// `clarity-reconcile resume RUN` (or the pause's timeout).
    AwaitingApproval,
    /// The rollout halted (or the reconciler stopped) before this host's turn.
    NotAttempted,
    /// A drift run found differences on the host.
    Drift,
    /// The host could not be reached or inspected.
    Unreachable,
    /// The change could not be made or verified and nothing needed restoring, or a first
    /// install failed and was cleaned away (the message names the state left behind).
    Failed,
    /// A change failed and the previous release was restored and verified with its own checks.
    RolledBack,
    /// A change failed and the previous state could not be restored: needs a person.
    RestoreFailed,
    /// A name this build does not know (a newer writer); treated as the worst.
    #[serde(other)]
    Unknown,
}

impl HostOutcome {
    /// The stable name stored in the ledger and the notes.
    pub fn as_str(self) -> &'static str {
        match self {
            HostOutcome::Unchanged => "unchanged",
            HostOutcome::NoDrift => "no_drift",
            HostOutcome::Converged => "converged",
            HostOutcome::Pinned => "pinned",
            HostOutcome::AwaitingApproval => "awaiting_approval",
            HostOutcome::NotAttempted => "not_attempted",
            HostOutcome::Drift => "drift",
            HostOutcome::Unreachable => "unreachable",
            HostOutcome::Failed => "failed",
            HostOutcome::RolledBack => "rolled_back",
            HostOutcome::RestoreFailed => "restore_failed",
            HostOutcome::Unknown => "unknown",
        }
    }

    /// A stored name; names this build does not know read as [`HostOutcome::Unknown`].
    pub fn parse(text: &str) -> HostOutcome {
        serde_json::from_value(serde_json::Value::String(text.to_string()))
            .unwrap_or(HostOutcome::Unknown)
    }

    /// How the command line prints it (the outcome that needs a person is shouted).
    pub fn label(self) -> &'static str {
        match self {
            HostOutcome::NotAttempted => "not attempted",
            HostOutcome::AwaitingApproval => "awaiting approval",
            HostOutcome::NoDrift => "no drift",
            HostOutcome::RolledBack => "rolled back",
            HostOutcome::RestoreFailed => "RESTORE FAILED",
            other => other.as_str(),
        }
    }

    /// The host ended where the run wanted it (nothing failed there).
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            HostOutcome::Unchanged
                | HostOutcome::NoDrift
                | HostOutcome::Converged
                | HostOutcome::Pinned
        )
    }

    /// The host now runs what the run's commit says: its last applied commit moves here.
    pub fn settled(self) -> bool {
        matches!(self, HostOutcome::Converged | HostOutcome::Unchanged)
    }

    /// A failed change that was undone (or could not be).
    pub fn is_rollback(self) -> bool {
        matches!(self, HostOutcome::RolledBack | HostOutcome::RestoreFailed)
    }

    /// The run learned nothing about what the host runs now, so its record stays as it was.
    pub fn keeps_previous_record(self) -> bool {
        matches!(
            self,
            HostOutcome::Unreachable
                | HostOutcome::NotAttempted
                | HostOutcome::AwaitingApproval
                | HostOutcome::Unknown
        )
    }
}

impl std::fmt::Display for HostOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub server: String,
    pub client: String,
    pub outcome: HostOutcome,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub deployments: Vec<DeploymentRecord>,
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub name: String,
    pub profile: String,
    pub version: String,
    pub release: String,
    /// Whether this deployment ended healthy on this host in this run.
    pub healthy: bool,
    /// Why it is (not) healthy, as the host's agent reported it at the end of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub deployment: String,
    pub action: Action,
    pub target: String,
    pub status: StepStatus,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The repository kind a `fetch_artifact` step downloaded from (`http`, `s3`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_kind: Option<String>,
    /// Download retries of a `fetch_artifact` step (attempts after the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// One difference between what a host should run and what it runs, found by a detect-only
/// drift run. Stored in the ledger against that run; `detail` is redacted text, like every
/// message in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftFinding {
    pub server: String,
    pub client: String,
    pub deployment: String,
    /// What drifted: `file_modified`, `service_stopped`, `wrong_release`, ...
    pub kind: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::HostOutcome;

    #[test]
    fn outcomes_read_the_ledgers_names_and_order_by_severity() {
        for o in [
            HostOutcome::Unchanged,
            HostOutcome::NoDrift,
            HostOutcome::Converged,
            HostOutcome::Pinned,
            HostOutcome::AwaitingApproval,
            HostOutcome::NotAttempted,
            HostOutcome::Drift,
            HostOutcome::Unreachable,
            HostOutcome::Failed,
            HostOutcome::RolledBack,
            HostOutcome::RestoreFailed,
        ] {
            assert_eq!(HostOutcome::parse(o.as_str()), o);
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(HostOutcome::parse("something_newer"), HostOutcome::Unknown);
        assert!(HostOutcome::RestoreFailed > HostOutcome::RolledBack);
        assert!(HostOutcome::RolledBack > HostOutcome::Failed);
        assert!(HostOutcome::NotAttempted > HostOutcome::Converged);
        assert!(HostOutcome::AwaitingApproval > HostOutcome::Converged);
        assert!(HostOutcome::Failed > HostOutcome::AwaitingApproval);
        assert!(HostOutcome::Converged > HostOutcome::Unchanged);
    }
}
