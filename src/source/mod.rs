//! Reading a config repository: the files under the config root at one commit (through git2,
//! never the working tree), or — for editing — that commit overlaid with uncommitted changes,
//! or a plain directory that is not under git. This module only reads bytes; it does not parse.

use git2::{ObjectType, Oid, Repository, Status, StatusOptions, TreeWalkMode, TreeWalkResult};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod ownership;

/// The top-level folders (and file) of a config root that Clarity reads.
const CONFIG_DIRS: [&str; 6] = [
    "clients/",
    "keys/",
    "artifacts/",
    "repositories/",
    "templates/",
    "secrets/",
];

fn is_config_path(path: &str) -> bool {
    path == "clarity.yml" || CONFIG_DIRS.iter().any(|d| path.starts_with(d))
}

/// `git -C dir`, for what git2 is built without (fetches, pushes and clones over the network):
/// it never prompts for credentials, so a service fails instead of waiting for a password.
pub fn git_cli(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C").arg(dir).env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadMode {
    /// Exactly the tree of this revision (apply always reads this way).
    Commit(String),
    /// `HEAD` overlaid with uncommitted changes under the config root (validate and dry-run
    /// while editing); the snapshot lists which files differ from the commit.
    WorkingTree,
}

#[derive(Debug, Clone)]
pub enum Content {
    File(Arc<[u8]>),
    /// A symbolic link and its target as written (relative to the link's folder or absolute).
    Symlink(String),
}

#[derive(Debug, Clone)]
pub struct SourceFile {
    pub content: Content,
    /// Git blob id, when the bytes are exactly a committed blob (a cache key).
    pub blob: Option<Oid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Commit {
        id: Oid,
        /// The revision as the user gave it.
        rev: String,
    },
    WorkingTree {
        head: Option<Oid>,
        /// Config files that differ from `head` (modified, added or deleted).
        changed: Vec<String>,
    },
    PlainDirectory,
}

/// Every config file under the config root, keyed by `/`-separated path relative to it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub origin: Origin,
    /// The config root on disk (for `file` repositories and the sandboxes' work dir).
    pub root: PathBuf,
    /// Path of the config root inside the git repository, `""` at the top.
    pub prefix: String,
    pub files: BTreeMap<String, SourceFile>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("config repository {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("revision `{rev}` not found in {repo}")]
    Revision {
        rev: String,
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("{path} is not in the tree of commit {commit}")]
    NotInCommit { path: String, commit: Oid },
    #[error("git error in {repo}")]
    Git {
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("a revision was given but {path} is not inside a git repository")]
    RevisionWithoutGit { path: PathBuf },
    #[error(
        "the git repository {path} belongs to {owner}, not to {user} (this process); git refuses to read it"
    )]
    NotOwned {
        path: PathBuf,
        owner: String,
        user: String,
    },
}

impl SourceError {
    pub fn hint(&self) -> Option<std::borrow::Cow<'static, str>> {
        if let SourceError::NotOwned { path, user, .. } = self {
            return Some(ownership::hint(path, user).into());
        }
        let fixed = match self {
            SourceError::Revision { .. } => {
                Some("use a branch, tag or commit id that exists: `git log --oneline` lists them")
            }
            SourceError::Missing { .. } => Some("pass the config repository with --repo PATH"),
            SourceError::RevisionWithoutGit { .. } => {
                Some("drop --rev to read the directory as plain files, or run `git init` there")
            }
            _ => None,
        };
        fixed.map(Into::into)
    }
}

fn git_err(repo: &Path) -> impl Fn(git2::Error) -> SourceError + '_ {
    move |source| SourceError::Git {
        repo: repo.to_path_buf(),
        source,
    }
}

/// Reads the config root at `path`.
pub fn read(path: &Path, mode: &ReadMode) -> Result<Snapshot, SourceError> {
    if !path.exists() {
        return Err(SourceError::Missing {
            path: path.to_path_buf(),
        });
    }
    let root = path.canonicalize().map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let discovered = Repository::discover(&root);
    // A repository git refuses is not a plain directory: reading its files past git would
    // apply whatever the work tree holds.
    if let Err(e) = &discovered
        && let Some(refused) = ownership::refusal(&root, e)
    {
        return Err(refused);
    }
    let repo = match discovered {
        Ok(repo) if !repo.is_bare() => repo,
        _ => {
            if let ReadMode::Commit(rev) = mode
                && rev != "HEAD"
            {
                return Err(SourceError::RevisionWithoutGit { path: root });
            }
            return read_plain(root);
        }
    };
    let (workdir, prefix) = work_tree_of(&repo, &root);
    let git_dir = repo.path().to_path_buf();

    match mode {
        ReadMode::Commit(rev) => {
            let commit = resolve(&repo, rev, &workdir)?;
            let files = read_tree(&repo, &git_dir, commit, &prefix, &workdir)?;
            Ok(Snapshot {
                origin: Origin::Commit {
                    id: commit,
                    rev: rev.clone(),
                },
                root,
                prefix,
                files,
                warnings: Vec::new(),
            })
        }
        ReadMode::WorkingTree => {
            let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
            let mut files = match &head {
                // A config root not yet committed is all uncommitted changes.
                Some(c) => match read_tree(&repo, &git_dir, c.id(), &prefix, &workdir) {
                    Err(SourceError::NotInCommit { .. }) => BTreeMap::new(),
                    read => read?,
                },
                None => BTreeMap::new(),
            };
            let changed = overlay_worktree(&repo, &root, &prefix, &mut files, &workdir)?;
            Ok(Snapshot {
                origin: Origin::WorkingTree {
                    head: head.map(|c| c.id()),
                    changed,
                },
                root,
                prefix,
                files,
                warnings: Vec::new(),
            })
        }
    }
}

fn resolve(repo: &Repository, rev: &str, workdir: &Path) -> Result<Oid, SourceError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|source| SourceError::Revision {
            rev: rev.to_string(),
            repo: workdir.to_path_buf(),
            source,
        })
}

/// Lists the config files of a commit's tree below `prefix`, then reads their blobs in
/// parallel (one repository handle per worker thread: git2 handles are not shareable).
fn read_tree(
    repo: &Repository,
    git_dir: &Path,
    commit: Oid,
    prefix: &str,
    workdir: &Path,
) -> Result<BTreeMap<String, SourceFile>, SourceError> {
    let err = git_err(workdir);
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(&err)?;
    let tree = if prefix.is_empty() {
        tree
    } else {
        let entry = tree
            .get_path(Path::new(prefix))
            .map_err(|_| SourceError::NotInCommit {
                path: prefix.to_string(),
                commit,
            })?;
        repo.find_tree(entry.id()).map_err(&err)?
    };
    let mut entries: Vec<(String, Oid, bool)> = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let path = format!("{dir}{name}");
        match entry.kind() {
            Some(ObjectType::Tree) => {
                // Skip folders Clarity never reads (artifact payloads, docs) without descending.
                let as_dir = format!("{path}/");
                if CONFIG_DIRS
                    .iter()
                    .any(|d| d.starts_with(&as_dir) || as_dir.starts_with(d))
                {
                    TreeWalkResult::Ok
                } else {
                    TreeWalkResult::Skip
                }
            }
            Some(ObjectType::Blob) if is_config_path(&path) => {
                let symlink = entry.filemode() == 0o120000;
                entries.push((path, entry.id(), symlink));
                TreeWalkResult::Ok
            }
            _ => TreeWalkResult::Ok,
        }
    })
    .map_err(&err)?;

    let read: Result<Vec<_>, git2::Error> = entries
        .into_par_iter()
        .map_init(
            || Repository::open(git_dir),
            |repo, (path, oid, symlink)| {
                let repo = repo
                    .as_ref()
                    .map_err(|e| git2::Error::from_str(e.message()))?;
                let blob = repo.find_blob(oid)?;
                let content = if symlink {
                    Content::Symlink(String::from_utf8_lossy(blob.content()).into_owned())
                } else {
                    Content::File(Arc::from(blob.content()))
                };
                Ok((
                    path,
                    SourceFile {
                        content,
                        blob: Some(oid),
                    },
                ))
            },
        )
        .collect();
    Ok(read.map_err(&err)?.into_iter().collect())
}

/// Applies uncommitted changes under the config root to `files`; returns the changed paths.
/// The repository's work tree and the config root's `/`-separated path inside it (`""` at the
/// top).
pub(crate) fn work_tree_of(repo: &Repository, root: &Path) -> (PathBuf, String) {
    let workdir = repo
        .workdir()
        .and_then(|w| w.canonicalize().ok())
        .unwrap_or_else(|| root.to_path_buf());
    let prefix = root
        .strip_prefix(&workdir)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    (workdir, prefix)
}

/// Config paths under the root whose working-tree state differs from HEAD, each with whether
/// it is gone from the disk. Reads git's status only, no file contents.
fn worktree_changes(
    repo: &Repository,
    root: &Path,
    prefix: &str,
    workdir: &Path,
) -> Result<Vec<(String, bool)>, SourceError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    if !prefix.is_empty() {
        opts.pathspec(format!("{prefix}/"));
    }
    let statuses = repo.statuses(Some(&mut opts)).map_err(git_err(workdir))?;
    let mut changed = Vec::new();
    for entry in statuses.iter() {
        let Ok(repo_path) = entry.path() else {
            continue;
        };
        let rel = if prefix.is_empty() {
            repo_path
        } else {
            match repo_path
                .strip_prefix(prefix)
                .and_then(|p| p.strip_prefix('/'))
            {
                Some(r) => r,
                None => continue,
            }
        };
        if !is_config_path(rel) {
            continue;
        }
        let gone = entry
            .status()
            .intersects(Status::WT_DELETED | Status::INDEX_DELETED)
            && !root.join(rel).exists();
        changed.push((rel.to_string(), gone));
    }
    changed.sort();
    Ok(changed)
}

/// Applies uncommitted changes under the config root to `files`; returns the changed paths.
fn overlay_worktree(
    repo: &Repository,
    root: &Path,
    prefix: &str,
    files: &mut BTreeMap<String, SourceFile>,
    workdir: &Path,
) -> Result<Vec<String>, SourceError> {
    let mut changed = Vec::new();
    for (rel, gone) in worktree_changes(repo, root, prefix, workdir)? {
        if gone {
            files.remove(&rel);
        } else if let Some(file) = read_disk_file(&root.join(&rel))? {
            files.insert(rel.clone(), file);
        } else {
            continue;
        }
        changed.push(rel);
    }
    Ok(changed)
}

/// The config files under `path` with uncommitted changes, without reading any of them (an
/// apply only needs to say that it ignores them). Empty outside a git work tree.
pub fn uncommitted_changes(path: &Path) -> Result<Vec<String>, SourceError> {
    let Ok(root) = path.canonicalize() else {
        return Ok(Vec::new());
    };
    let repo = match Repository::discover(&root) {
        Ok(repo) if !repo.is_bare() => repo,
        _ => return Ok(Vec::new()),
    };
    let (workdir, prefix) = work_tree_of(&repo, &root);
    Ok(worktree_changes(&repo, &root, &prefix, &workdir)?
        .into_iter()
        .filter(|(rel, gone)| {
            *gone
                || std::fs::symlink_metadata(root.join(rel))
                    .is_ok_and(|m| m.is_file() || m.file_type().is_symlink())
        })
        .map(|(rel, _)| rel)
        .collect())
}

fn read_disk_file(path: &Path) -> Result<Option<SourceFile>, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let content = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(io)?;
        Content::Symlink(target.to_string_lossy().into_owned())
    } else if meta.is_file() {
        Content::File(Arc::from(std::fs::read(path).map_err(io)?))
    } else {
        return Ok(None);
    };
    Ok(Some(SourceFile {
        content,
        blob: None,
    }))
}

fn read_plain(root: PathBuf) -> Result<Snapshot, SourceError> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| SourceError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| SourceError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let rel = path
                .strip_prefix(&root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let file_type = entry.file_type().map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
            if file_type.is_dir() {
                let as_dir = format!("{rel}/");
                if CONFIG_DIRS
                    .iter()
                    .any(|d| d.starts_with(&as_dir) || as_dir.starts_with(d))
                {
                    stack.push(path);
                }
            } else if is_config_path(&rel)
                && let Some(file) = read_disk_file(&path)?
            {
                files.insert(rel, file);
            }
        }
    }
    Ok(Snapshot {
        origin: Origin::PlainDirectory,
        warnings: vec![format!(
            "{} is not inside a git repository: read as plain files; applying needs a commit",
            root.display()
        )],
        root,
        prefix: String::new(),
        files,
    })
}

/// The branch a run applies: `rev` when it names a local branch, else the branch HEAD is on.
pub fn branch_of(path: &Path, rev: Option<&str>) -> Option<String> {
    let repo = Repository::discover(path).ok()?;
    match rev {
        Some(r) if r != "HEAD" => repo
            .find_branch(r, git2::BranchType::Local)
            .ok()
            .map(|_| r.to_string()),
        _ => {
            let head = repo.head().ok()?;
            if head.is_branch() {
                head.shorthand().ok().map(str::to_string)
            } else {
                None
            }
        }
    }
}

impl Snapshot {
    /// A one-line description of what was read, for plan and validate headers.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Commit { id, rev } => {
                let short = &id.to_string()[..12];
                if rev == "HEAD" || id.to_string().starts_with(rev.as_str()) {
                    format!("commit {short}")
                } else {
                    format!("commit {short} ({rev})")
                }
            }
            Origin::WorkingTree { head, changed } => {
                let base = head
                    .map(|h| format!("commit {}", &h.to_string()[..12]))
                    .unwrap_or_else(|| "an empty repository".to_string());
                if changed.is_empty() {
                    base
                } else {
                    format!(
                        "{base} plus {} uncommitted change{} (not yet committed: {})",
                        changed.len(),
                        if changed.len() == 1 { "" } else { "s" },
                        changed
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                            + if changed.len() > 5 { ", …" } else { "" }
                    )
                }
            }
            Origin::PlainDirectory => "plain directory (not a git repository)".to_string(),
        }
    }

    /// The commit applied, when the snapshot is exactly one commit.
    pub fn commit(&self) -> Option<Oid> {
        match &self.origin {
            Origin::Commit { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn text(&self, path: &str) -> Option<&[u8]> {
        match &self.files.get(path)?.content {
            Content::File(bytes) => Some(bytes),
            Content::Symlink(_) => None,
        }
    }
}
