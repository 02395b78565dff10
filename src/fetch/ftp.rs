//! `ftp` repositories, with `suppaftp` (plain FTP, blocking): anonymous or user and password,
//! passive mode by default and active mode when asked. Transfers are binary (FTP's default,
//! ASCII, would rewrite line endings and break every checksum), and in passive mode the data
//! connection goes to the control connection's address whatever the server's PASV reply says,
//! so a server cannot point us at a third host. FTP sends passwords in clear text: this module
//! only keeps them out of messages; protecting the wire is the repository owner's choice.

use super::{FetchError, Job, cache::Incoming};
use crate::secret::SecretString;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;
use suppaftp::types::FileType;
use suppaftp::{FtpError, FtpStream, Mode, Status};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Every read and write on the control and data connections: a stalled server fails the
/// attempt, and the retry policy decides what happens next.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// What to say about an FTP error, and whether another attempt may help.
fn describe(e: &FtpError) -> (String, bool) {
    match e {
        FtpError::ConnectionError(io) => (io.to_string(), super::is_transient_io(io)),
        FtpError::UnexpectedResponse(r) => {
            let text = String::from_utf8_lossy(&r.body).trim().to_string();
            // 4xx replies are "transient negative completion" in RFC 959's own words.
            let code = r.status.code();
            let shown = if text.is_empty() {
                format!("server replied {code}")
            } else {
                format!("server replied: {text}")
            };
            (shown, (400..500).contains(&code))
        }
        other => (other.to_string(), false),
    }
}

fn status(e: &FtpError) -> Option<Status> {
    match e {
        FtpError::UnexpectedResponse(r) => Some(r.status),
        _ => None,
    }
}

fn connect(host: &str, port: u16, job: &Job) -> Result<FtpStream, FetchError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| job.transfer(format!("cannot resolve {host}: {e}"), false))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(tcp) => {
                let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
                let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
                return FtpStream::connect_with_stream(tcp).map_err(|e| {
                    let (detail, transient) = describe(&e);
                    job.transfer(format!("FTP greeting failed: {detail}"), transient)
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => job.transfer(format!("cannot connect: {e}"), super::is_transient_io(&e)),
        None => job.transfer(format!("{host} has no address"), false),
    })
}

pub(super) fn download(
    host: &str,
    port: u16,
    dir: &str,
    login: Option<&(String, SecretString)>,
    passive: bool,
    job: &Job,
    incoming: &mut Incoming,
) -> Result<(), FetchError> {
    let mut ftp = connect(host, port, job)?;
    if passive {
        ftp.set_mode(Mode::Passive);
        ftp.set_passive_nat_workaround(true);
        ftp = ftp.passive_stream_builder(|addr| {
            let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .map_err(FtpError::ConnectionError)?;
            let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
            Ok(tcp)
        });
    } else {
        ftp = ftp.active_mode(IO_TIMEOUT);
    }
    let result = match login {
        Some((user, password)) => ftp.login(user.as_str(), password.expose()),
        // RFC 1635: anonymous users give an address-like password; no real one is needed.
        None => ftp.login("anonymous", "clarity@"),
    };
    if let Err(e) = result {
        let (detail, transient) = describe(&e);
        return Err(match status(&e) {
            Some(Status::NotLoggedIn) | Some(Status::NeedPassword) => job.auth(match login {
                Some((user, _)) => {
                    format!("the server refused the login for user `{user}` ({detail})")
                }
                None => format!("the server refused anonymous login ({detail})"),
            }),
            _ => job.transfer(format!("login failed: {detail}"), transient),
        });
    }
    ftp.transfer_type(FileType::Binary).map_err(|e| {
        let (detail, transient) = describe(&e);
        job.transfer(format!("cannot switch to binary mode: {detail}"), transient)
    })?;
    let path = super::remote_path(dir, job.location, false);
    // SIZE is optional in FTP; without it progress has no total and the declared size is
    // checked after the transfer instead.
    let size = ftp.size(&path).ok().map(|s| s as u64);
    job.check_announced_size(size)?;
    incoming.announce(size);
    // FTP's REST is not offered by every server, and its failure modes differ by server:
    // an FTP download starts from the first byte.
    job.restart(incoming)?;
    let mut stream = ftp.retr_as_stream(&path).map_err(|e| {
        let (detail, transient) = describe(&e);
        match status(&e) {
            Some(Status::FileUnavailable) => job.not_found(),
            _ => job.transfer(format!("cannot retrieve: {detail}"), transient),
        }
    })?;
    incoming
        .copy_from(&mut stream)
        .map_err(|e| job.copy_error(e))?;
    // The completion reply tells a transfer the server finished from one it aborted.
    stream.finish().map_err(|e| {
        let (detail, transient) = describe(&e);
        job.transfer(format!("transfer not completed: {detail}"), transient)
    })?;
    let _ = ftp.quit();
    Ok(())
}
