//! Headless Chromium from Debian driven over WebDriver: `chromedriver` started on a free
//! loopback port, one session with an empty profile directory, and the few commands the
//! dashboard tests use (navigate, find, text, execute, screenshot), spoken as plain HTTP with
//! ureq. Both processes are stopped by PID when the browser is dropped.

use super::{Server, find_program, free_port, require, wait_for_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
    // Declared last: chromedriver stops after the session is deleted in `drop`.
    _driver: Server,
}

/// The Chromium binary and its driver, or `None` (a skip, or a failure under CI).
pub fn require_chromium() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program("chromium");
    let driver = find_program("chromedriver");
    if !require(
        chromium.is_some() && driver.is_some(),
        "`chromium` and `chromedriver` (Debian packages chromium, chromium-driver)",
    ) {
        return None;
    }
    Some((chromium?, driver?))
}

impl Browser {
    pub fn start(chromium: &Path, driver: &Path) -> Browser {
        // Chromium's crash handler double-forks away from chromedriver; as a subreaper this
        // process inherits it instead of PID 1 (which here reaps nothing), and `drop` reaps it.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(driver);
        // Chromium's crash handler keeps its database under the config home: inside the
        // profile, so nothing is written to the user's home and its command line names the
        // profile (which is how `drop` tells this browser's processes from another's).
        cmd.env("HOME", profile.path())
            .env("XDG_CONFIG_HOME", profile.path().join("config"))
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = Server::start("chromedriver", &mut cmd);
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "chromedriver did not listen"
        );
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .build()
            .new_agent();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().join("data").display()),
                ]
            }
        }}});
        let answer = post(&agent, &format!("{base}/session"), &caps);
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Browser {
            base: format!("{base}/session/{session}"),
            session,
            agent,
            _profile: profile,
            _driver: server,
        }
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        let v = post(&self.agent, &format!("{}{path}", self.base), &body);
        assert!(
            v["value"]["error"].is_null(),
            "WebDriver {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.cmd("/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// The visible text of the first element matching `css`, or `None`.
    pub fn text(&self, css: &str) -> Option<String> {
        let v = self.eval(&format!(
            "var e = document.querySelector({}); return e ? e.innerText : null;",
            json!(css)
        ));
        v.as_str().map(str::to_string)
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.eval(&format!(
            "return document.querySelectorAll({}).length;",
            json!(css)
        ))
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// Waits until `script` returns true.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.eval(script) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what}; the page says:\n{}",
            self.text("body").unwrap_or_default()
        );
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.agent.get(&format!("{}/screenshot", self.base)).call();
        let text = v
            .unwrap()
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().expect("screenshot data"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Note this browser's processes while they still run (a zombie has no command line):
        // the driver's descendants, and what Chromium double-forked, which is reparented here
        // and started for this profile (another test's browser may be running beside it).
        let me = std::process::id();
        let profile = self._profile.path().to_string_lossy().into_owned();
        let mine = |p: &Process| {
            p.ppid == me
                && p.name != "chromedriver"
                && std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&profile))
        };
        let mut chromium = descendants(self._driver.pid());
        chromium.extend(processes().into_iter().filter(mine).map(|p| p.pid));
        // Deleting the session makes chromedriver stop its Chromium; whatever is left is
        // killed by PID, then the driver goes when its handle drops.
        let _ = self.agent.delete(&self.base).call();
        let _ = &self.session;
        for &pid in &chromium {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Reap what was reparented here: only Chromium's processes, by PID, so no other
        // test's child loses its exit status.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Killed processes pass through being some other Chromium process's zombie before
            // they are reparented here: wait until every one of them is gone.
            let left: Vec<Process> = processes()
                .into_iter()
                .filter(|p| chromium.contains(&p.pid))
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in left.iter().filter(|p| p.ppid == me) {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(p.pid as i32),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Process {
    pid: u32,
    ppid: u32,
    name: String,
}

fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // `pid (name) state ppid ...`; the name may hold spaces and parentheses.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            out.push(Process {
                pid,
                ppid,
                name: stat[open + 1..close].to_string(),
            });
        }
    }
    out
}

/// Every process below `root` (children before their children).
fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for proc in &all {
            if proc.ppid == p && !out.contains(&proc.pid) {
                out.push(proc.pid);
                frontier.push(proc.pid);
            }
        }
    }
    out
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Value {
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let text = r
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: {e}: {text}"))
}
