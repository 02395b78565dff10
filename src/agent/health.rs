//! Health checks on the host: after a switch, each of a deployment's checks probes the new
//! release (`http` GET, `tcp` connect, or a `command` run inside the release directory) until it
//! passes or runs out of probes, and says why it failed in enough detail to debug from the
//! report alone (status code, the last response body or stderr, truncated to 4 KiB).
//!
//! Timing comes from the model: wait `start_period_s`, then up to `retries` probes of at most
//! `timeout_s` each; between probes wait `interval_s`, doubled after each failure and capped at
//! 8× the interval. [`schedule`] computes those waits as a pure function, and [`run_with`] takes
//! the sleeping as a parameter, so the timing is tested without a clock. This module only
//! observes: it never restarts, rolls back or changes anything; the apply orchestrator decides
//! what an unhealthy report means.
//!
//! API: [`run`] (one check), [`run_all`] (a deployment's checks in order, stopping at the first
//! failure), [`run_with`] (one check with injected sleeping), [`schedule`], [`CheckReport`].

use crate::model::{HealthCheck, HealthCheckType};
use serde::Serialize;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of a failed probe's response body or stderr a report keeps.
pub const OUTPUT_LIMIT: usize = 4096;

/// How much of an HTTP body is read to look for `body_contains`; a health endpoint that
/// returns more than this is misconfigured, and reading it all would let it stall the probe.
const BODY_READ_LIMIT: u64 = 1 << 20;

/// The outcome of one health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The check's `name`, or its type and target (`http GET http://127.0.0.1:8080/health`).
    pub name: String,
    pub passed: bool,
    /// Probes made (0 when the check is misconfigured and no probe could be made).
    pub attempts: u32,
    /// Wall time from the start of the check, start period included.
    pub duration_ms: u64,
    /// Why the last probe failed; `None` when the check passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last HTTP status received (`http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The last exit code (`command`; `None` when it was killed or never ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// On failure: the last response body (`http`) or stderr, else stdout (`command`),
    /// truncated to [`OUTPUT_LIMIT`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl CheckReport {
    /// One line for step messages and logs (the output, if any, on the lines after it).
    pub fn summary(&self) -> String {
        let secs = self.duration_ms as f64 / 1000.0;
        let probes = if self.attempts == 1 {
            "probe"
        } else {
            "probes"
        };
        if self.passed {
            return format!(
                "{}: healthy after {} {probes} ({secs:.1}s)",
                self.name, self.attempts
            );
        }
        let mut s = format!(
            "{}: unhealthy after {} {probes} ({secs:.1}s): {}",
            self.name,
            self.attempts,
            self.message.as_deref().unwrap_or("failed")
        );
        if let Some(out) = self
            .output
            .as_deref()
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            // The full output stays in the report; a summary only needs enough to recognise it,
            // and an error page is recognised by its title, not its markup.
            let out = crate::failure_text::html_reduced(out);
            s.push_str("\n  last output: ");
            s.push_str(&truncate(out.trim(), 500).replace('\n', "\n  "));
        }
        s
    }
}

/// The wait before each probe: first the start period, then the interval, doubled after each
/// failure and capped at 8× the interval. Its length is the number of probes (`retries`, at
/// least one: a check that never probes could never fail).
pub fn schedule(check: &HealthCheck) -> Vec<Duration> {
    let interval = u64::from(check.interval_s);
    let cap = interval.saturating_mul(8);
    let probes = check.retries.max(1) as usize;
    let mut waits = Vec::with_capacity(probes);
    waits.push(Duration::from_secs(u64::from(check.start_period_s)));
    let mut next = interval;
    for _ in 1..probes {
        waits.push(Duration::from_secs(next.min(cap)));
        next = next.saturating_mul(2);
    }
    waits
}

/// Runs one check with real sleeping. `release_dir` is where a `command` check runs.
pub fn run(check: &HealthCheck, release_dir: &Path) -> CheckReport {
    run_with(check, release_dir, &mut std::thread::sleep)
}

/// Runs a deployment's checks in order and stops at the first failure: the deployment is
/// rolled back anyway, and the checks after it would only delay that.
pub fn run_all(checks: &[HealthCheck], release_dir: &Path) -> Vec<CheckReport> {
    let mut reports = Vec::with_capacity(checks.len());
    for check in checks {
        let report = run(check, release_dir);
        let failed = !report.passed;
        reports.push(report);
        if failed {
            break;
        }
    }
    reports
}

/// Runs one check, calling `sleep` for every wait of [`schedule`].
pub fn run_with(
    check: &HealthCheck,
    release_dir: &Path,
    sleep: &mut dyn FnMut(Duration),
) -> CheckReport {
    let started = Instant::now();
    let mut report = CheckReport {
        name: check_name(check),
        passed: false,
        attempts: 0,
        duration_ms: 0,
        message: None,
        status: None,
        exit_code: None,
        output: None,
    };
    if let Err(problem) = validate(check) {
        report.message = Some(problem);
        return report;
    }
    let timeout = Duration::from_secs(u64::from(check.timeout_s.max(1)));
    for wait in schedule(check) {
        if !wait.is_zero() {
            sleep(wait);
        }
        report.attempts += 1;
        let probe = match check.kind {
            HealthCheckType::Http => probe_http(check, timeout),
            HealthCheckType::Tcp => probe_tcp(check, timeout),
            HealthCheckType::Command => probe_command(check, release_dir, timeout),
        };
        report.status = probe.status;
        report.exit_code = probe.exit_code;
        if probe.ok {
            report.passed = true;
            report.message = None;
            report.output = None;
            break;
        }
        report.message = Some(probe.message);
        report.output = probe.output;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

fn check_name(check: &HealthCheck) -> String {
    if let Some(name) = &check.name {
        return name.clone();
    }
    match check.kind {
        HealthCheckType::Http => format!(
            "http GET {}",
            check.url.as_deref().map(display_url).unwrap_or_default()
        ),
        HealthCheckType::Tcp => format!(
            "tcp {}:{}",
            tcp_host(check),
            check.port.map(|p| p.to_string()).unwrap_or_default()
        ),
        HealthCheckType::Command => format!(
            "command {}",
            check
                .command
                .as_ref()
                .and_then(|c| c.first())
                .map(String::as_str)
                .unwrap_or_default()
        ),
    }
}

/// `validate` enforces these for checked-in configs; the agent checks again because a request
/// is data from the wire, and a misconfigured check must fail, never pass by default.
fn validate(check: &HealthCheck) -> Result<(), String> {
    match check.kind {
        HealthCheckType::Http if check.url.is_none() => Err("http check has no `url`".into()),
        HealthCheckType::Tcp if check.port.is_none() => Err("tcp check has no `port`".into()),
        HealthCheckType::Command if check.command.as_ref().is_none_or(|c| c.is_empty()) => {
            Err("command check has no `command`".into())
        }
        _ => Ok(()),
    }
}

fn tcp_host(check: &HealthCheck) -> &str {
    check.host.as_deref().unwrap_or("127.0.0.1")
}

/// A URL for messages: user information (`user:password@`) is replaced, since a health URL
/// is the one place a check could carry a credential.
fn display_url(url: &str) -> String {
    crate::url_credentials::hide(url, "(sensitive)@")
}

struct Probe {
    ok: bool,
    message: String,
    status: Option<u16>,
    exit_code: Option<i32>,
    output: Option<String>,
}

impl Probe {
    fn failed(message: String) -> Probe {
        Probe {
            ok: false,
            message,
            status: None,
            exit_code: None,
            output: None,
        }
    }
}

fn probe_http(check: &HealthCheck, timeout: Duration) -> Probe {
    let url = check.url.as_deref().unwrap_or_default();
    let shown = display_url(url);
    let expected = check.expect_status.unwrap_or(200);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // A wrong status is an answer to report, not a transport error.
        .http_status_as_error(false)
        // A proxy from the agent's environment must not stand between a host and its own
        // service.
        .proxy(None)
        // Following a redirect would hide the very status a check that expects 3xx looks for.
        .max_redirects(if (300..400).contains(&expected) { 0 } else { 5 })
        .build()
        .into();
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(e) => return Probe::failed(format!("GET {shown}: {e}")),
    };
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let read = response
        .body_mut()
        .as_reader()
        .take(BODY_READ_LIMIT)
        .read_to_end(&mut body);
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut probe = Probe {
        ok: false,
        message: String::new(),
        status: Some(status),
        exit_code: None,
        output: Some(truncate(&body, OUTPUT_LIMIT)),
    };
    if status != expected {
        probe.message = format!("GET {shown}: status {status}, expected {expected}");
    } else if let Err(e) = read {
        probe.message = format!("GET {shown}: status {status}, reading the body failed: {e}");
    } else if let Some(needle) = check
        .body_contains
        .as_deref()
        .filter(|n| !body.contains(*n))
    {
        probe.message = format!("GET {shown}: status {status}, body does not contain {needle:?}");
    } else {
        probe.ok = true;
    }
    probe
}

fn probe_tcp(check: &HealthCheck, timeout: Duration) -> Probe {
    let host = tcp_host(check);
    let port = check.port.unwrap_or_default();
    let addrs = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Probe::failed(format!("tcp {host}:{port}: cannot resolve: {e}")),
    };
    let mut last = format!("tcp {host}:{port}: no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => {
                return Probe {
                    ok: true,
                    message: String::new(),
                    status: None,
                    exit_code: None,
                    output: None,
                };
            }
            Err(e) => last = format!("tcp {host}:{port} ({addr}): {e}"),
        }
    }
    Probe::failed(last)
}

fn probe_command(check: &HealthCheck, release_dir: &Path, timeout: Duration) -> Probe {
    let argv = check.command.as_deref().unwrap_or_default();
    let mut cmd = Command::new(program_path(release_dir, &argv[0]));
    cmd.args(&argv[1..]).current_dir(release_dir);
    let captured = match run_captured(&mut cmd, Some(timeout)) {
        Ok(c) => c,
        Err(e) => return Probe::failed(format!("cannot run {}: {e}", argv[0])),
    };
    let output = captured.stderr_or_stdout();
    let exit_code = captured.status.and_then(|s| s.code());
    let (ok, message) = if captured.timed_out {
        (
            false,
            format!(
                "{} timed out after {}s and was killed",
                argv[0],
                timeout.as_secs()
            ),
        )
    } else if captured.status.is_some_and(|s| s.success()) {
        (true, String::new())
    } else {
        (
            false,
            format!("{} {}", argv[0], describe_status(captured.status)),
        )
    };
    Probe {
        ok,
        message,
        status: None,
        exit_code,
        output: (!ok && !output.is_empty()).then(|| truncate(&output, OUTPUT_LIMIT)),
    }
}

/// `exited with status 1` / `was killed by signal 9`.
pub(crate) fn describe_status(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => format!("ended with {s}"),
        },
        None => "did not finish".into(),
    }
}

/// A relative program path with a `/` (`./bin/check`, `bin/migrate`) names a file in the
/// release; a bare name is looked up on PATH. Joining explicitly avoids depending on how the
/// platform resolves a relative program against `current_dir`.
pub(crate) fn program_path(release_dir: &Path, program: &str) -> PathBuf {
    let p = Path::new(program);
    if p.is_relative() && program.contains('/') {
        release_dir.join(p)
    } else {
        p.to_path_buf()
    }
}

/// The tail of a stream kept while a child runs: enough for a failure report, bounded so a
/// chatty process cannot fill the agent's memory.
const CAPTURE_LIMIT: usize = 64 * 1024;

/// What a finished (or killed) child left behind.
pub(crate) struct Captured {
    /// `None` only if waiting for it failed.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Captured {
    /// Stderr, or stdout when the program wrote its complaint there.
    pub fn stderr_or_stdout(&self) -> String {
        let err = String::from_utf8_lossy(&self.stderr);
        if err.trim().is_empty() {
            String::from_utf8_lossy(&self.stdout).into_owned()
        } else {
            err.into_owned()
        }
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr captured (their last 64 KiB each). With a
/// timeout, the child's whole process group is killed when it expires, so a shell script's
/// children die with it.
pub(crate) fn run_captured(
    cmd: &mut Command,
    timeout: Option<Duration>,
) -> std::io::Result<Captured> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let (tx, rx) = mpsc::channel();
    for (index, stream) in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let tail = stream.map(read_tail).unwrap_or_default();
            let _ = tx.send((index, tail));
        });
    }
    drop(tx);

    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(10));
    };

    // A grandchild that left the process group may still hold a pipe open; its output is not
    // worth hanging the agent for.
    let mut out = Captured {
        status,
        timed_out,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let grace = Instant::now() + Duration::from_secs(1);
    for _ in 0..2 {
        let left = grace.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((0, tail)) => out.stdout = tail,
            Ok((_, tail)) => out.stderr = tail,
            Err(_) => break,
        }
    }
    Ok(out)
}

fn read_tail(mut stream: Box<dyn Read + Send>) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * CAPTURE_LIMIT {
                    kept.drain(..kept.len() - CAPTURE_LIMIT);
                }
            }
        }
    }
    if kept.len() > CAPTURE_LIMIT {
        kept.drain(..kept.len() - CAPTURE_LIMIT);
    }
    kept
}

/// The first `limit` bytes of `text`, cut at a character boundary, with a marker when cut.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: HealthCheckType) -> HealthCheck {
        HealthCheck {
            name: None,
            kind,
            url: None,
            expect_status: None,
            body_contains: None,
            host: None,
            port: None,
            command: None,
            start_period_s: 0,
            interval_s: 1,
            timeout_s: 5,
            retries: 5,
        }
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn schedule_waits_start_period_then_doubles_up_to_eight_intervals() {
        let mut c = check(HealthCheckType::Tcp);
        c.start_period_s = 10;
        c.interval_s = 2;
        c.retries = 7;
        assert_eq!(schedule(&c), secs(&[10, 2, 4, 8, 16, 16, 16]));
    }

    #[test]
    fn schedule_has_one_probe_per_retry_and_at_least_one() {
        let mut c = check(HealthCheckType::Tcp);
        c.retries = 1;
        assert_eq!(schedule(&c), secs(&[0]));
        c.retries = 0;
        assert_eq!(schedule(&c), secs(&[0]));
        c.retries = 3;
        c.interval_s = 0;
        assert_eq!(schedule(&c), secs(&[0, 0, 0]));
    }

    #[test]
    fn schedule_does_not_overflow() {
        let mut c = check(HealthCheckType::Tcp);
        c.interval_s = u32::MAX;
        c.retries = 70;
        let s = schedule(&c);
        assert_eq!(s.len(), 70);
        assert_eq!(s[69], Duration::from_secs(u64::from(u32::MAX) * 8));
    }

    #[test]
    fn run_with_sleeps_the_schedule_and_reports_every_attempt() {
        // Port 1 on loopback: nothing listens there, so every probe fails fast.
        let mut c = check(HealthCheckType::Tcp);
        c.port = Some(1);
        c.start_period_s = 3;
        c.retries = 4;
        let mut slept = Vec::new();
        let report = run_with(&c, Path::new("/"), &mut |d| slept.push(d));
        assert_eq!(slept, secs(&[3, 1, 2, 4]));
        assert!(!report.passed);
        assert_eq!(report.attempts, 4);
        assert!(report.message.unwrap().contains("127.0.0.1:1"));
    }

    #[test]
    fn a_misconfigured_check_fails_without_probing() {
        let report = run_with(&check(HealthCheckType::Http), Path::new("/"), &mut |_| {
            panic!("must not sleep")
        });
        assert!(!report.passed);
        assert_eq!(report.attempts, 0);
        assert_eq!(report.message.as_deref(), Some("http check has no `url`"));
    }

    #[test]
    fn names_and_urls_hide_credentials() {
        assert_eq!(
            display_url("http://u:pw@127.0.0.1:8080/health?x=a@b"),
            "http://(sensitive)@127.0.0.1:8080/health?x=a@b"
        );
        assert_eq!(display_url("http://h/p@q"), "http://h/p@q");
        let mut c = check(HealthCheckType::Tcp);
        c.port = Some(5432);
        assert_eq!(check_name(&c), "tcp 127.0.0.1:5432");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é… (4 bytes more)");
    }

    #[test]
    fn relative_programs_with_a_slash_are_inside_the_release() {
        let r = Path::new("/srv/app/current");
        assert_eq!(program_path(r, "./check.sh"), r.join("./check.sh"));
        assert_eq!(program_path(r, "bin/check"), r.join("bin/check"));
        assert_eq!(program_path(r, "curl"), PathBuf::from("curl"));
        assert_eq!(program_path(r, "/bin/true"), PathBuf::from("/bin/true"));
    }
}
