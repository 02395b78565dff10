//! Reads for the status API (`serve`): a cheap read-only open for one request, the newest run
//! of a mode, and the last run that listed each server. Nothing here writes.

use super::{BUSY_TIMEOUT, Ledger, LedgerError, RunFilter, SCHEMA_VERSION, schema};
use crate::model::run::{RunMode, RunOutcome};
use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use std::path::Path;

/// A run's head, without its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunHead {
    pub id: String,
    pub commit: String,
    pub branch: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub trigger: String,
    pub mode: RunMode,
    pub outcome: RunOutcome,
    pub host_count: usize,
}

/// The newest run that listed a server, and how that server fared in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerLastRun {
    pub server: String,
    pub client: String,
    pub run_id: String,
    pub mode: RunMode,
    pub finished_at: String,
    /// The host's outcome in that run.
    pub outcome: crate::model::run::HostOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Ledger {
    /// Opens an existing ledger read-only for a short read, skipping what [`Ledger::open`]
    /// does at every open (`PRAGMA quick_check`, which reads the whole file, and migration):
    /// the status API opens the ledger once per request and must stay cheap as the ledger
    /// grows. A file that is not a ledger at [`SCHEMA_VERSION`] goes through
    /// [`Ledger::open_existing`] instead, which migrates it or says what is wrong.
    pub fn open_reader(path: &Path) -> Result<Ledger, LedgerError> {
        if !path.is_file() {
            return Err(LedgerError::Missing {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| LedgerError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let current = conn.busy_timeout(BUSY_TIMEOUT).is_ok()
            && conn
                .pragma_query_value(None, "application_id", |r| r.get::<_, i32>(0))
                .is_ok_and(|id| id == schema::APPLICATION_ID)
            && conn
                .pragma_query_value(None, "user_version", |r| r.get::<_, u32>(0))
                .is_ok_and(|v| v == SCHEMA_VERSION);
        if !current {
            drop(conn);
            return Ledger::open_existing(path);
        }
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The newest run (by start time) of `mode`, or of any mode.
    pub fn newest_run(&self, mode: Option<RunMode>) -> Result<Option<RunHead>, LedgerError> {
        let filter = RunFilter {
            mode,
            limit: Some(1),
            ..RunFilter::default()
        };
        Ok(self.runs(&filter)?.into_iter().next().map(|r| RunHead {
            id: r.id,
            commit: r.commit,
            branch: r.branch,
            started_at: r.started_at,
            finished_at: r.finished_at,
            trigger: r.trigger,
            mode: r.mode,
            outcome: r.outcome,
            host_count: r.host_count,
        }))
    }

    /// For every server any run listed (or only `server`), the newest such run, sorted by
    /// server name.
    pub fn server_last_runs(
        &self,
        server: Option<&str>,
    ) -> Result<Vec<ServerLastRun>, LedgerError> {
        let err = |source| self.err("list the servers", source);
        // SQLite takes the bare columns of an aggregate query with max() from the row holding
        // the maximum, so this is the newest run per server in one pass.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT h.server, h.client, r.id, r.mode, r.finished_at, h.outcome, h.message,
                        max(r.started_at || ' ' || r.id)
                   FROM run_hosts h JOIN runs r ON r.id = h.run_id
                  WHERE ?1 IS NULL OR h.server = ?1
                  GROUP BY h.server
                  ORDER BY h.server",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![server], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        rows.into_iter()
            .map(
                |(server, client, run_id, mode, finished_at, outcome, message)| {
                    Ok(ServerLastRun {
                        mode: self.parse(&run_id, "mode", mode)?,
                        server,
                        client,
                        run_id,
                        finished_at,
                        outcome: crate::model::run::HostOutcome::parse(&outcome),
                        message,
                    })
                },
            )
            .collect()
    }
}
