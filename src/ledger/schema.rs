//! The ledger's schema, versioned with `PRAGMA user_version`, and its ordered forward
//! migrations. A migration is frozen once released: it never changes, a later one does the
//! next step. Each runs in its own `BEGIN IMMEDIATE` transaction together with the version bump,
//! so a ledger is always exactly at one version, even when two processes open it at once.

use rusqlite::{Connection, TransactionBehavior, params};
use std::collections::BTreeMap;

/// Marks a SQLite file as a Clarity ledger (`PRAGMA application_id`, the bytes "Clar"), so
/// that pointing `--ledger` at some other database is refused instead of "migrated".
pub const APPLICATION_ID: i32 = 0x436c_6172;

/// One step from version `N - 1` to `N` (its index in [`MIGRATIONS`] plus one).
pub struct Migration {
    pub description: &'static str,
    pub sql: &'static str,
    /// Data to carry over, run after `sql` in the same transaction. It uses only the tables as
    /// they are at this version, never the current writer, so it keeps working when later
    /// migrations change those tables.
    pub backfill: Option<fn(&Connection) -> rusqlite::Result<()>>,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        description: "runs with their hosts, deployments and steps",
        sql: V1,
        backfill: None,
    },
    Migration {
        description: "current deployment state per host, drift findings, filter indexes",
        sql: V2,
        backfill: Some(backfill_deployment_state_v2),
    },
    Migration {
        description: "pins set by emergency rollbacks",
        sql: V3,
        backfill: None,
    },
    Migration {
        description: "a message per run (why a commit was refused)",
        sql: V4,
        backfill: None,
    },
    Migration {
        description: "approval bases: commits the watch loop judged approved, or an operator named",
        sql: V5,
        backfill: Some(backfill_approval_bases_v5),
    },
    Migration {
        description: "the repository kind and retries of fetch_artifact steps",
        sql: V6,
        backfill: None,
    },
    Migration {
        description: "why a deployment is (not) healthy, as its host reported it",
        sql: V7,
        backfill: None,
    },
    Migration {
        description: "rollout batches per run, pauses after a canary and who resumed them, run kinds",
        sql: V8,
        backfill: None,
    },
];

/// The version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Version 1: a run record in four tables. Ordinals keep hosts, deployments and steps in the
/// order the record lists them, so a stored run reads back exactly as recorded.
const V1: &str = "
CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    format       TEXT NOT NULL,
    commit_id    TEXT NOT NULL,
    branch       TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    mode         TEXT NOT NULL CHECK (mode IN ('apply', 'dry_run', 'drift')),
    outcome      TEXT NOT NULL
);
CREATE INDEX runs_by_start ON runs (started_at, id);
CREATE TABLE run_hosts (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    ordinal     INTEGER NOT NULL,
    server      TEXT NOT NULL,
    client      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    message     TEXT,
    PRIMARY KEY (run_id, ordinal)
) WITHOUT ROWID;
CREATE TABLE run_deployments (
    run_id       TEXT NOT NULL,
    host_ordinal INTEGER NOT NULL,
    ordinal      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    profile      TEXT NOT NULL,
    version      TEXT NOT NULL,
    release_name TEXT NOT NULL,
    healthy      INTEGER NOT NULL CHECK (healthy IN (0, 1)),
    PRIMARY KEY (run_id, host_ordinal, ordinal),
    FOREIGN KEY (run_id, host_ordinal) REFERENCES run_hosts (run_id, ordinal)
) WITHOUT ROWID;
CREATE TABLE run_steps (
    run_id       TEXT NOT NULL,
    host_ordinal INTEGER NOT NULL,
    ordinal      INTEGER NOT NULL,
    deployment   TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    status       TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    message      TEXT,
    bytes        INTEGER,
    PRIMARY KEY (run_id, host_ordinal, ordinal),
    FOREIGN KEY (run_id, host_ordinal) REFERENCES run_hosts (run_id, ordinal)
) WITHOUT ROWID;
";

/// Version 2: what each host runs now (kept current by apply runs, read by rollback and the
/// promotion gate without scanning history), drift findings, and indexes for the filters of
/// `history`.
const V2: &str = "
CREATE TABLE deployment_state (
    client       TEXT NOT NULL,
    server       TEXT NOT NULL,
    deployment   TEXT NOT NULL,
    profile      TEXT NOT NULL,
    version      TEXT NOT NULL,
    release_name TEXT NOT NULL,
    healthy      INTEGER NOT NULL CHECK (healthy IN (0, 1)),
    since        TEXT NOT NULL,
    run_id       TEXT NOT NULL REFERENCES runs (id),
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (client, server, deployment)
) WITHOUT ROWID;
CREATE TABLE drift_findings (
    run_id     TEXT NOT NULL REFERENCES runs (id),
    ordinal    INTEGER NOT NULL,
    server     TEXT NOT NULL,
    client     TEXT NOT NULL,
    deployment TEXT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    PRIMARY KEY (run_id, ordinal)
) WITHOUT ROWID;
CREATE INDEX drift_by_server ON drift_findings (server, deployment);
CREATE INDEX run_hosts_by_server ON run_hosts (server);
CREATE INDEX run_hosts_by_client ON run_hosts (client);
CREATE INDEX run_deployments_by_name ON run_deployments (name, profile);
CREATE INDEX run_steps_by_deployment ON run_steps (deployment);
";

/// Version 3: deployments an emergency rollback switched ahead of git, held at a version until
/// the repository brings that version too.
const V3: &str = "
CREATE TABLE pins (
    client     TEXT NOT NULL,
    deployment TEXT NOT NULL,
    profile    TEXT NOT NULL,
    version    TEXT NOT NULL,
    commit_id  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (client, deployment, profile)
) WITHOUT ROWID;
";

/// Version 4: the run-level message of a refused run.
const V4: &str = "ALTER TABLE runs ADD COLUMN message TEXT;";

/// Version 5: where signed-commit approval judges new commits from. Kept apart from `runs`
/// because runs can be rebuilt from git notes, which anyone who can push to the repository can
/// forge; this table is only ever written by the watch loop itself and by `--trust-from`.
/// Newest by rowid (recording order), never by a clock.
const V5: &str = "
CREATE TABLE approval_bases (
    branch      TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX approval_bases_by_branch ON approval_bases (branch);
";

/// A ledger that predates approval bases was written by this loop (a rebuild always creates a
/// fresh file at the current version, so it never comes through here): its newest approved
/// commit per branch, in recording order, carries on as the base.
fn backfill_approval_bases_v5(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "INSERT INTO approval_bases (branch, commit_id, reason, recorded_at)
         SELECT r.branch, r.commit_id, 'carried over from the runs of an older ledger', r.finished_at
           FROM runs r
          WHERE r.mode = 'apply' AND r.branch IS NOT NULL AND r.outcome <> 'refused'
            AND r.rowid = (SELECT max(x.rowid) FROM runs x
                            WHERE x.mode = 'apply' AND x.branch = r.branch
                              AND x.outcome <> 'refused')",
    )
}

/// Version 6: the repository kind a `fetch_artifact` step downloaded from and the retries it
/// needed, for the per-kind download metrics.
const V6: &str = "
ALTER TABLE run_steps ADD COLUMN repository_kind TEXT;
ALTER TABLE run_steps ADD COLUMN retries INTEGER;
";

/// Version 7: the agent's word on a deployment's health at the end of a run (which checks,
/// what failed), beside the healthy flag.
const V7: &str = "
ALTER TABLE run_deployments ADD COLUMN health TEXT;
ALTER TABLE deployment_state ADD COLUMN health TEXT;
";

/// Version 8: the batches each run cut and ran (which hosts, the canary, what became of
/// them), when a run paused after its canary may be resumed by the watch loop, and which run
/// a resuming run continues (its `triggered_by` and `started_at` say who resumed it and when),
/// and an apply run's kind (`decommission`; NULL for an ordinary reconcile).
/// Runs recorded before have no batches: the dashboard says so rather than cutting them anew
/// from today's settings.
const V8: &str = "
ALTER TABLE runs ADD COLUMN pause_deadline TEXT;
ALTER TABLE runs ADD COLUMN resumes TEXT;
ALTER TABLE runs ADD COLUMN kind TEXT;
CREATE INDEX runs_by_resumes ON runs (resumes) WHERE resumes IS NOT NULL;
CREATE TABLE run_batches (
    run_id         TEXT NOT NULL REFERENCES runs (id),
    ordinal        INTEGER NOT NULL,
    unit           TEXT NOT NULL,
    canary         INTEGER NOT NULL CHECK (canary IN (0, 1)),
    state          TEXT NOT NULL,
    hosts          TEXT NOT NULL,
    failed         INTEGER NOT NULL,
    failure_budget INTEGER,
    PRIMARY KEY (run_id, ordinal)
) WITHOUT ROWID;
";

/// Replays the apply runs a version-1 ledger holds, oldest first, into `deployment_state`:
/// a deployment's `since` is when its current version and release first became current.
fn backfill_deployment_state_v2(conn: &Connection) -> rusqlite::Result<()> {
    struct State {
        profile: String,
        version: String,
        release: String,
        healthy: bool,
        since: String,
        run_id: String,
        updated_at: String,
    }
    // Each event either sets a deployment (a deployment record) or clears it (a successful
    // remove_deployment step); removal sorts after records of the same run.
    let mut stmt = conn.prepare(
        "SELECT h.client, h.server, d.name, d.profile, d.version, d.release_name, d.healthy,
                r.finished_at, r.id, 0 AS removal
           FROM run_deployments d
           JOIN run_hosts h ON h.run_id = d.run_id AND h.ordinal = d.host_ordinal
           JOIN runs r ON r.id = d.run_id
          WHERE r.mode = 'apply' AND h.outcome NOT IN ('unreachable', 'not_attempted')
         UNION ALL
         SELECT h.client, h.server, s.deployment, '', '', '', 0, r.finished_at, r.id, 1
           FROM run_steps s
           JOIN run_hosts h ON h.run_id = s.run_id AND h.ordinal = s.host_ordinal
           JOIN runs r ON r.id = s.run_id
          WHERE r.mode = 'apply' AND s.action = 'remove_deployment' AND s.status = 'ok'
         ORDER BY 8, 9, 10",
    )?;
    let mut rows = stmt.query([])?;
    let mut state: BTreeMap<(String, String, String), State> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let key = (row.get(0)?, row.get(1)?, row.get(2)?);
        let finished_at: String = row.get(7)?;
        let run_id: String = row.get(8)?;
        if row.get::<_, i64>(9)? == 1 {
            state.remove(&key);
            continue;
        }
        let version: String = row.get(4)?;
        let release: String = row.get(5)?;
        let since = match state.get(&key) {
            Some(s) if s.version == version && s.release == release => s.since.clone(),
            _ => finished_at.clone(),
        };
        state.insert(
            key,
            State {
                profile: row.get(3)?,
                version,
                release,
                healthy: row.get(6)?,
                since,
                run_id,
                updated_at: finished_at,
            },
        );
    }
    let mut insert = conn.prepare(
        "INSERT INTO deployment_state (client, server, deployment, profile, version, release_name,
                                       healthy, since, run_id, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for ((client, server, deployment), s) in state {
        insert.execute(params![
            client,
            server,
            deployment,
            s.profile,
            s.version,
            s.release,
            s.healthy,
            s.since,
            s.run_id,
            s.updated_at
        ])?;
    }
    Ok(())
}

/// What stands between an opened file and a ledger at [`SCHEMA_VERSION`].
#[derive(Debug)]
pub enum MigrateError {
    /// The file belongs to some other application.
    NotALedger { application_id: i32 },
    /// A newer Clarity wrote it.
    TooNew { found: u32 },
    Failed {
        from: u32,
        to: u32,
        source: rusqlite::Error,
    },
}

/// Brings the database to [`SCHEMA_VERSION`], one migration per transaction. The version is
/// re-read inside each transaction, so a concurrent opener that migrated first is noticed
/// rather than migrated over.
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrateError> {
    let failed = |from: u32| {
        move |source| MigrateError::Failed {
            from,
            to: from + 1,
            source,
        }
    };
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(0))?;
        let version: u32 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(failed(0))?;
        let application_id: i32 = tx
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(failed(version))?;
        if application_id != 0 && application_id != APPLICATION_ID {
            return Err(MigrateError::NotALedger { application_id });
        }
        if version == 0 && application_id == 0 {
            // A brand-new file is empty; anything else with neither mark is someone else's.
            let objects: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(failed(0))?;
            if objects > 0 {
                return Err(MigrateError::NotALedger { application_id });
            }
        }
        if version > SCHEMA_VERSION {
            return Err(MigrateError::TooNew { found: version });
        }
        if version == SCHEMA_VERSION {
            if application_id == 0 {
                tx.pragma_update(None, "application_id", APPLICATION_ID)
                    .map_err(failed(version))?;
                tx.commit().map_err(failed(version))?;
            }
            return Ok(version);
        }
        let migration = &MIGRATIONS[version as usize];
        tx.execute_batch(migration.sql).map_err(failed(version))?;
        if let Some(backfill) = migration.backfill {
            backfill(&tx).map_err(failed(version))?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(failed(version))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(failed(version))?;
        tx.commit().map_err(failed(version))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_reaches_the_current_version_and_is_marked() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        let id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
        // Migrating again is a no-op.
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn someone_elses_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER)")
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(MigrateError::NotALedger { .. })
        ));
    }

    #[test]
    fn a_newer_ledger_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(MigrateError::TooNew { .. })
        ));
    }
}
