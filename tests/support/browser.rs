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
        let port = free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"))
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
        let profile = tempfile::tempdir().unwrap();
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
                    format!("--user-data-dir={}", profile.path().display()),
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
        // Deleting the session makes chromedriver stop its Chromium; then the driver is killed
        // by PID.
        let _ = self.agent.delete(&self.base).call();
        let _ = &self.session;
    }
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
