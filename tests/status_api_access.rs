//! Security review, finding 8, on the status API served on a loopback port: a `Host` other
//! than the loopback names (or those allowed) is refused, as a browser tricked by DNS
//! rebinding would send it; with a token configured, callers without it see URLs and paths
//! hidden, and with `token_for_reads` they see nothing but `/healthz`; a client that connects
//! and sends no request is disconnected. Raw HTTP over `std::net::TcpStream`, so every header
//! is exactly what the test writes.

use clarity::ledger::Ledger;
use clarity::model::run::RunRecord;
use clarity::serve::{Access, Metrics, ServeState};
use clarity::watch::WatchStatus;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "tok-access-5b1e";
const RUN: &str = "20261102T090000Z-0000000a";

struct Api {
    addr: std::net::SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn ledger(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ledger.sqlite");
    let run: RunRecord = serde_json::from_value(serde_json::json!({
        "format": "clarity.run/v1",
        "id": RUN,
        "commit": "1".repeat(40),
        "branch": "main",
        "started_at": "2026-11-02T09:00:00Z",
        "finished_at": "2026-11-02T09:01:00Z",
        "trigger": "watch",
        "mode": "apply",
        "outcome": "failed",
        "hosts": [{
            "server": "web1",
            "client": "acme",
            "outcome": "failed",
            "duration_ms": 10,
            "message": "cannot fetch https://artifacts.internal.example/web-1.0.jar into /srv/clarity/cache",
            "deployments": [],
            "steps": []
        }]
    }))
    .unwrap();
    Ledger::open(&path).unwrap().record_run(&run).unwrap();
    path
}

fn start(ledger: &Path, token: Option<&str>, access: Access) -> Api {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let state = Arc::new(ServeState {
        ledger_path: ledger.to_path_buf(),
        metrics: Arc::new(Metrics::new()),
        status: Arc::new(Mutex::new(WatchStatus::default())),
        triggers: tx,
        api_token: token.map(str::to_string),
        webhook_secret: None,
        dashboard: Default::default(),
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(clarity::serve::serve_with(
        listener,
        state,
        access,
        async move {
            let _ = stopped.await;
        },
    ));
    Api {
        addr,
        runtime: Some(runtime),
        stop: Some(stop),
    }
}

impl Api {
    /// `GET path` with the given Host and extra header lines; the status and the body.
    fn get(&self, path: &str, host: &str, extra: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

#[test]
fn only_loopback_and_allowed_host_names_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let api = start(
        &ledger(dir.path()),
        None,
        Access {
            allowed_hosts: vec!["clarity.ops.example".into()],
            token_for_reads: false,
        },
    );
    let port = api.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "clarity.ops.example".into(),
    ] {
        let (status, body) = api.get("/api/v1/runs", &host, "");
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains(RUN), "{body}");
    }
    // A page on rebind.evil.example whose name now resolves to 127.0.0.1.
    for host in [
        format!("rebind.evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
    ] {
        let (status, body) = api.get("/api/v1/runs", &host, "");
        assert_eq!(status, 421, "{host}: {body}");
        assert!(!body.contains(RUN), "{body}");
    }
    let (status, _) = api.get("/metrics", "rebind.evil.example", "");
    assert_eq!(status, 421);
    // Without a token configured nothing is hidden (the API is this machine's only).
    let (_, body) = api.get(&format!("/api/v1/runs/{RUN}"), "localhost", "");
    assert!(
        body.contains("https://artifacts.internal.example/web-1.0.jar"),
        "{body}"
    );
}

#[test]
fn callers_without_the_token_see_no_urls_or_paths_and_reads_can_require_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let api = start(&path, Some(TOKEN), Access::default());
    let (status, body) = api.get(&format!("/api/v1/runs/{RUN}"), "127.0.0.1", "");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("artifacts.internal.example"), "{body}");
    assert!(!body.contains("/srv/clarity"), "{body}");
    assert!(body.contains("cannot fetch (hidden"), "{body}");
    let (_, body) = api.get(&format!("/api/v1/runs/{RUN}"), "127.0.0.1", &bearer);
    assert!(
        body.contains("https://artifacts.internal.example/web-1.0.jar into /srv/clarity/cache"),
        "{body}"
    );
    drop(api);

    let api = start(
        &path,
        Some(TOKEN),
        Access {
            allowed_hosts: Vec::new(),
            token_for_reads: true,
        },
    );
    for route in [
        "/api/v1/runs",
        "/api/v1/hosts",
        "/metrics",
        &format!("/api/v1/runs/{RUN}"),
    ] {
        let (status, body) = api.get(route, "127.0.0.1", "");
        assert_eq!(status, 401, "{route}: {body}");
        assert!(!body.contains(RUN), "{body}");
        let (status, _) = api.get(route, "127.0.0.1", "Authorization: Bearer wrong\r\n");
        assert_eq!(status, 401, "{route}");
        let (status, _) = api.get(route, "127.0.0.1", &bearer);
        assert_eq!(status, 200, "{route}");
    }
    let (status, _) = api.get("/healthz", "127.0.0.1", "");
    assert_eq!(status, 200);
}

#[test]
fn a_client_that_sends_no_request_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let api = start(&ledger(dir.path()), None, Access::default());
    let started = Instant::now();
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // Half a request line, then nothing.
    s.write_all(b"GET /api/v1/ru").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(30),
        "closed after {took:?}"
    );
    // The server still answers others.
    let (status, _) = api.get("/healthz", "localhost", "");
    assert_eq!(status, 200);
}
