//! The step journal: before each step of an apply changes anything, the agent records what it
//! would need to undo it (the release `current` pointed at, backups of files it overwrites, the
//! migrations it ran, the release directory it created). If the agent dies mid-apply — even by
//! `kill -9` — the next agent finds the journal and rolls the deployment back to exactly the
//! state before, so a host is never left half-switched. Backups live beside the journal with
//! the same permissions as the files they copy.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    pub deployment: String,
    pub release: String,
    /// Where `current` pointed before this apply (`None`: first install).
    pub previous_release: Option<String>,
    /// The release directory this apply created (removed again on rollback).
    pub created_release: Option<String>,
    /// Files overwritten outside the release, with their backups.
    pub backups: Vec<Backup>,
    pub service_installed: bool,
    /// The service definition before this apply, reinstalled on rollback.
    #[serde(default)]
    pub previous_service: Option<super::state::ServiceInputs>,
    pub switched: bool,
    /// Migration versions applied by this apply (reverted with down migrations on rollback).
    pub migrations_applied: Vec<i64>,
    /// A database backup taken before migrating.
    pub database_backup: Option<String>,
    /// The containers this apply created, started and would restart (container deployments).
    #[serde(default)]
    pub container: Option<super::container::ContainerJournal>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    /// The file on the host.
    pub path: PathBuf,
    /// The copy of its previous content; `None` when it did not exist.
    pub copy: Option<PathBuf>,
    /// The previous owner (uid, gid), restored with the content.
    #[serde(default)]
    pub owner: Option<(u32, u32)>,
}

impl Journal {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("journal.json")
    }

    pub fn backup_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("journal.d")
    }

    pub fn load(state_dir: &Path) -> Option<Journal> {
        let text = std::fs::read_to_string(Journal::path(state_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Persists the journal (atomically, synced): a step may only start after this returns.
    pub fn save(&self, state_dir: &Path) -> Result<(), super::files::FileError> {
        let text = serde_json::to_vec_pretty(self).expect("journal serializes");
        super::files::write_owned(&Journal::path(state_dir), &text, 0o600, None)
    }

    pub fn clear(state_dir: &Path) {
        let _ = std::fs::remove_file(Journal::path(state_dir));
        let _ = std::fs::remove_dir_all(Journal::backup_dir(state_dir));
    }

    /// Copies `path` aside before it is overwritten (once per path per apply).
    pub fn back_up(
        &mut self,
        state_dir: &Path,
        path: &Path,
    ) -> Result<(), super::files::FileError> {
        if self.backups.iter().any(|b| b.path == path) {
            return Ok(());
        }
        let owner = std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.uid(), m.gid())
        });
        let copy = if path.is_file() {
            let dir = Journal::backup_dir(state_dir);
            let copy = dir.join(format!("{}", self.backups.len()));
            let bytes = std::fs::read(path).map_err(|e| super::files::FileError {
                action: "back up",
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let mode = std::fs::metadata(path)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o600);
            super::files::write_owned(&copy, &bytes, mode, None)?;
            Some(copy)
        } else {
            None
        };
        self.backups.push(Backup {
            path: path.to_path_buf(),
            copy,
            owner,
        });
        self.save(state_dir)
    }

    /// Puts every backed-up file back (or removes files that did not exist before).
    pub fn restore_files(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for b in self.backups.iter().rev() {
            let result = match &b.copy {
                Some(copy) => std::fs::read(copy)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        let mode = std::fs::metadata(copy)
                            .map(|m| {
                                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
                            })
                            .unwrap_or(0o600);
                        super::files::write_owned(&b.path, &bytes, mode, None)
                            .map_err(|e| e.to_string())?;
                        match b.owner {
                            Some((uid, gid)) => {
                                nix::unistd::chown(&b.path, Some(uid.into()), Some(gid.into()))
                                    .map_err(|e| e.to_string())
                            }
                            None => Ok(()),
                        }
                    }),
                None => match std::fs::remove_file(&b.path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                },
            };
            if let Err(e) = result {
                problems.push(format!("{}: {e}", b.path.display()));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_overwritten_files_and_removes_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let existing = dir.path().join("etc/app.conf");
        let created = dir.path().join("etc/new.conf");
        std::fs::create_dir_all(existing.parent().unwrap()).unwrap();
        std::fs::write(&existing, "old\n").unwrap();
        let mut j = Journal::default();
        j.back_up(&state, &existing).unwrap();
        j.back_up(&state, &created).unwrap();
        std::fs::write(&existing, "new\n").unwrap();
        std::fs::write(&created, "new\n").unwrap();
        // The journal on disk is what a later agent reads after a crash.
        let reloaded = Journal::load(&state).unwrap();
        assert!(reloaded.restore_files().is_empty());
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "old\n");
        assert!(!created.exists());
        Journal::clear(&state);
        assert!(Journal::load(&state).is_none());
    }
}
