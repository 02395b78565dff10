//! Writing run records: a run and all its hosts, deployments and steps in one `BEGIN IMMEDIATE`
//! transaction (a reader never sees half a run), and the current deployment state that apply
//! runs leave behind. Recording is idempotent: recording a run id again replaces that run.

use super::{Ledger, LedgerError};
use crate::model::apply::{Action, StepStatus};
use crate::model::run::{DriftFinding, RunMode, RunRecord};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

/// The snake_case name serde gives a unit enum variant (the same text as in the JSON of a
/// record, so the ledger and the notes spell outcomes alike).
pub(super) fn enum_text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("unit enum variants serialize as strings, got {other:?}"),
    }
}

/// SQLite integers are signed; durations and byte counts never come near the limit, and a
/// clamped value is still truthful ("at least").
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Ledger {
    /// Records one run with every host, deployment and step, in one transaction; an apply run
    /// also updates the current deployment state of its hosts.
    pub fn record_run(&mut self, run: &RunRecord) -> Result<(), LedgerError> {
        self.record_runs(std::slice::from_ref(run))
    }

    /// Records many runs in one transaction (one fsync for all of them): a rebuild or an
    /// import. Runs are applied in the order given; give them oldest first so the current
    /// deployment state ends as the newest run left it.
    pub fn record_runs(&mut self, runs: &[RunRecord]) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let err = |action| {
            let path = path.clone();
            move |source| LedgerError::Sqlite {
                path,
                action,
                source,
            }
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("start a write transaction"))?;
        for run in runs {
            insert_run(&tx, run).map_err(err("record a run"))?;
        }
        tx.commit().map_err(err("commit recorded runs"))
    }

    /// Records a drift run and its findings together, in one transaction (a later `drift`
    /// command's writer). Re-recording the run replaces its findings.
    pub fn record_drift(
        &mut self,
        run: &RunRecord,
        findings: &[DriftFinding],
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let err = |action| {
            let path = path.clone();
            move |source| LedgerError::Sqlite {
                path,
                action,
                source,
            }
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("start a write transaction"))?;
        insert_run(&tx, run).map_err(err("record a drift run"))?;
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO drift_findings (run_id, ordinal, server, client, deployment, kind, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(err("record drift findings"))?;
        for (i, f) in findings.iter().enumerate() {
            stmt.execute(params![
                run.id,
                i as i64,
                f.server,
                f.client,
                f.deployment,
                f.kind,
                f.detail
            ])
            .map_err(err("record drift findings"))?;
        }
        drop(stmt);
        tx.commit().map_err(err("commit drift findings"))
    }
}

fn insert_run(tx: &Transaction, run: &RunRecord) -> rusqlite::Result<()> {
    // Children first: the foreign keys point at the run.
    for table in [
        "run_batches",
        "drift_findings",
        "run_steps",
        "run_deployments",
        "run_hosts",
    ] {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE run_id = ?1"))?
            .execute([&run.id])?;
    }
    // An upsert rather than delete-and-insert: deployment_state rows may point at this run
    // and keep their `since` when it is recorded again.
    tx.prepare_cached(
        "INSERT INTO runs (id, format, commit_id, branch, started_at, finished_at, triggered_by,
                           mode, outcome, message, pause_deadline, resumes, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET
             format = excluded.format, commit_id = excluded.commit_id, branch = excluded.branch,
             started_at = excluded.started_at, finished_at = excluded.finished_at,
             triggered_by = excluded.triggered_by, mode = excluded.mode, outcome = excluded.outcome,
             message = excluded.message, pause_deadline = excluded.pause_deadline,
             resumes = excluded.resumes, kind = excluded.kind",
    )?
    .execute(params![
        run.id,
        run.format,
        run.commit,
        run.branch,
        run.started_at,
        run.finished_at,
        run.trigger,
        enum_text(&run.mode),
        enum_text(&run.outcome),
        run.message,
        run.rollout.pause_deadline,
        run.rollout.resumes,
        (!run.kind.is_reconcile()).then(|| run.kind.as_str())
    ])?;
    let mut batch_stmt = tx.prepare_cached(
        "INSERT INTO run_batches (run_id, ordinal, unit, canary, state, hosts, failed,
                                  failure_budget)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (i, b) in run.rollout.batches.iter().enumerate() {
        let hosts = serde_json::to_string(&b.hosts)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        batch_stmt.execute(params![
            run.id,
            i as i64,
            b.unit,
            b.canary,
            b.state.as_str(),
            hosts,
            b.failed,
            b.failure_budget
        ])?;
    }
    let mut host_stmt = tx.prepare_cached(
        "INSERT INTO run_hosts (run_id, ordinal, server, client, outcome, duration_ms, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut dep_stmt = tx.prepare_cached(
        "INSERT INTO run_deployments (run_id, host_ordinal, ordinal, name, profile, version,
                                      release_name, healthy, health)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut step_stmt = tx.prepare_cached(
        "INSERT INTO run_steps (run_id, host_ordinal, ordinal, deployment, action, target, status,
                                duration_ms, message, bytes, repository_kind, retries)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (h, host) in run.hosts.iter().enumerate() {
        let h = h as i64;
        host_stmt.execute(params![
            run.id,
            h,
            host.server,
            host.client,
            host.outcome.as_str(),
            int(host.duration_ms),
            host.message
        ])?;
        for (d, dep) in host.deployments.iter().enumerate() {
            dep_stmt.execute(params![
                run.id,
                h,
                d as i64,
                dep.name,
                dep.profile,
                dep.version,
                dep.release,
                dep.healthy,
                dep.health
            ])?;
        }
        for (s, step) in host.steps.iter().enumerate() {
            step_stmt.execute(params![
                run.id,
                h,
                s as i64,
                step.deployment,
                enum_text(&step.action),
                step.target,
                enum_text(&step.status),
                int(step.duration_ms),
                step.message,
                step.bytes.map(int),
                step.repository_kind,
                step.retries
            ])?;
        }
    }
    if run.mode == RunMode::Apply {
        update_state(tx, run)?;
    }
    Ok(())
}

/// Applies an apply run to `deployment_state`: each deployment record is what that host runs
/// now; a successful removal clears the row. A run older than the row's last update (recorded
/// late, e.g. by an import) leaves it alone.
fn update_state(tx: &Transaction, run: &RunRecord) -> rusqlite::Result<()> {
    let mut current = tx.prepare_cached(
        "SELECT version, release_name, since, updated_at FROM deployment_state
          WHERE client = ?1 AND server = ?2 AND deployment = ?3",
    )?;
    let mut upsert = tx.prepare_cached(
        "INSERT OR REPLACE INTO deployment_state (client, server, deployment, profile, version,
                                                  release_name, healthy, since, run_id, updated_at,
                                                  health)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut remove = tx.prepare_cached(
        "DELETE FROM deployment_state
          WHERE client = ?1 AND server = ?2 AND deployment = ?3 AND updated_at <= ?4",
    )?;
    for host in &run.hosts {
        if host.outcome.keeps_previous_record() {
            continue;
        }
        for dep in &host.deployments {
            let existing: Option<(String, String, String, String)> = current
                .query_row(params![host.client, host.server, dep.name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let since = match existing {
                Some((_, _, _, updated_at)) if updated_at > run.finished_at => continue,
                Some((version, release, since, _))
                    if version == dep.version && release == dep.release =>
                {
                    since
                }
                _ => run.finished_at.clone(),
            };
            upsert.execute(params![
                host.client,
                host.server,
                dep.name,
                dep.profile,
                dep.version,
                dep.release,
                dep.healthy,
                since,
                run.id,
                run.finished_at,
                dep.health
            ])?;
        }
        for step in &host.steps {
            if step.action == Action::RemoveDeployment && step.status == StepStatus::Ok {
                remove.execute(params![
                    host.client,
                    host.server,
                    step.deployment,
                    run.finished_at
                ])?;
            }
        }
    }
    Ok(())
}
