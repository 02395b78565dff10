//! The notes' store: reading and writing the notes tree under `refs/notes/clarity` in a
//! repository (fan-out layout, retried against concurrent writers) and pushing and fetching it
//! with the `git` program. What a note's text says is `format`'s business, never this file's.
//!
//! Notes trees are written with git's fan-out layout (`ab/cdef…`, the first two hex digits a
//! directory), which libgit2's note API does not do, so this module edits the notes tree
//! itself. Reading accepts any layout, flat or fanned out, as git writes both.
//!
//! Pushing and fetching use the `git` program, not libgit2: it brings the operator's SSH keys,
//! credential helpers and URL rewrites, which an embedded transport would not.

use super::format::{
    merge_texts, parse_drift, parse_note, render_block, render_drift_block, with_block,
};
use crate::model::run::RunRecord;
use git2::{ErrorCode, ObjectType, Oid, Repository, Signature, Tree, TreeWalkMode, TreeWalkResult};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The notes ref Clarity writes.
pub const NOTES_REF: &str = "refs/notes/clarity";
/// Where a fetch puts the remote's notes before merging them.
const INCOMING_REF: &str = "refs/notes/clarity-incoming";
/// Pushes tried when the remote keeps moving on between our fetch and our push.
const ATTEMPTS: usize = 5;
/// How long a note writer keeps retrying while other writers hold or move the notes ref.
const CONTENTION_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NotesError {
    #[error("cannot open the git repository at {repo}")]
    Open {
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("commit `{rev}` not found in {repo}")]
    Revision {
        repo: PathBuf,
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot {action} in {repo}")]
    Git {
        repo: PathBuf,
        action: &'static str,
        #[source]
        source: git2::Error,
    },
    #[error("{repo} has no {NOTES_REF} to push")]
    NothingToPush { repo: PathBuf },
    #[error("cannot run `git {args}` in {repo}")]
    Spawn {
        repo: PathBuf,
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {args}` failed in {repo}: {detail}")]
    Command {
        repo: PathBuf,
        args: String,
        detail: String,
    },
    #[error("the note on commit {commit} in {repo} has an unreadable run record: {detail}")]
    Malformed {
        repo: PathBuf,
        commit: String,
        detail: String,
    },
}

impl NotesError {
    pub fn hint(&self) -> Option<String> {
        match self {
            NotesError::Open { .. } => Some(
                "pass the config repository (a git work tree or bare repository) with --repo"
                    .into(),
            ),
            NotesError::Malformed { commit, .. } => Some(format!(
                "look at it with `git notes --ref=clarity show {commit}` and fix the \
                 `clarity-run:` line with `git notes --ref=clarity edit {commit}`"
            )),
            NotesError::Command { .. } => Some(
                "check the remote's name or URL and your access to it (`git remote -v`)".into(),
            ),
            _ => None,
        }
    }
}

fn open(repo_dir: &Path) -> Result<Repository, NotesError> {
    Repository::discover(repo_dir).map_err(|source| NotesError::Open {
        repo: repo_dir.to_path_buf(),
        source,
    })
}

fn git_err<'a>(
    repo_dir: &'a Path,
    action: &'static str,
) -> impl Fn(git2::Error) -> NotesError + 'a {
    move |source| NotesError::Git {
        repo: repo_dir.to_path_buf(),
        action,
        source,
    }
}

/// The notes commit `NOTES_REF` points at, if any.
fn notes_tip(repo: &Repository, repo_dir: &Path) -> Result<Option<Oid>, NotesError> {
    match repo.refname_to_id(NOTES_REF) {
        Ok(id) => Ok(Some(id)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_err(repo_dir, "read refs/notes/clarity")(e)),
    }
}

/// The path of the note for `hex` in `tree`, in whatever fan-out it was written.
fn find_note(
    repo: &Repository,
    tree: &Tree,
    hex: &str,
) -> Result<Option<(String, Oid)>, git2::Error> {
    let mut tree = tree.clone();
    let mut prefix = String::new();
    let mut rest = hex;
    loop {
        if let Some(e) = tree.get_name(rest)
            && e.kind() == Some(ObjectType::Blob)
        {
            return Ok(Some((format!("{prefix}{rest}"), e.id())));
        }
        if rest.len() <= 2 {
            return Ok(None);
        }
        let next = match tree.get_name(&rest[..2]) {
            Some(e) if e.kind() == Some(ObjectType::Tree) => e.id(),
            _ => return Ok(None),
        };
        let next = repo.find_tree(next)?;
        prefix.push_str(&rest[..2]);
        prefix.push('/');
        rest = &rest[2..];
        tree = next;
    }
}

/// The path Clarity writes the note for `hex` at: one level of fan-out.
fn fanout_path(hex: &str) -> String {
    format!("{}/{}", &hex[..2], &hex[2..])
}

/// Applies path edits (`Some(blob)` to write, `None` to remove) to `base`, rebuilding only the
/// trees on the edited paths. Returns the new tree and whether it is empty (so the caller
/// drops an emptied directory).
fn edit_tree(
    repo: &Repository,
    base: Option<&Tree>,
    edits: &[(String, Option<Oid>)],
) -> Result<(Oid, bool), git2::Error> {
    let mut builder = repo.treebuilder(base)?;
    let mut below: BTreeMap<&str, Vec<(String, Option<Oid>)>> = BTreeMap::new();
    for (path, edit) in edits {
        match path.split_once('/') {
            None => match edit {
                Some(blob) => {
                    builder.insert(path, *blob, 0o100644)?;
                }
                None => {
                    if builder.get(path)?.is_some() {
                        builder.remove(path)?;
                    }
                }
            },
            Some((dir, rest)) => below
                .entry(dir)
                .or_default()
                .push((rest.to_string(), *edit)),
        }
    }
    for (dir, edits) in below {
        let sub = match base.and_then(|t| t.get_name(dir)) {
            Some(e) if e.kind() == Some(ObjectType::Tree) => Some(repo.find_tree(e.id())?),
            _ => None,
        };
        let (oid, empty) = edit_tree(repo, sub.as_ref(), &edits)?;
        if empty {
            if builder.get(dir)?.is_some() {
                builder.remove(dir)?;
            }
        } else {
            builder.insert(dir, oid, 0o040000)?;
        }
    }
    let empty = builder.is_empty();
    Ok((builder.write()?, empty))
}

/// Every note in a notes tree: commit hex → blob, whatever the fan-out.
fn all_notes(tree: &Tree) -> Result<BTreeMap<String, Oid>, git2::Error> {
    let mut notes = BTreeMap::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Blob)
            && let Ok(name) = entry.name()
        {
            let hex: String = format!("{dir}{name}")
                .chars()
                .filter(|c| *c != '/')
                .collect();
            if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                notes.insert(hex.to_ascii_lowercase(), entry.id());
            }
        }
        TreeWalkResult::Ok
    })?;
    Ok(notes)
}

fn signature(repo: &Repository) -> Result<Signature<'static>, git2::Error> {
    // A reconciler on a server often has no git identity; the notes then say who wrote them.
    repo.signature()
        .or_else(|_| Signature::now("clarity-reconcile", "clarity-reconcile@localhost"))
}

/// Adds `run`'s block to the note on `commit` (a revision: full id, branch, tag), creating
/// the note or appending to it.
pub fn write(repo_dir: &Path, commit: &str, run: &RunRecord) -> Result<(), NotesError> {
    write_batch(repo_dir, &[(commit, run)])
}

/// Adds many runs' blocks in one notes commit (an import, or a benchmark): same result as
/// calling [`write`] for each, in order, with one tree rewrite instead of one per run.
pub fn write_batch(repo_dir: &Path, runs: &[(&str, &RunRecord)]) -> Result<(), NotesError> {
    let rendered: Vec<(&str, &RunRecord, String)> = runs
        .iter()
        .map(|(rev, run)| (*rev, *run, render_block(run)))
        .collect();
    write_rendered(repo_dir, &rendered)
}

/// Adds a drift run's block, with its findings, to the note on `commit`: the notes hold drift
/// runs as the ledger does, so a rebuild restores them with what they found.
pub fn write_drift(
    repo_dir: &Path,
    commit: &str,
    run: &RunRecord,
    findings: &[crate::model::run::DriftFinding],
) -> Result<(), NotesError> {
    write_rendered(
        repo_dir,
        &[(commit, run, render_drift_block(run, findings))],
    )
}

fn write_rendered(repo_dir: &Path, runs: &[(&str, &RunRecord, String)]) -> Result<(), NotesError> {
    let repo = open(repo_dir)?;
    let mut targets: Vec<(Oid, &RunRecord, &str)> = Vec::with_capacity(runs.len());
    for (rev, run, block) in runs {
        let oid = repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .map_err(|source| NotesError::Revision {
                repo: repo_dir.to_path_buf(),
                rev: rev.to_string(),
                source,
            })?;
        targets.push((oid, run, block));
    }
    let sig = signature(&repo).map_err(git_err(repo_dir, "make a commit signature"))?;
    let started = std::time::Instant::now();
    for attempt in 0u64.. {
        let parent = match notes_tip(&repo, repo_dir)? {
            Some(id) => Some(
                repo.find_commit(id)
                    .map_err(git_err(repo_dir, "read the notes commit"))?,
            ),
            None => None,
        };
        let root = match &parent {
            Some(c) => Some(c.tree().map_err(git_err(repo_dir, "read the notes tree"))?),
            None => None,
        };
        // Per commit: where its note is now, and its text with our blocks appended.
        let mut notes: BTreeMap<Oid, (Option<String>, String, bool)> = BTreeMap::new();
        for (oid, run, block) in &targets {
            if !notes.contains_key(oid) {
                let hex = oid.to_string();
                let existing = match &root {
                    Some(t) => find_note(&repo, t, &hex)
                        .map_err(git_err(repo_dir, "read the notes tree"))?,
                    None => None,
                };
                let (path, text) = match existing {
                    Some((path, blob)) => {
                        let blob = repo
                            .find_blob(blob)
                            .map_err(git_err(repo_dir, "read a note"))?;
                        (
                            Some(path),
                            String::from_utf8_lossy(blob.content()).into_owned(),
                        )
                    }
                    None => (None, String::new()),
                };
                notes.insert(*oid, (path, text, false));
            }
            let (_, text, changed) = notes.get_mut(oid).expect("inserted above");
            if let Some(added) = with_block(text, &run.id, block) {
                *text = added;
                *changed = true;
            }
        }
        let mut edits = Vec::new();
        for (oid, (old_path, text, changed)) in &notes {
            if !changed {
                continue;
            }
            let hex = oid.to_string();
            let blob = repo
                .blob(text.as_bytes())
                .map_err(git_err(repo_dir, "write a note"))?;
            let path = fanout_path(&hex);
            if let Some(old) = old_path
                && *old != path
            {
                edits.push((old.clone(), None));
            }
            edits.push((path, Some(blob)));
        }
        if edits.is_empty() {
            return Ok(());
        }
        let (tree, _) = edit_tree(&repo, root.as_ref(), &edits)
            .map_err(git_err(repo_dir, "write the notes tree"))?;
        let tree = repo
            .find_tree(tree)
            .map_err(git_err(repo_dir, "write the notes tree"))?;
        let message = match targets.as_slice() {
            [(oid, run, _)] => format!(
                "Notes added by clarity-reconcile: run {} on {}",
                run.id,
                &oid.to_string()[..12]
            ),
            many => format!("Notes added by clarity-reconcile: {} runs", many.len()),
        };
        let parents: Vec<_> = parent.iter().collect();
        let commit = repo
            .commit(None, &sig, &sig, &message, &tree, &parents)
            .map_err(git_err(repo_dir, "commit the notes"))?;
        // Compare-and-swap: the ref moves only if it still points where we read it (or still
        // does not exist), so a concurrent writer's notes are never lost; we re-read and retry.
        // (libgit2's commit-and-update-ref does not check when the ref is new.) `Locked` is
        // another writer mid-update.
        match move_ref(&repo, parent.as_ref().map(|c| c.id()), commit, &message) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked)
                    && started.elapsed() < CONTENTION_LIMIT =>
            {
                // Back off a little more each time, jittered by our commit's id (it differs
                // per writer and per try) so that writers started together do not retry in
                // lockstep.
                let ms = (attempt * 5).min(100) + u64::from(commit.as_bytes()[0] % 8);
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            Err(e) => return Err(git_err(repo_dir, "commit the notes")(e)),
        }
    }
    unreachable!("the retry loop returns")
}

/// Points `NOTES_REF` at `new` if it still points at `expected` (`None`: does not exist yet).
fn move_ref(
    repo: &Repository,
    expected: Option<Oid>,
    new: Oid,
    message: &str,
) -> Result<(), git2::Error> {
    // The zero id means "must not exist", checked under the ref's lock. (A no-force create
    // checks existence before taking the lock, so two first writers could both succeed.)
    let expected = expected.unwrap_or(Oid::ZERO_SHA1);
    repo.reference_matching(NOTES_REF, new, true, expected, message)
        .map(|_| ())
}

/// The runs in the note on one commit, in note order.
pub fn read(repo_dir: &Path, commit: &str) -> Result<Vec<RunRecord>, NotesError> {
    let repo = open(repo_dir)?;
    let oid = repo
        .revparse_single(commit)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|source| NotesError::Revision {
            repo: repo_dir.to_path_buf(),
            rev: commit.to_string(),
            source,
        })?;
    let Some(tip) = notes_tip(&repo, repo_dir)? else {
        return Ok(Vec::new());
    };
    let tree = repo
        .find_commit(tip)
        .and_then(|c| c.tree())
        .map_err(git_err(repo_dir, "read the notes tree"))?;
    let Some((_, blob)) = find_note(&repo, &tree, &oid.to_string())
        .map_err(git_err(repo_dir, "read the notes tree"))?
    else {
        return Ok(Vec::new());
    };
    let blob = repo
        .find_blob(blob)
        .map_err(git_err(repo_dir, "read a note"))?;
    parse_note(&String::from_utf8_lossy(blob.content()))
        .into_iter()
        .map(|r| {
            r.map_err(|detail| NotesError::Malformed {
                repo: repo_dir.to_path_buf(),
                commit: oid.to_string(),
                detail,
            })
        })
        .collect()
}

/// Everything the notes hold, with what could not be read.
#[derive(Debug, Clone, Default)]
pub struct NotesScan {
    /// Oldest first (by start time, then id).
    pub runs: Vec<RunRecord>,
    /// Commits that have a note.
    pub notes: usize,
    /// `<commit>: <reason>` for each `clarity-run:` line that did not parse.
    pub skipped: Vec<String>,
    /// The findings of drift runs, by run id.
    pub drift_findings: BTreeMap<String, Vec<crate::model::run::DriftFinding>>,
}

/// Reads every note under `refs/notes/clarity`, keeping going past unreadable lines.
pub fn scan(repo_dir: &Path) -> Result<NotesScan, NotesError> {
    let repo = open(repo_dir)?;
    let Some(tip) = notes_tip(&repo, repo_dir)? else {
        return Ok(NotesScan::default());
    };
    let tree = repo
        .find_commit(tip)
        .and_then(|c| c.tree())
        .map_err(git_err(repo_dir, "read the notes tree"))?;
    let notes = all_notes(&tree).map_err(git_err(repo_dir, "read the notes tree"))?;
    let mut scan = NotesScan {
        notes: notes.len(),
        ..NotesScan::default()
    };
    let mut seen = BTreeSet::new();
    for (commit, blob) in notes {
        let blob = repo
            .find_blob(blob)
            .map_err(git_err(repo_dir, "read a note"))?;
        let text = String::from_utf8_lossy(blob.content());
        for drift in parse_drift(&text) {
            match drift {
                Ok((run, findings)) => {
                    scan.drift_findings.entry(run).or_insert(findings);
                }
                Err(e) => scan.skipped.push(format!("{commit}: drift findings: {e}")),
            }
        }
        for run in parse_note(&text) {
            match run {
                Ok(run) => {
                    if seen.insert(run.id.clone()) {
                        scan.runs.push(run);
                    }
                }
                Err(e) => scan.skipped.push(format!("{commit}: {e}")),
            }
        }
    }
    scan.runs.sort_by(|a, b| {
        (a.started_at.as_str(), a.id.as_str()).cmp(&(b.started_at.as_str(), b.id.as_str()))
    });
    Ok(scan)
}

/// Every run recorded in the notes, oldest first. Unlike [`scan`], an unreadable
/// `clarity-run:` line is an error naming its commit.
pub fn read_all(repo_dir: &Path) -> Result<Vec<RunRecord>, NotesError> {
    let scan = scan(repo_dir)?;
    if let Some(first) = scan.skipped.first() {
        let (commit, detail) = first.split_once(": ").unwrap_or((first, ""));
        return Err(NotesError::Malformed {
            repo: repo_dir.to_path_buf(),
            commit: commit.to_string(),
            detail: detail.to_string(),
        });
    }
    Ok(scan.runs)
}

/// Where to run the `git` program for this repository.
fn cli_dir(repo: &Repository) -> PathBuf {
    repo.workdir().unwrap_or(repo.path()).to_path_buf()
}

fn git_cli(dir: &Path, args: &[&str]) -> Result<std::process::Output, NotesError> {
    crate::source::git_cli(dir)
        .args(args)
        .output()
        .map_err(|source| NotesError::Spawn {
            repo: dir.to_path_buf(),
            args: args.join(" "),
            source,
        })
}

/// Pushes `refs/notes/clarity` to `remote` (a remote name or URL). When the remote has notes
/// this clone lacks (another reconciler pushed), fetches them, merges them note by note (the
/// union of the runs on each commit) and pushes again.
pub fn push(repo_dir: &Path, remote: &str) -> Result<(), NotesError> {
    let repo = open(repo_dir)?;
    if notes_tip(&repo, repo_dir)?.is_none() {
        return Err(NotesError::NothingToPush {
            repo: repo_dir.to_path_buf(),
        });
    }
    let dir = cli_dir(&repo);
    let refspec = format!("{NOTES_REF}:{NOTES_REF}");
    let args = ["push", "--porcelain", remote, &refspec];
    let mut detail = String::new();
    for _ in 0..ATTEMPTS {
        let out = git_cli(&dir, &args)?;
        if out.status.success() {
            return Ok(());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // `[rejected]` is a non-fast-forward (the remote moved on); `[remote rejected]` is a
        // refusal by the remote, which merging cannot fix.
        let behind = stdout
            .lines()
            .any(|l| l.starts_with('!') && l.contains("[rejected]"));
        if !behind {
            break;
        }
        fetch_into(&repo, &dir, remote)?;
    }
    Err(NotesError::Command {
        repo: dir,
        args: args.join(" "),
        detail,
    })
}

/// Fetches `refs/notes/clarity` from `remote` and merges it into the local notes (fast-forward
/// when one contains the other, else a merge commit with the union of both). A remote without
/// Clarity notes is not an error.
pub fn fetch(repo_dir: &Path, remote: &str) -> Result<(), NotesError> {
    let repo = open(repo_dir)?;
    let dir = cli_dir(&repo);
    fetch_into(&repo, &dir, remote)
}

fn fetch_into(repo: &Repository, dir: &Path, remote: &str) -> Result<(), NotesError> {
    let refspec = format!("+{NOTES_REF}:{INCOMING_REF}");
    let args = ["fetch", "--no-tags", "--quiet", remote, &refspec];
    let out = git_cli(dir, &args)?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.contains("couldn't find remote ref") {
            return Ok(());
        }
        return Err(NotesError::Command {
            repo: dir.to_path_buf(),
            args: args.join(" "),
            detail,
        });
    }
    let result = merge_incoming(repo, dir);
    if let Ok(mut r) = repo.find_reference(INCOMING_REF) {
        let _ = r.delete();
    }
    result
}

fn merge_incoming(repo: &Repository, dir: &Path) -> Result<(), NotesError> {
    let err = |action| git_err(dir, action);
    let theirs = repo
        .refname_to_id(INCOMING_REF)
        .map_err(err("read the fetched notes"))?;
    let Some(ours) = notes_tip(repo, dir)? else {
        return move_ref(repo, None, theirs, "clarity: notes fetched")
            .map_err(err("update refs/notes/clarity"));
    };
    if ours == theirs
        || repo
            .graph_descendant_of(ours, theirs)
            .map_err(err("compare notes histories"))?
    {
        return Ok(());
    }
    if repo
        .graph_descendant_of(theirs, ours)
        .map_err(err("compare notes histories"))?
    {
        return move_ref(repo, Some(ours), theirs, "clarity: notes fast-forwarded")
            .map_err(err("update refs/notes/clarity"));
    }
    let ours_commit = repo
        .find_commit(ours)
        .map_err(err("read the notes commit"))?;
    let theirs_commit = repo
        .find_commit(theirs)
        .map_err(err("read the fetched notes commit"))?;
    let our_notes = all_notes(&ours_commit.tree().map_err(err("read the notes tree"))?)
        .map_err(err("read the notes tree"))?;
    let their_notes = all_notes(&theirs_commit.tree().map_err(err("read the notes tree"))?)
        .map_err(err("read the notes tree"))?;
    let mut merged = our_notes.clone();
    for (commit, their_blob) in their_notes {
        match our_notes.get(&commit) {
            None => {
                merged.insert(commit, their_blob);
            }
            Some(our_blob) if *our_blob == their_blob => {}
            Some(our_blob) => {
                let text = |oid: Oid| -> Result<String, NotesError> {
                    let blob = repo.find_blob(oid).map_err(err("read a note"))?;
                    Ok(String::from_utf8_lossy(blob.content()).into_owned())
                };
                let combined = merge_texts(&text(*our_blob)?, &text(their_blob)?);
                let blob = repo
                    .blob(combined.as_bytes())
                    .map_err(err("write a note"))?;
                merged.insert(commit, blob);
            }
        }
    }
    let edits: Vec<(String, Option<Oid>)> = merged
        .iter()
        .map(|(hex, blob)| (fanout_path(hex), Some(*blob)))
        .collect();
    let (tree, _) = edit_tree(repo, None, &edits).map_err(err("write the notes tree"))?;
    let tree = repo.find_tree(tree).map_err(err("write the notes tree"))?;
    let sig = signature(repo).map_err(err("make a commit signature"))?;
    let message = "Notes merged by clarity-reconcile";
    let merged = repo
        .commit(
            None,
            &sig,
            &sig,
            message,
            &tree,
            &[&ours_commit, &theirs_commit],
        )
        .map_err(err("commit the merged notes"))?;
    // If a local writer added a note meanwhile this fails, and the push is retried from the
    // start rather than dropping that note.
    move_ref(repo, Some(ours), merged, message).map_err(err("update refs/notes/clarity"))
}
