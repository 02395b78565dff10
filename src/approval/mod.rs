//! Approval by signed commits: before the watch loop applies a new head, every commit between
//! the last applied one and that head must carry a valid signature from a trusted key (SSH or
//! OpenPGP). Trusted keys come from the reconciler's own configuration or from the repository at
//! a commit already trusted, never from the commit being judged, so no commit can vouch for
//! itself. Signatures are checked by the real `ssh-keygen` and `gpg`, run with argument vectors
//! on files in a private temporary directory; this module never changes the repository.

mod keys;
mod openpgp;
mod ssh;

pub use keys::TrustedKeys;

use crate::model::Settings;
use git2::{ErrorCode, Oid, Repository, Sort};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the reconciler demands of the commits it applies.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// From the reconciler's config (`--require-signed-commits`); the repository can also
    /// require it (`approval.require_signed_commits` in `clarity.yml`).
    pub require_signed: bool,
    /// Keys from the reconciler's config (`--trusted-keys`), trusted for every commit.
    pub configured: TrustedKeys,
}

/// The verdict on a range whose every commit may be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// Whether signatures were required at all; when not, `checked` is empty.
    pub required: bool,
    /// Every commit judged, parents first, with its signer: the SSH principal from the
    /// `allowed_signers` entry, or the OpenPGP primary key fingerprint.
    pub checked: Vec<(Oid, String)>,
}

/// Why a commit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The commit carries no signature.
    NotSigned,
    /// A valid signature by a key that is not trusted for this commit (or whose
    /// `allowed_signers` entry does not allow it here, or an expired or revoked OpenPGP key).
    UntrustedKey,
    /// The signature does not match the commit: it was changed after signing, or the
    /// signature is damaged.
    BadSignature,
    /// A signature format Clarity does not verify (X.509).
    UnsupportedSignature,
    /// Signatures are required but no key is trusted at all.
    NoTrustedKeys,
    /// Signatures are required and no trusted base is known to judge from (the ledger has no
    /// approved commit of the branch), and no key is configured on the reconciler.
    UnknownBase,
}

impl RefusalKind {
    /// A stable name, for JSON and notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::NotSigned => "not_signed",
            RefusalKind::UntrustedKey => "untrusted_key",
            RefusalKind::BadSignature => "bad_signature",
            RefusalKind::UnsupportedSignature => "unsupported_signature",
            RefusalKind::NoTrustedKeys => "no_trusted_keys",
            RefusalKind::UnknownBase => "unknown_base",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("commit {} ({summary:?}) is not approved: {reason}", short(.commit))]
    Refused {
        commit: Oid,
        /// The commit's subject line.
        summary: String,
        kind: RefusalKind,
        reason: String,
    },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git error in {repo}")]
    Git {
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("trusted key file {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("cannot check signatures with `{program}`: {message}")]
    Tool {
        program: &'static str,
        message: String,
    },
}

impl ApprovalError {
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            ApprovalError::Refused { kind, .. } => match kind {
                RefusalKind::NotSigned => {
                    "sign every commit (`git config commit.gpgsign true`, with `gpg.format ssh` \
                     or an OpenPGP key); to sign commits already made, rebase them with \
                     `git rebase --exec 'git commit --amend --no-edit -S' <last applied commit>` \
                     and push again"
                }
                RefusalKind::UntrustedKey => {
                    "a key becomes trusted through --trusted-keys on the reconciler, or through a \
                     file listed under approval.trusted_keys in clarity.yml, added by an earlier \
                     commit that a key trusted before it signed; a commit cannot trust its own key"
                }
                RefusalKind::BadSignature => {
                    "the commit was changed after it was signed (or the signature is damaged): \
                     sign it again with `git commit --amend --no-edit -S` and push"
                }
                RefusalKind::UnsupportedSignature => {
                    "sign with an SSH key (`git config gpg.format ssh`) or an OpenPGP key"
                }
                RefusalKind::UnknownBase => {
                    "check which commit was applied last (or review one), then start the loop \
                     once with --trust-from COMMIT: it is recorded in the ledger as the base, \
                     and every commit after it is judged from it"
                }
                RefusalKind::NoTrustedKeys => {
                    "pass --trusted-keys FILE to the reconciler (an SSH allowed_signers file or an \
                     ASCII-armored OpenPGP public key), or list such files under \
                     approval.trusted_keys in clarity.yml at the last applied commit (on a first \
                     start, name that commit with --trust-from)"
                }
            },
            ApprovalError::Tool { program, .. } => {
                return Some(format!(
                    "install `{program}` on the reconciler's machine (Debian: {})",
                    if *program == "gpg" {
                        "apt-get install gnupg"
                    } else {
                        "apt-get install openssh-client"
                    }
                ));
            }
            ApprovalError::Config { .. } => {
                "a trusted key file holds SSH allowed_signers lines \
                 (`alice@example.com ssh-ed25519 AAAA...`) or an ASCII-armored OpenPGP public key \
                 (`gpg --armor --export KEYID`)"
            }
            ApprovalError::Io { .. } | ApprovalError::Git { .. } => return None,
        };
        Some(hint.to_string())
    }

    /// The refused commit, when this is a refusal (not a failure to check).
    pub fn refused_commit(&self) -> Option<Oid> {
        match self {
            ApprovalError::Refused { commit, .. } => Some(*commit),
            _ => None,
        }
    }
}

fn short(id: &Oid) -> String {
    id.to_string()[..12].to_string()
}

/// Judges every commit in `last_applied..head` (git rev-list semantics: all of them, merges
/// included), parents first, and stops at the first one refused.
///
/// `repo` is the config root (the repository is discovered from it; `clarity.yml` and the key
/// files it names are read below the root's path inside the tree). `last_applied` is the last
/// trusted commit (it need not be an ancestor of `head`: after a force-push the new commits are
/// judged from it). With `last_applied` `None` (first run, or no trusted base known) signatures
/// are required when the reconciler or any `clarity.yml` in `head`'s history requires them; then
/// only `head` is judged, with the configured keys only, and without configured keys the head
/// is refused (`UnknownBase`) until an operator names a trusted base.
pub fn check_range(
    repo: &Path,
    last_applied: Option<Oid>,
    head: Oid,
    policy: &Policy,
) -> Result<Approved, ApprovalError> {
    let root = repo.canonicalize().map_err(|source| ApprovalError::Io {
        path: repo.to_path_buf(),
        source,
    })?;
    let git = Repository::discover(&root).map_err(|source| ApprovalError::Git {
        repo: root.clone(),
        source,
    })?;
    let (_, prefix) = crate::source::work_tree_of(&git, &root);
    let mut judge = Judge {
        git: &git,
        root: &root,
        prefix,
        policy,
        repo_keys: HashMap::new(),
        keyrings: HashMap::new(),
        scratch: None,
    };
    judge.find(head)?;

    let required = policy.require_signed
        || match last_applied {
            Some(last) => {
                judge.find(last)?;
                judge
                    .settings_at(last)
                    .is_some_and(|s| s.approval.require_signed_commits)
            }
            // No trusted base (a first start, or a lost, rebuilt or moved-aside ledger): the
            // commits themselves are untrusted, so if any of them ever asked for signatures,
            // a head that drops the requirement must not switch it off.
            None => judge.history_requires_signing(head)?,
        };
    if !required {
        return Ok(Approved {
            required: false,
            checked: Vec::new(),
        });
    }

    // The reconciler requiring signatures without any key is its own misconfiguration
    // (`NoTrustedKeys` below); a requirement from the repository's history needs a base.
    if last_applied.is_none() && policy.configured.is_empty() && !policy.require_signed {
        return Err(ApprovalError::Refused {
            commit: head,
            summary: judge.summary(head),
            kind: RefusalKind::UnknownBase,
            reason: "signed commits are required, but no trusted base is known (the ledger \
                     records no commit this loop approved: a first start, or a ledger that was \
                     deleted, rebuilt from notes or moved aside), and the repository's own keys \
                     count only from a trusted commit"
                .into(),
        });
    }
    let range = match last_applied {
        None => vec![head],
        Some(last) => judge.range(last, head)?,
    };
    let mut valid: HashSet<Oid> = HashSet::new();
    let mut checked = Vec::with_capacity(range.len());
    for id in range {
        let base = last_applied.map(|last| {
            let parent = judge
                .git
                .find_commit(id)
                .ok()
                .and_then(|c| c.parent_id(0).ok());
            match parent {
                Some(p) if p == last || valid.contains(&p) => p,
                _ => last,
            }
        });
        let signer = judge.judge(id, base)?;
        valid.insert(id);
        checked.push((id, signer));
    }
    Ok(Approved {
        required: true,
        checked,
    })
}

/// The outcome of checking one signature.
pub(crate) enum Verdict {
    Good { signer: String },
    Refused { kind: RefusalKind, reason: String },
}

struct Judge<'a> {
    git: &'a Repository,
    root: &'a Path,
    /// The config root inside the tree, `""` at the top.
    prefix: String,
    policy: &'a Policy,
    /// Keys named by `clarity.yml`, per trusted commit.
    repo_keys: HashMap<Oid, TrustedKeys>,
    /// One GNUPGHOME per distinct set of OpenPGP keys.
    keyrings: HashMap<Vec<String>, openpgp::Keyring>,
    scratch: Option<Scratch>,
}

impl Judge<'_> {
    fn git_err(&self) -> impl Fn(git2::Error) -> ApprovalError + '_ {
        move |source| ApprovalError::Git {
            repo: self.root.to_path_buf(),
            source,
        }
    }

    fn summary(&self, id: Oid) -> String {
        self.git
            .find_commit(id)
            .map(|c| String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }

    /// Whether `head` or any commit before it has a `clarity.yml` that requires signed
    /// commits. Commits whose tree shares the `clarity.yml` blob of one already read are not
    /// parsed again.
    fn history_requires_signing(&self, head: Oid) -> Result<bool, ApprovalError> {
        let mut walk = self.git.revwalk().map_err(self.git_err())?;
        walk.push(head).map_err(self.git_err())?;
        let path = format!(
            "{}clarity.yml",
            if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix.trim_end_matches('/'))
            }
        );
        let mut seen = HashSet::new();
        for id in walk {
            let id = id.map_err(self.git_err())?;
            let Ok(tree) = self.git.find_commit(id).and_then(|c| c.tree()) else {
                continue;
            };
            let Ok(entry) = tree.get_path(Path::new(&path)) else {
                continue;
            };
            if !seen.insert(entry.id()) {
                continue;
            }
            if self
                .settings_at(id)
                .is_some_and(|s| s.approval.require_signed_commits)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn find(&self, id: Oid) -> Result<(), ApprovalError> {
        self.git.find_commit(id).map(|_| ()).map_err(self.git_err())
    }

    fn range(&self, last: Oid, head: Oid) -> Result<Vec<Oid>, ApprovalError> {
        let mut walk = self.git.revwalk().map_err(self.git_err())?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
            .map_err(self.git_err())?;
        walk.push(head).map_err(self.git_err())?;
        walk.hide(last).map_err(self.git_err())?;
        walk.collect::<Result<Vec<_>, _>>().map_err(self.git_err())
    }

    fn scratch(&mut self) -> Result<&Scratch, ApprovalError> {
        if self.scratch.is_none() {
            self.scratch = Some(Scratch::new("approval")?);
        }
        Ok(self.scratch.as_ref().expect("just created"))
    }

    /// The bytes of the blob at `path` (relative to the config root) in commit `at`; `None`
    /// when there is no such file.
    fn blob_at(&self, at: Oid, path: &str) -> Result<Option<Vec<u8>>, String> {
        if path.starts_with('/') {
            return Err("is an absolute path; name a file relative to the config root".into());
        }
        let mut parts: Vec<&str> = self.prefix.split('/').filter(|p| !p.is_empty()).collect();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err("leaves the config root (`..`)".into()),
                p => parts.push(p),
            }
        }
        let tree = self
            .git
            .find_commit(at)
            .and_then(|c| c.tree())
            .map_err(|e| e.message().to_string())?;
        let entry = match tree.get_path(Path::new(&parts.join("/"))) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.message().to_string()),
        };
        if entry.filemode() == 0o120000 {
            return Err("is a symbolic link; commit the file itself".into());
        }
        match entry.to_object(self.git).map(|o| o.into_blob()) {
            Ok(Ok(blob)) => Ok(Some(blob.content().to_vec())),
            Ok(Err(_)) => Err("is not a file".into()),
            Err(e) => Err(e.message().to_string()),
        }
    }

    /// `clarity.yml` at a trusted commit; `None` when it is missing or does not parse (no
    /// repository keys, nothing required).
    fn settings_at(&self, at: Oid) -> Option<Settings> {
        let bytes = self.blob_at(at, "clarity.yml").ok()??;
        let text = String::from_utf8_lossy(&bytes);
        if text.trim().is_empty() {
            return Some(Settings::default());
        }
        serde_saphyr::from_str::<Settings>(&text).ok()
    }

    /// The keys the repository trusts at commit `at` (which must itself be trusted).
    fn repo_keys(&mut self, at: Oid) -> &TrustedKeys {
        if !self.repo_keys.contains_key(&at) {
            let mut keys = TrustedKeys::empty();
            let paths = self
                .settings_at(at)
                .map(|s| s.approval.trusted_keys)
                .unwrap_or_default();
            for path in paths {
                let from = format!("{path} at commit {}", short(&at));
                match self.blob_at(at, &path) {
                    Ok(Some(bytes)) => keys.extend(keys::parse_key_file(&bytes, &from)),
                    Ok(None) => keys.problems.push(format!("{from} does not exist")),
                    Err(problem) => keys.problems.push(format!("{from} {problem}")),
                }
            }
            self.repo_keys.insert(at, keys);
        }
        &self.repo_keys[&at]
    }

    /// Judges one commit with the configured keys and those of the repository at `base`.
    fn judge(&mut self, id: Oid, base: Option<Oid>) -> Result<String, ApprovalError> {
        let commit = self.git.find_commit(id).map_err(self.git_err())?;
        let summary =
            String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned();
        drop(commit);
        let refuse = |kind: RefusalKind, reason: String| ApprovalError::Refused {
            commit: id,
            summary: summary.clone(),
            kind,
            reason,
        };

        let mut trusted = self.policy.configured.clone();
        if let Some(base) = base {
            trusted.extend(self.repo_keys(base).clone());
        }
        if trusted.is_empty() {
            return Err(refuse(
                RefusalKind::NoTrustedKeys,
                format!(
                    "signed commits are required but no key is trusted{}",
                    trusted.problems_note()
                ),
            ));
        }

        let (signature, payload) = match self.git.extract_signature(&id, None) {
            Ok((s, p)) => (s.to_vec(), p.to_vec()),
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(refuse(RefusalKind::NotSigned, "not signed".into()));
            }
            Err(e) => return Err(self.git_err()(e)),
        };
        let text = String::from_utf8_lossy(&signature);
        let first = text.trim_start().lines().next().unwrap_or_default().trim();
        let verdict = match first {
            "-----BEGIN SSH SIGNATURE-----" => {
                let scratch = self.scratch()?;
                ssh::verify(&signature, &payload, &trusted, scratch, &id.to_string())?
            }
            "-----BEGIN PGP SIGNATURE-----" => {
                let set: Vec<String> = trusted.openpgp.iter().map(|k| k.armored.clone()).collect();
                if !self.keyrings.contains_key(&set) {
                    let scratch = self.scratch()?;
                    let keyring = openpgp::Keyring::new(&trusted.openpgp, scratch)?;
                    self.keyrings.insert(set.clone(), keyring);
                }
                let scratch = self.scratch.as_ref().expect("created with the keyring");
                self.keyrings[&set].verify(&signature, &payload, scratch, &id.to_string())?
            }
            "-----BEGIN SIGNED MESSAGE-----" => Verdict::Refused {
                kind: RefusalKind::UnsupportedSignature,
                reason: "signed with X.509 (gpgsm), which Clarity does not verify".into(),
            },
            _ => Verdict::Refused {
                kind: RefusalKind::UnsupportedSignature,
                reason: "the signature is neither an SSH nor an OpenPGP signature".into(),
            },
        };
        match verdict {
            Verdict::Good { signer } => Ok(signer),
            Verdict::Refused { kind, mut reason } => {
                if matches!(kind, RefusalKind::UntrustedKey) {
                    reason.push_str(&trusted.problems_note());
                }
                Err(refuse(kind, reason))
            }
        }
    }
}

/// A private directory (mode 0700) for signatures, payloads, `allowed_signers` files and
/// GNUPGHOMEs; removed with everything in it when dropped.
pub(crate) struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub(crate) fn new(label: &str) -> Result<Scratch, ApprovalError> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let mut last_error = None;
        for _ in 0..16 {
            let nanos = crate::clock::since_epoch().subsec_nanos();
            let dir = base.join(format!(
                "clarity-{label}-{}-{nanos:x}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Scratch { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(source) => return Err(ApprovalError::Io { path: dir, source }),
            }
        }
        Err(ApprovalError::Io {
            path: base,
            source: last_error.expect("the loop ran"),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` to a new file `name` in the directory (mode 0600).
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ApprovalError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(name);
        let io = |source| ApprovalError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        Ok(path)
    }

    /// Creates the subdirectory `name` (mode 0700).
    pub(crate) fn subdir(&self, name: &str) -> Result<PathBuf, ApprovalError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.dir.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| ApprovalError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a verification program said.
pub(crate) struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The first line of stderr that says something, for refusal reasons.
    pub fn complaint(&self) -> String {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && *l != "Could not verify signature.")
            .unwrap_or("no reason given")
            .to_string()
    }
}

/// How long `gpg` or `ssh-keygen` may take for one signature before the check gives up: a
/// hung tool must not stall the watch loop.
const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `program` with `args` (never through a shell), feeding `stdin` when given, in the C
/// locale so that messages are the same everywhere.
pub(crate) fn run(
    program: &'static str,
    args: &[&OsStr],
    stdin: Option<&[u8]>,
) -> Result<Ran, ApprovalError> {
    run_within(program, args, stdin, TOOL_TIMEOUT)
}

fn run_within(
    program: &'static str,
    args: &[&OsStr],
    stdin: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<Ran, ApprovalError> {
    use std::io::Read;
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApprovalError::Tool {
            program,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "not found on PATH".to_string()
            } else {
                e.to_string()
            },
        })?;
    let (status, stdout, stderr) = std::thread::scope(|scope| {
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A program that exits without reading all of its input is not an error here:
            // its exit status tells what happened.
            scope.spawn(move || {
                let _ = pipe.write_all(bytes);
            });
        }
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            scope.spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("did not finish within {} s", timeout.as_secs()));
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(e) => break Err(e.to_string()),
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        (status, stdout, stderr)
    });
    let status = status.map_err(|message| ApprovalError::Tool { program, message })?;
    Ok(Ran {
        success: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = Scratch::new("test").unwrap();
        let dir = scratch.path().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file = scratch.write("f", b"x").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        let sub = scratch.subdir("gnupg").unwrap();
        assert!(sub.is_dir());
        assert_ne!(Scratch::new("test").unwrap().path(), dir);
        drop(scratch);
        assert!(!dir.exists());
    }

    #[test]
    fn a_tool_that_hangs_is_stopped() {
        let start = std::time::Instant::now();
        let err = run_within(
            "sleep",
            &[OsStr::new("30")],
            None,
            std::time::Duration::from_millis(200),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let err = run("clarity-no-such-program", &[], None).err().unwrap();
        assert!(err.to_string().contains("not found on PATH"), "{err}");
    }

    #[test]
    fn refusals_name_the_commit_and_have_hints() {
        let id = Oid::from_str("1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b").unwrap();
        let err = ApprovalError::Refused {
            commit: id,
            summary: "Bump billing".into(),
            kind: RefusalKind::NotSigned,
            reason: "not signed".into(),
        };
        assert_eq!(
            err.to_string(),
            "commit 1a2b3c4d5e6f (\"Bump billing\") is not approved: not signed"
        );
        assert!(err.hint().unwrap().contains("commit.gpgsign"));
        assert_eq!(err.refused_commit(), Some(id));
    }
}
