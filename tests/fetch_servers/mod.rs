//! Real artifact servers for the fetch tests: python's http.server, a fault-injecting HTTP
//! server (a python script written here), nginx with basic and bearer authentication and
//! redirects, OpenSSH's sftp subsystem, and vsftpd. Each is started on a free loopback port
//! with its configuration, pid file and logs under a temporary directory, and stopped (and
//! reaped, its per-connection children first) when its guard is dropped. Local accounts for
//! password logins are created with a random password and deleted again.

#![allow(dead_code)]

use crate::support::{self, Server, free_port, wait_for_port};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server plus the temporary directory it lives in. On drop it waits (briefly) for the
/// children that serve connections to finish, so killing the listener orphans no process (PID
/// 1 here does not reap orphans), then kills and reaps the listener.
pub struct Daemon {
    pub port: u16,
    pub dir: PathBuf,
    server: Option<Server>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.server.as_ref().map_or(0, Server::pid)
    }

    /// Stops the server now (for tests that need it gone).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            wait_for_no_children(server.pid(), Duration::from_secs(3));
            drop(server);
            reap_orphans();
        }
    }
}

/// Server programs whose orphans this process may reap: never a command a test runs and waits
/// for itself.
const SERVER_NAMES: &[&str] = &["sshd", "sftp-server", "vsftpd", "nginx", "python3"];

/// Makes this test process the reaper of orphans its servers leave behind: OpenSSH's
/// per-connection monitor kills its unprivileged child and exits without waiting for it, and
/// PID 1 here does not reap what is reparented to it.
fn adopt_orphans() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// Reaps the zombie server processes reparented to this process.
fn reap_orphans() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so cut at the last `)`.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if state == Some("Z") && ppid == Some(me) && SERVER_NAMES.contains(&comm) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn wait_for_no_children(pid: u32, timeout: Duration) {
    let start = Instant::now();
    while !children(pid).is_empty() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn started(name: &str, cmd: &mut Command, port: u16, dir: &Path) -> Daemon {
    adopt_orphans();
    let server = Server::start(name, cmd.stdin(Stdio::null()));
    let daemon = Daemon {
        port,
        dir: dir.to_path_buf(),
        server: Some(server),
    };
    assert!(
        wait_for_port(port, Duration::from_secs(10)),
        "{name} did not listen on {port}; its log is in {}",
        dir.display()
    );
    daemon
}

/// Deterministic bytes that do not compress (an artifact is usually compressed already).
pub fn artifact_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` at `root/location` (world-readable, as servers that drop privileges need)
/// and returns its sha256.
pub fn put(root: &Path, location: &str, bytes: &[u8]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(location);
    let mut dir = path.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    while dir.starts_with(root) {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if !dir.pop() {
            break;
        }
    }
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    sha256_hex(bytes)
}

/// A temporary directory that other users may traverse (tempfile makes them 0700), for
/// servers that read files as another user.
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Fetches `location` of `repository` from `source` into a fresh cache, without retries; the
/// result and the cache directory (kept alive for the caller to look into).
pub fn fetch_once(
    source: &clarity::fetch::Source,
    repository: &str,
    location: &str,
    bytes: &[u8],
    sha256: &str,
) -> (
    Result<clarity::fetch::Fetched, clarity::fetch::FetchError>,
    tempfile::TempDir,
) {
    use clarity::fetch::{Artifact, Cache, Retry, fetch};
    let cache_dir = tempfile::tempdir().unwrap();
    let artifact = Artifact {
        repository,
        location,
        sha256,
        size: Some(bytes.len() as u64),
        max_size: None,
    };
    let r = fetch(
        source,
        &artifact,
        &Cache::new(cache_dir.path()),
        &Retry::none(),
        &mut |_| {},
    );
    (r, cache_dir)
}

/// An unauthenticated http repository at `url`.
pub fn http_source(url: String) -> clarity::fetch::Source {
    clarity::fetch::Source::Http {
        base_url: url,
        auth: clarity::fetch::HttpAuth::None,
    }
}

/// Fetches `location` (of a repository named `mirror`) from `source` into `cache`.
pub fn fetch_into(
    source: &clarity::fetch::Source,
    location: &str,
    sha256: &str,
    size: Option<u64>,
    max_size: Option<u64>,
    cache: &clarity::fetch::Cache,
    retry: &clarity::fetch::Retry,
) -> Result<clarity::fetch::Fetched, clarity::fetch::FetchError> {
    let artifact = clarity::fetch::Artifact {
        repository: "mirror",
        location,
        sha256,
        size,
        max_size,
    };
    clarity::fetch::fetch(source, &artifact, cache, retry, &mut |_| {})
}

/// The system python when there is one: a version manager's shim adds startup time.
pub fn python() -> Option<PathBuf> {
    let system = PathBuf::from("/usr/bin/python3");
    if system.is_file() {
        Some(system)
    } else {
        support::require_program("python3")
    }
}

/// `python3 -m http.server` serving `root`.
pub fn python_http(root: &Path) -> Option<Daemon> {
    let python = python()?;
    let port = free_port();
    Some(started(
        "python http.server",
        Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        port,
        root,
    ))
}

/// How the fault-injecting server misbehaves for its first `failures` requests.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer 503.
    Unavailable,
    /// Reset the connection without answering.
    Drop,
    /// Announce the whole length, send half, close.
    Truncate,
    /// Send half without a length (so only the checksum can tell).
    TruncateUnannounced,
    /// Answer with an HTML login page.
    Html,
    /// Send the body slowly (64 KiB every 20 ms), so a test can interrupt a download.
    Slow,
    /// Send the file gzip-compressed with `Content-Encoding: gzip`, asked for or not.
    Gzip,
    /// Send zeros without a length, without end.
    Endless,
}

impl Fault {
    fn arg(self) -> &'static str {
        match self {
            Fault::Unavailable => "503",
            Fault::Drop => "drop",
            Fault::Truncate => "truncate",
            Fault::TruncateUnannounced => "truncate-unannounced",
            Fault::Html => "html",
            Fault::Slow => "slow",
            Fault::Gzip => "gzip",
            Fault::Endless => "endless",
        }
    }
}

/// A small HTTP server (python stdlib only) that serves `root` but fails its first `failures`
/// requests in the given way, and logs every request (`n path auth=yes|no`, then ` range=R`,
/// ` x-api-key=V` and ` accept-encoding=E` when sent) to `log`. Outside its faults it
/// answers `Range: bytes=N-` with 206, as real servers do.
const FLAKY_SERVER: &str = r#"
import gzip, http.server, os, socket, struct, sys, threading, time
port, root, fault, failures, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
lock = threading.Lock()
count = [0]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        with lock:
            count[0] += 1
            n = count[0]
            with open(log, "a") as f:
                auth = "yes" if self.headers.get("Authorization") else "no"
                extra = ""
                for h in ("Range", "X-Api-Key", "Accept-Encoding"):
                    if self.headers.get(h):
                        extra += f" {h.lower()}={self.headers.get(h)}"
                f.write(f"{n} {self.path} auth={auth}{extra}\n")
        path = os.path.join(root, self.path.lstrip("/"))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if n <= failures:
            if fault == "503":
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if fault == "drop":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            if fault == "html":
                page = b"<html><body><form>Sign in</form></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            if fault in ("truncate", "truncate-unannounced"):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if fault == "truncate":
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
        if fault == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                while True:
                    self.wfile.write(bytes(65536))
            except OSError:
                return
        if fault == "gzip":
            body = gzip.compress(data, mtime=0)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        first = 0
        r = self.headers.get("Range")
        if r and r.startswith("bytes=") and r.endswith("-"):
            first = int(r[6:-1])
            if first >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - first))
        self.end_headers()
        if fault == "slow":
            try:
                for i in range(first, len(data), 65536):
                    self.wfile.write(data[i:i + 65536])
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass
            return
        self.wfile.write(data[first:])

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

pub struct Flaky {
    pub daemon: Daemon,
    log: PathBuf,
}

impl Flaky {
    pub fn start(root: &Path, fault: Fault, failures: u32) -> Option<Flaky> {
        let python = python()?;
        let port = free_port();
        let script = root.join(".flaky.py");
        let log = root.join(".requests.log");
        std::fs::write(&script, FLAKY_SERVER).unwrap();
        std::fs::write(&log, "").unwrap();
        let daemon = started(
            "flaky http server",
            Command::new(python)
                .arg(&script)
                .arg(port.to_string())
                .arg(root)
                .arg(fault.arg())
                .arg(failures.to_string())
                .arg(&log),
            port,
            root,
        );
        Some(Flaky { daemon, log })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port)
    }

    /// The logged requests, one `n path auth=yes|no` line each.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// nginx in the foreground, one process, everything under its own directory. Locations:
/// `/public/` open; `/basic/` basic auth (`user` / `password`); `/bearer/` a bearer token;
/// `/moved/X` redirects to `/basic/X` on the same server; `/away/X` redirects to
/// `http://127.0.0.1:<away_port>/X`; `/login/` answers every request with an HTML page.
pub struct Nginx {
    pub daemon: Daemon,
    pub www: PathBuf,
}

impl Nginx {
    pub fn start(user: &str, password: &str, token: &str, away_port: u16) -> Option<Nginx> {
        let nginx = support::require_program("nginx")?;
        let htpasswd = support::require_program("htpasswd")?;
        let dir = open_tempdir().keep();
        let www = dir.join("www");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::create_dir_all(&www).unwrap();
        let mut h = Command::new(htpasswd)
            .args(["-i", "-c"])
            .arg(dir.join("htpasswd"))
            .arg(user)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        h.stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        assert!(h.wait().unwrap().success(), "htpasswd failed");
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/client;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ text/html html; application/java-archive jar; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location /public/ {{ }}
        location /basic/ {{
            auth_basic "clarity";
            auth_basic_user_file {d}/htpasswd;
        }}
        location /bearer/ {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
        }}
        location /moved/ {{ rewrite ^/moved/(.*)$ /basic/$1 redirect; }}
        location /away/ {{ rewrite ^/away/(.*)$ http://127.0.0.1:{away_port}/$1 redirect; }}
        location /login/ {{
            default_type text/html;
            return 200 "<html><body><form>Sign in</form></body></html>";
        }}
    }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let daemon = started(
            "nginx",
            Command::new(nginx)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            port,
            &dir,
        );
        Some(Nginx { daemon, www })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.daemon.stop();
        let _ = std::fs::remove_dir_all(&self.daemon.dir);
    }
}

/// Runs `ssh-keygen` for a new unencrypted ed25519 key at `path`; returns the public key line.
pub fn keygen(path: &Path) -> String {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// The `SHA256:...` fingerprint `ssh-keygen -l` gives for a public key file.
pub fn fingerprint(public_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// OpenSSH's sshd with its own host key, accepting `client_public_key` for every user and
/// passwords for real local accounts.
pub struct Sshd {
    pub daemon: Daemon,
    /// The host's public key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    pub host_key_file: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path, client_public_key: &str) -> Option<Sshd> {
        let sshd = support::require_program("sshd")?;
        let sftp_server = Path::new("/usr/lib/openssh/sftp-server");
        if !support::require(sftp_server.is_file(), "/usr/lib/openssh/sftp-server") {
            return None;
        }
        support::require_program("ssh-keygen")?;
        // sshd's privilege separation directory; it refuses to start without it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key_file = dir.join("host_ed25519");
        let host_key = keygen(&host_key_file);
        std::fs::write(
            dir.join("authorized_keys"),
            format!("{client_public_key}\n"),
        )
        .unwrap();
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             UsePAM no\nStrictModes no\nAuthorizedKeysFile {d}/authorized_keys\n\
             PubkeyAuthentication yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp {}\nLogLevel ERROR\n",
            sftp_server.display()
        );
        std::fs::write(dir.join("sshd_config"), conf).unwrap();
        let daemon = started(
            "sshd",
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap()),
            port,
            dir,
        );
        Some(Sshd {
            daemon,
            host_key,
            host_key_file: host_key_file.with_extension("pub"),
        })
    }
}

/// vsftpd in the foreground: anonymous logins see `anon_root` (root-owned, read-only), local
/// accounts log in through PAM and see the whole file system.
pub struct Vsftpd {
    pub daemon: Daemon,
}

impl Vsftpd {
    pub fn start(dir: &Path, anon_root: &Path) -> Option<Vsftpd> {
        let vsftpd = support::require_program("vsftpd")?;
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let port = free_port();
        let conf = format!(
            "listen=YES\nlisten_ipv6=NO\nbackground=NO\nlisten_address=127.0.0.1\nlisten_port={port}\n\
             anonymous_enable=YES\nanon_root={}\nno_anon_password=YES\nlocal_enable=YES\n\
             write_enable=NO\npam_service_name=vsftpd\nseccomp_sandbox=NO\nsecure_chroot_dir={}\n\
             pasv_enable=YES\npasv_address=127.0.0.1\nport_enable=YES\nconnect_from_port_20=NO\n\
             xferlog_enable=NO\nsyslog_enable=NO\nvsftpd_log_file={}/vsftpd.log\n",
            anon_root.display(),
            empty.display(),
            dir.display()
        );
        let conf_file = dir.join("vsftpd.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let daemon = started(
            "vsftpd",
            Command::new(vsftpd)
                .arg(&conf_file)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("vsftpd.stderr")).unwrap()),
            port,
            dir,
        );
        Some(Vsftpd { daemon })
    }
}

/// A real local account with a random password, deleted on drop.
pub struct LocalUser {
    pub name: String,
    pub password: String,
    pub home: PathBuf,
}

impl LocalUser {
    /// Creates `name` (replacing a leftover from an aborted run) with home `home`.
    pub fn create(name: &str, home: &Path) -> LocalUser {
        let _ = Command::new("userdel")
            .arg(name)
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", "--home-dir"])
            .arg(home)
            .arg(name)
            .status()
            .unwrap()
            .success();
        assert!(ok, "useradd {name} failed");
        std::fs::create_dir_all(home).unwrap();
        let ok = Command::new("chown")
            .arg(format!("{name}:"))
            .arg(home)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown failed");
        // A fresh password per run: a leftover account is useless to anyone.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let password = format!(
            "pw-{}",
            sha256_hex(format!("{nanos}-{}", std::process::id()).as_bytes())
        )[..24]
            .to_string();
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
        LocalUser {
            name: name.to_string(),
            password,
            home: home.to_path_buf(),
        }
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// The Python virtual environment that scripts/test.sh fills with the test servers that come
/// from PyPI (`moto[server]`).
pub fn test_venv() -> PathBuf {
    std::env::var_os("CLARITY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/clarity-test-venv"))
}

/// Prepares a moto server the way an S3 administrator would: an IAM user with a policy and an
/// access key (the first three calls, which moto allows unauthenticated), then a bucket and
/// objects put with that key. Objects are `key=path` (a file) or `key=@N:SEED` (N
/// pseudo-random bytes made here, so the test process never holds a large object). Prints
/// JSON: the key and the sha256 and size of each object.
const MOTO_SETUP: &str = r#"
import boto3, hashlib, json, random, sys
url, bucket = sys.argv[1], sys.argv[2]
anon = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **anon)
iam.create_user(UserName="clarity")
iam.put_user_policy(UserName="clarity", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="clarity")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
    aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket=bucket)
objects = {}
for spec in sys.argv[3:]:
    name, source = spec.split("=", 1)
    if source.startswith("@"):
        n, seed = source[1:].split(":")
        data = random.Random(int(seed)).randbytes(int(n))
    else:
        data = open(source, "rb").read()
    s3.put_object(Bucket=bucket, Key=name, Body=data)
    objects[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    del data
print(json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"], "objects": objects}))
"#;

/// A real S3-compatible server: `moto_server` on a free loopback port, with IAM
/// authentication on (so a wrong signature is refused as S3 refuses it).
pub struct Moto {
    pub daemon: Daemon,
    venv: PathBuf,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// An object the setup put, with its sha256 and size.
#[derive(Debug, Clone)]
pub struct S3Object {
    pub sha256: String,
    pub size: u64,
}

impl Moto {
    /// Starts moto and puts `objects` (see [`MOTO_SETUP`]) in `bucket`; `None` (a skip
    /// outside CI) when the venv is missing.
    pub fn start(bucket: &str, objects: &[String]) -> Option<(Moto, BTreeMap<String, S3Object>)> {
        let venv = test_venv();
        let server = venv.join("bin/moto_server");
        if !support::require(
            server.is_file(),
            &format!("{} (pip `moto[server]`)", server.display()),
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap().keep();
        let port = free_port();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let daemon = started(
            "moto_server",
            Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // IAM authentication on after the setup's three IAM calls.
                .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
            port,
            &dir,
        );
        let url = format!("http://127.0.0.1:{port}");
        let out = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(MOTO_SETUP)
            .arg(&url)
            .arg(bucket)
            .args(objects)
            .output()
            .expect("the venv's python runs");
        assert!(
            out.status.success(),
            "moto setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let objects = v["objects"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, o)| {
                (
                    k.clone(),
                    S3Object {
                        sha256: o["sha256"].as_str().unwrap().to_string(),
                        size: o["size"].as_u64().unwrap(),
                    },
                )
            })
            .collect();
        Some((
            Moto {
                daemon,
                venv,
                access_key_id: v["access_key_id"].as_str().unwrap().to_string(),
                secret_access_key: v["secret_access_key"].as_str().unwrap().to_string(),
            },
            objects,
        ))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port)
    }
}

/// A file or folder in the Drive stand-in.
#[derive(Debug, Clone)]
pub struct DriveItem {
    pub id: String,
    pub name: String,
    pub parent: String,
    /// `None` for a folder.
    pub content: Option<PathBuf>,
}

/// The STAND-IN for Google Drive API v3 and Google's OAuth2 token endpoint
/// (`drive_standin.py`, python stdlib): no Google service can be reached from a test machine,
/// so this server follows Google's documented behaviour, stricter where that catches client
/// mistakes. `settings` is merged into its configuration (`client`, `service_account`,
/// `expires_in`, `stale_after_uses`, `rate_limit_first`, `page_size`, `ignore_range`).
pub struct DriveStandin {
    pub daemon: Daemon,
    log: PathBuf,
}

impl DriveStandin {
    pub fn start(items: &[DriveItem], settings: serde_json::Value) -> Option<DriveStandin> {
        let python = python()?;
        let dir = tempfile::tempdir().unwrap().keep();
        let port = free_port();
        let log = dir.join("requests.jsonl");
        std::fs::write(&log, "").unwrap();
        let mut config = serde_json::json!({
            "port": port,
            "log": log,
            "token_url": format!("http://127.0.0.1:{port}/token"),
            "expires_in": 3600,
            "files": items.iter().map(|i| serde_json::json!({
                "id": i.id,
                "name": i.name,
                "parent": i.parent,
                "folder": i.content.is_none(),
                "content": i.content,
            })).collect::<Vec<_>>(),
        });
        for (k, v) in settings.as_object().unwrap() {
            config[k] = v.clone();
        }
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fetch_servers/drive_standin.py");
        let daemon = started(
            "drive stand-in",
            Command::new(python).arg(script).arg(&config_path),
            port,
            &dir,
        );
        Some(DriveStandin { daemon, log })
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.daemon.port)
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/drive/v3", self.daemon.port)
    }

    /// Every request so far, as the stand-in logged it.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A 2048-bit RSA service account key made with `openssl`: the JSON key file Google would hand
/// out (`client_email`, `private_key` in PKCS#8 PEM) and the modulus in hex for the stand-in.
pub fn service_account_key(dir: &Path, email: &str, token_url: &str) -> Option<(String, String)> {
    let openssl = support::require_program("openssl")?;
    let pem = dir.join("sa.pem");
    let status = Command::new(&openssl)
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl genpkey failed");
    let out = Command::new(&openssl)
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let modulus = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .strip_prefix("Modulus=")
        .unwrap()
        .to_string();
    let key = serde_json::json!({
        "type": "service_account",
        "client_email": email,
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "token_uri": token_url,
    });
    Some((key.to_string(), modulus))
}
