//! `DesiredHost` × `ActualHost` → `HostPlan`: pair each desired deployment with what runs, and
//! list the ordered steps that would converge it, with unified diffs of config files (secrets
//! redacted). A step whose outcome cannot be known before running says so instead of being
//! skipped. Pure: plans are data; dry-run renders them, apply executes the same value.

pub mod container;
pub mod drift;
mod render;
mod rollout_order;
pub use rollout_order::{PlannedBatch, PlannedPause, RolloutOrder};

pub use crate::model::apply::Action;
pub use render::{render_json, render_markdown, render_text};

use crate::desired::{DesiredDeployment, DesiredFile, DesiredHost};
use crate::model::host::{ActualDeployment, ActualFile, ActualHost, ServiceState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `format` value of the plan JSON (`schemas/plan.schema.json`).
pub const PLAN_FORMAT: &str = "clarity.plan/v1";

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Plan {
    /// Always `clarity.plan/v1` for this version.
    pub format: String,
    /// What was read: a commit, or a commit plus uncommitted changes.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub hosts: Vec<HostPlan>,
    /// Deployments whose files changed between `--base` and this revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_since_base: Option<BaseComparison>,
    /// The order of each deployment with a `rollout:` section: batches, canary, failure
    /// budget, pause (deployments without one go to all their hosts at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout: Vec<RolloutOrder>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BaseComparison {
    pub base: String,
    pub deployments: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Summary {
    pub hosts_to_change: usize,
    pub hosts_unchanged: usize,
    pub hosts_unreachable: usize,
    pub hosts_failed: usize,
    pub steps: usize,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostPlan {
    pub server: String,
    pub client: String,
    pub status: HostStatus,
    /// Why the host could not be planned (unreachable or failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub deployments: Vec<DeploymentPlan>,
    /// Deployments on the host that the repository no longer describes. They are removed only
    /// with `--prune`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_longer_desired: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Changes,
    Unchanged,
    Unreachable,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentPlan {
    pub name: String,
    pub profile: String,
    pub change: Change,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    pub release: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_release: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// `+` not on the host yet.
    Create,
    /// `~` on the host, different.
    Update,
    /// `-` on the host, to be removed (`--prune`).
    Delete,
    /// Converged.
    None,
}

impl Change {
    pub fn marker(self) -> &'static str {
        match self {
            Change::Create => "+",
            Change::Update => "~",
            Change::Delete => "-",
            Change::None => " ",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    pub action: Action,
    pub change: Change,
    /// What the step acts on (a file path, a release id, a check).
    pub target: String,
    /// One line of detail for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unified diff (3 lines of context) for file steps, secrets shown as `(sensitive)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Set when the outcome cannot be known before running; says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_after_apply: Option<String>,
}

fn step(action: Action, change: Change, target: impl Into<String>) -> Step {
    Step {
        action,
        change,
        target: target.into(),
        detail: None,
        diff: None,
        known_after_apply: None,
    }
}

impl Step {
    fn detail(mut self, d: impl Into<String>) -> Step {
        self.detail = Some(d.into());
        self
    }
    fn unknown(mut self, why: impl Into<String>) -> Step {
        self.known_after_apply = Some(why.into());
        self
    }
}

/// The hash the agent records for a service definition; both sides compute it the same way.
pub fn service_definition_sha256(d: &DesiredDeployment) -> Option<String> {
    d.service.as_ref().map(|s| {
        let env: Vec<(&String, &str)> = d
            .env
            .iter()
            .map(|(k, v)| (k, v.redacted.as_str()))
            .collect();
        crate::digest::sha256_hex(
            // Not the release id: the definition runs whatever `current` points at, so a
            // release switch alone needs a restart, not a new definition.
            serde_json::to_string(&(s, &env))
                .unwrap_or_default()
                .as_bytes(),
        )
    })
}

/// The hash of a deployment's health checks, as the agent keeps them with a release; both
/// sides compute it the same way.
pub fn health_checks_sha256(checks: &[crate::model::HealthCheck]) -> String {
    crate::digest::sha256_hex(serde_json::to_string(checks).unwrap_or_default().as_bytes())
}

/// The env file's content; the agent writes exactly this.
pub fn env_file_text(d: &DesiredDeployment, exposed: bool) -> String {
    let mut s = String::new();
    for (k, v) in &d.env {
        let value = if exposed {
            v.exposed()
        } else {
            v.redacted.as_str()
        };
        // systemd EnvironmentFile and our process runner both read KEY=VALUE lines; quote so
        // spaces and `#` survive.
        s.push_str(&format!(
            "{k}=\"{}\"\n",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    s
}

/// Plans one host.
pub fn host_plan(desired: &DesiredHost, actual: &ActualHost, prune: bool) -> HostPlan {
    let mut deployments = Vec::new();
    for d in &desired.deployments {
        deployments.push(deployment_plan(d, actual.deployments.get(&d.name), actual));
    }
    let mut no_longer_desired = Vec::new();
    for name in actual.deployments.keys() {
        if !desired.deployments.iter().any(|d| &d.name == name) {
            if prune {
                let a = &actual.deployments[name];
                deployments.push(DeploymentPlan {
                    name: name.clone(),
                    profile: String::new(),
                    change: Change::Delete,
                    version: a.current_version.clone().unwrap_or_default(),
                    from_version: a.current_version.clone(),
                    release: String::new(),
                    from_release: a.current_release.clone(),
                    steps: vec![step(Action::RemoveDeployment, Change::Delete, name.clone())
                        .detail("stop the service, remove its definition and releases; volumes are kept")],
                });
            } else {
                no_longer_desired.push(name.clone());
            }
        }
    }
    let changes = deployments.iter().any(|d| d.change != Change::None);
    HostPlan {
        server: desired.server.clone(),
        client: desired.client.clone(),
        status: if changes {
            HostStatus::Changes
        } else {
            HostStatus::Unchanged
        },
        errors: Vec::new(),
        deployments,
        no_longer_desired,
    }
}

fn file_diff(path: &str, old: Option<&str>, new: &str) -> String {
    // `a/` and `b/` stand for the root, as in git: `/etc/x` is `b/etc/x`, not `b//etc/x`.
    let path = path.trim_start_matches('/');
    let diff = similar::TextDiff::from_lines(old.unwrap_or(""), new);
    let old_name = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_string()
    };
    diff.unified_diff()
        .context_radius(3)
        .header(&old_name, &format!("b/{path}"))
        .to_string()
}

/// The diff of a file that exists on the host with content Clarity did not write (and does
/// not show: it may hold secrets): the old side names the host's file and its hash, never
/// `/dev/null`, which would say there is no file; every desired line is added.
fn replacement_diff(path: &str, host_sha256: Option<&str>, new: &str) -> String {
    let path = path.trim_start_matches('/');
    let hash = host_sha256
        .map(|h| format!("sha256 {}…", &h[..12.min(h.len())]))
        .unwrap_or_else(|| "hash unknown".into());
    let lines: Vec<&str> = new.lines().collect();
    let mut out = format!(
        "--- a/{path} (on the host: {hash}, content not shown)\n+++ b/{path}\n@@ replaced in full: +1,{} @@\n",
        lines.len()
    );
    for l in lines {
        out.push('+');
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The step for one desired file against what the host has, or `None` when it is in place.
fn file_step(f: &DesiredFile, actual: Option<&ActualFile>) -> Option<Step> {
    let on_disk = actual.filter(|a| a.exists);
    let same_bytes = on_disk.and_then(|a| a.sha256.as_deref()) == Some(f.content.sha256.as_str());
    let same_meta = on_disk.is_some_and(|a| {
        a.mode.as_deref() == Some(f.mode.as_str())
            && f.owner
                .as_deref()
                .is_none_or(|want| owner_matches(want, a.owner.as_deref()))
    });
    if same_bytes && same_meta && f.content.known {
        return None;
    }
    let recorded = on_disk.and_then(|a| a.recorded.as_ref());
    let change = if on_disk.is_some() {
        Change::Update
    } else {
        Change::Create
    };
    let mut s = step(Action::WriteFile, change, f.destination.clone());
    let mut details = vec![format!("mode {}", f.mode)];
    if let Some(o) = &f.owner {
        details.push(format!("owner {o}"));
    }
    if let Some(t) = &f.template {
        details.push(format!("from templates/{t}"));
    }
    match (on_disk, recorded) {
        (None, _) => s.diff = Some(file_diff(&f.destination, None, &f.content.redacted)),
        (Some(a), Some(r)) if a.sha256.as_deref() == Some(r.sha256.as_str()) => {
            if same_bytes {
                details.push("content unchanged".into());
            } else if r.redacted == f.content.redacted && f.content.known {
                details.push("only a sensitive value changed".into());
            } else {
                s.diff = Some(file_diff(
                    &f.destination,
                    Some(&r.redacted),
                    &f.content.redacted,
                ));
            }
        }
        (Some(a), _) if !same_bytes => {
            details.push(
                "changed on the host outside Clarity: its content is not shown (it may hold secrets)".into(),
            );
            s.diff = Some(replacement_diff(
                &f.destination,
                a.sha256.as_deref(),
                &f.content.redacted,
            ));
        }
        _ => details.push("content unchanged".into()),
    }
    if !f.content.known {
        if same_meta && recorded.is_some_and(|r| r.redacted == f.content.redacted) {
            s = s.unknown(
                "secret values could not be decrypted (no identity): the file may be unchanged",
            );
        } else {
            details.push("secret values not decrypted: hash not compared".into());
        }
    }
    Some(s.detail(details.join(", ")))
}

fn deployment_plan(
    d: &DesiredDeployment,
    actual: Option<&ActualDeployment>,
    host: &ActualHost,
) -> DeploymentPlan {
    let mut steps = Vec::new();
    let current = actual.and_then(|a| a.current_release.clone());
    let release_changes = current.as_deref() != Some(d.release.as_str());
    let release_present = actual.is_some_and(|a| a.releases.contains(&d.release));
    let find = |dest: &str| actual.and_then(|a| a.files.iter().find(|f| f.destination == dest));

    if release_changes && !release_present {
        let cached = host
            .cached_artifacts
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&d.artifact.sha256));
        if !cached {
            let size = d
                .artifact
                .size
                .map(human_size)
                .unwrap_or_else(|| "size unknown".into());
            steps.push(
                step(
                    Action::FetchArtifact,
                    Change::Create,
                    format!("{} {}", d.artifact.id, d.artifact.version),
                )
                .detail(format!(
                    "from {} ({}, sha256 {}…, {size})",
                    d.artifact.source.display,
                    d.artifact.source.repository,
                    &d.artifact.sha256[..12.min(d.artifact.sha256.len())]
                )),
            );
        }
        steps.push(
            step(Action::InstallRelease, Change::Create, d.release.clone())
                .detail(format!("{:?} artifact", d.artifact.kind).to_lowercase()),
        );
    }
    let containers = container::steps(d, actual, release_changes);
    steps.extend(containers.load);
    // What a running service must restart for, named in its restart step.
    let mut restart_for: Vec<String> = Vec::new();
    if release_changes {
        restart_for.push(format!("the new release {}", d.release));
    }
    for f in &d.release_files {
        // A new release gets every file written into it; show the diff against the current
        // release's copy so reviewers see what changes.
        let actual_file = find(&f.destination);
        if let Some(s) = file_step(f, actual_file) {
            if !release_changes {
                restart_for.push(f.destination.clone());
            }
            steps.push(s);
        } else if release_changes && !release_present {
            steps.push(
                step(Action::WriteFile, Change::Create, f.destination.clone()).detail(format!(
                    "mode {}, into the new release, content unchanged",
                    f.mode
                )),
            );
        }
    }
    let env_text = env_file_text(d, true);
    let env_sha = crate::digest::sha256_hex(env_text.as_bytes());
    if !d.env.is_empty() && actual.and_then(|a| a.env_sha256.as_deref()) != Some(env_sha.as_str()) {
        restart_for.push("the new env file".into());
        let names: Vec<&str> = d.env.keys().map(String::as_str).collect();
        let sensitive = d.env.values().filter(|v| v.sensitive).count();
        let mut st = step(
            Action::WriteEnv,
            if actual.is_some() {
                Change::Update
            } else {
                Change::Create
            },
            "env",
        )
        .detail(format!(
            "{} variable{} ({}{}), readable by the service user only",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            if sensitive > 0 {
                format!("; {sensitive} sensitive")
            } else {
                String::new()
            }
        ));
        if d.env.values().any(|v| !d.release_known && v.sensitive) {
            st = st.unknown("secret values could not be decrypted (no identity)");
        }
        steps.push(st);
    }
    for f in &d.host_files {
        if let Some(s) = file_step(f, find(&f.destination)) {
            restart_for.push(f.destination.clone());
            steps.push(s);
        }
    }
    if let Some(m) = &d.migrations
        && release_changes
    {
        let mut s = step(
            Action::RunMigrations,
            Change::Update,
            format!("{:?}", m.engine).to_lowercase(),
        )
        .detail(format!(
            "from {}/ in the release{}{}",
            m.directory,
            m.database
                .as_ref()
                .map(|db| format!(", database {db}"))
                .unwrap_or_default(),
            if m.backup { ", backup first" } else { "" }
        ));
        s = s.unknown("the migration files ship inside the artifact: which ones are pending is known once it is fetched");
        steps.push(s);
    }
    let service_sha = service_definition_sha256(d);
    let actual_service = actual.and_then(|a| a.service.as_ref());
    if let Some(spec) = &d.service
        && actual_service.and_then(|s| s.definition_sha256.as_deref()) != service_sha.as_deref()
    {
        let change = if actual_service.is_some() {
            Change::Update
        } else {
            Change::Create
        };
        let boot = if spec.autostart {
            ", start at boot"
        } else {
            ""
        };
        steps.push(
            step(Action::InstallService, change, d.name.clone()).detail(format!(
                "command {}, restart {}{boot}",
                spec.command.join(" "),
                spec.restart_policy.as_str()
            )),
        );
    }
    steps.extend(containers.create);
    if release_changes {
        steps.push(
            step(
                Action::SwitchRelease,
                if current.is_some() {
                    Change::Update
                } else {
                    Change::Create
                },
                d.release.clone(),
            )
            .detail(format!(
                "{} → {}",
                current.as_deref().unwrap_or("none"),
                d.release
            )),
        );
    }
    if d.service.is_some() {
        let running = actual_service.is_some_and(|s| s.state == ServiceState::Running);
        if steps.iter().any(|s| s.action == Action::InstallService) {
            restart_for.push("the new service definition".into());
        }
        let changed = !restart_for.is_empty();
        if !running && d.service.as_ref().is_some_and(|s| s.autostart) {
            let why = match actual_service.map(|s| s.state) {
                Some(ServiceState::Stopped) => "stopped",
                Some(ServiceState::Failed) => "failed",
                Some(ServiceState::Unknown) => "state unknown",
                _ => "not running",
            };
            steps.push(
                step(Action::StartService, Change::Update, d.name.clone())
                    .detail(format!("currently {why}")),
            );
        } else if running && changed {
            steps.push(
                step(Action::RestartService, Change::Update, d.name.clone())
                    .detail(format!("to pick up {}", restart_for.join(", "))),
            );
        }
    }
    steps.extend(containers.start);
    // Checks that changed alone are a step too: the running release is verified with them
    // (and keeps them) or the apply fails, so a new check is never first met by a rollback.
    let checks_changed = steps.is_empty()
        && actual
            .and_then(|a| a.health_checks_sha256.as_deref())
            .is_some_and(|h| h != health_checks_sha256(&d.health_checks));
    let acting = !steps.is_empty() || checks_changed;
    if acting {
        for hc in &d.health_checks {
            let target = match hc.kind {
                crate::model::HealthCheckType::Http => hc.url.clone().unwrap_or_default(),
                crate::model::HealthCheckType::Tcp => format!(
                    "tcp {}:{}",
                    hc.host.as_deref().unwrap_or("127.0.0.1"),
                    hc.port.unwrap_or(0)
                ),
                crate::model::HealthCheckType::Command => {
                    hc.command.clone().unwrap_or_default().join(" ")
                }
            };
            steps.push(
                step(
                    Action::HealthCheck,
                    Change::Update,
                    hc.name.clone().unwrap_or(target),
                )
                .detail(if checks_changed {
                    format!(
                        "verify health with the new checks: {} tries, {}s apart, {}s timeout",
                        hc.retries, hc.interval_s, hc.timeout_s
                    )
                } else {
                    format!(
                        "{} tries, {}s apart, {}s timeout; rollback on failure",
                        hc.retries, hc.interval_s, hc.timeout_s
                    )
                })
                .unknown(if checks_changed {
                    "the health checks changed; they are only known once run on the host"
                } else if release_changes {
                    "health is only known once the new release runs"
                } else {
                    "health is only known once the service runs with the change"
                }),
            );
        }
    }
    steps.extend(containers.finish);
    let change = if actual.is_none() {
        Change::Create
    } else if acting {
        Change::Update
    } else {
        Change::None
    };
    DeploymentPlan {
        name: d.name.clone(),
        profile: d.profile.clone(),
        change,
        version: d.artifact.version.clone(),
        from_version: actual.and_then(|a| a.current_version.clone()),
        release: d.release.clone(),
        from_release: current,
        steps,
    }
}

/// `user` matches any group; `user:group` must match both.
fn owner_matches(want: &str, actual: Option<&str>) -> bool {
    let Some(actual) = actual else { return false };
    if want.contains(':') {
        want == actual
    } else {
        actual.split(':').next() == Some(want)
    }
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Plan {
    pub fn new(source: String, commit: Option<String>, hosts: Vec<HostPlan>) -> Plan {
        let mut summary = Summary::default();
        for h in &hosts {
            match h.status {
                HostStatus::Changes => summary.hosts_to_change += 1,
                HostStatus::Unchanged => summary.hosts_unchanged += 1,
                HostStatus::Unreachable => summary.hosts_unreachable += 1,
                HostStatus::Failed => summary.hosts_failed += 1,
            }
            summary.steps += h.deployments.iter().map(|d| d.steps.len()).sum::<usize>();
        }
        Plan {
            format: PLAN_FORMAT.to_string(),
            source,
            commit,
            hosts,
            changed_since_base: None,
            rollout: Vec::new(),
            summary,
        }
    }

    /// The plan JSON schema (`schemas/plan.schema.json`).
    pub fn schema_text() -> String {
        let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        let mut s = serde_json::to_string_pretty(&generator.into_root_schema_for::<Plan>())
            .expect("schema serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_headers_name_absolute_destinations_like_git() {
        let created = file_diff("/etc/app/app.conf", None, "a=1\n");
        assert!(
            created.starts_with("--- /dev/null\n+++ b/etc/app/app.conf\n"),
            "{created}"
        );
        let changed = file_diff("/etc/app/app.conf", Some("a=1\n"), "a=2\n");
        assert!(
            changed.starts_with("--- a/etc/app/app.conf\n+++ b/etc/app/app.conf\n"),
            "{changed}"
        );
        let relative = file_diff("conf/app.conf", Some("a=1\n"), "a=2\n");
        assert!(
            relative.starts_with("--- a/conf/app.conf\n+++ b/conf/app.conf\n"),
            "{relative}"
        );
    }

    #[test]
    fn owners_match_with_or_without_group() {
        assert!(owner_matches("sms", Some("sms:sms")));
        assert!(owner_matches("sms:adm", Some("sms:adm")));
        assert!(!owner_matches("sms:adm", Some("sms:sms")));
        assert!(!owner_matches("root", Some("sms:root")));
        assert!(!owner_matches("sms", None));
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KiB");
    }

    #[test]
    fn diff_of_new_file_is_against_dev_null() {
        let d = file_diff("conf/a.yml", None, "a: 1\n");
        assert!(d.starts_with("--- /dev/null\n+++ b/conf/a.yml\n"), "{d}");
        assert!(d.contains("+a: 1"));
    }
}
