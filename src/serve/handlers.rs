//! The read-only routes: health, metrics, and the ledger as JSON (runs, one run, hosts,
//! deployments, drift). Every answer is built from one ledger read.

use super::{ApiError, ServeState, with_ledger};
use crate::ledger::api::RunHead;
use crate::ledger::{DeploymentState, Ledger, LedgerError, RunFilter, RunSummary};
use crate::model::run::{DriftFinding, RunMode, RunRecord};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `limit` when none is given, and the most one request may ask for.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

pub(super) async fn healthz(State(state): State<Arc<ServeState>>) -> impl IntoResponse {
    let status = state
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(serde_json::json!({
        "status": if status.stopping { "stopping" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": status.started_at,
        "busy": status.busy,
        "last_run": status.last_run,
        "stopping": status.stopping,
    }))
}

pub(super) async fn metrics(State(state): State<Arc<ServeState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct RunsQuery {
    limit: Option<usize>,
    client: Option<String>,
    server: Option<String>,
    deployment: Option<String>,
    since: Option<String>,
}

#[derive(Serialize)]
struct Runs {
    runs: Vec<RunSummary>,
}

pub(super) async fn runs(
    State(state): State<Arc<ServeState>>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<impl Serialize>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let since = match q.since.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(normalize_since(&s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "since must be a date (2026-11-01) or an RFC 3339 time (2026-11-01T09:30:00Z)",
            )
        })?),
    };
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let filter = RunFilter {
        client: nonempty(q.client),
        server: nonempty(q.server),
        deployment: nonempty(q.deployment),
        since,
        limit: Some(limit),
        mode: None,
    };
    let runs = with_ledger(&state, move |l| match l {
        Some(l) => l.runs(&filter),
        None => Ok(Vec::new()),
    })
    .await?;
    Ok(Json(Runs { runs }))
}

/// `since` as the ledger compares it: a date stays a date (it sorts before every time of that
/// day), a time becomes UTC `YYYY-MM-DDTHH:MM:SSZ`.
fn normalize_since(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if s.len() == 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
    {
        return Some(s.to_string());
    }
    let base = s.get(..19)?;
    let secs = crate::clock::parse_rfc3339(&format!("{base}Z"))?;
    if !(digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && digits(17..19))
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if end == 0 {
            return None;
        }
        rest = &frac[end..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let (sign, hm) = match rest.as_bytes().first()? {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return None,
            };
            let (h, m) = hm.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let utc = u64::try_from(i64::try_from(secs).ok()? - offset).ok()?;
    Some(crate::clock::rfc3339(utc))
}

#[derive(Serialize)]
struct RunDetail {
    run: RunRecord,
    drift_findings: Vec<DriftFinding>,
    /// Hosts a rollout paused after its canary holds back, until `resume` (empty otherwise,
    /// and once the run was resumed).
    waiting_hosts: Vec<String>,
}

pub(super) async fn run(
    State(state): State<Arc<ServeState>>,
    Path(id): Path<String>,
) -> Result<Json<impl Serialize>, ApiError> {
    let lookup = id.clone();
    let found = with_ledger(&state, move |l| {
        let Some(l) = l else { return Ok(None) };
        let Some(run) = l.run(&lookup)? else {
            return Ok(None);
        };
        let drift_findings = l.drift_findings(&lookup)?;
        let waiting_hosts = match run.rollout.resumed {
            Some(_) => Vec::new(),
            None => run.rollout.waiting_hosts(),
        };
        Ok(Some(RunDetail {
            run,
            drift_findings,
            waiting_hosts,
        }))
    })
    .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run with id `{id}`")))
}

/// A server as the API lists it.
#[derive(Serialize)]
struct Host {
    server: String,
    client: String,
    /// The newest run that listed this server.
    last_run: Option<HostRun>,
    /// Findings for this server in the newest drift run.
    drift_findings: usize,
    deployments: Vec<HostDeployment>,
}

#[derive(Serialize)]
struct HostRun {
    id: String,
    mode: RunMode,
    finished_at: String,
    outcome: crate::model::run::HostOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Serialize)]
struct HostDeployment {
    deployment: String,
    profile: String,
    version: String,
    release: String,
    healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<String>,
    since: String,
    run_id: String,
}

/// Every server the ledger knows (or only `server`), sorted by name.
fn read_hosts(l: &Ledger, server: Option<&str>) -> Result<Vec<Host>, LedgerError> {
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    for last in l.server_last_runs(server)? {
        hosts.insert(
            last.server.clone(),
            Host {
                server: last.server,
                client: last.client,
                last_run: Some(HostRun {
                    id: last.run_id,
                    mode: last.mode,
                    finished_at: last.finished_at,
                    outcome: last.outcome,
                    message: last.message,
                }),
                drift_findings: 0,
                deployments: Vec::new(),
            },
        );
    }
    for d in l.current_deployments(None, server)? {
        let host = hosts.entry(d.server.clone()).or_insert_with(|| Host {
            server: d.server.clone(),
            client: d.client.clone(),
            last_run: None,
            drift_findings: 0,
            deployments: Vec::new(),
        });
        host.deployments.push(HostDeployment {
            deployment: d.deployment,
            profile: d.profile,
            version: d.version,
            release: d.release,
            healthy: d.healthy,
            health: d.health,
            since: d.since,
            run_id: d.run_id,
        });
    }
    if let Some(drift) = l.newest_run(Some(RunMode::Drift))? {
        for f in l.drift_findings(&drift.id)? {
            if let Some(host) = hosts.get_mut(&f.server) {
                host.drift_findings += 1;
            }
        }
    }
    Ok(hosts.into_values().collect())
}

#[derive(Serialize)]
struct Hosts {
    hosts: Vec<Host>,
}

pub(super) async fn hosts(
    State(state): State<Arc<ServeState>>,
) -> Result<Json<impl Serialize>, ApiError> {
    let hosts = with_ledger(&state, |l| match l {
        Some(l) => read_hosts(l, None),
        None => Ok(Vec::new()),
    })
    .await?;
    Ok(Json(Hosts { hosts }))
}

pub(super) async fn host(
    State(state): State<Arc<ServeState>>,
    Path(server): Path<String>,
) -> Result<Json<impl Serialize>, ApiError> {
    let name = server.clone();
    let mut found = with_ledger(&state, move |l| match l {
        Some(l) => read_hosts(l, Some(&name)),
        None => Ok(Vec::new()),
    })
    .await?;
    found.pop().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run has listed a server `{server}`"),
        )
    })
}

/// One deployment of one client in one profile, across its hosts.
#[derive(Serialize)]
struct Deployment {
    client: String,
    deployment: String,
    profile: String,
    /// The distinct versions its hosts run (more than one during a rollout or after a
    /// partial failure).
    versions: Vec<String>,
    /// Every host is healthy.
    healthy: bool,
    hosts: Vec<DeploymentHost>,
}

#[derive(Serialize)]
struct DeploymentHost {
    server: String,
    version: String,
    release: String,
    healthy: bool,
    since: String,
    run_id: String,
}

fn group_deployments(states: Vec<DeploymentState>) -> Vec<Deployment> {
    let mut groups: BTreeMap<(String, String, String), Deployment> = BTreeMap::new();
    for s in states {
        let key = (s.client.clone(), s.deployment.clone(), s.profile.clone());
        let group = groups.entry(key).or_insert_with(|| Deployment {
            client: s.client.clone(),
            deployment: s.deployment.clone(),
            profile: s.profile.clone(),
            versions: Vec::new(),
            healthy: true,
            hosts: Vec::new(),
        });
        if !group.versions.contains(&s.version) {
            group.versions.push(s.version.clone());
            group.versions.sort();
        }
        group.healthy &= s.healthy;
        group.hosts.push(DeploymentHost {
            server: s.server,
            version: s.version,
            release: s.release,
            healthy: s.healthy,
            since: s.since,
            run_id: s.run_id,
        });
    }
    groups.into_values().collect()
}

#[derive(Serialize)]
struct Deployments {
    deployments: Vec<Deployment>,
}

pub(super) async fn deployments(
    State(state): State<Arc<ServeState>>,
) -> Result<Json<impl Serialize>, ApiError> {
    let states = with_ledger(&state, |l| match l {
        Some(l) => l.current_deployments(None, None),
        None => Ok(Vec::new()),
    })
    .await?;
    Ok(Json(Deployments {
        deployments: group_deployments(states),
    }))
}

#[derive(Serialize)]
struct Drift {
    /// The newest drift run, or `null` when none was recorded.
    run: Option<RunHead>,
    findings: Vec<DriftFinding>,
}

pub(super) async fn drift(
    State(state): State<Arc<ServeState>>,
) -> Result<Json<impl Serialize>, ApiError> {
    let drift = with_ledger(&state, |l| {
        let Some(l) = l else {
            return Ok(Drift {
                run: None,
                findings: Vec::new(),
            });
        };
        let run = l.newest_run(Some(RunMode::Drift))?;
        let findings = match &run {
            Some(r) => l.drift_findings(&r.id)?,
            None => Vec::new(),
        };
        Ok(Drift { run, findings })
    })
    .await?;
    Ok(Json(drift))
}

#[cfg(test)]
mod tests {
    use super::normalize_since;

    #[test]
    fn since_becomes_utc() {
        assert_eq!(normalize_since("2026-11-01").as_deref(), Some("2026-11-01"));
        assert_eq!(
            normalize_since("2026-11-01T09:30:00Z").as_deref(),
            Some("2026-11-01T09:30:00Z")
        );
        assert_eq!(
            normalize_since("2026-11-01T09:30:00.123+02:00").as_deref(),
            Some("2026-11-01T07:30:00Z")
        );
        assert_eq!(
            normalize_since("2026-11-01T23:30:00-01:00").as_deref(),
            Some("2026-11-02T00:30:00Z")
        );
        for bad in [
            "yesterday",
            "2026-11-01T09:30",
            "2026-11-01T09:30:00",
            "2026-1x-01",
        ] {
            assert_eq!(normalize_since(bad), None, "{bad}");
        }
    }
}
