//! Fetching over FTP from a real vsftpd in the foreground (root only: vsftpd must start as
//! root): anonymous logins in passive and active mode against a root-owned read-only
//! `anon_root`, a local account logging in through PAM, and the errors for a wrong password
//! and a missing file.

mod fetch_servers;
mod support;

use clarity::fetch::{FetchError, Fetched, Source};
use clarity::secret::SecretString;
use fetch_servers::{LocalUser, Vsftpd, artifact_bytes, open_tempdir, put};

struct Setup {
    dir: tempfile::TempDir,
    vsftpd: Vsftpd,
    sha: String,
    bytes: Vec<u8>,
}

/// vsftpd with `pub/tools/tool-1.4.tar.gz` under its anonymous root (`<dir>/anon`).
fn setup() -> Option<Setup> {
    if !support::require_root() {
        return None;
    }
    let dir = open_tempdir();
    let anon = dir.path().join("anon");
    let bytes = artifact_bytes(1 << 20, 50);
    let sha = put(&anon, "pub/tools/tool-1.4.tar.gz", &bytes);
    let vsftpd = Vsftpd::start(dir.path(), &anon)?;
    Some(Setup {
        dir,
        vsftpd,
        sha,
        bytes,
    })
}

impl Setup {
    fn source(&self, dir: &str, login: Option<(String, SecretString)>, passive: bool) -> Source {
        Source::Ftp {
            host: "127.0.0.1".into(),
            port: self.vsftpd.daemon.port,
            dir: dir.into(),
            login,
            passive,
        }
    }

    fn get(
        &self,
        source: &Source,
        location: &str,
    ) -> (Result<Fetched, FetchError>, tempfile::TempDir) {
        fetch_servers::fetch_once(source, "ftp-mirror", location, &self.bytes, &self.sha)
    }
}

#[test]
fn anonymous_passive_and_active() {
    let Some(s) = setup() else { return };
    for passive in [true, false] {
        let source = s.source("/pub", None, passive);
        let (r, _cache) = s.get(&source, "tools/tool-1.4.tar.gz");
        let f = r.unwrap_or_else(|e| panic!("passive={passive}: {e}"));
        assert_eq!(
            std::fs::read(&f.path).unwrap(),
            s.bytes,
            "passive={passive}"
        );
        assert_eq!(f.downloaded_bytes, s.bytes.len() as u64);
    }
    let (r, cache) = s.get(&s.source("/pub", None, true), "tools/tool-9.9.tar.gz");
    let e = r.unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    let url = format!(
        "ftp://127.0.0.1:{}/pub/tools/tool-9.9.tar.gz",
        s.vsftpd.daemon.port
    );
    assert!(e.to_string().contains(&url), "{e}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn local_account_through_pam() {
    let Some(s) = setup() else { return };
    for program in ["useradd", "userdel", "chpasswd"] {
        if support::require_program(program).is_none() {
            return;
        }
    }
    let user = LocalUser::create("clarity-ftp-t", &s.dir.path().join("home"));
    // A local user sees the whole file system: the directory is absolute.
    let dir = s.dir.path().join("anon/pub").display().to_string();
    let login = |password: &str| Some((user.name.clone(), SecretString::new(password.into())));
    let (r, _cache) = s.get(
        &s.source(&dir, login(&user.password), true),
        "tools/tool-1.4.tar.gz",
    );
    assert_eq!(std::fs::read(r.unwrap().path).unwrap(), s.bytes);

    const CANARY: &str = "CANARY-ftp-31b0";
    let wrong = s.source(&dir, login(CANARY), true);
    assert!(!format!("{wrong:?}").contains(CANARY));
    let e = s.get(&wrong, "tools/tool-1.4.tar.gz").0.unwrap_err();
    assert!(matches!(e, FetchError::Auth { .. }), "{e}");
    assert!(e.to_string().contains("clarity-ftp-t"), "{e}");
    assert!(!format!("{e} {e:?}").contains(CANARY), "{e:?}");
}
