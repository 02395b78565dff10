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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub server: String,
    pub client: String,
    /// `converged`, `unchanged`, `rolled_back`, `restore_failed`, `failed`, `unreachable`,
    /// `not_attempted`.
    pub outcome: String,
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
