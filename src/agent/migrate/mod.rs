//! Database migrations as ordered, recorded steps, run by the agent before the service switch.
//!
//! A migrations directory inside the release holds `NNN_name.up.sql` files, each with an
//! optional `NNN_name.down.sql`; `NNN` is any number of digits and orders the files
//! numerically. Every other file that looks like a migration (ends in `.sql`, or starts with a
//! digit) but does not follow that pattern is an error naming it, so a typo cannot silently
//! skip a migration; other files (`README.md`) and hidden files are ignored. A migration's
//! checksum is the SHA-256 of its up file.
//!
//! The target database (SQLite file, or PostgreSQL through a connection string that stays a
//! [`SecretString`]) records what ran in `clarity_migrations (version, name, checksum,
//! applied_at)`. Each migration runs in its own transaction together with its tracking row, so
//! a failing migration leaves nothing behind and the ones before it stay applied. An applied
//! migration whose file changed, an applied version missing from the directory (the artifact
//! went backwards), and a new migration numbered below the newest applied one are all errors:
//! the database and the files disagree, and guessing would be worse than stopping. Going back
//! is explicit: [`down`] runs down migrations (taken from the newer release's directory, which
//! has them) in reverse order, or [`restore`] puts a [`backup`] back.
//!
//! PostgreSQL migrations run under a session advisory lock, so hosts sharing one database
//! migrate it once, one at a time. `pg_dump`/`psql` get the password through `PGPASSWORD` in
//! their own environment, never on a command line. No message this module produces contains the
//! connection string or the password: databases are named by host, port and name only, and
//! every error text from the driver or a tool passes through a redactor first.
//!
//! The `command` engine ([`run_command`]) runs an argv inside the release directory with the
//! deployment's environment; what it migrates is its own business.
//!
//! API: [`Database`], [`discover`], [`pending`], [`applied`], [`apply_pending`] → [`Applied`],
//! [`down`] → [`Reverted`], [`backup`], [`restore`], [`run_command`], [`MigrateError`].

mod backup;
pub mod step;

pub use backup::{backup, restore};

use crate::agent::health::{describe_status, program_path, run_captured};
use crate::secret::SecretString;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

/// The tracking table, created in the target database if missing.
pub const TRACKING_TABLE: &str = "clarity_migrations";

/// Serialises migrations of one PostgreSQL database across hosts and agents ("clarity" in
/// ASCII); held for the session, released when the connection closes even if the agent dies.
const PG_LOCK_KEY: i64 = 0x0063_6c61_7269_7479;

/// Waiting this long for a database another process holds (the running service, a second
/// agent) is normal; waiting forever is not.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of a failed command's stderr kept in its error.
const STDERR_TAIL_LINES: usize = 20;

/// The database migrations run against.
#[derive(Debug, Clone, Copy)]
pub enum Database<'a> {
    /// A SQLite file, given as an absolute path (created on first migration).
    Sqlite(&'a Path),
    /// A PostgreSQL connection string (key=value or URL form), reached without TLS.
    Postgres(&'a SecretString),
}

impl Database<'_> {
    /// How messages name the database: the SQLite path, or `postgresql HOST:PORT/DBNAME`,
    /// never the user or password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite {}", path.display()),
            Database::Postgres(conn) => match postgres::Config::from_str(conn.expose()) {
                Ok(config) => describe_pg(&config),
                Err(_) => "postgresql (connection string does not parse)".into(),
            },
        }
    }
}

/// One migration found in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    pub version: i64,
    /// The part between the number and `.up.sql`.
    pub name: String,
    pub up: PathBuf,
    pub down: Option<PathBuf>,
    /// SHA-256 of the up file, hex.
    pub checksum: String,
}

/// A row of the tracking table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub applied_at: String,
}

/// What [`apply_pending`] did: the versions it applied, in order (empty: nothing was pending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub versions: Vec<i64>,
}

/// What [`down`] did: the versions it reverted, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reverted {
    pub versions: Vec<i64>,
}

/// Why migrating failed. `database` fields are [`Database::describe`] texts; messages from the
/// database or a tool have had the connection string and password removed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migrations directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", file.display())]
    BadFile { file: PathBuf, problem: String },
    #[error("{database}: cannot connect: {message}")]
    Connect { database: String, message: String },
    #[error("{database}: {message}")]
    Database { database: String, message: String },
    /// A migration's SQL failed; its transaction was rolled back. `completed` lists the
    /// versions this run finished before it: applied by [`apply_pending`] (they stay applied),
    /// or reverted by [`down`].
    #[error("{database}: migration {} failed: {message}", file.display())]
    Failed {
        database: String,
        file: PathBuf,
        message: String,
        completed: Vec<i64>,
    },
    #[error(
        "{database}: migration {} was applied with checksum {applied} but the file now has \
         checksum {current}; an applied migration must not change (add a new one instead)",
        file.display()
    )]
    ChecksumChanged {
        database: String,
        file: PathBuf,
        applied: String,
        current: String,
    },
    #[error(
        "{database}: version {version} ({name}) is applied but not in {}: the artifact is older \
         than the database; roll back with the newer release's down migrations, or restore a \
         backup",
        dir.display()
    )]
    AppliedMissing {
        database: String,
        version: i64,
        name: String,
        dir: PathBuf,
    },
    #[error(
        "{database}: migration {} is numbered below the newest applied version {newest}; give it \
         a higher number",
        file.display()
    )]
    OutOfOrder {
        database: String,
        file: PathBuf,
        newest: i64,
    },
    #[error("{database}: version {version} ({name}) has no down migration; restore the backup")]
    NoDown {
        database: String,
        version: i64,
        name: String,
    },
    #[error("{database}: backup failed: {message}")]
    Backup { database: String, message: String },
    #[error("{database}: restore from {} failed: {message}", backup.display())]
    Restore {
        database: String,
        backup: PathBuf,
        message: String,
    },
    #[error("migration command {program} {status}{}", tail_suffix(stderr))]
    Command {
        program: String,
        status: String,
        /// The last lines of stderr (or stdout), with environment values redacted.
        stderr: String,
    },
}

fn tail_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; stderr:\n{stderr}")
    }
}

type Result<T, E = MigrateError> = std::result::Result<T, E>;

/// The migrations in `dir`, ordered by version. Reads and checksums every up file.
pub fn discover(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir).map_err(|source| MigrateError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut ups: BTreeMap<i64, (String, PathBuf)> = BTreeMap::new();
    let mut downs: BTreeMap<i64, (String, PathBuf)> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| MigrateError::Directory {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let file_name = entry.file_name();
        let name = file_name.to_string_lossy();
        let Some(parsed) = parse_file_name(&name) else {
            continue;
        };
        let bad = |problem: String| MigrateError::BadFile {
            file: path.clone(),
            problem,
        };
        let (version, stem, direction) = parsed.map_err(bad)?;
        if !path.is_file() {
            return Err(bad("is named like a migration but is not a file".into()));
        }
        let slot = match direction {
            Direction::Up => &mut ups,
            Direction::Down => &mut downs,
        };
        if let Some((_, other)) = slot.get(&version) {
            return Err(bad(format!(
                "version {version} is also used by {}",
                other.display()
            )));
        }
        slot.insert(version, (stem, path));
    }
    for (version, (stem, path)) in &downs {
        match ups.get(version) {
            None => {
                return Err(MigrateError::BadFile {
                    file: path.clone(),
                    problem: format!(
                        "down migration without an up migration for version {version}"
                    ),
                });
            }
            Some((up_stem, _)) if up_stem != stem => {
                return Err(MigrateError::BadFile {
                    file: path.clone(),
                    problem: format!(
                        "its name does not match the up migration of version {version} ({up_stem})"
                    ),
                });
            }
            Some(_) => {}
        }
    }
    let mut migrations = Vec::with_capacity(ups.len());
    for (version, (name, up)) in ups {
        let bytes = std::fs::read(&up).map_err(|e| MigrateError::BadFile {
            file: up.clone(),
            problem: e.to_string(),
        })?;
        migrations.push(Migration {
            version,
            name,
            checksum: crate::digest::sha256_hex(&bytes),
            down: downs.remove(&version).map(|(_, p)| p),
            up,
        });
    }
    Ok(migrations)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// `None`: not a migration file (ignored). `Some(Err)`: looks like one but is malformed.
fn parse_file_name(file: &str) -> Option<Result<(i64, String, Direction), String>> {
    let looks_like = file.ends_with(".sql") || file.starts_with(|c: char| c.is_ascii_digit());
    if file.starts_with('.') || !looks_like {
        return None;
    }
    const EXPECTED: &str = "expected NNN_name.up.sql or NNN_name.down.sql";
    let (stem, direction) = if let Some(s) = file.strip_suffix(".up.sql") {
        (s, Direction::Up)
    } else if let Some(s) = file.strip_suffix(".down.sql") {
        (s, Direction::Down)
    } else {
        return Some(Err(format!("not a migration file name ({EXPECTED})")));
    };
    let Some((digits, name)) = stem.split_once('_') else {
        return Some(Err(format!("no `_` after the version number ({EXPECTED})")));
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(format!(
            "the version `{digits}` is not a number ({EXPECTED})"
        )));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Some(Err(format!(
            "the name `{name}` must be non-empty letters, digits, `_` or `-` ({EXPECTED})"
        )));
    }
    match digits.parse::<i64>() {
        Ok(v) => Some(Ok((v, name.to_string(), direction))),
        Err(_) => Some(Err(format!("the version {digits} is too large"))),
    }
}

/// The rows of the tracking table (empty when the table or the SQLite file does not exist yet).
/// Changes nothing.
pub fn applied(db: &Database) -> Result<Vec<AppliedMigration>> {
    match Conn::open(db, false)? {
        Some(mut conn) => conn.applied(),
        None => Ok(Vec::new()),
    }
}

/// The migrations of `dir` not yet applied to `db`, in order, after checking that the database
/// and the directory agree (see the module doc). Changes nothing.
pub fn pending(dir: &Path, db: &Database) -> Result<Vec<Migration>> {
    let migrations = discover(dir)?;
    let rows = applied(db)?;
    reconcile(&db.describe(), dir, migrations, &rows)
}

/// Applies every pending migration of `dir` to `db`, in order, each in its own transaction
/// with its tracking row. Running it again is a no-op. On a failing migration it stops with
/// [`MigrateError::Failed`]; the migrations before it stay applied.
pub fn apply_pending(dir: &Path, db: &Database) -> Result<Applied> {
    let migrations = discover(dir)?;
    let mut conn = Conn::open(db, true)?.expect("open with create always connects");
    conn.lock()?;
    conn.ensure_table()?;
    let rows = conn.applied()?;
    let pending = reconcile(conn.describe(), dir, migrations, &rows)?;
    let mut done = Applied::default();
    for m in pending {
        let sql = read_sql(&m.up)?;
        if let Err(message) = conn.apply(&m, &sql) {
            return Err(MigrateError::Failed {
                database: conn.describe().to_string(),
                file: m.up,
                message,
                completed: done.versions,
            });
        }
        done.versions.push(m.version);
    }
    Ok(done)
}

/// Reverts `versions` with their down migrations from `dir`, newest first, each in its own
/// transaction together with removing its tracking row. Versions that are not applied are
/// skipped, so a revert interrupted halfway can simply be run again. Every down file is checked
/// before anything runs: a missing one is [`MigrateError::NoDown`] and nothing is reverted.
pub fn down(dir: &Path, db: &Database, versions: &[i64]) -> Result<Reverted> {
    let migrations = discover(dir)?;
    let Some(mut conn) = Conn::open(db, false)? else {
        return Ok(Reverted::default());
    };
    conn.lock()?;
    let rows = conn.applied()?;
    let mut wanted: Vec<i64> = versions.to_vec();
    wanted.sort_unstable_by(|a, b| b.cmp(a));
    wanted.dedup();
    let mut steps = Vec::new();
    for version in wanted {
        let Some(row) = rows.iter().find(|r| r.version == version) else {
            continue;
        };
        let Some(m) = migrations.iter().find(|m| m.version == version) else {
            return Err(MigrateError::NoDown {
                database: conn.describe().to_string(),
                version,
                name: row.name.clone(),
            });
        };
        if m.checksum != row.checksum {
            return Err(MigrateError::ChecksumChanged {
                database: conn.describe().to_string(),
                file: m.up.clone(),
                applied: row.checksum.clone(),
                current: m.checksum.clone(),
            });
        }
        let Some(down_file) = &m.down else {
            return Err(MigrateError::NoDown {
                database: conn.describe().to_string(),
                version,
                name: m.name.clone(),
            });
        };
        steps.push((version, down_file.clone(), read_sql(down_file)?));
    }
    let mut done = Reverted::default();
    for (version, file, sql) in steps {
        if let Err(message) = conn.revert(version, &sql) {
            return Err(MigrateError::Failed {
                database: conn.describe().to_string(),
                file,
                message,
                completed: done.versions,
            });
        }
        done.versions.push(version);
    }
    Ok(done)
}

/// Checks the directory against the tracking rows and returns what is pending.
fn reconcile(
    database: &str,
    dir: &Path,
    migrations: Vec<Migration>,
    rows: &[AppliedMigration],
) -> Result<Vec<Migration>> {
    for row in rows {
        match migrations.iter().find(|m| m.version == row.version) {
            None => {
                return Err(MigrateError::AppliedMissing {
                    database: database.to_string(),
                    version: row.version,
                    name: row.name.clone(),
                    dir: dir.to_path_buf(),
                });
            }
            Some(m) if m.checksum != row.checksum => {
                return Err(MigrateError::ChecksumChanged {
                    database: database.to_string(),
                    file: m.up.clone(),
                    applied: row.checksum.clone(),
                    current: m.checksum.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let newest = rows.iter().map(|r| r.version).max();
    let pending: Vec<Migration> = migrations
        .into_iter()
        .filter(|m| !rows.iter().any(|r| r.version == m.version))
        .collect();
    if let (Some(newest), Some(first)) = (newest, pending.first())
        && first.version < newest
    {
        return Err(MigrateError::OutOfOrder {
            database: database.to_string(),
            file: first.up.clone(),
            newest,
        });
    }
    Ok(pending)
}

fn read_sql(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|e| MigrateError::BadFile {
        file: file.to_path_buf(),
        problem: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Connections

enum Conn {
    Sqlite {
        conn: rusqlite::Connection,
        database: String,
    },
    Postgres {
        // Boxed: a client is several times the size of a SQLite connection.
        client: Box<postgres::Client>,
        /// The tracking table, schema-qualified: a migration that changes `search_path` must
        /// not send its tracking row somewhere else.
        table: String,
        database: String,
        redactor: Redactor,
    },
}

impl Conn {
    /// `None` when `create` is false and the SQLite file does not exist (nothing applied yet).
    fn open(db: &Database, create: bool) -> Result<Option<Conn>> {
        let database = db.describe();
        match db {
            Database::Sqlite(path) => {
                if !create && !path.exists() {
                    return Ok(None);
                }
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| MigrateError::Connect {
                        database: database.clone(),
                        message: e.to_string(),
                    })?;
                }
                let conn = rusqlite::Connection::open(path).map_err(|e| MigrateError::Connect {
                    database: database.clone(),
                    message: e.to_string(),
                })?;
                conn.busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .map_err(|e| MigrateError::Connect {
                        database: database.clone(),
                        message: e.to_string(),
                    })?;
                Ok(Some(Conn::Sqlite { conn, database }))
            }
            Database::Postgres(secret) => {
                let redactor = Redactor::new(secret);
                let connect_err = |message: String| MigrateError::Connect {
                    database: database.clone(),
                    message: redactor.clean(&message),
                };
                let mut config = postgres::Config::from_str(secret.expose())
                    .map_err(|e| connect_err(pg_message(&e, None)))?;
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(PG_CONNECT_TIMEOUT);
                }
                let mut client = config
                    .connect(postgres::NoTls)
                    .map_err(|e| connect_err(pg_message(&e, None)))?;
                let schema: Option<String> = client
                    .query_one("SELECT current_schema()", &[])
                    .and_then(|row| row.try_get(0))
                    .map_err(|e| connect_err(pg_message(&e, None)))?;
                let schema = schema.ok_or_else(|| {
                    connect_err("no schema on the search_path for the tracking table".into())
                })?;
                Ok(Some(Conn::Postgres {
                    client: Box::new(client),
                    table: format!("{}.{TRACKING_TABLE}", quote_ident(&schema)),
                    database,
                    redactor,
                }))
            }
        }
    }

    fn describe(&self) -> &str {
        match self {
            Conn::Sqlite { database, .. } | Conn::Postgres { database, .. } => database,
        }
    }

    fn db_error(&self, message: String) -> MigrateError {
        MigrateError::Database {
            database: self.describe().to_string(),
            message,
        }
    }

    fn lock(&mut self) -> Result<()> {
        // SQLite serialises writers itself (each migration takes the write lock); the agent's
        // host lock keeps two agents of one host apart.
        if let Conn::Postgres {
            client, redactor, ..
        } = self
        {
            let r = client.execute("SELECT pg_advisory_lock($1)", &[&PG_LOCK_KEY]);
            if let Err(e) = r {
                let message = redactor.clean(&pg_message(&e, None));
                return Err(self.db_error(format!("taking the migration lock: {message}")));
            }
        }
        Ok(())
    }

    fn ensure_table(&mut self) -> Result<()> {
        let r = match self {
            Conn::Sqlite { conn, .. } => conn
                .execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (version BIGINT PRIMARY KEY, \
                     name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
                ))
                .map_err(|e| sqlite_message(&e, None)),
            Conn::Postgres {
                client,
                table,
                redactor,
                ..
            } => client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, \
                     name TEXT NOT NULL, checksum TEXT NOT NULL, \
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ))
                .map_err(|e| redactor.clean(&pg_message(&e, None))),
        };
        r.map_err(|m| self.db_error(format!("creating {TRACKING_TABLE}: {m}")))
    }

    fn applied(&mut self) -> Result<Vec<AppliedMigration>> {
        let r = match self {
            Conn::Sqlite { conn, .. } => sqlite_applied(conn).map_err(|e| sqlite_message(&e, None)),
            Conn::Postgres {
                client,
                table,
                redactor,
                ..
            } => pg_applied(client, table).map_err(|e| redactor.clean(&pg_message(&e, None))),
        };
        r.map_err(|m| self.db_error(format!("reading {TRACKING_TABLE}: {m}")))
    }

    /// Runs one up migration and records it, atomically. Errors are display-ready messages.
    fn apply(&mut self, m: &Migration, sql: &str) -> std::result::Result<(), String> {
        self.run_tracked(sql, Tracking::Record(m))
    }

    /// Runs one down migration and removes its tracking row, atomically.
    fn revert(&mut self, version: i64, sql: &str) -> std::result::Result<(), String> {
        self.run_tracked(sql, Tracking::Forget(version))
    }

    /// Runs `sql` and changes the tracking table as `tracking` says, in one transaction.
    fn run_tracked(&mut self, sql: &str, tracking: Tracking) -> std::result::Result<(), String> {
        // A failed insert says what it was doing; a failed delete speaks for itself.
        let recording = |message: String| match tracking {
            Tracking::Record(_) => format!("recording it in {TRACKING_TABLE}: {message}"),
            Tracking::Forget(_) => message,
        };
        match self {
            Conn::Sqlite { conn, .. } => {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| sqlite_message(&e, None))?;
                sqlite_batch(&tx, sql)?;
                match tracking {
                    Tracking::Record(m) => tx.execute(
                        &format!(
                            "INSERT INTO {TRACKING_TABLE} (version, name, checksum, applied_at) \
                             VALUES (?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))"
                        ),
                        rusqlite::params![m.version, m.name, m.checksum],
                    ),
                    Tracking::Forget(version) => tx.execute(
                        &format!("DELETE FROM {TRACKING_TABLE} WHERE version = ?1"),
                        [version],
                    ),
                }
                .map_err(|e| recording(sqlite_message(&e, None)))?;
                tx.commit().map_err(|e| sqlite_message(&e, None))
            }
            Conn::Postgres {
                client,
                table,
                redactor,
                ..
            } => {
                let clean =
                    |e: postgres::Error, sql: Option<&str>| redactor.clean(&pg_message(&e, sql));
                let mut tx = client.transaction().map_err(|e| clean(e, None))?;
                tx.batch_execute(sql).map_err(|e| clean(e, Some(sql)))?;
                match tracking {
                    Tracking::Record(m) => tx.execute(
                        &format!(
                            "INSERT INTO {table} (version, name, checksum, applied_at) \
                             VALUES ($1, $2, $3, now())"
                        ),
                        &[&m.version, &m.name, &m.checksum],
                    ),
                    Tracking::Forget(version) => tx.execute(
                        &format!("DELETE FROM {table} WHERE version = $1"),
                        &[&version],
                    ),
                }
                .map_err(|e| recording(clean(e, None)))?;
                tx.commit().map_err(|e| clean(e, None))
            }
        }
    }
}

/// What a migration does to the tracking table besides its own SQL.
#[derive(Clone, Copy)]
enum Tracking<'m> {
    /// An up migration: insert its row.
    Record(&'m Migration),
    /// A down migration: delete the row of this version.
    Forget(i64),
}

/// Runs every statement of a migration file, like `execute_batch`, but knows which statement
/// failed so the error can name its line (SQLite itself gives a position only for some syntax
/// errors). Statements that return rows (a `SELECT`, some `PRAGMA`s) are run to completion.
fn sqlite_batch(conn: &rusqlite::Connection, sql: &str) -> std::result::Result<(), String> {
    use rusqlite::fallible_iterator::FallibleIterator;
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut cursor = 0;
    loop {
        let mut stmt = match batch.next() {
            Ok(Some(stmt)) => stmt,
            Ok(None) => return Ok(()),
            Err(e @ rusqlite::Error::SqlInputError { .. }) => {
                return Err(sqlite_message(&e, Some(sql)));
            }
            Err(e) => {
                let line = line_of(sql, statement_start(sql, cursor));
                return Err(format!("{} (line {line})", sqlite_message(&e, None)));
            }
        };
        let text = stmt.expanded_sql().unwrap_or_default();
        let text = text.trim();
        let start = match sql[cursor..].find(text) {
            Some(i) if !text.is_empty() => {
                cursor += i + text.len();
                cursor - text.len()
            }
            _ => statement_start(sql, cursor),
        };
        let mut rows = stmt.raw_query();
        loop {
            match rows.next() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let line = line_of(sql, start);
                    return Err(format!("{} (line {line})", sqlite_message(&e, None)));
                }
            }
        }
    }
}

/// Where the next statement begins after `from`: past whitespace, stray `;` and comments.
fn statement_start(sql: &str, from: usize) -> usize {
    let bytes = sql.as_bytes();
    let mut i = from.min(bytes.len());
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() || bytes[i] == b';' {
            i += 1;
        } else if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
        } else if sql[i..].starts_with("/*") {
            i = sql[i..].find("*/").map_or(bytes.len(), |n| i + n + 2);
        } else {
            break;
        }
    }
    i
}

fn sqlite_applied(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<AppliedMigration>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [TRACKING_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT version, name, checksum, applied_at FROM {TRACKING_TABLE} ORDER BY version"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok(AppliedMigration {
            version: r.get(0)?,
            name: r.get(1)?,
            checksum: r.get(2)?,
            applied_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

fn pg_applied(
    client: &mut postgres::Client,
    table: &str,
) -> Result<Vec<AppliedMigration>, postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])?
        .try_get(0)?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client.query(
        &format!(
            "SELECT version, name, checksum, \
             to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM {table} ORDER BY version"
        ),
        &[],
    )?;
    rows.iter()
        .map(|r| {
            Ok(AppliedMigration {
                version: r.try_get(0)?,
                name: r.try_get(1)?,
                checksum: r.try_get(2)?,
                applied_at: r.try_get(3)?,
            })
        })
        .collect()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// 1-based line of a byte offset, for pointing at the failing statement in a file.
fn line_of(sql: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(sql.len());
    sql.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A rusqlite error as a message. `SqlInputError` displays the whole remaining SQL, which can
/// be the rest of a large file; a line number says more.
fn sqlite_message(e: &rusqlite::Error, file_sql: Option<&str>) -> String {
    match e {
        rusqlite::Error::SqlInputError {
            msg, sql, offset, ..
        } => match file_sql {
            // `execute_batch` reports offsets into the statements not yet run, which are a
            // suffix of the file.
            Some(full) if full.ends_with(sql.as_str()) && *offset >= 0 => {
                let at = full.len() - sql.len() + *offset as usize;
                format!("{msg} (line {})", line_of(full, at))
            }
            _ => msg.clone(),
        },
        other => other.to_string(),
    }
}

/// A postgres error as a message: the server's own text (severity, message, detail, hint) when
/// there is one, else the driver's message and its causes. `postgres::Error`'s own Display
/// says only "db error".
fn pg_message(e: &postgres::Error, sql: Option<&str>) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let (Some(postgres::error::ErrorPosition::Original(pos)), Some(sql)) =
            (db.position(), sql)
        {
            // The position counts characters from 1.
            let byte = sql
                .char_indices()
                .nth((*pos as usize).saturating_sub(1))
                .map(|(i, _)| i)
                .unwrap_or(sql.len());
            s.push_str(&format!(" (line {})", line_of(sql, byte)));
        }
        if let Some(d) = db.detail() {
            s.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

fn describe_pg(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "localhost".into()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("?");
    format!("postgresql {host}:{port}/{db}")
}

/// Removes a connection string's secrets from text that came from a driver or a tool: the
/// whole string, the password (decoded), and the password as written in a URL (percent-encoded).
struct Redactor {
    secrets: Vec<SecretString>,
}

impl Redactor {
    fn new(conn: &SecretString) -> Redactor {
        let text = conn.expose();
        let mut secrets = vec![conn.clone()];
        if let Ok(config) = postgres::Config::from_str(text)
            && let Some(pw) = config.get_password()
        {
            secrets.push(SecretString::new(String::from_utf8_lossy(pw).into_owned()));
        }
        if let Some(rest) = text.split_once("://").map(|(_, r)| r)
            && let Some((userinfo, _)) = rest.split('/').next().and_then(|a| a.rsplit_once('@'))
            && let Some((_, raw)) = userinfo.split_once(':')
        {
            secrets.push(SecretString::new(raw.to_string()));
        }
        Redactor { secrets }
    }

    fn clean(&self, text: &str) -> String {
        let values: Vec<&str> = self
            .secrets
            .iter()
            .map(SecretString::expose)
            // A one- or two-character password would turn every message into confetti; such a
            // password offers no protection worth keeping the messages unreadable for.
            .filter(|s| s.len() >= 3)
            .collect();
        crate::desired::redact(text, &values)
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(sensitive)")
    }
}

// ---------------------------------------------------------------------------------------------
// Backups

/// Runs a `command` migration: `argv` inside `release_dir` (a relative program with a `/` is
/// taken from the release), with the agent's environment plus `env`. A non-zero exit is
/// [`MigrateError::Command`] with the last lines of stderr, in which every `env` value of eight
/// characters or more is replaced by `(sensitive)` (the agent cannot tell which values are
/// secrets, and shorter values are ports and flags that would only make the output unreadable).
pub fn run_command(
    argv: &[String],
    release_dir: &Path,
    env: &[(String, SecretString)],
) -> Result<()> {
    let Some(program) = argv.first() else {
        return Err(MigrateError::Command {
            program: String::new(),
            status: "is empty (no argv)".into(),
            stderr: String::new(),
        });
    };
    let mut cmd = Command::new(program_path(release_dir, program));
    cmd.args(&argv[1..]).current_dir(release_dir);
    for (key, value) in env {
        cmd.env(key, value.expose());
    }
    let captured = run_captured(&mut cmd, None).map_err(|e| MigrateError::Command {
        program: program.clone(),
        status: format!("could not start: {e}"),
        stderr: String::new(),
    })?;
    if captured.status.is_some_and(|s| s.success()) {
        return Ok(());
    }
    let values: Vec<&str> = env
        .iter()
        .map(|(_, v)| v.expose())
        .filter(|v| v.len() >= 8)
        .collect();
    let tail = tail_lines(&captured.stderr_or_stdout(), STDERR_TAIL_LINES);
    Err(MigrateError::Command {
        program: program.clone(),
        status: describe_status(captured.status),
        stderr: crate::desired::redact(tail.trim_end(), &values),
    })
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if out.len() > super::health::OUTPUT_LIMIT {
        let mut cut = out.len() - super::health::OUTPUT_LIMIT;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("…{}", &out[cut..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse_or_explain() {
        assert_eq!(
            parse_file_name("001_init.up.sql"),
            Some(Ok((1, "init".into(), Direction::Up)))
        );
        assert_eq!(
            parse_file_name("20240101120000_add-users.down.sql"),
            Some(Ok((20240101120000, "add-users".into(), Direction::Down)))
        );
        assert_eq!(parse_file_name("README.md"), None);
        assert_eq!(parse_file_name(".001_init.up.sql.swp"), None);
        for bad in [
            "001_init.sql",
            "001init.up.sql",
            "abc_init.up.sql",
            "001_.up.sql",
            "001_in it.up.sql",
            "001_init.up.sql~",
            "1a_x.up.sql",
            "99999999999999999999_x.up.sql",
        ] {
            assert!(matches!(parse_file_name(bad), Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn discovery_orders_numerically_and_rejects_inconsistencies() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, text) in [
            ("10_ten.up.sql", "SELECT 10;"),
            ("9_nine.up.sql", "SELECT 9;"),
            ("9_nine.down.sql", "SELECT -9;"),
            ("README.md", "not a migration"),
        ] {
            std::fs::write(d.join(name), text).unwrap();
        }
        let found = discover(d).unwrap();
        assert_eq!(found.iter().map(|m| m.version).collect::<Vec<_>>(), [9, 10]);
        assert_eq!(
            found[0].down.as_deref(),
            Some(d.join("9_nine.down.sql").as_path())
        );
        assert_eq!(found[1].checksum, crate::digest::sha256_hex(b"SELECT 10;"));

        std::fs::write(d.join("010_again.up.sql"), "SELECT 1;").unwrap();
        let e = discover(d).unwrap_err().to_string();
        assert!(e.contains("version 10 is also used by"), "{e}");
        std::fs::remove_file(d.join("010_again.up.sql")).unwrap();

        std::fs::write(d.join("11_orphan.down.sql"), "").unwrap();
        let e = discover(d).unwrap_err().to_string();
        assert!(
            e.contains("11_orphan.down.sql") && e.contains("without an up"),
            "{e}"
        );
        std::fs::remove_file(d.join("11_orphan.down.sql")).unwrap();

        std::fs::write(d.join("10_tne.down.sql"), "").unwrap();
        let e = discover(d).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }

    fn row(version: i64, checksum: &str) -> AppliedMigration {
        AppliedMigration {
            version,
            name: format!("m{version}"),
            checksum: checksum.into(),
            applied_at: String::new(),
        }
    }

    fn mig(version: i64, checksum: &str) -> Migration {
        Migration {
            version,
            name: format!("m{version}"),
            up: PathBuf::from(format!("{version}_m{version}.up.sql")),
            down: None,
            checksum: checksum.into(),
        }
    }

    #[test]
    fn reconcile_finds_pending_and_disagreements() {
        let dir = Path::new("migrations");
        let p = reconcile("db", dir, vec![mig(1, "a"), mig(2, "b")], &[row(1, "a")]).unwrap();
        assert_eq!(p, vec![mig(2, "b")]);

        let e = reconcile("db", dir, vec![mig(1, "x")], &[row(1, "a")]).unwrap_err();
        assert!(matches!(e, MigrateError::ChecksumChanged { .. }));
        let s = e.to_string();
        assert!(
            s.contains("1_m1.up.sql") && s.contains(" a ") && s.contains(" x;"),
            "{s}"
        );

        let e = reconcile("db", dir, vec![mig(1, "a")], &[row(1, "a"), row(2, "b")]).unwrap_err();
        assert!(
            matches!(e, MigrateError::AppliedMissing { version: 2, .. }),
            "{e}"
        );

        let e = reconcile(
            "db",
            dir,
            vec![mig(1, "a"), mig(2, "b"), mig(3, "c")],
            &[row(1, "a"), row(3, "c")],
        )
        .unwrap_err();
        assert!(
            matches!(e, MigrateError::OutOfOrder { newest: 3, .. }),
            "{e}"
        );
    }

    #[test]
    fn postgres_databases_are_described_without_credentials() {
        let url = SecretString::new("postgresql://app:pw-secret@db.example:6543/orders".into());
        assert_eq!(
            Database::Postgres(&url).describe(),
            "postgresql db.example:6543/orders"
        );
        let kv = SecretString::new("host=10.0.0.5 user=app password=pw-secret dbname=crm".into());
        assert_eq!(
            Database::Postgres(&kv).describe(),
            "postgresql 10.0.0.5:5432/crm"
        );
        let r = Redactor::new(&SecretString::new(
            "postgresql://app:p%40ss-word@h/db".into(),
        ));
        assert_eq!(
            r.clean("x p@ss-word y p%40ss-word z"),
            "x (sensitive) y (sensitive) z"
        );
    }

    #[test]
    fn error_lines_point_into_the_file() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        assert_eq!(tail_lines("1\n2\n3\n", 2), "2\n3");
        assert_eq!(statement_start("a;\n -- c\n/* x */ b", 2), 17);
    }
}
