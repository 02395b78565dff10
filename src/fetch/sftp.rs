//! `sftp` repositories, with `ssh2` (libssh2): password or private-key authentication, and a
//! server that must prove it is the expected one before any credential is sent. With a pinned
//! `host_key` only that key is accepted; without one, a known_hosts file must know the host
//! (OpenSSH's files by default). An unknown host is refused, never trusted on first use, and a
//! mismatch is refused with both fingerprints. This module never writes a known_hosts file and
//! never puts a password or key text into a message.

use super::{FetchError, Job, SshAuth, base64, cache::Incoming};
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, ErrorCode, KnownHostFileKind, MethodType, Session};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// libssh2's limit on any one blocking call (handshake, a read): a stalled server fails the
/// attempt, and the retry policy decides what happens next.
const IO_TIMEOUT_MS: u32 = 60_000;

// libssh2 error codes (`LIBSSH2_ERROR_*`, `LIBSSH2_FX_*`) this module tells apart.
const ERROR_BANNER_RECV: i32 = -2;
const ERROR_SOCKET_SEND: i32 = -7;
const ERROR_TIMEOUT: i32 = -9;
const ERROR_SOCKET_DISCONNECT: i32 = -13;
const ERROR_SOCKET_RECV: i32 = -43;
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_NO_SUCH_PATH: i32 = 10;

/// Key types a known_hosts line or a pinned key may name.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The server and how to log in.
pub(super) struct Server<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dir: &'a str,
    pub username: &'a str,
    pub auth: &'a SshAuth,
    pub host_key: Option<&'a str>,
    pub known_hosts: Option<&'a Path>,
}

/// A public key as known_hosts shows it: type name and the SSH wire-format blob.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PublicKey {
    kind: String,
    blob: Vec<u8>,
}

impl PublicKey {
    /// Finds `TYPE BASE64` in a known_hosts-style line (a host field before it is allowed).
    fn parse(line: &str) -> Option<PublicKey> {
        let mut fields = line.split_whitespace();
        while let Some(field) = fields.next() {
            if KEY_TYPES.contains(&field) {
                let blob = base64::decode(fields.next()?)?;
                // The blob starts with its own type name; one that disagrees is not this key.
                let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
                if blob.get(4..4 + len)? != field.as_bytes() {
                    return None;
                }
                return Some(PublicKey {
                    kind: field.to_string(),
                    blob,
                });
            }
        }
        None
    }

    /// The type name inside a wire-format blob, for keys the server presents.
    fn from_blob(blob: &[u8]) -> PublicKey {
        let kind = blob
            .get(..4)
            .and_then(|l| l.try_into().ok())
            .map(|l| u32::from_be_bytes(l) as usize)
            .and_then(|len| blob.get(4..4 + len))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| "unknown".into());
        PublicKey {
            kind,
            blob: blob.to_vec(),
        }
    }

    /// `ssh-ed25519 SHA256:...`, as `ssh-keygen -l` shows it.
    fn fingerprint(&self) -> String {
        format!(
            "{} SHA256:{}",
            self.kind,
            base64::encode(&Sha256::digest(&self.blob), false)
        )
    }

    /// The host key algorithms that produce this key type, for negotiation.
    fn algorithms(&self) -> &str {
        match self.kind.as_str() {
            // An RSA key signs with SHA-2 nowadays; the SHA-1 name stays last for old servers.
            "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256,ssh-rsa",
            k => k,
        }
    }
}

/// What the server's key must be.
enum Expected {
    Pinned(PublicKey),
    KnownHosts(KnownHostsFiles),
}

/// The known_hosts entries that apply, read once per attempt.
struct KnownHostsFiles {
    files: Vec<PathBuf>,
    /// All usable lines, for libssh2's matcher (which also understands hashed host names).
    lines: Vec<String>,
    /// Keys listed for this host under its plain name: for messages and for asking the server
    /// for a key of a type we know (a server has several; libssh2 might pick another one and
    /// the check would fail although the host is known).
    plain: Vec<PublicKey>,
    /// Keys marked `@revoked`: refused whatever else says.
    revoked: Vec<PublicKey>,
}

impl KnownHostsFiles {
    fn read(explicit: Option<&Path>, host: &str, port: u16) -> KnownHostsFiles {
        let files = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => {
                let mut files = Vec::new();
                if let Some(home) = home_dir() {
                    files.push(home.join(".ssh/known_hosts"));
                }
                files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
                files
            }
        };
        let names = if port == 22 {
            vec![host.to_ascii_lowercase()]
        } else {
            vec![format!("[{}]:{port}", host.to_ascii_lowercase())]
        };
        let mut found = KnownHostsFiles {
            files: Vec::new(),
            lines: Vec::new(),
            plain: Vec::new(),
            revoked: Vec::new(),
        };
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                found.files.push(file);
                continue;
            };
            found.files.push(file);
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(rest) = line.strip_prefix("@revoked") {
                    found.revoked.extend(PublicKey::parse(rest));
                    continue;
                }
                if line.starts_with('@') {
                    // `@cert-authority`: certificates are not supported, so it proves nothing.
                    continue;
                }
                let patterns = line.split_whitespace().next().unwrap_or_default();
                if patterns
                    .split(',')
                    .any(|p| names.iter().any(|n| p.eq_ignore_ascii_case(n)))
                {
                    found.plain.extend(PublicKey::parse(line));
                }
                found.lines.push(line.to_string());
            }
        }
        found
    }

    fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        format!("checked {}", files.join(" and "))
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
}

/// What to say about a libssh2 error, and whether another attempt may help.
fn describe(e: &ssh2::Error) -> (String, bool) {
    let transient = matches!(
        e.code(),
        ErrorCode::Session(
            ERROR_BANNER_RECV
                | ERROR_SOCKET_SEND
                | ERROR_TIMEOUT
                | ERROR_SOCKET_DISCONNECT
                | ERROR_SOCKET_RECV
        )
    );
    (e.message().to_string(), transient)
}

fn connect(host: &str, port: u16, job: &Job) -> Result<TcpStream, FetchError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| job.transfer(format!("cannot resolve {host}: {e}"), false))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => job.transfer(format!("cannot connect: {e}"), super::is_transient_io(&e)),
        None => job.transfer(format!("{host} has no address"), false),
    })
}

pub(super) fn download(
    server: &Server,
    job: &Job,
    incoming: &mut Incoming,
) -> Result<(), FetchError> {
    let expected = match server.host_key {
        Some(text) => Expected::Pinned(PublicKey::parse(text).ok_or_else(|| {
            job.source_problem(
                "`host_key` is not a known_hosts-style public key (`ssh-ed25519 AAAA...`)",
            )
        })?),
        None => Expected::KnownHosts(KnownHostsFiles::read(
            server.known_hosts,
            server.host,
            server.port,
        )),
    };
    let tcp = connect(server.host, server.port, job)?;
    let mut session =
        Session::new().map_err(|e| job.transfer(format!("SSH: {}", e.message()), false))?;
    session.set_timeout(IO_TIMEOUT_MS);
    let preferred: Vec<&str> = match &expected {
        Expected::Pinned(k) => vec![k.algorithms()],
        Expected::KnownHosts(k) => k.plain.iter().map(PublicKey::algorithms).collect(),
    };
    if !preferred.is_empty() {
        // Best effort: an algorithm this libssh2 lacks only means the default order is used.
        let _ = session.method_pref(MethodType::HostKey, &preferred.join(","));
    }
    session.set_tcp_stream(tcp);
    session.handshake().map_err(|e| {
        let (detail, transient) = describe(&e);
        job.transfer(format!("SSH handshake failed: {detail}"), transient)
    })?;
    let session = Connected(session);
    let presented = session
        .host_key()
        .map(|(blob, _)| PublicKey::from_blob(blob))
        .ok_or_else(|| job.transfer("the server presented no host key", false))?;
    verify_host_key(server, job, &session, &expected, &presented)?;

    // Only now, talking to the right server, may a credential leave this process.
    let refused = match server.auth {
        SshAuth::Password(p) => session
            .userauth_password(server.username, p.expose())
            .err()
            .map(|e| (e, "password")),
        SshAuth::Key(k) => session
            .userauth_pubkey_memory(server.username, None, k.expose(), None)
            .err()
            .map(|e| (e, "private key")),
    };
    if let Some((e, what)) = refused {
        let (detail, transient) = describe(&e);
        if transient {
            return Err(job.transfer(format!("SSH authentication interrupted: {detail}"), true));
        }
        return Err(job.auth(format!(
            "the server refused the {what} for user `{}` ({detail})",
            server.username
        )));
    }
    if !session.authenticated() {
        return Err(job.auth(format!("user `{}` is not authenticated", server.username)));
    }
    let sftp = session.sftp().map_err(|e| {
        let (detail, transient) = describe(&e);
        job.transfer(format!("cannot start SFTP: {detail}"), transient)
    })?;
    let path = super::remote_path(server.dir, job.location, false);
    let mut file = sftp.open(Path::new(&path)).map_err(|e| match e.code() {
        ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH) => job.not_found(),
        ErrorCode::SFTP(FX_PERMISSION_DENIED) => {
            job.auth(format!("user `{}` may not read it", server.username))
        }
        _ => {
            let (detail, transient) = describe(&e);
            job.transfer(format!("cannot open: {detail}"), transient)
        }
    })?;
    let size = file.stat().ok().and_then(|s| s.size);
    job.check_announced_size(size)?;
    incoming.announce(size);
    incoming
        .copy_from(&mut file)
        .map_err(|e| job.copy_error(e))?;
    Ok(())
}

/// A session that says goodbye however the download ends. A connection that just vanishes
/// (after a refused host key, say) makes OpenSSH's per-connection process exit before it
/// reaps its own child, leaving a zombie on hosts whose init does not reap them.
struct Connected(Session);

impl std::ops::Deref for Connected {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let _ = self.0.disconnect(None, "done", None);
    }
}

fn verify_host_key(
    server: &Server,
    job: &Job,
    session: &Session,
    expected: &Expected,
    presented: &PublicKey,
) -> Result<(), FetchError> {
    let mismatch = |expected: String| FetchError::HostKeyMismatch {
        repository: job.repository.to_string(),
        host: server.host.to_string(),
        port: server.port,
        expected,
        actual: presented.fingerprint(),
    };
    match expected {
        Expected::Pinned(key) if key == presented => Ok(()),
        Expected::Pinned(key) => Err(mismatch(format!("{} (pinned)", key.fingerprint()))),
        Expected::KnownHosts(known) => {
            if known.revoked.contains(presented) {
                return Err(mismatch(format!(
                    "any key but this one, which known_hosts marks @revoked ({})",
                    known.describe()
                )));
            }
            let mut hosts = session
                .known_hosts()
                .map_err(|e| job.transfer(format!("SSH: {}", e.message()), false))?;
            for line in &known.lines {
                // A line libssh2 cannot parse (a key type it does not know) proves nothing;
                // skipping it must not cost the lines after it.
                let _ = hosts.read_str(line, KnownHostFileKind::OpenSSH);
            }
            match hosts.check_port(server.host, server.port, &presented.blob) {
                CheckResult::Match => Ok(()),
                CheckResult::Mismatch => Err(mismatch(if known.plain.is_empty() {
                    format!("the key recorded in known_hosts ({})", known.describe())
                } else {
                    let keys: Vec<String> =
                        known.plain.iter().map(PublicKey::fingerprint).collect();
                    format!("{} ({})", keys.join(" or "), known.describe())
                })),
                CheckResult::NotFound | CheckResult::Failure => Err(FetchError::HostKeyUnknown {
                    repository: job.repository.to_string(),
                    host: server.host.to_string(),
                    port: server.port,
                    actual: presented.fingerprint(),
                    known_hosts: known.describe(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From `ssh-keygen -t ed25519`; the fingerprint is what `ssh-keygen -lf` printed for it.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMGE268hSvjAam8MwFmRNRxbgSI8JdSsILp87zGhH8/5";

    #[test]
    fn pinned_keys_parse_with_or_without_a_host_field() {
        let k = PublicKey::parse(KEY).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.blob.len(), 51);
        assert_eq!(
            PublicKey::parse(&format!("[h]:2222 {KEY} comment")),
            Some(k.clone())
        );
        assert_eq!(PublicKey::from_blob(&k.blob), k);
        assert_eq!(
            k.fingerprint(),
            "ssh-ed25519 SHA256:2ZUncdmwNfK1QZq+z2YTG/ZVHEDHGCyb14tQeoWaZ0I"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(PublicKey::parse("ssh-ed25519"), None);
        assert_eq!(PublicKey::parse("ssh-ed25519 !!!"), None);
        assert_eq!(PublicKey::parse("AAAA ssh-foo"), None);
        // The blob says ed25519, the line says rsa.
        let lie = KEY.replace("ssh-ed25519", "ssh-rsa");
        assert_eq!(PublicKey::parse(&lie), None);
    }

    #[test]
    fn known_hosts_lines_for_the_host_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        std::fs::write(
            &f,
            format!(
                "# comment\n[other]:2222 {KEY}\nh,[repo.example]:2222 {KEY}\n@revoked * {KEY}\n\
                 @cert-authority * {KEY}\n|1|abc=|def= {KEY}\n"
            ),
        )
        .unwrap();
        let k = KnownHostsFiles::read(Some(&f), "Repo.Example", 2222);
        assert_eq!(k.plain.len(), 1);
        assert_eq!(k.revoked.len(), 1);
        assert_eq!(k.lines.len(), 3);
        let k = KnownHostsFiles::read(Some(&f), "h", 22);
        assert_eq!(k.plain.len(), 1);
    }
}
