//! Notifications end to end: real HTTP receivers on loopback ports (plain `std::net` servers
//! in this file, answering what each test scripts), a real `Notifier` posting to them with
//! short retry delays. A receiver that fails twice with 503 gets the event once it accepts; a
//! 400 is not retried; a receiver that never answers neither blocks `send` nor delays the
//! other targets.

use clarity::model::apply::{Action, StepStatus};
use clarity::model::run::{
    DeploymentRecord, HostRecord, RUN_FORMAT, RunMode, RunOutcome, RunRecord, StepRecord,
};
use clarity::model::{NotifyEvent, NotifyTarget};
use clarity::notify::{Notifier, QUEUE_CAPACITY, Retry, run_payload};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Request {
    at: Instant,
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP server on a loopback port answering request `i` (0-based) with `status(i)`.
struct Target {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Target {
    fn start(status: impl Fn(usize) -> u16 + Send + 'static) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request);
                    seen.len() - 1
                };
                let code = status(n);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} Scripted\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Target { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (or `timeout` passed) and returns them all.
    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.requests();
            if seen.len() >= n || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        at: Instant::now(),
        request_line: request_line.trim_end().to_string(),
        headers,
        body,
    })
}

/// A server that accepts connections, reads what comes, and never answers.
fn hanging_target() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let _ = read_request(&stream);
            held.push(stream);
        }
    });
    url
}

fn target(url: &str, events: &[NotifyEvent]) -> NotifyTarget {
    NotifyTarget {
        url: url.to_string(),
        events: events.to_vec(),
    }
}

const ALL: [NotifyEvent; 4] = [
    NotifyEvent::ApplyFailed,
    NotifyEvent::Rollback,
    NotifyEvent::Drift,
    NotifyEvent::Refused,
];

fn fast_retry(attempts: u32) -> Retry {
    Retry {
        attempts,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    }
}

/// A notifier whose results arrive on the returned channel.
fn notifier(retry: Retry) -> (Notifier, Receiver<bool>) {
    let (tx, rx) = mpsc::channel();
    let n = Notifier::start(retry, move |ok| {
        let _ = tx.send(ok);
    });
    (n, rx)
}

fn failed_run() -> RunRecord {
    let host = |server: &str, outcome: &str, steps: Vec<StepRecord>| HostRecord {
        server: server.into(),
        client: "acme".into(),
        outcome: clarity::model::run::HostOutcome::parse(outcome),
        duration_ms: 900,
        message: (outcome != "converged").then(|| "`billing` failed".to_string()),
        deployments: vec![DeploymentRecord {
            name: "billing".into(),
            profile: "prod".into(),
            version: "1.1.0".into(),
            release: "billing-1.1.0".into(),
            healthy: outcome == "converged",
            health: None,
        }],
        steps,
    };
    let step = |action, status, message: Option<&str>| StepRecord {
        deployment: "billing".into(),
        action,
        target: "billing-1.1.0".into(),
        status,
        duration_ms: 10,
        message: message.map(str::to_string),
        bytes: None,
        repository_kind: None,
        retries: None,
    };
    RunRecord {
        format: RUN_FORMAT.into(),
        id: "20261102T090000Z-0000abcd".into(),
        commit: "1a2b3c4d".repeat(5),
        branch: Some("main".into()),
        started_at: "2026-11-02T09:00:00Z".into(),
        finished_at: "2026-11-02T09:02:05Z".into(),
        trigger: "watch".into(),
        mode: RunMode::Apply,
        outcome: RunOutcome::Failed,
        message: None,
        hosts: vec![
            host(
                "web1",
                "converged",
                vec![step(Action::HealthCheck, StepStatus::Ok, None)],
            ),
            host(
                "web2",
                "rolled_back",
                vec![
                    step(Action::SwitchRelease, StepStatus::Ok, None),
                    step(
                        Action::HealthCheck,
                        StepStatus::Failed,
                        Some("GET http://127.0.0.1:8080/health: HTTP 500"),
                    ),
                ],
            ),
        ],
        rollout: Default::default(),
        kind: Default::default(),
    }
}

#[test]
fn a_failing_target_gets_the_event_once_it_accepts() {
    let flaky = Target::start(|i| if i < 2 { 503 } else { 200 });
    let drift_only = Target::start(|_| 204);
    let (notifier, results) = notifier(fast_retry(5));
    notifier.set_targets(vec![
        target(
            &format!("{}/hooks/clarity?channel=ops", flaky.url),
            &[NotifyEvent::ApplyFailed],
        ),
        target(&drift_only.url, &[NotifyEvent::Drift]),
    ]);
    let run = failed_run();

    notifier.send(NotifyEvent::ApplyFailed, run_payload(&run));
    assert_eq!(results.recv_timeout(Duration::from_secs(10)), Ok(true));
    assert!(
        results.recv_timeout(Duration::from_millis(300)).is_err(),
        "one result for one event and target"
    );

    let seen = flaky.requests();
    assert_eq!(seen.len(), 3, "two 503s, then the 200");
    for r in &seen {
        assert_eq!(r.request_line, "POST /hooks/clarity?channel=ops HTTP/1.1");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("user-agent"),
            Some(concat!("clarity-reconcile/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(r.body, seen[0].body, "every attempt posts the same body");
    }
    // The waits double: 100 ms, then 200 ms.
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(90), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(190), "{gaps:?}");

    let body = seen[2].json();
    let at = body["at"].as_str().unwrap();
    assert!(clarity::clock::parse_rfc3339(at).is_some(), "{at}");
    assert_eq!(
        body,
        json!({
            "event": "apply_failed",
            "at": at,
            "run_id": "20261102T090000Z-0000abcd",
            "commit": "1a2b3c4d".repeat(5),
            "branch": "main",
            "mode": "apply",
            "outcome": "failed",
            "trigger": "watch",
            "started_at": "2026-11-02T09:00:00Z",
            "finished_at": "2026-11-02T09:02:05Z",
            "host_count": 2,
            "host_outcomes": {"converged": 1, "rolled_back": 1},
            "failed_host_count": 1,
            "failed_hosts": [{
                "server": "web2",
                "client": "acme",
                "outcome": "rolled_back",
                "message": "`billing` failed",
                "failed_step": {
                    "deployment": "billing",
                    "action": "health_check",
                    "target": "billing-1.1.0",
                    "message": "GET http://127.0.0.1:8080/health: HTTP 500",
                },
            }],
        })
    );
    assert!(
        drift_only.requests().is_empty(),
        "a target gets only the events it subscribed to"
    );

    notifier.send(NotifyEvent::Drift, json!({"findings": 3}));
    assert_eq!(results.recv_timeout(Duration::from_secs(10)), Ok(true));
    let drift = drift_only.requests();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].json()["event"], "drift");
    assert_eq!(drift[0].json()["findings"], 3);
    assert_eq!(flaky.requests().len(), 3);

    // Targets removed from clarity.yml get nothing more.
    notifier.set_targets(Vec::new());
    notifier.send(NotifyEvent::Drift, json!({}));
    notifier.send(NotifyEvent::ApplyFailed, json!({}));
    assert!(results.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(drift_only.requests().len(), 1);
    assert_eq!(notifier.dropped(), 0);
}

#[test]
fn a_4xx_is_not_retried() {
    let refusing = Target::start(|_| 400);
    let (notifier, results) = notifier(fast_retry(5));
    notifier.set_targets(vec![target(&refusing.url, &ALL)]);
    notifier.send(NotifyEvent::Refused, json!({"message": "unsigned commit"}));
    assert_eq!(results.recv_timeout(Duration::from_secs(10)), Ok(false));
    std::thread::sleep(Duration::from_millis(400));
    let seen = refusing.requests();
    assert_eq!(seen.len(), 1, "a 400 is final");
    assert_eq!(seen[0].json()["event"], "refused");
    assert_eq!(seen[0].json()["message"], "unsigned commit");
}

#[test]
fn retries_stop_after_the_last_attempt() {
    let down = Target::start(|_| 502);
    // A port nobody listens on: the connection is refused, which is worth retrying too.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let (notifier, results) = notifier(Retry {
        attempts: 3,
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(40),
        timeout: Duration::from_secs(5),
    });
    notifier.set_targets(vec![target(&down.url, &ALL), target(&closed, &ALL)]);
    notifier.send(NotifyEvent::Rollback, json!({}));
    assert_eq!(results.recv_timeout(Duration::from_secs(10)), Ok(false));
    assert_eq!(results.recv_timeout(Duration::from_secs(10)), Ok(false));
    assert_eq!(down.wait_for(3, Duration::from_secs(1)).len(), 3);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(down.requests().len(), 3, "three attempts in all");
}

#[test]
fn a_hanging_target_blocks_neither_send_nor_the_other_targets() {
    let hanging = hanging_target();
    let healthy = Target::start(|_| 200);
    let (notifier, results) = notifier(Retry {
        attempts: 2,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
    });
    notifier.set_targets(vec![target(&hanging, &ALL), target(&healthy.url, &ALL)]);

    let started = Instant::now();
    for i in 0..20 {
        notifier.send(NotifyEvent::Drift, json!({ "n": i }));
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "send returns at once: {:?}",
        started.elapsed()
    );
    // The hanging target needs about a second per event; the healthy one gets all of them
    // long before that, in order.
    let seen = healthy.wait_for(20, Duration::from_secs(3));
    assert_eq!(seen.len(), 20);
    let order: Vec<i64> = seen
        .iter()
        .map(|r| r.json()["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The hanging target's queue fills: what does not fit is dropped, reported and counted,
    // still without blocking.
    let started = Instant::now();
    for i in 0..(QUEUE_CAPACITY + 100) {
        notifier.send(NotifyEvent::Drift, json!({ "n": 100 + i }));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(notifier.dropped() >= 100, "dropped {}", notifier.dropped());
    let failures = std::iter::from_fn(|| results.recv_timeout(Duration::from_millis(500)).ok())
        .filter(|ok| !ok)
        .count();
    assert!(failures as u64 >= 100, "{failures} failures reported");
}
