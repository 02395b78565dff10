//! Approval by signed commits, end to end: real git repositories with commits signed by real
//! `ssh-keygen` and `gpg` keys made for the test, judged by `approval::check_range`. Each case
//! checks the verdict and, for a refusal, exactly which commit is named and why.

mod support;

use clarity::approval::{ApprovalError, Approved, Policy, RefusalKind, TrustedKeys, check_range};
use git2::Oid;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{git, require_program};
use tempfile::TempDir;

/// True when git, ssh-keygen (and gpg, when asked) are there; skips on a laptop, fails in CI.
fn prerequisites(gpg: bool) -> bool {
    require_program("git").is_some()
        && require_program("ssh-keygen").is_some()
        && (!gpg || (require_program("gpg").is_some() && require_program("gpgconf").is_some()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("program runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct SshKey {
    private: PathBuf,
    principal: String,
    public: String,
    /// `SHA256:...`
    fingerprint: String,
}

impl SshKey {
    fn new(dir: &Path, name: &str) -> SshKey {
        let private = dir.join(format!("{name}_ed25519"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private));
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string();
        let listed = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(private.with_extension("pub")));
        let fingerprint = listed.split_whitespace().nth(1).unwrap().to_string();
        assert!(fingerprint.starts_with("SHA256:"), "{listed}");
        SshKey {
            private,
            principal: format!("{name}@example.com"),
            public,
            fingerprint,
        }
    }

    /// Its line in an `allowed_signers` file.
    fn allowed(&self) -> String {
        format!("{} {}\n", self.principal, self.public)
    }
}

/// A GNUPGHOME made for the test; its gpg-agent is stopped when dropped.
struct Gpg {
    _dir: TempDir,
    home: PathBuf,
}

struct GpgKey {
    fingerprint: String,
    armored: String,
}

impl Gpg {
    fn new() -> Gpg {
        let dir = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        let home = dir.path().join("h");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Gpg { _dir: dir, home }
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home)
            .args(["--batch", "--no-tty"]);
        cmd
    }

    fn key(&self, name: &str) -> GpgKey {
        let uid = format!("{name} <{name}@example.com>");
        run(self.gpg().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            &uid,
            "ed25519",
            "sign",
            "never",
        ]));
        let listed = run(self.gpg().args([
            "--with-colons",
            "--list-keys",
            &format!("<{name}@example.com>"),
        ]));
        let fingerprint = listed
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .unwrap()
            .to_string();
        let armored = run(self.gpg().args(["--armor", "--export", &fingerprint]));
        assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        GpgKey {
            fingerprint,
            armored,
        }
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

enum Sign<'a> {
    No,
    Ssh(&'a SshKey),
    Gpg(&'a Gpg, &'a GpgKey),
}

/// A git repository whose config root is `sub` inside it, plus a folder outside it for the
/// reconciler's own key files.
struct Repo {
    _dir: TempDir,
    top: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Repo {
    fn new(sub: &str) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("approval")
            .tempdir()
            .unwrap();
        let top = dir.path().join("repo");
        let root = if sub.is_empty() {
            top.clone()
        } else {
            top.join(sub)
        };
        let outside = dir.path().join("reconciler");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        git(&top, &["init", "-q"]);
        Repo {
            _dir: dir,
            top,
            root,
            outside,
        }
    }

    /// Writes a file under the config root.
    fn write(&self, rel: &str, text: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A key file of the reconciler's own configuration (outside the repository).
    fn configured(&self, name: &str, text: &str) -> TrustedKeys {
        let path = self.outside.join(name);
        std::fs::write(&path, text).unwrap();
        TrustedKeys::load(&[path]).unwrap()
    }

    fn commit(&self, message: &str, sign: Sign) -> Oid {
        git(&self.top, &["add", "-A"]);
        let mut args: Vec<String> = Vec::new();
        let mut gnupghome = None;
        match sign {
            Sign::No => {}
            Sign::Ssh(key) => args.extend([
                "-c".into(),
                "gpg.format=ssh".into(),
                "-c".into(),
                format!("user.signingkey={}", key.private.display()),
            ]),
            Sign::Gpg(gpg, key) => {
                args.extend([
                    "-c".into(),
                    "gpg.format=openpgp".into(),
                    "-c".into(),
                    "gpg.program=gpg".into(),
                    "-c".into(),
                    format!("user.signingkey={}", key.fingerprint),
                ]);
                gnupghome = Some(gpg.home.clone());
            }
        }
        args.extend(["commit", "-q", "--allow-empty", "-m", message].map(String::from));
        if !matches!(sign, Sign::No) {
            args.push("-S".into());
        }
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(&self.top).args([
            "-c",
            "user.name=clarity-tests",
            "-c",
            "user.email=tests@clarity.invalid",
            "-c",
            "commit.gpgsign=false",
        ]);
        if let Some(home) = gnupghome {
            cmd.env("GNUPGHOME", home);
        }
        run(cmd.args(&args));
        self.head()
    }

    fn head(&self) -> Oid {
        Oid::from_str(git(&self.top, &["rev-parse", "HEAD"]).trim()).unwrap()
    }

    fn check(
        &self,
        last: Option<Oid>,
        head: Oid,
        policy: &Policy,
    ) -> Result<Approved, ApprovalError> {
        check_range(&self.root, last, head, policy)
    }
}

fn required(configured: TrustedKeys) -> Policy {
    Policy {
        require_signed: true,
        configured,
    }
}

/// The commit named by a refusal, why, and the full message; panics when approved.
fn refused(result: Result<Approved, ApprovalError>) -> (Oid, RefusalKind, String) {
    match result {
        Err(err @ ApprovalError::Refused { .. }) => {
            let ApprovalError::Refused {
                commit,
                kind,
                ref reason,
                ..
            } = err
            else {
                unreachable!()
            };
            let message = err.to_string();
            assert!(
                message.contains(&commit.to_string()[..12]),
                "the message names the commit: {message}"
            );
            assert!(message.ends_with(reason.as_str()), "{message}");
            assert!(err.hint().is_some());
            (commit, kind, message)
        }
        Err(other) => panic!("failed instead of refusing: {other} ({other:?})"),
        Ok(approved) => panic!("approved: {approved:?}"),
    }
}

/// `clarity.yml` that requires signatures (or not) and trusts `keys/allowed_signers`.
fn repo_settings(require: bool) -> String {
    format!(
        "approval:\n  require_signed_commits: {require}\n  trusted_keys:\n    - keys/allowed_signers\n"
    )
}

#[test]
fn a_chain_signed_by_a_configured_ssh_key_is_approved() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    let policy = required(repo.configured("allowed_signers", &alice.allowed()));
    let last = repo.commit("Initial import", Sign::No);
    let mut commits = Vec::new();
    for n in 1..=3 {
        repo.write(&format!("clients/acme/change-{n}.yml"), "x: 1\n");
        commits.push(repo.commit(&format!("Change {n}"), Sign::Ssh(&alice)));
    }
    let approved = repo.check(Some(last), commits[2], &policy).unwrap();
    assert!(approved.required);
    let expected: Vec<(Oid, String)> = commits
        .iter()
        .map(|c| (*c, "alice@example.com".to_string()))
        .collect();
    assert_eq!(approved.checked, expected, "every commit, parents first");

    // Nothing new: nothing to judge.
    let same = repo.check(Some(commits[2]), commits[2], &policy).unwrap();
    assert_eq!(same.checked, vec![]);
}

#[test]
fn openpgp_signatures_are_checked_with_the_configured_keys() {
    if !prerequisites(true) {
        return;
    }
    let repo = Repo::new("");
    let gpg = Gpg::new();
    let alice = gpg.key("alice");
    let mallory = gpg.key("mallory");
    let policy = required(repo.configured("alice.asc", &alice.armored));
    let last = repo.commit("Initial import", Sign::No);
    let mut commits = Vec::new();
    for n in 1..=3 {
        repo.write(&format!("clients/acme/change-{n}.yml"), "x: 1\n");
        commits.push(repo.commit(&format!("Change {n}"), Sign::Gpg(&gpg, &alice)));
    }
    let approved = repo.check(Some(last), commits[2], &policy).unwrap();
    let expected: Vec<(Oid, String)> = commits
        .iter()
        .map(|c| (*c, alice.fingerprint.clone()))
        .collect();
    assert_eq!(approved.checked, expected);

    // A key gpg knows (same GNUPGHOME for signing) but the reconciler does not trust.
    let intruder = repo.commit("Change 4", Sign::Gpg(&gpg, &mallory));
    let (commit, kind, message) = refused(repo.check(Some(last), intruder, &policy));
    assert_eq!(commit, intruder);
    assert_eq!(kind, RefusalKind::UntrustedKey);
    assert!(
        message.contains(&format!(
            "signed by a key that is not trusted (OpenPGP fingerprint {})",
            mallory.fingerprint
        )),
        "{message}"
    );

    // An OpenPGP signature from a trusted key over a changed commit.
    let tampered = tamper(&repo, commits[0], "Change 1", "Change one");
    let (commit, kind, message) = refused(repo.check(Some(last), tampered, &policy));
    assert_eq!((commit, kind), (tampered, RefusalKind::BadSignature));
    assert!(message.contains("bad signature"), "{message}");
}

#[test]
fn an_unsigned_commit_in_the_middle_refuses_the_range() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    let policy = required(repo.configured("allowed_signers", &alice.allowed()));
    let last = repo.commit("Initial import", Sign::No);
    repo.commit("Signed first", Sign::Ssh(&alice));
    let middle = repo.commit("Sneaked in unsigned", Sign::No);
    let head = repo.commit("Signed head", Sign::Ssh(&alice));
    let (commit, kind, message) = refused(repo.check(Some(last), head, &policy));
    assert_eq!(commit, middle);
    assert_eq!(kind, RefusalKind::NotSigned);
    assert_eq!(
        message,
        format!(
            "commit {} (\"Sneaked in unsigned\") is not approved: not signed",
            &middle.to_string()[..12]
        )
    );
}

#[test]
fn a_commit_cannot_trust_its_own_key() {
    if !prerequisites(false) {
        return;
    }
    // The config root is a subdirectory: clarity.yml and the key file live under it.
    let repo = Repo::new("config");
    let alice = SshKey::new(&repo.outside, "alice");
    let mallory = SshKey::new(&repo.outside, "mallory");
    repo.write("clarity.yml", &repo_settings(true));
    repo.write("keys/allowed_signers", &alice.allowed());
    let last = repo.commit("Trust alice", Sign::Ssh(&alice));

    repo.write(
        "keys/allowed_signers",
        &format!("{}{}", alice.allowed(), mallory.allowed()),
    );
    repo.write("clients/acme/servers/evil.yml", "x: 1\n");
    let attack = repo.commit("Routine cleanup", Sign::Ssh(&mallory));
    let head = repo.commit("More cleanup", Sign::Ssh(&mallory));

    let (commit, kind, message) = refused(repo.check(Some(last), head, &Policy::default()));
    assert_eq!(commit, attack);
    assert_eq!(kind, RefusalKind::UntrustedKey);
    assert!(
        message.contains(&format!(
            "signed by a key that is not trusted (ED25519 key {})",
            mallory.fingerprint
        )),
        "{message}"
    );
}

#[test]
fn a_key_added_by_a_trusted_commit_signs_the_next_one() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("config");
    let alice = SshKey::new(&repo.outside, "alice");
    let bob = SshKey::new(&repo.outside, "bob");
    repo.write("clarity.yml", &repo_settings(true));
    repo.write("keys/allowed_signers", &alice.allowed());
    let last = repo.commit("Trust alice", Sign::No);

    repo.write(
        "keys/allowed_signers",
        &format!("{}{}", alice.allowed(), bob.allowed()),
    );
    let rotate = repo.commit("Trust bob too", Sign::Ssh(&alice));
    repo.write("clients/acme/client.yml", "id: 1\n");
    let by_bob = repo.commit("Bob's first change", Sign::Ssh(&bob));

    let approved = repo.check(Some(last), by_bob, &Policy::default()).unwrap();
    assert!(approved.required, "required by the repository");
    assert_eq!(
        approved.checked,
        vec![
            (rotate, "alice@example.com".to_string()),
            (by_bob, "bob@example.com".to_string())
        ]
    );

    // Removing alice, signed by bob, is fine; alice is no longer trusted afterwards.
    repo.write("keys/allowed_signers", &bob.allowed());
    let drop_alice = repo.commit("Retire alice", Sign::Ssh(&bob));
    let late = repo.commit("Alice again", Sign::Ssh(&alice));
    let (commit, kind, _) = refused(repo.check(Some(last), late, &Policy::default()));
    assert_eq!((commit, kind), (late, RefusalKind::UntrustedKey));
    let approved = repo
        .check(Some(last), drop_alice, &Policy::default())
        .unwrap();
    assert_eq!(approved.checked.len(), 3);
}

#[test]
fn merged_branches_are_judged_commit_by_commit() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    let policy = required(repo.configured("allowed_signers", &alice.allowed()));
    let last = repo.commit("Initial import", Sign::No);
    git(&repo.top, &["checkout", "-q", "-b", "feature"]);
    let side = repo.commit("Side change, unsigned", Sign::No);
    git(&repo.top, &["checkout", "-q", "main"]);
    let main_change = repo.commit("Main change", Sign::Ssh(&alice));
    git(
        &repo.top,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={}", alice.private.display()),
            "merge",
            "-q",
            "-S",
            "--no-ff",
            "-m",
            "Merge feature",
            "feature",
        ],
    );
    let merge = repo.head();
    let (commit, kind, _) = refused(repo.check(Some(last), merge, &policy));
    assert_eq!((commit, kind), (side, RefusalKind::NotSigned));

    // With the side commit approved already, the signed merge and main change pass.
    let approved = repo.check(Some(side), merge, &policy).unwrap();
    assert_eq!(
        approved.checked.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![main_change, merge]
    );
}

#[test]
fn an_unsigned_commit_cannot_lift_the_repository_requirement() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    repo.write("clarity.yml", &repo_settings(true));
    repo.write("keys/allowed_signers", &alice.allowed());
    let last = repo.commit("Require signatures", Sign::Ssh(&alice));
    repo.write("clarity.yml", &repo_settings(false));
    let lift = repo.commit("Stop requiring signatures", Sign::No);
    let (commit, kind, _) = refused(repo.check(Some(last), lift, &Policy::default()));
    assert_eq!((commit, kind), (lift, RefusalKind::NotSigned));

    // Once applied (signed), the next range is no longer required to be signed.
    let approved = repo.check(
        Some(lift),
        repo.commit("Anything", Sign::No),
        &Policy::default(),
    );
    assert_eq!(
        approved.unwrap(),
        Approved {
            required: false,
            checked: vec![]
        }
    );
}

#[test]
fn without_a_requirement_unsigned_commits_pass_unchecked() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let last = repo.commit("Initial import", Sign::No);
    repo.commit("One", Sign::No);
    let head = repo.commit("Two", Sign::No);
    let approved = repo.check(Some(last), head, &Policy::default()).unwrap();
    assert_eq!(
        approved,
        Approved {
            required: false,
            checked: vec![]
        }
    );
    // First run, nothing configured: nothing required either.
    assert!(!repo.check(None, head, &Policy::default()).unwrap().required);

    // A clarity.yml that does not parse at the last applied commit requires nothing and does
    // not crash.
    repo.write("clarity.yml", "approval: [this is not: a mapping\n");
    let broken = repo.commit("Broken settings", Sign::No);
    let head = repo.commit("Three", Sign::No);
    assert!(
        !repo
            .check(Some(broken), head, &Policy::default())
            .unwrap()
            .required
    );
}

#[test]
fn on_first_run_only_the_head_is_judged_with_configured_keys() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    let bob = SshKey::new(&repo.outside, "bob");
    repo.write("clarity.yml", &repo_settings(true));
    repo.write("keys/allowed_signers", &bob.allowed());
    repo.commit("Unsigned history", Sign::No);
    let by_bob = repo.commit("Signed by a repository key", Sign::Ssh(&bob));
    let policy = required(repo.configured("allowed_signers", &alice.allowed()));

    let (commit, kind, _) = refused(repo.check(None, by_bob, &policy));
    assert_eq!((commit, kind), (by_bob, RefusalKind::UntrustedKey));

    let by_alice = repo.commit("Signed by a configured key", Sign::Ssh(&alice));
    let approved = repo.check(None, by_alice, &policy).unwrap();
    assert_eq!(
        approved.checked,
        vec![(by_alice, "alice@example.com".to_string())]
    );

    // Required with no key at all: refused, with a hint on configuring keys.
    let err = repo
        .check(None, by_alice, &required(TrustedKeys::empty()))
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::Refused { commit, kind: RefusalKind::NoTrustedKeys, .. } if commit == by_alice),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("--trusted-keys"));
}

/// A copy of `commit` with `from` replaced by `to` in its message, the signature header kept.
fn tamper(repo: &Repo, commit: Oid, from: &str, to: &str) -> Oid {
    let raw = git(&repo.top, &["cat-file", "commit", &commit.to_string()]);
    assert!(raw.contains("gpgsig "), "{raw}");
    let changed = raw.replacen(from, to, 1);
    assert_ne!(raw, changed);
    let file = repo.outside.join("tampered-commit");
    std::fs::write(&file, changed).unwrap();
    let id = git(
        &repo.top,
        &["hash-object", "-w", "-t", "commit", file.to_str().unwrap()],
    );
    Oid::from_str(id.trim()).unwrap()
}

#[test]
fn a_changed_commit_with_a_trusted_signature_is_a_bad_signature() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    let policy = required(repo.configured("allowed_signers", &alice.allowed()));
    let last = repo.commit("Initial import", Sign::No);
    let signed = repo.commit("Deploy billing 1.4.1", Sign::Ssh(&alice));
    let tampered = tamper(&repo, signed, "1.4.1", "6.6.6");
    assert!(repo.check(Some(last), signed, &policy).is_ok());
    let (commit, kind, message) = refused(repo.check(Some(last), tampered, &policy));
    assert_eq!((commit, kind), (tampered, RefusalKind::BadSignature));
    assert!(message.contains("Deploy billing 6.6.6"), "{message}");
    assert!(
        message.contains("is not approved: bad signature"),
        "{message}"
    );
}

#[test]
fn unusable_repository_key_files_are_mentioned_in_the_refusal() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    repo.write("clarity.yml", &repo_settings(true));
    // A bare public key, not an allowed_signers line.
    repo.write("keys/allowed_signers", &format!("{}\n", alice.public));
    let last = repo.commit("Trust alice, badly", Sign::No);
    let head = repo.commit("Signed by alice", Sign::Ssh(&alice));
    let (commit, kind, message) = refused(repo.check(Some(last), head, &Policy::default()));
    assert_eq!((commit, kind), (head, RefusalKind::NoTrustedKeys));
    assert!(
        message.contains("keys/allowed_signers at commit")
            && message.contains("without principals"),
        "{message}"
    );

    // A last applied commit that is not in the repository is an error, not a verdict.
    let gone = Oid::from_str("0123456789012345678901234567890123456789").unwrap();
    assert!(matches!(
        repo.check(Some(gone), head, &Policy::default()),
        Err(ApprovalError::Git { .. })
    ));
}

// Security review, finding 4 (b): without a trusted base (a lost, rebuilt or moved-aside
// ledger) the requirement that an earlier commit made still holds, and a head that lifts it
// is refused until an operator names a base.
#[test]
fn without_a_trusted_base_an_earlier_requirement_still_holds() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("sub");
    let alice = SshKey::new(&repo.outside, "alice");
    repo.write("clarity.yml", &repo_settings(true));
    repo.write("keys/allowed_signers", &alice.allowed());
    let signed = repo.commit("Require signatures", Sign::Ssh(&alice));
    repo.write("clarity.yml", &repo_settings(false));
    let lift = repo.commit("Stop requiring signatures", Sign::No);
    let head = repo.commit("And then anything", Sign::No);
    let (commit, kind, message) = refused(repo.check(None, head, &Policy::default()));
    assert_eq!((commit, kind), (head, RefusalKind::UnknownBase));
    assert!(message.contains("no trusted base"), "{message}");
    let err = repo.check(None, head, &Policy::default()).unwrap_err();
    assert!(err.hint().unwrap().contains("--trust-from"), "{err:?}");
    // Named as the base, the signed commit judges the rest: the lift is not signed.
    let (commit, kind, _) = refused(repo.check(Some(signed), head, &Policy::default()));
    assert_eq!((commit, kind), (lift, RefusalKind::NotSigned));
}

// Finding 4 (a): a rewritten history is judged from the last trusted commit, which is not
// its ancestor: the rewritten commits need signatures by the keys trusted there.
#[test]
fn a_rewritten_history_is_judged_from_the_last_trusted_commit() {
    if !prerequisites(false) {
        return;
    }
    let repo = Repo::new("");
    let alice = SshKey::new(&repo.outside, "alice");
    repo.write("clarity.yml", &repo_settings(true));
    repo.write("keys/allowed_signers", &alice.allowed());
    let root = repo.commit("Require signatures", Sign::Ssh(&alice));
    repo.write("clients/acme/a.yml", "x: 1\n");
    let applied = repo.commit("Applied", Sign::Ssh(&alice));
    git(&repo.top, &["reset", "-q", "--hard", &root.to_string()]);
    repo.write("clients/acme/a.yml", "x: 2\n");
    let rewritten = repo.commit("Force-pushed, unsigned", Sign::No);
    let (commit, kind, _) = refused(repo.check(Some(applied), rewritten, &Policy::default()));
    assert_eq!((commit, kind), (rewritten, RefusalKind::NotSigned));
    git(&repo.top, &["reset", "-q", "--hard", &root.to_string()]);
    repo.write("clients/acme/a.yml", "x: 3\n");
    let signed = repo.commit("Force-pushed, signed", Sign::Ssh(&alice));
    let approved = repo
        .check(Some(applied), signed, &Policy::default())
        .unwrap();
    assert_eq!(
        approved.checked,
        vec![(signed, "alice@example.com".to_string())]
    );
}
