//! Health checks against real peers: a Python standard-library HTTP server started on a free
//! port (status, body substring, server down), TCP listeners and closed ports, and commands that
//! exit 0, exit 1 with stderr, or hang until the timeout kills them. Waiting between probes is
//! injected, so the tests check the schedule without sleeping through it.

mod support;

use clarity::agent::health::{self, CheckReport, OUTPUT_LIMIT};
use clarity::model::{HealthCheck, HealthCheckType};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Answers `/ok` with 200 and a body, `/down` with 503, `/big` with 503 and 10 KB.
const HTTP_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        routes = {
            "/ok": (200, b"status: ready\n"),
            "/down": (503, b"database unavailable\n"),
            "/big": (503, b"x" * 10000),
        }
        code, body = routes.get(self.path, (404, b"no such page\n"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn http_server() -> Option<(support::Server, u16)> {
    let python = support::require_program("python3")?;
    let port = support::free_port();
    let server = support::Server::start(
        "python3 http.server",
        Command::new(python).args(["-c", HTTP_SERVER, &port.to_string()]),
    );
    assert!(
        support::wait_for_port(port, Duration::from_secs(10)),
        "http server did not start"
    );
    Some((server, port))
}

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
        timeout_s: 2,
        retries: 3,
    }
}

fn http(port: u16, path: &str) -> HealthCheck {
    HealthCheck {
        url: Some(format!("http://127.0.0.1:{port}{path}")),
        ..check(HealthCheckType::Http)
    }
}

/// Runs a check, recording the waits instead of sleeping them.
fn run(c: &HealthCheck, dir: &Path) -> (CheckReport, Vec<Duration>) {
    let mut waits = Vec::new();
    let report = health::run_with(c, dir, &mut |d| waits.push(d));
    (report, waits)
}

fn secs(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs(*s)).collect()
}

#[test]
fn http_checks_status_and_body() {
    let Some((_server, port)) = http_server() else {
        return;
    };
    let dir = Path::new("/");

    let (ok, waits) = run(&http(port, "/ok"), dir);
    assert!(ok.passed, "{}", ok.summary());
    assert_eq!((ok.attempts, ok.status), (1, Some(200)));
    assert_eq!(ok.output, None);
    assert!(waits.is_empty());

    let contains = HealthCheck {
        body_contains: Some("ready".into()),
        ..http(port, "/ok")
    };
    assert!(run(&contains, dir).0.passed);

    let missing = HealthCheck {
        body_contains: Some("all systems go".into()),
        ..http(port, "/ok")
    };
    let (r, waits) = run(&missing, dir);
    assert!(!r.passed);
    assert_eq!(r.attempts, 3);
    assert_eq!(waits, secs(&[1, 2]));
    let msg = r.message.as_deref().unwrap();
    assert!(msg.contains("does not contain \"all systems go\""), "{msg}");
    assert_eq!(
        r.output.as_deref(),
        Some("status: ready\n"),
        "the body, to debug"
    );

    let (r, _) = run(&http(port, "/down"), dir);
    assert!(!r.passed);
    assert_eq!(r.status, Some(503));
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("status 503, expected 200"),
        "{r:?}"
    );
    assert_eq!(r.output.as_deref(), Some("database unavailable\n"));
    let summary = r.summary();
    assert!(
        summary.contains("unhealthy after 3 probes") && summary.contains("database unavailable"),
        "{summary}"
    );

    // The expected status is configurable.
    let expect_503 = HealthCheck {
        expect_status: Some(503),
        ..http(port, "/down")
    };
    assert!(run(&expect_503, dir).0.passed);

    // A large body is kept only up to the limit.
    let (r, _) = run(&http(port, "/big"), dir);
    let out = r.output.unwrap();
    assert!(
        out.starts_with("xxxx") && out.len() < OUTPUT_LIMIT + 64,
        "{}",
        out.len()
    );
    assert!(out.ends_with("bytes more)"), "{out}");
}

#[test]
fn http_check_against_a_stopped_server_fails_after_its_retries() {
    let Some((server, port)) = http_server() else {
        return;
    };
    drop(server);
    let c = HealthCheck {
        start_period_s: 4,
        interval_s: 3,
        retries: 5,
        name: Some("api".into()),
        ..http(port, "/ok")
    };
    let (r, waits) = run(&c, Path::new("/"));
    assert!(!r.passed);
    assert_eq!(r.attempts, 5);
    assert_eq!(
        waits,
        secs(&[4, 3, 6, 12, 24]),
        "start period, then doubling capped at 8x"
    );
    assert_eq!(r.status, None);
    let summary = r.summary();
    assert!(
        summary.starts_with("api: unhealthy after 5 probes"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("GET http://127.0.0.1:{port}/ok")),
        "{summary}"
    );
    assert!(summary.to_lowercase().contains("refused"), "{summary}");
}

#[test]
fn tcp_checks_open_and_closed_ports() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = HealthCheck {
        port: Some(listener.local_addr().unwrap().port()),
        ..check(HealthCheckType::Tcp)
    };
    let (r, _) = run(&open, Path::new("/"));
    assert!(r.passed, "{}", r.summary());

    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let closed = HealthCheck {
        port: Some(closed_port),
        retries: 2,
        ..check(HealthCheckType::Tcp)
    };
    let (r, waits) = run(&closed, Path::new("/"));
    assert!(!r.passed);
    assert_eq!((r.attempts, waits), (2, secs(&[1])));
    assert!(
        r.message
            .unwrap()
            .contains(&format!("127.0.0.1:{closed_port}"))
    );
}

#[test]
fn command_checks_exit_status_stderr_and_timeout() {
    let release = tempfile::tempdir().unwrap();
    let dir = release.path();
    std::fs::write(dir.join("marker"), "here").unwrap();
    let cmd = |argv: &[&str]| HealthCheck {
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        retries: 1,
        timeout_s: 1,
        ..check(HealthCheckType::Command)
    };

    // Runs inside the release directory.
    let (r, _) = run(&cmd(&["test", "-f", "marker"]), dir);
    assert!(r.passed, "{}", r.summary());
    assert_eq!(r.exit_code, Some(0));

    let (r, _) = run(
        &cmd(&["sh", "-c", "echo 'queue is stuck' >&2; exit 1"]),
        dir,
    );
    assert!(!r.passed);
    assert_eq!(r.exit_code, Some(1));
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("exited with status 1"),
        "{r:?}"
    );
    assert_eq!(r.output.as_deref(), Some("queue is stuck\n"));

    // A hung check (and the child it started) is killed at the timeout.
    let started = Instant::now();
    let (r, _) = run(&cmd(&["sh", "-c", "sleep 30 & sleep 30"]), dir);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!r.passed);
    assert_eq!(r.exit_code, None);
    assert!(
        r.message.as_deref().unwrap().contains("timed out after 1s"),
        "{r:?}"
    );

    let (r, _) = run(&cmd(&["./no-such-check"]), dir);
    assert!(!r.passed);
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("cannot run ./no-such-check"),
        "{r:?}"
    );
}

#[test]
fn run_all_runs_in_order_and_stops_at_the_first_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ok = HealthCheck {
        port: Some(port),
        ..check(HealthCheckType::Tcp)
    };
    let failing = HealthCheck {
        name: Some("fails".into()),
        command: Some(vec!["false".into()]),
        retries: 1,
        ..check(HealthCheckType::Command)
    };
    let never = HealthCheck {
        name: Some("never runs".into()),
        ..ok.clone()
    };
    let reports = health::run_all(&[ok, failing, never], Path::new("/"));
    assert_eq!(reports.len(), 2);
    assert!(reports[0].passed);
    assert_eq!(reports[1].name, "fails");
    assert!(!reports[1].passed);
    let json = serde_json::to_value(&reports[1]).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["attempts"], 1);
}
