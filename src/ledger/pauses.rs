//! Rollouts paused after their canary: which runs still wait for `resume`, and whether a
//! newer run has since taken over a waiting host (then resuming the old commit would move it
//! backwards). Only reads; a resumption is recorded as the resuming run's `resumes` column.

use super::{Ledger, LedgerError};
use rusqlite::{OptionalExtension, params};

/// A run that paused after its canary and that no run has resumed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausedRun {
    pub id: String,
    pub commit: String,
    pub branch: Option<String>,
    /// When the watch loop may resume it by itself (`None`: only `resume` does).
    pub deadline: Option<String>,
}

impl Ledger {
    /// Paused runs nobody resumed, oldest first (recording order).
    pub fn paused_runs(&self) -> Result<Vec<PausedRun>, LedgerError> {
        let err = |source| self.err("find paused runs", source);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.id, r.commit_id, r.branch, r.pause_deadline FROM runs r
                  WHERE r.mode = 'apply' AND r.outcome = 'awaiting_approval'
                    AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.resumes = r.id)
                  ORDER BY r.rowid",
            )
            .map_err(err)?;
        stmt.query_map([], |r| {
            Ok(PausedRun {
                id: r.get(0)?,
                commit: r.get(1)?,
                branch: r.get(2)?,
                deadline: r.get(3)?,
            })
        })
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)
    }

    /// A run recorded after `run` that applied (or judged) one of `hosts`, other than one
    /// resuming `run`: the paused rollout was overtaken on that host.
    pub fn superseding_run(
        &self,
        run: &str,
        hosts: &[String],
    ) -> Result<Option<(String, String)>, LedgerError> {
        let err = |source| self.err("look for runs newer than a paused one", source);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.id, h.server FROM runs r JOIN run_hosts h ON h.run_id = r.id
                  WHERE r.rowid > (SELECT rowid FROM runs WHERE id = ?1)
                    AND r.mode = 'apply' AND h.server = ?2
                    AND h.outcome NOT IN ('not_attempted', 'unreachable', 'awaiting_approval')
                    AND (r.resumes IS NULL OR r.resumes <> ?1)
                  ORDER BY r.rowid LIMIT 1",
            )
            .map_err(err)?;
        for host in hosts {
            let found = stmt
                .query_row(params![run, host], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(err)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}
