//! `sftp` repositories, with `ssh2` (libssh2): password or private-key authentication, and a
//! server that must prove it is the expected one before any credential is sent. With a pinned
//! `host_key` only that key is accepted; without one, a known_hosts file must know the host
//! (OpenSSH's files by default). An unknown host is refused, never trusted on first use, and a
//! mismatch is refused with both fingerprints. This module never writes a known_hosts file and
//! never puts a password or key text into a message.

use super::{FetchError, Job, SshAuth, cache::Incoming};
use crate::transport::host_key::{self, Expected, KnownHosts, PublicKey, Verdict};
use ssh2::{ErrorCode, Session};
use std::io::{Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
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
        None => Expected::KnownHosts(KnownHosts::read(
            server.known_hosts,
            server.host,
            server.port,
        )),
    };
    let tcp = connect(server.host, server.port, job)?;
    let mut session =
        Session::new().map_err(|e| job.transfer(format!("SSH: {}", e.message()), false))?;
    session.set_timeout(IO_TIMEOUT_MS);
    expected.negotiate(&session);
    session.set_tcp_stream(tcp);
    session.handshake().map_err(|e| {
        let (detail, transient) = describe(&e);
        job.transfer(format!("SSH handshake failed: {detail}"), transient)
    })?;
    let session = Connected(session);
    let presented = PublicKey::presented(&session)
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
    // Resume with an offset read when an interrupted download left a prefix; a file that is
    // not longer than that prefix cannot continue it, so start over.
    let offset = incoming.resume_at();
    if offset > 0 {
        if size.is_some_and(|s| s > offset) {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| job.transfer(format!("cannot seek: {e}"), false))?;
        } else {
            job.restart(incoming)?;
        }
    }
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
    let verdict = host_key::verify(session, server.host, server.port, expected, presented)
        .map_err(|e| job.transfer(format!("SSH: {}", e.message()), false))?;
    match verdict {
        Verdict::Trusted => Ok(()),
        Verdict::Mismatch { expected } => Err(FetchError::HostKeyMismatch {
            repository: job.repository.to_string(),
            host: server.host.to_string(),
            port: server.port,
            expected,
            actual: presented.fingerprint(),
        }),
        Verdict::Unknown { checked } => Err(FetchError::HostKeyUnknown {
            repository: job.repository.to_string(),
            host: server.host.to_string(),
            port: server.port,
            actual: presented.fingerprint(),
            known_hosts: checked,
        }),
    }
}
