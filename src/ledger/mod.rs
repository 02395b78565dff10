//! The record of what ran: a SQLite ledger beside the reconciler's sandboxes (queried by
//! `history`, rollback and the promotion gate) and git notes on each applied commit (the
//! durable copy that travels with the repository and rebuilds the ledger). It stores run
//! records exactly as given — they carry only redacted text — and never adds to them.
//!
//! Durability over speed: WAL mode with `synchronous=FULL`, every write in a `BEGIN IMMEDIATE`
//! transaction, `PRAGMA quick_check` at every open. A file that fails the check is moved
//! aside, never overwritten or deleted, and the error says how to rebuild from the notes.

pub mod api;
mod approval_base;
pub mod notes;
mod pauses;
pub use pauses::PausedRun;
mod pins;
mod query;
pub mod schema;
mod write;

pub use approval_base::BaseReason;
pub use notes::NotesError;
pub use pins::Pin;
pub use query::{
    AppliedCommit, AppliedFilter, DeploymentHistoryEntry, DeploymentState, HostSummary, RunFilter,
    RunSummary,
};
pub use schema::SCHEMA_VERSION;

use rusqlite::{Connection, ErrorCode};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ledger's file name inside the state directory.
pub const FILE_NAME: &str = "ledger.sqlite";

/// How long a writer waits for another reconciler's transaction before giving up. Apply runs
/// write briefly, so a wait this long means something is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the ledger lives by default: beside the sandboxes in the reconciler's work directory.
pub fn default_path(work_dir: &Path) -> PathBuf {
    work_dir.join(FILE_NAME)
}

/// The ledger a command uses: `--ledger FILE` when given, else `$CLARITY_STATE_DIR/ledger.sqlite`,
/// else [`default_path`] of the work directory (`--work-dir`, `$CLARITY_WORK_DIR`, `.clarity`).
pub fn resolve_path(explicit: Option<&Path>, work_dir: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("CLARITY_STATE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join(FILE_NAME),
        None => default_path(work_dir),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("there is no ledger at {path}")]
    Missing { path: PathBuf },
    #[error("cannot create the ledger's directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the ledger {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the ledger {path} is corrupt ({detail}); it was moved aside to {moved_to}")]
    Corrupt {
        path: PathBuf,
        moved_to: PathBuf,
        detail: String,
    },
    #[error("the ledger {path} is corrupt ({detail}) and could not be moved aside")]
    CorruptNotMoved {
        path: PathBuf,
        detail: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Clarity ledger (SQLite application id {application_id:#x})")]
    NotALedger { path: PathBuf, application_id: i32 },
    #[error(
        "the ledger {path} has schema version {found}; this clarity-reconcile understands up to {supported}"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot migrate the ledger {path} from schema version {from} to {to}")]
    Migrate {
        path: PathBuf,
        from: u32,
        to: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger {path}: cannot {action}")]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger {path}: run {run} has an unreadable {field} `{value}`")]
    BadValue {
        path: PathBuf,
        run: String,
        field: &'static str,
        value: String,
    },
    #[error("a ledger already exists at {path}")]
    Exists { path: PathBuf },
    #[error("cannot rebuild the ledger {path} from the git notes")]
    Notes {
        path: PathBuf,
        #[source]
        source: NotesError,
    },
    #[error("cannot {action} {path}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl LedgerError {
    /// What the operator can do about it, for the CLI's `hint:` line.
    pub fn hint(&self) -> Option<String> {
        match self {
            LedgerError::Missing { .. } => Some(
                "the first apply run creates it; point at an existing one with --ledger FILE or \
                 --work-dir DIR (or $CLARITY_STATE_DIR)"
                    .into(),
            ),
            LedgerError::Corrupt { path, moved_to, .. } => Some(format!(
                "rebuild it from the git notes: `clarity-reconcile history rebuild --repo CONFIG_REPO \
                 --ledger {}` (fetch refs/notes/clarity first if this clone lacks them); the damaged \
                 file stays at {} for inspection",
                path.display(),
                moved_to.display()
            )),
            LedgerError::CorruptNotMoved { path, .. } => Some(format!(
                "move {} away by hand (keep it for inspection), then rebuild it with \
                 `clarity-reconcile history rebuild --repo CONFIG_REPO`",
                path.display()
            )),
            LedgerError::NotALedger { .. } => {
                Some("--ledger must name a Clarity ledger file (or a path where none exists yet)".into())
            }
            LedgerError::TooNew { .. } => Some(
                "a newer clarity-reconcile wrote it; upgrade this one (ledgers are never migrated backwards)"
                    .into(),
            ),
            LedgerError::Exists { path } => Some(format!(
                "a rebuild never replaces a ledger: move {} aside first if you mean to replace it",
                path.display()
            )),
            LedgerError::Notes { source, .. } => source.hint(),
            _ => None,
        }
    }
}

/// An open ledger. Not shared between threads: open one per thread or process; SQLite's locks
/// and the busy timeout serialize writers.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

/// Why the integrity check failed.
enum Damage {
    Corrupt(String),
    Other(rusqlite::Error),
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

fn damage(e: rusqlite::Error) -> Damage {
    if is_corruption(&e) {
        Damage::Corrupt(e.to_string())
    } else {
        Damage::Other(e)
    }
}

impl Ledger {
    /// Opens the ledger at `path`, creating it (and its directory) when missing and migrating
    /// it to [`SCHEMA_VERSION`]. A file that fails `PRAGMA quick_check` is moved aside to
    /// `<path>.corrupt-<timestamp>` and reported as [`LedgerError::Corrupt`].
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Self::open_file(path)
    }

    /// Like [`Ledger::open`], but a missing file is an error instead of a new ledger (for
    /// readers such as `history`, which must not leave empty ledgers behind).
    pub fn open_existing(path: &Path) -> Result<Ledger, LedgerError> {
        if !path.is_file() {
            return Err(LedgerError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::open_file(path)
    }

    fn open_file(path: &Path) -> Result<Ledger, LedgerError> {
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let sqlite = |action| {
            move |source| LedgerError::Sqlite {
                path: path.to_path_buf(),
                action,
                source,
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("set the busy timeout"))?;
        match check_integrity(&conn) {
            Ok(()) => {}
            Err(Damage::Corrupt(detail)) => {
                // Close first: the file must not be renamed under an open connection that could
                // still write to it (a checkpoint at close).
                drop(conn);
                return Err(quarantine(path, detail));
            }
            Err(Damage::Other(source)) => {
                return Err(LedgerError::Sqlite {
                    path: path.to_path_buf(),
                    action: "check its integrity",
                    source,
                });
            }
        }
        let mut conn = conn;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sqlite("switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Sqlite {
                path: path.to_path_buf(),
                action: "switch to WAL mode",
                source: rusqlite::Error::InvalidQuery,
            });
        }
        // FULL, not WAL's usual NORMAL: a run reported as recorded must survive a power cut.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite("enable foreign keys"))?;
        schema::migrate(&mut conn).map_err(|e| match e {
            schema::MigrateError::NotALedger { application_id } => LedgerError::NotALedger {
                path: path.to_path_buf(),
                application_id,
            },
            schema::MigrateError::TooNew { found } => LedgerError::TooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            },
            schema::MigrateError::Failed { from, to, source } => LedgerError::Migrate {
                path: path.to_path_buf(),
                from,
                to,
                source,
            },
        })?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file (always [`SCHEMA_VERSION`] after a successful open).
    pub fn schema_version(&self) -> Result<u32, LedgerError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| self.err("read the schema version", source))
    }

    fn err(&self, action: &'static str, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Creates a fresh ledger at `path` from the run records in the git notes of the
    /// repository at `repo`, replayed oldest first (so the current deployment state comes out
    /// as the runs left it). Refuses to replace an existing ledger. The ledger is built beside
    /// `path` and renamed into place, so a crash mid-rebuild leaves no half ledger at `path`.
    /// Drift findings are not in the notes and are not restored.
    pub fn rebuild_from_notes(path: &Path, repo: &Path) -> Result<RebuildReport, LedgerError> {
        if path.exists() {
            return Err(LedgerError::Exists {
                path: path.to_path_buf(),
            });
        }
        let scan = notes::scan(repo).map_err(|source| LedgerError::Notes {
            path: path.to_path_buf(),
            source,
        })?;
        let mut runs = scan.runs;
        runs.sort_by(|a, b| {
            (a.finished_at.as_str(), a.id.as_str()).cmp(&(b.finished_at.as_str(), b.id.as_str()))
        });
        let partial = sibling(path, &format!("rebuild-{}", std::process::id()));
        remove_sqlite_files(&partial);
        let result = (|| {
            let mut ledger = Ledger::open(&partial)?;
            ledger.record_runs(&runs)?;
            for run in &runs {
                if let Some(findings) = scan.drift_findings.get(&run.id) {
                    ledger.record_drift(run, findings)?;
                }
            }
            // Closing checkpoints the WAL into the file, so the rename moves everything.
            drop(ledger);
            if path.exists() {
                return Err(LedgerError::Exists {
                    path: path.to_path_buf(),
                });
            }
            std::fs::rename(&partial, path).map_err(|source| LedgerError::Io {
                path: path.to_path_buf(),
                action: "move the rebuilt ledger to",
                source,
            })
        })();
        if result.is_err() {
            remove_sqlite_files(&partial);
        }
        result?;
        Ok(RebuildReport {
            runs: runs.len(),
            notes: scan.notes,
            skipped: scan.skipped,
        })
    }
}

/// What a rebuild found in the notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Run records written to the new ledger.
    pub runs: usize,
    /// Notes (commits with a note) read.
    pub notes: usize,
    /// `clarity-run:` lines that could not be read, as `<commit>: <reason>`.
    pub skipped: Vec<String>,
}

/// Runs `PRAGMA quick_check` (the structural half of `integrity_check`, fast enough for every
/// open). A non-database file fails here too, with "file is not a database".
fn check_integrity(conn: &Connection) -> Result<(), Damage> {
    let mut stmt = conn.prepare("PRAGMA quick_check").map_err(damage)?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(damage)?
        .collect::<Result<_, _>>()
        .map_err(damage)?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        let mut detail = rows.into_iter().take(3).collect::<Vec<_>>().join("; ");
        if detail.is_empty() {
            detail = "quick_check returned nothing".into();
        }
        Err(Damage::Corrupt(detail))
    }
}

/// `<path>.<suffix>` (with SQLite's `-wal` / `-shm` companions following the same rule).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{suffix}"));
    PathBuf::from(s)
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_sqlite_files(path: &Path) {
    for p in [
        path.to_path_buf(),
        companion(path, "-wal"),
        companion(path, "-shm"),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

fn quarantine(path: &Path, detail: String) -> LedgerError {
    let stamp: String = crate::clock::now_rfc3339()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    match move_aside(path, &format!("corrupt-{stamp}")) {
        Ok(moved_to) => LedgerError::Corrupt {
            path: path.to_path_buf(),
            moved_to,
            detail,
        },
        Err(source) => LedgerError::CorruptNotMoved {
            path: path.to_path_buf(),
            detail,
            source,
        },
    }
}

/// Moves the file (and its WAL and shared-memory companions, which belong to it) to
/// `<path>.<suffix>`, adding `-1`, `-2`, ... rather than replacing anything already there. A
/// hard link then unlink is the no-clobber rename; filesystems without hard links fall back to
/// a checked rename.
fn move_aside(path: &Path, suffix: &str) -> std::io::Result<PathBuf> {
    for n in 0u32.. {
        let target = if n == 0 {
            sibling(path, suffix)
        } else {
            sibling(path, &format!("{suffix}-{n}"))
        };
        match std::fs::hard_link(path, &target) {
            Ok(()) => std::fs::remove_file(path)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) if !target.exists() => std::fs::rename(path, &target)?,
            Err(_) => continue,
        }
        for c in ["-wal", "-shm"] {
            let (from, to) = (companion(path, c), companion(&target, c));
            if from.exists() && !to.exists() {
                std::fs::rename(from, to)?;
            }
        }
        return Ok(target);
    }
    unreachable!("u32 suffixes are never exhausted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_beside_the_sandboxes() {
        assert_eq!(
            default_path(Path::new(".clarity")),
            Path::new(".clarity/ledger.sqlite")
        );
        assert_eq!(
            resolve_path(Some(Path::new("/x/l.db")), Path::new(".clarity")),
            Path::new("/x/l.db")
        );
    }

    #[test]
    fn an_open_ledger_is_durable_by_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let pragma = |name: &str| -> String {
            ledger
                .conn
                .pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "2 is FULL");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn moving_aside_never_replaces_an_earlier_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        std::fs::write(&path, "first").unwrap();
        let a = move_aside(&path, "corrupt-X").unwrap();
        std::fs::write(&path, "second").unwrap();
        std::fs::write(companion(&path, "-wal"), "wal").unwrap();
        let b = move_aside(&path, "corrupt-X").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "first");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "second");
        assert_eq!(
            std::fs::read_to_string(companion(&b, "-wal")).unwrap(),
            "wal"
        );
        assert!(!path.exists());
    }
}
