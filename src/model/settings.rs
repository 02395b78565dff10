//! `clarity.yml`: repository-wide settings: profiles, branches and the profiles they may deploy,
//! approval keys, promotion gate, notifications, release retention. File types only (serde and
//! schema).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `clarity.yml` at the config root: repository-wide settings. Optional; every field has a
/// default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Profile names deployments may use (the file name of a deployment file).
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
    /// Order in which a version must pass through profiles: it is applied to a profile only
    /// after it ran healthy on every host of the profile before it (for the same client).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion: Vec<String>,
    /// How long a version must have run healthy in the previous profile before promotion.
    #[serde(default)]
    pub promotion_soak_minutes: u32,
    /// Releases kept per deployment on a host, for rollback.
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// Absolute directories that config files may be written under (on `mock` sandboxes they
    /// are rebased under the sandbox root). Relative destinations always land in the release.
    #[serde(default = "default_absolute_roots")]
    pub allowed_absolute_roots: Vec<String>,
    /// Which profiles each branch may deploy when the reconciler follows the repository
    /// (`--watch`): `main: [staging, prod]`, `dev: [dev]`. Without it, `main` deploys every
    /// profile and no other branch deploys anything. The watch loop reads this map from the
    /// tip of its default branch (`--default-branch`, `main`), never from the branch being
    /// applied, so a commit on `dev` cannot grant itself `prod`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branches: BTreeMap<String, Vec<String>>,
    /// Commit signatures the watch loop requires before it applies anything.
    #[serde(default, skip_serializing_if = "Approval::is_default")]
    pub approval: Approval,
    /// Webhooks told about failed applies, rollbacks and drift (JSON `POST`, retried with
    /// backoff; never holds up a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyTarget>,
}

/// `approval` in `clarity.yml`. The reconciler's own configuration (`--trusted-keys`,
/// `--require-signed-commits`) can demand signatures too; this section lets the repository
/// add keys and the requirement. Both are read from the last applied commit, never from the
/// commit being judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Every commit between the last applied one and the new head must carry a valid
    /// signature from a trusted key.
    #[serde(default)]
    pub require_signed_commits: bool,
    /// Files under `keys/` in this repository with trusted keys: SSH `allowed_signers` files
    /// (as `git config gpg.ssh.allowedSignersFile` uses) or ASCII-armored OpenPGP public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
}

impl Approval {
    fn is_default(&self) -> bool {
        *self == Approval::default()
    }
}

/// One webhook that hears about events of the watch loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// `http://` or `https://` address the event is posted to as JSON.
    pub url: String,
    /// Which events to send; default all of them.
    #[serde(default = "all_notify_events")]
    pub events: Vec<NotifyEvent>,
}

/// An event the watch loop reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// An apply run ended with a failed, rolled back or unreachable host.
    ApplyFailed,
    /// A deployment was rolled back on a host (automatically or by `rollback`).
    Rollback,
    /// A drift check found differences.
    Drift,
    /// A commit was refused (unsigned, rewritten history, a branch without profiles).
    Refused,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::ApplyFailed => "apply_failed",
            NotifyEvent::Rollback => "rollback",
            NotifyEvent::Drift => "drift",
            NotifyEvent::Refused => "refused",
        }
    }
}

fn all_notify_events() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::ApplyFailed,
        NotifyEvent::Rollback,
        NotifyEvent::Drift,
        NotifyEvent::Refused,
    ]
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            profiles: default_profiles(),
            promotion: Vec::new(),
            promotion_soak_minutes: 0,
            keep_releases: default_keep_releases(),
            allowed_absolute_roots: default_absolute_roots(),
            branches: BTreeMap::new(),
            approval: Approval::default(),
            notify: Vec::new(),
        }
    }
}

fn default_profiles() -> Vec<String> {
    ["dev", "staging", "prod", "mock"]
        .map(String::from)
        .to_vec()
}

fn default_keep_releases() -> u32 {
    5
}

fn default_absolute_roots() -> Vec<String> {
    ["/etc", "/opt", "/srv", "/var/lib"]
        .map(String::from)
        .to_vec()
}

impl Settings {
    /// The profiles `branch` may deploy under `--watch`.
    pub fn profiles_of_branch(&self, branch: &str) -> Vec<String> {
        if self.branches.is_empty() {
            return if branch == "main" {
                self.profiles.clone()
            } else {
                Vec::new()
            };
        }
        self.branches.get(branch).cloned().unwrap_or_default()
    }
}
