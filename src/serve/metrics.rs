//! Prometheus metrics of the watch loop, kept in memory and rendered in the text exposition
//! format 0.0.4 for `GET /metrics`. The loop feeds it each run record it writes; nothing here
//! reads the ledger, so counters start at zero when the process starts (as Prometheus
//! counters should).
//!
//! Series:
//!
//! | name | type | labels | from |
//! |---|---|---|---|
//! | `clarity_build_info` | gauge | `version` | always 1 |
//! | `clarity_reconcile_runs_total` | counter | `mode`, `outcome` | every run observed |
//! | `clarity_reconcile_run_duration_seconds` | histogram | `mode` | `finished_at - started_at` |
//! | `clarity_deployment_applies_total` | counter | `deployment`, `outcome` (`converged`, `failed`, `rolled_back`) | apply runs: each deployment a host ran steps for |
//! | `clarity_artifact_download_bytes_total` | counter | | `fetch_artifact` steps' `bytes` |
//! | `clarity_artifact_download_seconds_total` | counter | | `fetch_artifact` steps' `duration_ms` |
//! | `clarity_repository_download_bytes_total` | counter | `kind` | the same bytes, by repository kind |
//! | `clarity_repository_download_seconds_total` | counter | `kind` | the same time, by repository kind |
//! | `clarity_repository_download_retries_total` | counter | `kind` | `fetch_artifact` steps' retries (attempts after the first) |
//! | `clarity_health_check_failures_total` | counter | `deployment` | failed `health_check` steps |
//! | `clarity_rollbacks_total` | counter | `deployment`, `outcome` (`rolled_back`, `restore_failed`) | hosts of apply runs that rolled back |
//! | `clarity_drift_findings` | gauge | `kind` | findings of the newest drift run |
//! | `clarity_hosts_unreachable` | gauge | | unreachable hosts of the newest run with hosts |
//! | `clarity_last_applied_commit_timestamp_seconds` | gauge | `branch` | [`Metrics::set_last_applied`] |
//! | `clarity_refused_commits_total` | counter | `branch` | [`Metrics::observe_refusal`] |
//! | `clarity_notifications_sent_total` | counter | | [`Metrics::observe_notification`] |
//! | `clarity_notifications_failed_total` | counter | | [`Metrics::observe_notification`] |

use crate::model::apply::{Action, StepStatus};
use crate::model::run::{DriftFinding, HostOutcome, RunMode, RunOutcome, RunRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the run duration histogram: from a no-op run to an hour-long
/// fleet rollout.
const DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Every series name with its type and help text, in render order (also the list the API
/// document and the tests check against).
pub const SERIES: &[(&str, &str, &str)] = &[
    (
        "clarity_build_info",
        "gauge",
        "The running clarity-reconcile's version (always 1).",
    ),
    (
        "clarity_reconcile_runs_total",
        "counter",
        "Runs recorded, by mode (apply, dry_run, drift) and outcome (success, failed, no_changes, refused).",
    ),
    (
        "clarity_reconcile_run_duration_seconds",
        "histogram",
        "Wall time of recorded runs, by mode.",
    ),
    (
        "clarity_deployment_applies_total",
        "counter",
        "Deployments applied to a host, by deployment and outcome (converged, failed, rolled_back).",
    ),
    (
        "clarity_artifact_download_bytes_total",
        "counter",
        "Bytes of artifacts downloaded by fetch_artifact steps.",
    ),
    (
        "clarity_artifact_download_seconds_total",
        "counter",
        "Time spent in fetch_artifact steps.",
    ),
    (
        "clarity_repository_download_bytes_total",
        "counter",
        "Bytes of artifacts downloaded by fetch_artifact steps, by repository kind (http, sftp, ftp, file, s3, google-drive).",
    ),
    (
        "clarity_repository_download_seconds_total",
        "counter",
        "Time spent in fetch_artifact steps, by repository kind.",
    ),
    (
        "clarity_repository_download_retries_total",
        "counter",
        "Download attempts after the first in fetch_artifact steps, by repository kind.",
    ),
    (
        "clarity_health_check_failures_total",
        "counter",
        "Failed health_check steps, by deployment.",
    ),
    (
        "clarity_rollbacks_total",
        "counter",
        "Hosts where a deployment failed and was rolled back (rolled_back) or could not be restored (restore_failed), by deployment.",
    ),
    (
        "clarity_drift_findings",
        "gauge",
        "Findings of the newest drift run, by kind.",
    ),
    (
        "clarity_hosts_unreachable",
        "gauge",
        "Hosts the newest run could not reach.",
    ),
    (
        "clarity_last_applied_commit_timestamp_seconds",
        "gauge",
        "Commit time (Unix seconds) of the commit last applied from a branch, by branch.",
    ),
    (
        "clarity_refused_commits_total",
        "counter",
        "Commits refused (not approved), by branch.",
    ),
    (
        "clarity_notifications_sent_total",
        "counter",
        "Notifications delivered (a 2xx answer).",
    ),
    (
        "clarity_notifications_failed_total",
        "counter",
        "Notifications given up on (a 4xx answer, retries exhausted, or dropped).",
    ),
];

/// The watch loop's metrics. Cheap to update from any thread; render takes a snapshot.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    deployment_applies: BTreeMap<(String, String), u64>,
    download_bytes: u64,
    download_ms: u64,
    /// Bytes, milliseconds and retries by repository kind.
    downloads_by_kind: BTreeMap<String, (u64, u64, u64)>,
    health_failures: BTreeMap<String, u64>,
    rollbacks: BTreeMap<(String, String), u64>,
    drift_findings: BTreeMap<String, u64>,
    hosts_unreachable: Option<u64>,
    last_applied: BTreeMap<String, i64>,
    refused: BTreeMap<String, u64>,
    notifications_sent: u64,
    notifications_failed: u64,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations at or below each of [`DURATION_BUCKETS`] (not yet cumulative).
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| value <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }
}

fn text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// How one deployment fared on one host in an apply run, or `None` when the host never got
/// to it.
fn deployment_outcome(
    host_outcome: HostOutcome,
    failed_steps: bool,
    ran_steps: bool,
) -> Option<&'static str> {
    match host_outcome {
        HostOutcome::Unreachable
        | HostOutcome::NotAttempted
        | HostOutcome::Unchanged
        | HostOutcome::Unknown => None,
        // The agent stops at the first failing deployment and rolls back only that one; the
        // ones before it stay converged.
        HostOutcome::RolledBack if failed_steps => Some("rolled_back"),
        _ if failed_steps => Some("failed"),
        // A host that failed before any step (a lock held, a bad request) failed every
        // deployment it was sent.
        HostOutcome::Failed if !ran_steps => Some("failed"),
        _ if ran_steps => Some("converged"),
        _ => None,
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still valid numbers.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a recorded run. `findings` are the drift findings recorded with it (empty for
    /// apply and dry runs); a drift run replaces the drift gauge. Refusals are counted by
    /// branch through [`Metrics::observe_refusal`], not here (beyond the run counter).
    pub fn observe_run(&self, run: &RunRecord, findings: &[DriftFinding]) {
        let mode = text(&run.mode);
        let mut m = self.lock();
        *m.runs
            .entry((mode.clone(), text(&run.outcome)))
            .or_default() += 1;
        if let (Some(start), Some(end)) = (
            crate::clock::parse_rfc3339(&run.started_at),
            crate::clock::parse_rfc3339(&run.finished_at),
        ) {
            m.durations
                .entry(mode)
                .or_default()
                .observe(end.saturating_sub(start) as f64);
        }
        if run.outcome != RunOutcome::Refused && !run.hosts.is_empty() {
            m.hosts_unreachable = Some(
                run.hosts
                    .iter()
                    .filter(|h| h.outcome == HostOutcome::Unreachable)
                    .count() as u64,
            );
        }
        if run.mode == RunMode::Drift {
            // Kinds seen before stay at 0, so an alert on them resolves.
            for v in m.drift_findings.values_mut() {
                *v = 0;
            }
            for f in findings {
                *m.drift_findings.entry(f.kind.clone()).or_default() += 1;
            }
        }
        if run.mode != RunMode::Apply {
            return;
        }
        for host in &run.hosts {
            let mut ran: BTreeSet<&str> = BTreeSet::new();
            let mut failed: BTreeSet<&str> = BTreeSet::new();
            for step in &host.steps {
                if step.status != StepStatus::Skipped {
                    ran.insert(&step.deployment);
                }
                if step.status == StepStatus::Failed {
                    failed.insert(&step.deployment);
                }
                if step.action == Action::FetchArtifact && step.status != StepStatus::Skipped {
                    m.download_bytes += step.bytes.unwrap_or(0);
                    m.download_ms += step.duration_ms;
                    if let Some(kind) = &step.repository_kind {
                        let k = m.downloads_by_kind.entry(kind.clone()).or_default();
                        k.0 += step.bytes.unwrap_or(0);
                        k.1 += step.duration_ms;
                        k.2 += u64::from(step.retries.unwrap_or(0));
                    }
                }
                if step.action == Action::HealthCheck && step.status == StepStatus::Failed {
                    *m.health_failures
                        .entry(step.deployment.clone())
                        .or_default() += 1;
                }
            }
            let planned: BTreeSet<&str> = if ran.is_empty() {
                host.deployments.iter().map(|d| d.name.as_str()).collect()
            } else {
                ran.clone()
            };
            for dep in &planned {
                let outcome =
                    deployment_outcome(host.outcome, failed.contains(dep), ran.contains(dep));
                if let Some(outcome) = outcome {
                    *m.deployment_applies
                        .entry((dep.to_string(), outcome.to_string()))
                        .or_default() += 1;
                }
            }
            if host.outcome.is_rollback() {
                let culprits: Vec<&str> = if failed.is_empty() {
                    vec!["unknown"]
                } else {
                    failed.iter().copied().collect()
                };
                for dep in culprits {
                    *m.rollbacks
                        .entry((dep.to_string(), host.outcome.as_str().to_string()))
                        .or_default() += 1;
                }
            }
        }
    }

    /// Counts a commit refused on `branch` (unsigned, rewritten history, ...).
    pub fn observe_refusal(&self, branch: &str) {
        *self.lock().refused.entry(branch.to_string()).or_default() += 1;
    }

    /// Sets the commit time of the commit last applied from `branch`.
    pub fn set_last_applied(&self, branch: &str, commit_time_unix: i64) {
        self.lock()
            .last_applied
            .insert(branch.to_string(), commit_time_unix);
    }

    /// Counts one notification's final result (delivered, or given up on).
    pub fn observe_notification(&self, ok: bool) {
        let mut m = self.lock();
        if ok {
            m.notifications_sent += 1;
        } else {
            m.notifications_failed += 1;
        }
    }

    /// Every series in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(4096);
        for &(name, kind, help) in SERIES {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            match name {
                "clarity_build_info" => {
                    sample(&mut out, name, &[("version", env!("CARGO_PKG_VERSION"))], 1);
                }
                "clarity_reconcile_runs_total" => {
                    for ((mode, outcome), v) in &m.runs {
                        sample(&mut out, name, &[("mode", mode), ("outcome", outcome)], v);
                    }
                }
                "clarity_reconcile_run_duration_seconds" => {
                    for (mode, h) in &m.durations {
                        let mut cumulative = 0;
                        for (bound, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
                            cumulative += n;
                            let le = bound.to_string();
                            sample(
                                &mut out,
                                &format!("{name}_bucket"),
                                &[("mode", mode), ("le", &le)],
                                cumulative,
                            );
                        }
                        sample(
                            &mut out,
                            &format!("{name}_bucket"),
                            &[("mode", mode), ("le", "+Inf")],
                            h.count,
                        );
                        sample(&mut out, &format!("{name}_sum"), &[("mode", mode)], h.sum);
                        sample(
                            &mut out,
                            &format!("{name}_count"),
                            &[("mode", mode)],
                            h.count,
                        );
                    }
                }
                "clarity_deployment_applies_total" => {
                    for ((dep, outcome), v) in &m.deployment_applies {
                        sample(
                            &mut out,
                            name,
                            &[("deployment", dep), ("outcome", outcome)],
                            v,
                        );
                    }
                }
                "clarity_artifact_download_bytes_total" => {
                    sample(&mut out, name, &[], m.download_bytes);
                }
                "clarity_artifact_download_seconds_total" => {
                    sample(&mut out, name, &[], m.download_ms as f64 / 1000.0);
                }
                "clarity_repository_download_bytes_total" => {
                    for (kind, v) in &m.downloads_by_kind {
                        sample(&mut out, name, &[("kind", kind)], v.0);
                    }
                }
                "clarity_repository_download_seconds_total" => {
                    for (kind, v) in &m.downloads_by_kind {
                        sample(&mut out, name, &[("kind", kind)], v.1 as f64 / 1000.0);
                    }
                }
                "clarity_repository_download_retries_total" => {
                    for (kind, v) in &m.downloads_by_kind {
                        sample(&mut out, name, &[("kind", kind)], v.2);
                    }
                }
                "clarity_health_check_failures_total" => {
                    for (dep, v) in &m.health_failures {
                        sample(&mut out, name, &[("deployment", dep)], v);
                    }
                }
                "clarity_rollbacks_total" => {
                    for ((dep, outcome), v) in &m.rollbacks {
                        sample(
                            &mut out,
                            name,
                            &[("deployment", dep), ("outcome", outcome)],
                            v,
                        );
                    }
                }
                "clarity_drift_findings" => {
                    for (kind, v) in &m.drift_findings {
                        sample(&mut out, name, &[("kind", kind)], v);
                    }
                }
                "clarity_hosts_unreachable" => {
                    if let Some(v) = m.hosts_unreachable {
                        sample(&mut out, name, &[], v);
                    }
                }
                "clarity_last_applied_commit_timestamp_seconds" => {
                    for (branch, v) in &m.last_applied {
                        sample(&mut out, name, &[("branch", branch)], v);
                    }
                }
                "clarity_refused_commits_total" => {
                    for (branch, v) in &m.refused {
                        sample(&mut out, name, &[("branch", branch)], v);
                    }
                }
                "clarity_notifications_sent_total" => {
                    sample(&mut out, name, &[], m.notifications_sent);
                }
                "clarity_notifications_failed_total" => {
                    sample(&mut out, name, &[], m.notifications_failed);
                }
                other => unreachable!("no samples for series {other}"),
            }
        }
        out
    }
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the exposition format quotes it: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: `\` and newlines escaped (quotes stay as they are).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let m = Metrics::new();
        m.observe_refusal("feature/\"x\"\n");
        assert!(
            m.render()
                .contains("clarity_refused_commits_total{branch=\"feature/\\\"x\\\"\\n\"} 1\n")
        );
    }

    #[test]
    fn every_series_has_help_and_type() {
        let text = Metrics::new().render();
        for (name, kind, _) in SERIES {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        assert!(text.contains("clarity_notifications_sent_total 0\n"));
    }

    #[test]
    fn deployment_outcomes_follow_the_agent() {
        assert_eq!(
            deployment_outcome(HostOutcome::Converged, false, true),
            Some("converged")
        );
        assert_eq!(
            deployment_outcome(HostOutcome::RolledBack, true, true),
            Some("rolled_back")
        );
        assert_eq!(
            deployment_outcome(HostOutcome::RolledBack, false, true),
            Some("converged")
        );
        assert_eq!(
            deployment_outcome(HostOutcome::RestoreFailed, true, true),
            Some("failed")
        );
        assert_eq!(
            deployment_outcome(HostOutcome::Failed, false, false),
            Some("failed")
        );
        assert_eq!(
            deployment_outcome(HostOutcome::Unreachable, false, false),
            None
        );
        assert_eq!(
            deployment_outcome(HostOutcome::Unchanged, false, false),
            None
        );
    }
}
