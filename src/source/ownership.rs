//! libgit2 (like git itself) refuses to open a repository whose directory belongs to another
//! user, and says only "not owned by current user". This turns that refusal into an error that
//! names the owner and both ways out: give the repository to the user the reconciler runs as,
//! or trust it with `safe.directory` in that user's git configuration. It only reads file
//! metadata and the user database; it never changes ownership or configuration itself.

use super::SourceError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The error for `path` when `err` is libgit2's ownership refusal, else `None`.
pub fn refusal(path: &Path, err: &git2::Error) -> Option<SourceError> {
    if err.code() != git2::ErrorCode::Owner {
        return None;
    }
    let top = repository_top(path);
    let owner = std::fs::metadata(&top).map(|m| m.uid()).ok();
    let name_of = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid {uid}"))
    };
    let current = nix::unistd::geteuid().as_raw();
    Some(SourceError::NotOwned {
        path: top,
        owner: owner.map(name_of).unwrap_or_else(|| "another user".into()),
        user: name_of(current),
    })
}

/// The directory git judges: the nearest ancestor of `path` (itself included) holding `.git`,
/// or a bare repository's own directory; `path` when neither is found.
fn repository_top(path: &Path) -> PathBuf {
    let start = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    start
        .ancestors()
        .find(|d| {
            d.join(".git").exists() || (d.join("HEAD").is_file() && d.join("objects").is_dir())
        })
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// The hint for [`SourceError::NotOwned`]. A work tree needs two `safe.directory` entries:
/// libgit2 checks the work tree, while git's `upload-pack` (the mirror's clone and fetches of a
/// local source) checks the `.git` directory.
pub fn hint(path: &Path, user: &str) -> String {
    let mut trusted = vec![path.to_path_buf()];
    if path.join(".git").is_dir() {
        trusted.push(path.join(".git"));
    }
    let config = format!("~{user}/.gitconfig");
    let commands: Vec<String> = trusted
        .iter()
        .map(|p| {
            format!(
                "`git config --file {config} --add safe.directory {}`",
                p.display()
            )
        })
        .collect();
    format!(
        "give the repository to the user the reconciler runs as (`chown -R {user}: {}`), or \
         trust it in that user's git configuration: {} (the service's is \
         /var/lib/clarity/.gitconfig, owned by clarity; see docs/operations.md, \
         \"A local config repository\")",
        path.display(),
        commands.join(" and ")
    )
}
