//! Reading the ledger: run summaries for `history`, a whole run for `history show`, the
//! versions a deployment went through (rollback and the promotion gate), the last applied
//! commit (the watch loop), the current deployment state and drift findings.

use super::{Ledger, LedgerError};
use crate::model::run::{
    DeploymentRecord, DriftFinding, HostOutcome, HostRecord, RunMode, RunOutcome, RunRecord,
    StepRecord,
};
use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

/// Which runs `runs` returns. Host-level filters (`client`, `server`, `deployment`) select runs
/// where one host matches all of them, and the summary lists only the matching hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub client: Option<String>,
    pub server: Option<String>,
    /// A deployment name: the host recorded it, or ran a step for it.
    pub deployment: Option<String>,
    /// Runs started at or after this RFC 3339 instant (or date: `2026-11-01`).
    pub since: Option<String>,
    /// At most this many runs (the newest); `None` is all.
    pub limit: Option<usize>,
    /// Only runs of this mode.
    pub mode: Option<RunMode>,
}

/// One run as `history` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub commit: String,
    pub branch: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub trigger: String,
    pub mode: RunMode,
    pub outcome: RunOutcome,
    /// Hosts in the run, whether or not the filter listed them.
    pub host_count: usize,
    /// The hosts that matched the filter (all of them without host filters), in run order.
    pub hosts: Vec<HostSummary>,
    pub drift_findings: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSummary {
    pub server: String,
    pub client: String,
    pub outcome: HostOutcome,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub deployments: Vec<DeploymentRecord>,
}

/// One version of a deployment (client × deployment × profile) as an apply run left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentHistoryEntry {
    pub version: String,
    pub run_id: String,
    pub finished_at: String,
    /// Healthy at the end of the run on every host that recorded this version.
    pub healthy_everywhere: bool,
    pub hosts: usize,
}

/// Which apply runs `last_applied_commit` considers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedFilter {
    pub branch: Option<String>,
    /// Runs that touched a host of this client ...
    pub client: Option<String>,
    /// ... with a deployment of one of these profiles (empty: any profile).
    pub profiles: Vec<String>,
    /// ... and this server.
    pub server: Option<String>,
    /// Only runs whose outcome was `success` or `no_changes`.
    pub successful_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedCommit {
    pub commit: String,
    pub run_id: String,
    pub finished_at: String,
    pub outcome: RunOutcome,
}

/// What a host runs now, as the last apply run that touched the deployment left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentState {
    pub client: String,
    pub server: String,
    pub deployment: String,
    pub profile: String,
    pub version: String,
    pub release: String,
    pub healthy: bool,
    /// Why it is (not) healthy, as the host's agent reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// When this version and release became current.
    pub since: String,
    /// The last apply run that recorded it.
    pub run_id: String,
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Ledger {
    /// A snake_case enum value as stored (`apply`, `no_changes`).
    pub(super) fn parse<T: serde::de::DeserializeOwned>(
        &self,
        run: &str,
        field: &'static str,
        value: String,
    ) -> Result<T, LedgerError> {
        serde_json::from_value(serde_json::Value::String(value.clone())).map_err(|_| {
            LedgerError::BadValue {
                path: self.path.clone(),
                run: run.to_string(),
                field,
                value,
            }
        })
    }

    /// Runs matching `filter`, newest first, each with its (matching) hosts' outcomes.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LedgerError> {
        let err = |source| self.err("list runs", source);
        let limit = filter
            .limit
            .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
            .unwrap_or(-1);
        // One host must match every host-level filter, so `--client a --server b` means "b,
        // of client a", not "a run that touched both".
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.id, r.commit_id, r.branch, r.started_at, r.finished_at, r.triggered_by,
                        r.mode, r.outcome,
                        (SELECT count(*) FROM run_hosts h WHERE h.run_id = r.id),
                        (SELECT count(*) FROM drift_findings f WHERE f.run_id = r.id)
                   FROM runs r
                  WHERE (?1 IS NULL OR r.started_at >= ?1)
                    AND (?6 IS NULL OR r.mode = ?6)
                    AND ((?2 IS NULL AND ?3 IS NULL AND ?4 IS NULL) OR EXISTS (
                        SELECT 1 FROM run_hosts h
                         WHERE h.run_id = r.id
                           AND (?2 IS NULL OR h.client = ?2)
                           AND (?3 IS NULL OR h.server = ?3)
                           AND (?4 IS NULL
                                OR EXISTS (SELECT 1 FROM run_deployments d
                                            WHERE d.run_id = h.run_id
                                              AND d.host_ordinal = h.ordinal AND d.name = ?4)
                                OR EXISTS (SELECT 1 FROM run_steps s
                                            WHERE s.run_id = h.run_id
                                              AND s.host_ordinal = h.ordinal
                                              AND s.deployment = ?4))))
                  ORDER BY r.started_at DESC, r.id DESC
                  LIMIT ?5",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(
                params![
                    filter.since,
                    filter.client,
                    filter.server,
                    filter.deployment,
                    limit,
                    filter.mode.map(|m| super::write::enum_text(&m))
                ],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, i64>(9)?,
                    ))
                },
            )
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, commit, branch, started_at, finished_at, trigger, mode, outcome, hosts, drift) in
            rows
        {
            let mode = self.parse(&id, "mode", mode)?;
            let outcome = self.parse(&id, "outcome", outcome)?;
            let hosts_listed = self.host_summaries(&id, filter)?;
            out.push(RunSummary {
                id,
                commit,
                branch,
                started_at,
                finished_at,
                trigger,
                mode,
                outcome,
                host_count: usize::try_from(hosts).unwrap_or(0),
                hosts: hosts_listed,
                drift_findings: usize::try_from(drift).unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn host_summaries(
        &self,
        run_id: &str,
        filter: &RunFilter,
    ) -> Result<Vec<HostSummary>, LedgerError> {
        let err = |source| self.err("list a run's hosts", source);
        // Hosts with their deployments in one query (a LEFT JOIN, ordered), folded below.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT h.ordinal, h.server, h.client, h.outcome, h.duration_ms, h.message,
                        d.name, d.profile, d.version, d.release_name, d.healthy, d.health
                   FROM run_hosts h
                   LEFT JOIN run_deployments d
                     ON d.run_id = h.run_id AND d.host_ordinal = h.ordinal
                  WHERE h.run_id = ?1
                    AND (?2 IS NULL OR h.client = ?2)
                    AND (?3 IS NULL OR h.server = ?3)
                    AND (?4 IS NULL
                         OR EXISTS (SELECT 1 FROM run_deployments d2
                                     WHERE d2.run_id = h.run_id
                                       AND d2.host_ordinal = h.ordinal AND d2.name = ?4)
                         OR EXISTS (SELECT 1 FROM run_steps s
                                     WHERE s.run_id = h.run_id AND s.host_ordinal = h.ordinal
                                       AND s.deployment = ?4))
                  ORDER BY h.ordinal, d.ordinal",
            )
            .map_err(err)?;
        let mut rows = stmt
            .query(params![
                run_id,
                filter.client,
                filter.server,
                filter.deployment
            ])
            .map_err(err)?;
        let mut hosts: Vec<(i64, HostSummary)> = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let ordinal: i64 = r.get(0).map_err(err)?;
            if hosts.last().is_none_or(|(o, _)| *o != ordinal) {
                hosts.push((
                    ordinal,
                    HostSummary {
                        server: r.get(1).map_err(err)?,
                        client: r.get(2).map_err(err)?,
                        outcome: HostOutcome::parse(&r.get::<_, String>(3).map_err(err)?),
                        duration_ms: uint(r.get(4).map_err(err)?),
                        message: r.get(5).map_err(err)?,
                        deployments: Vec::new(),
                    },
                ));
            }
            if let Some(name) = r.get::<_, Option<String>>(6).map_err(err)? {
                let host = &mut hosts.last_mut().expect("pushed above").1;
                host.deployments.push(DeploymentRecord {
                    name,
                    profile: r.get(7).map_err(err)?,
                    version: r.get(8).map_err(err)?,
                    release: r.get(9).map_err(err)?,
                    healthy: r.get(10).map_err(err)?,
                    health: r.get(11).map_err(err)?,
                });
            }
        }
        Ok(hosts.into_iter().map(|(_, h)| h).collect())
    }

    /// Run ids starting with `prefix`, newest first (for `history show` with a short id).
    pub fn run_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, LedgerError> {
        let err = |source| self.err("look up run ids", source);
        // A range scan on the primary key rather than LIKE, whose `_` and `%` are wildcards.
        let mut upper = prefix.to_string();
        upper.push(char::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id FROM runs WHERE id >= ?1 AND id < ?2 ORDER BY started_at DESC, id DESC",
            )
            .map_err(err)?;
        stmt.query_map(params![prefix, upper], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    /// The whole record of run `id` (every host, deployment and step), exactly as recorded.
    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, LedgerError> {
        let err = |source| self.err("read a run", source);
        let head = self
            .conn
            .prepare_cached(
                "SELECT format, commit_id, branch, started_at, finished_at, triggered_by, mode,
                        outcome, message
                   FROM runs WHERE id = ?1",
            )
            .map_err(err)?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .optional()
            .map_err(err)?;
        let Some((
            format,
            commit,
            branch,
            started_at,
            finished_at,
            trigger,
            mode,
            outcome,
            message,
        )) = head
        else {
            return Ok(None);
        };
        let mut hosts: Vec<HostRecord> = self
            .conn
            .prepare_cached(
                "SELECT server, client, outcome, duration_ms, message FROM run_hosts
                  WHERE run_id = ?1 ORDER BY ordinal",
            )
            .map_err(err)?
            .query_map([id], |r| {
                Ok(HostRecord {
                    server: r.get(0)?,
                    client: r.get(1)?,
                    outcome: HostOutcome::parse(&r.get::<_, String>(2)?),
                    duration_ms: uint(r.get(3)?),
                    message: r.get(4)?,
                    deployments: Vec::new(),
                    steps: Vec::new(),
                })
            })
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let mut deps = self
            .conn
            .prepare_cached(
                "SELECT host_ordinal, name, profile, version, release_name, healthy, health
                   FROM run_deployments WHERE run_id = ?1 ORDER BY host_ordinal, ordinal",
            )
            .map_err(err)?;
        let mut rows = deps.query([id]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let host = self.host_at(&mut hosts, id, r)?;
            host.deployments.push(DeploymentRecord {
                name: r.get(1).map_err(err)?,
                profile: r.get(2).map_err(err)?,
                version: r.get(3).map_err(err)?,
                release: r.get(4).map_err(err)?,
                healthy: r.get(5).map_err(err)?,
                health: r.get(6).map_err(err)?,
            });
        }
        drop(rows);
        let mut steps = self
            .conn
            .prepare_cached(
                "SELECT host_ordinal, deployment, action, target, status, duration_ms, message,
                        bytes, repository_kind, retries
                   FROM run_steps WHERE run_id = ?1 ORDER BY host_ordinal, ordinal",
            )
            .map_err(err)?;
        let mut rows = steps.query([id]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let action = self.parse(id, "step action", r.get(2).map_err(err)?)?;
            let status = self.parse(id, "step status", r.get(4).map_err(err)?)?;
            let step = StepRecord {
                deployment: r.get(1).map_err(err)?,
                action,
                target: r.get(3).map_err(err)?,
                status,
                duration_ms: uint(r.get(5).map_err(err)?),
                message: r.get(6).map_err(err)?,
                bytes: r.get::<_, Option<i64>>(7).map_err(err)?.map(uint),
                repository_kind: r.get(8).map_err(err)?,
                retries: r.get(9).map_err(err)?,
            };
            self.host_at(&mut hosts, id, r)?.steps.push(step);
        }
        Ok(Some(RunRecord {
            format,
            id: id.to_string(),
            commit,
            branch,
            started_at,
            finished_at,
            trigger,
            mode: self.parse(id, "mode", mode)?,
            outcome: self.parse(id, "outcome", outcome)?,
            message,
            hosts,
            rollout: self.rollout_of(id)?,
            kind: self.kind_of(id)?,
        }))
    }

    fn kind_of(&self, id: &str) -> Result<crate::model::run::RunKind, LedgerError> {
        let kind: Option<String> = self
            .conn
            .prepare_cached("SELECT kind FROM runs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(|source| self.err("read a run's kind", source))?;
        match kind.as_deref() {
            None => Ok(crate::model::run::RunKind::Reconcile),
            Some(k) => {
                serde_json::from_value(serde_json::Value::String(k.to_string())).map_err(|_| {
                    LedgerError::BadValue {
                        path: self.path.clone(),
                        run: id.to_string(),
                        field: "kind",
                        value: k.to_string(),
                    }
                })
            }
        }
    }

    /// A run's batches, its pause deadline, the run it resumes and the run that resumed it.
    fn rollout_of(&self, id: &str) -> Result<crate::model::run::RolloutRecord, LedgerError> {
        use crate::model::run::{BatchRecord, BatchState, Resumed, RolloutRecord};
        let err = |source| self.err("read a run's rollout", source);
        let (pause_deadline, resumes) = self
            .conn
            .prepare_cached("SELECT pause_deadline, resumes FROM runs WHERE id = ?1")
            .map_err(err)?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                ))
            })
            .map_err(err)?;
        let resumed = self
            .conn
            .prepare_cached(
                "SELECT id, triggered_by, started_at FROM runs WHERE resumes = ?1
                  ORDER BY started_at, id LIMIT 1",
            )
            .map_err(err)?
            .query_row([id], |r| {
                Ok(Resumed {
                    run: r.get(0)?,
                    by: r.get(1)?,
                    at: r.get(2)?,
                })
            })
            .optional()
            .map_err(err)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT unit, canary, state, hosts, failed, failure_budget FROM run_batches
                  WHERE run_id = ?1 ORDER BY ordinal",
            )
            .map_err(err)?;
        let rows: Vec<(String, bool, String, String, i64, Option<i64>)> = stmt
            .query_map([id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let mut batches = Vec::new();
        for (unit, canary, state, hosts, failed, budget) in rows {
            let bad = |field: &'static str, value: String| LedgerError::BadValue {
                path: self.path.clone(),
                run: id.to_string(),
                field,
                value,
            };
            batches.push(BatchRecord {
                unit,
                canary,
                state: BatchState::parse(&state).ok_or_else(|| bad("batch state", state))?,
                hosts: serde_json::from_str(&hosts).map_err(|_| bad("batch hosts", hosts))?,
                failed: u32::try_from(failed).unwrap_or(0),
                failure_budget: budget.and_then(|b| u32::try_from(b).ok()),
            });
        }
        Ok(RolloutRecord {
            batches,
            pause_deadline,
            resumes,
            resumed,
        })
    }

    fn host_at<'h>(
        &self,
        hosts: &'h mut [HostRecord],
        run: &str,
        row: &Row,
    ) -> Result<&'h mut HostRecord, LedgerError> {
        let ordinal: i64 = row
            .get(0)
            .map_err(|source| self.err("read a run", source))?;
        usize::try_from(ordinal)
            .ok()
            .and_then(|o| hosts.get_mut(o))
            .ok_or_else(|| LedgerError::BadValue {
                path: self.path.clone(),
                run: run.to_string(),
                field: "host ordinal",
                value: ordinal.to_string(),
            })
    }

    /// The versions of one deployment (a client's deployment in one profile) that apply runs
    /// left on its hosts, newest first; one entry per run and version.
    pub fn deployment_history(
        &self,
        client: &str,
        deployment: &str,
        profile: &str,
    ) -> Result<Vec<DeploymentHistoryEntry>, LedgerError> {
        let err = |source| self.err("read a deployment's history", source);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.version, r.id, r.finished_at, min(d.healthy), count(*)
                   FROM run_deployments d
                   JOIN run_hosts h ON h.run_id = d.run_id AND h.ordinal = d.host_ordinal
                   JOIN runs r ON r.id = d.run_id
                  WHERE r.mode = 'apply' AND h.client = ?1 AND d.name = ?2 AND d.profile = ?3
                  GROUP BY r.id, d.version
                  ORDER BY r.finished_at DESC, r.id DESC, d.version",
            )
            .map_err(err)?;
        stmt.query_map(params![client, deployment, profile], |r| {
            Ok(DeploymentHistoryEntry {
                version: r.get(0)?,
                run_id: r.get(1)?,
                finished_at: r.get(2)?,
                healthy_everywhere: r.get::<_, i64>(3)? == 1,
                hosts: usize::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
            })
        })
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)
    }

    /// The commit of the newest apply run of `branch` that was approved and applied, whatever
    /// its hosts did (refused commits do not count). Newest means recorded last: a record's
    /// own clock (which a note or a skewed host can set to the future) never decides.
    pub fn last_approved_commit(&self, branch: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT commit_id FROM runs
                  WHERE mode = 'apply' AND branch = ?1 AND outcome <> 'refused'
                  ORDER BY rowid DESC LIMIT 1",
            )
            .and_then(|mut s| s.query_row([branch], |r| r.get(0)).optional())
            .map_err(|source| self.err("find the last approved commit", source))
    }

    /// The commit of the newest apply run matching `filter`, newest meaning recorded last.
    pub fn last_applied_commit(
        &self,
        filter: &AppliedFilter,
    ) -> Result<Option<AppliedCommit>, LedgerError> {
        let err = |source| self.err("find the last applied commit", source);
        let row = self
            .conn
            .prepare_cached(
                "SELECT r.commit_id, r.id, r.finished_at, r.outcome FROM runs r
                  WHERE r.mode = 'apply'
                    AND (?1 IS NULL OR r.branch = ?1)
                    AND (?4 = 0 OR r.outcome IN ('success', 'no_changes'))
                    AND ((?2 IS NULL AND ?3 = '[]' AND ?5 IS NULL) OR EXISTS (
                        SELECT 1 FROM run_hosts h
                          LEFT JOIN run_deployments d
                            ON d.run_id = h.run_id AND d.host_ordinal = h.ordinal
                         WHERE h.run_id = r.id
                           AND (?2 IS NULL OR h.client = ?2)
                           AND (?3 = '[]' OR d.profile IN (SELECT value FROM json_each(?3)))
                           AND (?5 IS NULL OR h.server = ?5)))
                  ORDER BY r.rowid DESC
                  LIMIT 1",
            )
            .map_err(err)?
            .query_row(
                params![
                    filter.branch,
                    filter.client,
                    serde_json::to_string(&filter.profiles).expect("strings serialize"),
                    filter.successful_only,
                    filter.server
                ],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(err)?;
        row.map(|(commit, run_id, finished_at, outcome)| {
            Ok(AppliedCommit {
                outcome: self.parse(&run_id, "outcome", outcome)?,
                commit,
                run_id,
                finished_at,
            })
        })
        .transpose()
    }

    /// Per server, the commit of the newest apply run (of `branch`, when given) in which that
    /// host converged or had nothing to do: what the host is known to run. A host that
    /// failed, rolled back or was not attempted keeps the commit it last settled on, so drift
    /// never judges it by a commit it does not run.
    pub fn host_baselines(
        &self,
        branch: Option<&str>,
    ) -> Result<std::collections::BTreeMap<String, String>, LedgerError> {
        let err = |source| self.err("find the hosts' last applied commits", source);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT h.server, r.commit_id FROM run_hosts h JOIN runs r ON r.id = h.run_id
                  WHERE r.mode = 'apply' AND h.outcome IN ('converged', 'unchanged')
                    AND (?1 IS NULL OR r.branch = ?1)
                  ORDER BY r.finished_at, r.id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([branch], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(err)?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            // Oldest first: a newer settled run replaces the host's entry.
            let (server, commit) = row.map_err(err)?;
            out.insert(server, commit);
        }
        Ok(out)
    }

    /// What each host runs now, as apply runs left it, sorted by client, server, deployment.
    pub fn current_deployments(
        &self,
        client: Option<&str>,
        server: Option<&str>,
    ) -> Result<Vec<DeploymentState>, LedgerError> {
        let err = |source| self.err("read the current deployment state", source);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT client, server, deployment, profile, version, release_name, healthy, since,
                        run_id, health
                   FROM deployment_state
                  WHERE (?1 IS NULL OR client = ?1) AND (?2 IS NULL OR server = ?2)
                  ORDER BY client, server, deployment",
            )
            .map_err(err)?;
        stmt.query_map(params![client, server], |r| {
            Ok(DeploymentState {
                client: r.get(0)?,
                server: r.get(1)?,
                deployment: r.get(2)?,
                profile: r.get(3)?,
                version: r.get(4)?,
                release: r.get(5)?,
                healthy: r.get(6)?,
                since: r.get(7)?,
                run_id: r.get(8)?,
                health: r.get(9)?,
            })
        })
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)
    }

    /// The drift findings recorded with run `run_id`, in the order given.
    pub fn drift_findings(&self, run_id: &str) -> Result<Vec<DriftFinding>, LedgerError> {
        let err = |source| self.err("read drift findings", source);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT server, client, deployment, kind, detail FROM drift_findings
                  WHERE run_id = ?1 ORDER BY ordinal",
            )
            .map_err(err)?;
        stmt.query_map([run_id], |r| {
            Ok(DriftFinding {
                server: r.get(0)?,
                client: r.get(1)?,
                deployment: r.get(2)?,
                kind: r.get(3)?,
                detail: r.get(4)?,
            })
        })
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)
    }
}
