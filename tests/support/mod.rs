//! Shared test harness pieces: the prerequisite policy (skip with a message on a laptop, fail
//! when `CI=true`), servers started as child processes and stopped (and reaped) on drop, and
//! free loopback ports. Each integration test file that needs them says `mod support;`.

#![allow(dead_code)]

pub mod browser;
pub mod containers;
pub mod net;
pub mod nspawn;
pub mod runner;
pub mod sandbox;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// True when running under CI, where a missing prerequisite is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether a prerequisite is met. On a developer machine an unmet one prints why the test is
/// skipped; under CI it panics, so a missing package can never turn into a silent pass.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("prerequisite missing under CI: {what} (scripts/test.sh installs it)");
    }
    eprintln!("SKIPPED: {what} (install it, or run scripts/test.sh, to run this test)");
    false
}

/// The path of `name` on PATH or in the usual sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn require_program(name: &str) -> Option<PathBuf> {
    let found = find_program(name);
    if require(found.is_some(), &format!("program `{name}`")) {
        found
    } else {
        None
    }
}

pub fn require_root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    require(uid == "0", "running as root")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A server process started by a test; killed and reaped when dropped, even when the test
/// panics.
pub struct Server {
    pub name: String,
    child: Child,
}

impl Server {
    pub fn start(name: &str, cmd: &mut Command) -> Server {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Server {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `clarity-reconcile` binary built for this test run.
pub fn clarity_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_clarity-reconcile"))
}

/// Runs `git -C dir ARGS` with a fixed identity and no signing; returns stdout and panics
/// (with git's stderr) when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=clarity-tests",
            "-c",
            "user.email=tests@clarity.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies the directory tree `from` to `to` (files and folders; links are not expected).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `GET http://127.0.0.1:PORT{path}`: the status and body, whatever the status; `None` when
/// nothing answers within 2 s.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .call()
        .ok()?;
    let status = resp.status().as_u16();
    Some((
        status,
        resp.into_body().read_to_string().unwrap_or_default(),
    ))
}

/// The release `current` points at for `deployment` on the host rooted at `root`, as on disk.
pub fn current_release(root: &Path, deployment: &str) -> Option<String> {
    std::fs::read_link(root.join("opt/clarity").join(deployment).join("current"))
        .ok()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
}

/// A command's stdout then stderr, as text (for assertion messages and searches).
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The run records in the `refs/notes/clarity` note on `commit` of `repo`.
pub fn note_runs(repo: &Path, commit: &str) -> Vec<serde_json::Value> {
    git(repo, &["notes", "--ref=clarity", "show", commit])
        .lines()
        .filter_map(|l| l.strip_prefix("clarity-run: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}
