//! Fetching over SFTP from a real OpenSSH sshd (its own host key, on a free loopback port):
//! key authentication with a pinned host key; a wrong pinned key refused with both
//! fingerprints; an unknown host refused rather than trusted on first use, and accepted once a
//! known_hosts file knows it; password authentication for a real local account (root only).

mod fetch_servers;
mod support;

use clarity::fetch::{FetchError, Fetched, Source, SshAuth};
use clarity::secret::SecretString;
use fetch_servers::{Sshd, artifact_bytes, fingerprint, keygen, open_tempdir, put};
use std::path::{Path, PathBuf};

struct Setup {
    dir: tempfile::TempDir,
    sshd: Sshd,
    client_key: SecretString,
    /// Where the artifacts are, absolute.
    repo: PathBuf,
    sha: String,
    bytes: Vec<u8>,
}

fn setup() -> Option<Setup> {
    support::require_program("ssh-keygen")?;
    let dir = open_tempdir();
    let client_key_file = dir.path().join("client_ed25519");
    let client_public = keygen(&client_key_file);
    let sshd = Sshd::start(dir.path(), &client_public)?;
    let repo = dir.path().join("repo");
    let bytes = artifact_bytes(1 << 20, 40);
    let sha = put(&repo, "app/app-2.0.jar", &bytes);
    let client_key = SecretString::new(std::fs::read_to_string(&client_key_file).unwrap());
    Some(Setup {
        dir,
        sshd,
        client_key,
        repo,
        sha,
        bytes,
    })
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

impl Setup {
    fn source(
        &self,
        auth: SshAuth,
        host_key: Option<String>,
        known_hosts: Option<PathBuf>,
    ) -> Source {
        Source::Sftp {
            host: "127.0.0.1".into(),
            port: self.sshd.daemon.port,
            dir: self.repo.display().to_string(),
            username: current_user(),
            auth,
            host_key,
            known_hosts,
        }
    }

    fn key(&self) -> SshAuth {
        SshAuth::Key(self.client_key.clone())
    }

    fn get(
        &self,
        source: &Source,
        location: &str,
    ) -> (Result<Fetched, FetchError>, tempfile::TempDir) {
        fetch_servers::fetch_once(source, "sftp-releases", location, &self.bytes, &self.sha)
    }
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn key_authentication_with_a_pinned_host_key() {
    let Some(s) = setup() else { return };
    // A known_hosts-style line with a host field in front is accepted as a pin too.
    let pinned = format!("[127.0.0.1]:{} {}", s.sshd.daemon.port, s.sshd.host_key);
    let source = s.source(s.key(), Some(pinned), None);
    let (r, cache) = s.get(&source, "app/app-2.0.jar");
    let f = r.unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), s.bytes);
    assert_eq!(f.path, cache.path().join(&s.sha));

    let (r, cache) = s.get(&source, "app/missing.jar");
    let e = r.unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    let url = format!(
        "sftp://127.0.0.1:{}{}/app/missing.jar",
        s.sshd.daemon.port,
        s.repo.display()
    );
    assert!(e.to_string().contains(&url), "{e}");
    assert!(empty(cache.path()));
}

#[test]
fn an_interrupted_download_resumes_with_an_offset_read() {
    let Some(s) = setup() else { return };
    let pinned = s.sshd.host_key.clone();
    let source = s.source(s.key(), Some(pinned), None);
    let cache_dir = tempfile::tempdir().unwrap();
    let kept = 400_000;
    std::fs::write(
        cache_dir.path().join(format!(".partial-{}", s.sha)),
        &s.bytes[..kept],
    )
    .unwrap();
    let artifact = clarity::fetch::Artifact {
        repository: "sftp-releases",
        location: "app/app-2.0.jar",
        sha256: &s.sha,
        size: Some(s.bytes.len() as u64),
        max_size: None,
    };
    let f = clarity::fetch::fetch(
        &source,
        &artifact,
        &clarity::fetch::Cache::new(cache_dir.path()),
        &clarity::fetch::Retry::none(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(f.resumed_from, kept as u64);
    assert_eq!(f.downloaded_bytes, (s.bytes.len() - kept) as u64);
    assert_eq!(std::fs::read(&f.path).unwrap(), s.bytes);
}

#[test]
fn a_wrong_pinned_host_key_is_refused_with_both_fingerprints() {
    let Some(s) = setup() else { return };
    let other_key = s.dir.path().join("other_host_key");
    let other = keygen(&other_key);
    let source = s.source(s.key(), Some(other), None);
    let (r, cache) = s.get(&source, "app/app-2.0.jar");
    let e = r.unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, FetchError::HostKeyMismatch { .. }), "{m}");
    assert!(
        m.contains(&fingerprint(&other_key.with_extension("pub"))),
        "{m}"
    );
    assert!(m.contains(&fingerprint(&s.sshd.host_key_file)), "{m}");
    assert!(
        m.contains(&format!("127.0.0.1:{}", s.sshd.daemon.port)),
        "{m}"
    );
    assert!(!e.is_transient());
    assert!(empty(cache.path()));

    // Not a key at all: a configuration error, before connecting.
    let source = s.source(s.key(), Some("ssh-ed25519 not-base64!".into()), None);
    let e = s.get(&source, "app/app-2.0.jar").0.unwrap_err();
    assert!(matches!(e, FetchError::Source { .. }), "{e}");
}

#[test]
fn an_unknown_host_is_refused_until_known_hosts_knows_it() {
    let Some(s) = setup() else { return };
    let port = s.sshd.daemon.port;
    let known_hosts = s.dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "# nothing yet\n").unwrap();
    let source = s.source(s.key(), None, Some(known_hosts.clone()));
    let e = s.get(&source, "app/app-2.0.jar").0.unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, FetchError::HostKeyUnknown { .. }), "{m}");
    assert!(m.contains(&fingerprint(&s.sshd.host_key_file)), "{m}");
    assert!(m.contains("refusing to trust it on first use"), "{m}");
    assert!(m.contains(&known_hosts.display().to_string()), "{m}");
    // Nothing was learned on the way.
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        "# nothing yet\n"
    );

    // Another key recorded for this host: a mismatch, with both fingerprints.
    let other_key = s.dir.path().join("other_host_key");
    let other = keygen(&other_key);
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {other}\n")).unwrap();
    let e = s.get(&source, "app/app-2.0.jar").0.unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, FetchError::HostKeyMismatch { .. }), "{m}");
    assert!(
        m.contains(&fingerprint(&other_key.with_extension("pub"))),
        "{m}"
    );
    assert!(m.contains(&fingerprint(&s.sshd.host_key_file)), "{m}");

    // The right key (next to lines libssh2 cannot read): accepted.
    std::fs::write(
        &known_hosts,
        format!(
            "@cert-authority * {other}\nsome.host ssh-future AAAA\n[127.0.0.1]:{port} {}\n",
            s.sshd.host_key
        ),
    )
    .unwrap();
    let (r, _cache) = s.get(&source, "app/app-2.0.jar");
    let f = r.unwrap();
    assert_eq!(std::fs::read(f.path).unwrap(), s.bytes);

    // ... unless it is revoked.
    let revoked = format!("@revoked * {}\n", s.sshd.host_key);
    std::fs::write(
        &known_hosts,
        format!("{revoked}[127.0.0.1]:{port} {}\n", s.sshd.host_key),
    )
    .unwrap();
    let e = s.get(&source, "app/app-2.0.jar").0.unwrap_err();
    assert!(matches!(e, FetchError::HostKeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("@revoked"), "{e}");
}

#[test]
fn password_authentication_for_a_local_account() {
    if !support::require_root() {
        return;
    }
    for program in ["useradd", "userdel", "chpasswd"] {
        if support::require_program(program).is_none() {
            return;
        }
    }
    let Some(s) = setup() else { return };
    let user = fetch_servers::LocalUser::create("clarity-sftp-t", &s.dir.path().join("home"));
    let source = |password: &str| Source::Sftp {
        host: "127.0.0.1".into(),
        port: s.sshd.daemon.port,
        dir: s.repo.display().to_string(),
        username: user.name.clone(),
        auth: SshAuth::Password(SecretString::new(password.into())),
        host_key: Some(s.sshd.host_key.clone()),
        known_hosts: None,
    };
    let (r, _cache) = s.get(&source(&user.password), "app/app-2.0.jar");
    let f = r.unwrap();
    assert_eq!(std::fs::read(f.path).unwrap(), s.bytes);

    const CANARY: &str = "CANARY-sftp-77c1";
    let wrong = source(CANARY);
    assert!(!format!("{wrong:?}").contains(CANARY));
    let e = s.get(&wrong, "app/app-2.0.jar").0.unwrap_err();
    assert!(matches!(e, FetchError::Auth { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains(CANARY), "{e:?}");
    assert!(e.to_string().contains("clarity-sftp-t"), "{e}");
}
