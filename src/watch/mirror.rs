//! The watch loop's copy of the config repository: a clone under the work dir that follows the
//! source (a local path, watched for ref changes, or a URL, fetched on an interval). Runs read
//! commits from it and it carries their notes back to the source.

use crate::source::git_cli;
use git2::{Oid, Repository};
use std::path::{Path, PathBuf};

pub struct Mirror {
    /// The repository's top directory under the work dir.
    pub top: PathBuf,
    /// The config root inside it (`top` plus the source's prefix inside its repository).
    pub root: PathBuf,
    /// What the mirror follows, as given: a path or a URL.
    pub source: String,
    /// The source's git directory when it is a local path, for change notifications.
    pub local_git_dir: Option<PathBuf>,
}

/// Local paths are followed through the file system; anything else is a URL for `git fetch`.
fn is_local(source: &str) -> bool {
    !source.contains("://") && Path::new(source).exists()
}

impl Mirror {
    /// Opens the mirror under `work_dir`, cloning the source the first time.
    pub fn open(source: &str, work_dir: &Path) -> Result<Mirror, String> {
        let (clone_from, prefix, local_git_dir) = if is_local(source) {
            let repo = Repository::discover(source).map_err(|e| {
                format!("`{source}` is not inside a git repository: {}", e.message())
            })?;
            let git_dir = std::path::absolute(repo.path()).unwrap_or(repo.path().to_path_buf());
            let (from, prefix) = match repo.workdir() {
                Some(workdir) => {
                    let workdir = workdir.canonicalize().unwrap_or(workdir.to_path_buf());
                    let root = Path::new(source)
                        .canonicalize()
                        .map_err(|e| format!("cannot resolve `{source}`: {e}"))?;
                    let prefix = root
                        .strip_prefix(&workdir)
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    (workdir.display().to_string(), prefix)
                }
                None => (git_dir.display().to_string(), PathBuf::new()),
            };
            (from, prefix, Some(git_dir))
        } else {
            (source.to_string(), PathBuf::new(), None)
        };
        let top = work_dir.join("mirror");
        if top.join(".git").is_dir() {
            let origin = git_output(&top, &["config", "--get", "remote.origin.url"])?;
            if origin.trim() != clone_from {
                return Err(format!(
                    "{} mirrors `{}`, not `{}`; remove it to follow the new repository",
                    top.display(),
                    redact_url(origin.trim()),
                    redact_url(&clone_from)
                ));
            }
        } else {
            std::fs::create_dir_all(work_dir)
                .map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
            let partial = work_dir.join("mirror.partial");
            let _ = std::fs::remove_dir_all(&partial);
            let out = git_cli(work_dir)
                .args(["clone", "--quiet", "--no-checkout", "--"])
                .arg(&clone_from)
                .arg(&partial)
                .output()
                .map_err(|e| format!("cannot run git: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot clone `{}`: {}",
                    redact_url(&clone_from),
                    redact_url(String::from_utf8_lossy(&out.stderr).trim())
                ));
            }
            std::fs::rename(&partial, &top)
                .map_err(|e| format!("cannot move the clone into place: {e}"))?;
        }
        Ok(Mirror {
            root: top.join(&prefix),
            top,
            source: source.to_string(),
            local_git_dir,
        })
    }

    /// Brings every branch of the source into `refs/remotes/origin/`.
    pub fn fetch(&self) -> Result<(), String> {
        git_output(
            &self.top,
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--force",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        )
        .map(drop)
    }

    fn repo(&self) -> Result<Repository, String> {
        Repository::open(&self.top)
            .map_err(|e| format!("cannot open {}: {}", self.top.display(), e.message()))
    }

    /// The tip of `branch` as last fetched.
    pub fn head(&self, branch: &str) -> Result<Option<Oid>, String> {
        let repo = self.repo()?;
        let found = repo.refname_to_id(&format!("refs/remotes/origin/{branch}"));
        Ok(found.ok())
    }

    pub fn contains(&self, commit: &str) -> bool {
        self.repo()
            .ok()
            .and_then(|r| {
                let id = Oid::from_str(commit).ok()?;
                r.find_commit(id).ok().map(drop)
            })
            .is_some()
    }

    /// The commit `rev` names (a full or abbreviated id, or a remote branch or tag as fetched).
    pub fn resolve(&self, rev: &str) -> Result<Oid, String> {
        let repo = self.repo()?;
        let object = repo
            .revparse_single(rev)
            .or_else(|_| repo.revparse_single(&format!("refs/remotes/origin/{rev}")))
            .map_err(|e| e.message().to_string())?;
        object
            .peel_to_commit()
            .map(|c| c.id())
            .map_err(|e| e.message().to_string())
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool, String> {
        if ancestor == descendant {
            return Ok(true);
        }
        self.repo()?
            .graph_descendant_of(descendant, ancestor)
            .map_err(|e| e.message().to_string())
    }

    /// Commit time, seconds since the epoch.
    pub fn commit_time(&self, commit: Oid) -> Option<i64> {
        let repo = self.repo().ok()?;
        let c = repo.find_commit(commit).ok()?;
        Some(c.time().seconds())
    }

    /// Puts `commit` in the work tree, exactly: `file` repositories read artifacts from disk.
    pub fn checkout(&self, commit: Oid) -> Result<(), String> {
        let sha = commit.to_string();
        git_output(
            &self.top,
            &["checkout", "--quiet", "--force", "--detach", &sha],
        )?;
        git_output(&self.top, &["clean", "--quiet", "-ffdx"]).map(drop)
    }

    /// Sends the run notes to the source.
    pub fn push_notes(&self) -> Result<(), String> {
        crate::ledger::notes::push(&self.top, "origin").map_err(|e| e.to_string())
    }
}

/// Where a command other than the loop (the drift timer's service) reads `source`, the
/// loop's `--repo`: `None` for a local path, which is read directly; for a URL, the loop's
/// mirror under `work_dir`, which must exist and follow that URL.
pub fn mirror_root(source: &str, work_dir: &Path) -> Result<Option<PathBuf>, String> {
    // git's own rule for scp-like addresses (`git@host:ops/config.git`): a colon before any
    // slash. Anything else that is not a URL is a path, missing or not, and says so itself.
    let scp_like = source
        .find(':')
        .is_some_and(|colon| !source[..colon].contains('/'));
    if is_local(source) || !(source.contains("://") || scp_like) {
        return Ok(None);
    }
    let top = work_dir.join("mirror");
    if !top.join(".git").is_dir() {
        return Err(format!(
            "`{}` is a URL and {} holds no mirror of it yet: the watch loop \
             (clarity-reconcile.service) clones it on its first start",
            redact_url(source),
            top.display()
        ));
    }
    let origin = git_output(&top, &["config", "--get", "remote.origin.url"])?;
    if origin.trim() != source {
        return Err(format!(
            "{} mirrors `{}`, not `{}`",
            top.display(),
            redact_url(origin.trim()),
            redact_url(source)
        ));
    }
    Ok(Some(top))
}

fn git_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = git_cli(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`git {}` failed in {}: {}",
            args.join(" "),
            dir.display(),
            redact_url(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `scheme://user:password@host/...` with the credentials replaced, for messages: a token in
/// the repository URL must not reach logs or the ledger.
pub fn redact_url(text: &str) -> String {
    crate::url_credentials::hide(text, "***@")
}

#[cfg(test)]
mod tests {
    use super::{mirror_root, redact_url};

    #[test]
    fn only_urls_are_read_through_the_mirror() {
        let work = std::path::Path::new("/nonexistent-clarity-work");
        assert_eq!(mirror_root("/srv/missing-config", work), Ok(None));
        assert_eq!(mirror_root("config", work), Ok(None));
        for url in ["ssh://git@host/ops/config.git", "git@host:ops/config.git"] {
            let err = mirror_root(url, work).unwrap_err();
            assert!(err.contains("holds no mirror of it yet"), "{err}");
        }
    }

    #[test]
    fn credentials_in_urls_are_starred() {
        assert_eq!(redact_url("ssh://git@host/repo"), "ssh://***@host/repo");
    }
}
