//! The migration step of an apply, on top of `migrate`: resolve where the database is (a
//! relative SQLite path lives in the deployment's shared directory), back it up when asked,
//! apply what is pending, and on rollback revert exactly what this apply did — with down
//! migrations, or the backup when a down migration is missing.

use super::{self as migrate, Database, MigrateError};
use crate::model::MigrationEngine;
use crate::model::apply::WireMigrations;
use crate::secret::SecretString;
use std::path::{Path, PathBuf};

/// Backups kept per deployment; older ones are removed when a new one is taken.
const KEEP_BACKUPS: usize = 5;

/// What a migration step did (also on failure, so a rollback can undo it).
#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: Vec<i64>,
    pub backup: Option<PathBuf>,
}

fn with_database<T>(
    m: &WireMigrations,
    shared: &Path,
    f: impl FnOnce(&Database) -> T,
) -> Result<T, String> {
    let db = m.database.as_ref().ok_or("migrations need `database`")?;
    match m.engine {
        MigrationEngine::Sqlite => {
            let path = Path::new(db.expose());
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                shared.join(path)
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("create {}: {e}", parent.display()))?;
            }
            Ok(f(&Database::Sqlite(&path)))
        }
        MigrationEngine::Postgresql => Ok(f(&Database::Postgres(&db.0))),
        MigrationEngine::Command => Err("the command engine has no database".into()),
    }
}

fn env_of(env_file: &Path) -> Vec<(String, SecretString)> {
    std::fs::read_to_string(env_file)
        .ok()
        .and_then(|t| crate::service::env_file::parse(&t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, SecretString::new(v)))
        .collect()
}

/// Runs the step. On failure the returned `Outcome` says what must be undone.
pub fn run(
    m: &WireMigrations,
    release: &Path,
    shared: &Path,
    backups: &Path,
    env_file: &Path,
) -> Result<Outcome, (String, Outcome)> {
    if m.engine == MigrationEngine::Command {
        let argv = m.command.clone().unwrap_or_default();
        return migrate::run_command(&argv, release, &env_of(env_file))
            .map(|_| Outcome::default())
            .map_err(|e| (e.to_string(), Outcome::default()));
    }
    let dir = release.join(&m.directory);
    let mut outcome = Outcome::default();
    let result = with_database(m, shared, |db| -> Result<Vec<i64>, (String, Vec<i64>)> {
        if m.backup {
            outcome.backup =
                migrate::backup(db, backups, KEEP_BACKUPS).map_err(|e| (e.to_string(), vec![]))?;
        }
        migrate::apply_pending(&dir, db)
            .map(|a| a.versions)
            .map_err(|e| {
                let completed = match &e {
                    MigrateError::Failed { completed, .. } => completed.clone(),
                    _ => Vec::new(),
                };
                (e.to_string(), completed)
            })
    });
    match result {
        Err(e) => Err((e, outcome)),
        Ok(Ok(versions)) => {
            outcome.applied = versions;
            Ok(outcome)
        }
        Ok(Err((e, completed))) => {
            outcome.applied = completed;
            Err((e, outcome))
        }
    }
}

/// Reverts `versions` (applied by the interrupted or failed apply) with down migrations from
/// the new release, or restores `backup` when a down migration is missing.
pub fn revert(
    m: &WireMigrations,
    release: &Path,
    shared: &Path,
    versions: &[i64],
    backup: Option<&Path>,
) -> Result<(), String> {
    if m.engine == MigrationEngine::Command || versions.is_empty() && backup.is_none() {
        return Ok(());
    }
    let dir = release.join(&m.directory);
    with_database(m, shared, |db| match migrate::down(&dir, db, versions) {
        Ok(_) => Ok(()),
        Err(e) => match backup {
            Some(b) => migrate::restore(db, b)
                .map_err(|r| format!("{e}; restoring the backup failed too: {r}")),
            None => Err(e.to_string()),
        },
    })?
}
