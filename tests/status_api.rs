//! The status API end to end: a real ledger file with apply and drift runs, `serve` on a
//! loopback port in a tokio runtime, and every route called over real HTTP (ureq). Also the
//! token and webhook checks, the triggers they send to the loop, `/metrics` after observed
//! runs, and `docs/api.openapi.yaml` against the router's route list.

use clarity::ledger::Ledger;
use clarity::model::apply::{Action, StepStatus};
use clarity::model::run::{
    DeploymentRecord, DriftFinding, HostRecord, RUN_FORMAT, RunMode, RunOutcome, RunRecord,
    StepRecord,
};
use clarity::serve::{Metrics, ROUTES, ServeState};
use clarity::watch::{Trigger, WatchStatus};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const TOKEN: &str = "tok-3f9a1c-not-a-real-token";
const SECRET: &str = "hook-secret-77c2";

const APPLY_1: &str = "20261101T090000Z-00000001";
const APPLY_2: &str = "20261102T090000Z-00000002";
const DRIFT_3: &str = "20261103T090000Z-00000003";

fn step(
    deployment: &str,
    action: Action,
    status: StepStatus,
    duration_ms: u64,
    bytes: Option<u64>,
) -> StepRecord {
    StepRecord {
        deployment: deployment.into(),
        action,
        target: format!("{deployment}-target"),
        status,
        duration_ms,
        message: (status == StepStatus::Failed).then(|| "HTTP 500 from /health".to_string()),
        bytes,
        repository_kind: (action == Action::FetchArtifact).then(|| "http".into()),
        retries: (action == Action::FetchArtifact).then_some(1),
    }
}

fn dep(name: &str, version: &str, healthy: bool) -> DeploymentRecord {
    DeploymentRecord {
        name: name.into(),
        profile: "prod".into(),
        version: version.into(),
        release: format!("{name}-{version}"),
        healthy,
        health: None,
    }
}

fn host(
    server: &str,
    client: &str,
    outcome: &str,
    deployments: Vec<DeploymentRecord>,
    steps: Vec<StepRecord>,
) -> HostRecord {
    HostRecord {
        server: server.into(),
        client: client.into(),
        outcome: clarity::model::run::HostOutcome::parse(outcome),
        duration_ms: 1500,
        message: (outcome != "converged" && outcome != "unchanged")
            .then(|| format!("{server} did not converge")),
        deployments,
        steps,
    }
}

fn run(id: &str, mode: RunMode, outcome: RunOutcome, hosts: Vec<HostRecord>) -> RunRecord {
    // Ids start with the start time: YYYYMMDDTHHMMSSZ.
    let started = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &id[0..4],
        &id[4..6],
        &id[6..8],
        &id[9..11],
        &id[11..13],
        &id[13..15]
    );
    let finished = started.replace(":00:00Z", ":02:05Z");
    RunRecord {
        format: RUN_FORMAT.into(),
        id: id.into(),
        commit: format!("{:0<40}", &id[id.len() - 1..]),
        branch: Some("main".into()),
        started_at: started,
        finished_at: finished,
        trigger: "watch".into(),
        mode,
        outcome,
        message: None,
        hosts,
        rollout: Default::default(),
        kind: Default::default(),
    }
}

fn apply_1() -> RunRecord {
    let steps = |d: &str| {
        vec![
            step(d, Action::FetchArtifact, StepStatus::Ok, 500, Some(1000)),
            step(d, Action::SwitchRelease, StepStatus::Ok, 10, None),
            step(d, Action::HealthCheck, StepStatus::Ok, 200, None),
        ]
    };
    run(
        APPLY_1,
        RunMode::Apply,
        RunOutcome::Success,
        vec![
            host(
                "web1",
                "acme",
                "converged",
                vec![dep("billing", "1.0.0", true)],
                steps("billing"),
            ),
            host(
                "web2",
                "acme",
                "converged",
                vec![dep("billing", "1.0.0", true)],
                steps("billing"),
            ),
        ],
    )
}

/// web1 converges to 1.1.0; web2 fails its health check and is rolled back to 1.0.0; db1 is
/// unreachable.
fn apply_2() -> RunRecord {
    run(
        APPLY_2,
        RunMode::Apply,
        RunOutcome::Failed,
        vec![
            host(
                "web1",
                "acme",
                "converged",
                vec![dep("billing", "1.1.0", true)],
                vec![
                    step(
                        "billing",
                        Action::FetchArtifact,
                        StepStatus::Ok,
                        1500,
                        Some(4096),
                    ),
                    step("billing", Action::HealthCheck, StepStatus::Ok, 100, None),
                ],
            ),
            host(
                "web2",
                "acme",
                "rolled_back",
                vec![dep("billing", "1.0.0", true)],
                vec![
                    step(
                        "billing",
                        Action::FetchArtifact,
                        StepStatus::Ok,
                        250,
                        Some(4096),
                    ),
                    step(
                        "billing",
                        Action::HealthCheck,
                        StepStatus::Failed,
                        3000,
                        None,
                    ),
                ],
            ),
            host("db1", "globex", "unreachable", Vec::new(), Vec::new()),
        ],
    )
}

fn drift_3() -> (RunRecord, Vec<DriftFinding>) {
    let record = run(
        DRIFT_3,
        RunMode::Drift,
        RunOutcome::Success,
        vec![
            host("web1", "acme", "unchanged", Vec::new(), Vec::new()),
            host("web2", "acme", "unchanged", Vec::new(), Vec::new()),
        ],
    );
    let finding = |server: &str, kind: &str, detail: &str| DriftFinding {
        server: server.into(),
        client: "acme".into(),
        deployment: "billing".into(),
        kind: kind.into(),
        detail: detail.into(),
    };
    let findings = vec![
        finding("web1", "file_modified", "/etc/billing/app.conf differs"),
        finding("web2", "service_stopped", "billing.service is inactive"),
        finding("web2", "file_modified", "/etc/billing/env differs"),
    ];
    (record, findings)
}

fn make_ledger(dir: &Path) -> PathBuf {
    let path = dir.join("ledger.sqlite");
    let mut ledger = Ledger::open(&path).unwrap();
    ledger.record_run(&apply_1()).unwrap();
    ledger.record_run(&apply_2()).unwrap();
    let (drift, findings) = drift_3();
    ledger.record_drift(&drift, &findings).unwrap();
    path
}

/// `serve` on 127.0.0.1:0 in a runtime of its own, stopped (gracefully) on drop.
struct Api {
    base: String,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    triggers: Option<UnboundedReceiver<Trigger>>,
    metrics: Arc<Metrics>,
    agent: ureq::Agent,
}

struct Answer {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Api {
    fn start(ledger_path: &Path, api_token: Option<&str>, webhook_secret: Option<&str>) -> Api {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(ServeState {
            ledger_path: ledger_path.to_path_buf(),
            metrics: metrics.clone(),
            status: Arc::new(Mutex::new(WatchStatus {
                started_at: "2026-11-01T08:00:00Z".into(),
                busy: Some("reconcile main@1a2b3c4d".into()),
                last_run: Some(DRIFT_3.into()),
                stopping: false,
            })),
            triggers: tx,
            api_token: api_token.map(str::to_string),
            webhook_secret: webhook_secret.map(str::to_string),
            dashboard: Default::default(),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(clarity::serve::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .proxy(None)
            .build()
            .new_agent();
        Api {
            base,
            runtime,
            stop: Some(stop),
            served: Some(served),
            triggers: Some(rx),
            metrics,
            agent,
        }
    }

    fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let www_authenticate = header("www-authenticate");
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .unwrap();
        Answer {
            status: response.status().as_u16(),
            content_type,
            www_authenticate,
            body,
        }
    }

    fn get(&self, path: &str) -> Answer {
        Self::answer(
            self.agent
                .get(&format!("{}{path}", self.base))
                .call()
                .unwrap(),
        )
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = self.agent.post(&format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::answer(request.send(body).unwrap())
    }

    fn triggers(&mut self) -> Vec<Trigger> {
        let rx = self.triggers.as_mut().expect("receiver kept");
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Stops the server and waits for `serve` to return.
    fn shut_down(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = self.served.take().expect("not shut down yet");
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await })
            .expect("serve returns within 10 s of the shutdown signal")
            .expect("the serve task did not panic")
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if self.served.is_some() {
            let _ = self.shut_down();
        }
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn health_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&make_ledger(tmp.path()), None, None);

    let health = api.get("/healthz");
    assert_eq!(health.status, 200);
    assert!(health.content_type.starts_with("application/json"));
    assert_eq!(
        health.json(),
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": "2026-11-01T08:00:00Z",
            "busy": "reconcile main@1a2b3c4d",
            "last_run": DRIFT_3,
            "stopping": false,
        })
    );

    let runs = api.get("/api/v1/runs");
    assert_eq!(runs.status, 200);
    let v = runs.json();
    assert_eq!(ids(&v), [DRIFT_3, APPLY_2, APPLY_1], "newest first");
    let r2 = &v["runs"][1];
    assert_eq!(r2["commit"], format!("{:0<40}", "2"));
    assert_eq!(r2["branch"], "main");
    assert_eq!(r2["started_at"], "2026-11-02T09:00:00Z");
    assert_eq!(r2["finished_at"], "2026-11-02T09:02:05Z");
    assert_eq!(r2["trigger"], "watch");
    assert_eq!(r2["mode"], "apply");
    assert_eq!(r2["outcome"], "failed");
    assert_eq!(r2["host_count"], 3);
    assert_eq!(r2["drift_findings"], 0);
    assert_eq!(r2["hosts"][1]["server"], "web2");
    assert_eq!(r2["hosts"][1]["client"], "acme");
    assert_eq!(r2["hosts"][1]["outcome"], "rolled_back");
    assert_eq!(r2["hosts"][1]["message"], "web2 did not converge");
    assert_eq!(
        r2["hosts"][1]["deployments"],
        json!([{"name": "billing", "profile": "prod", "version": "1.0.0",
                "release": "billing-1.0.0", "healthy": true}])
    );
    assert_eq!(v["runs"][0]["mode"], "drift");
    assert_eq!(v["runs"][0]["drift_findings"], 3);

    assert_eq!(ids(&api.get("/api/v1/runs?limit=1").json()), [DRIFT_3]);
    assert_eq!(
        ids(&api.get("/api/v1/runs?client=globex").json()),
        [APPLY_2]
    );
    let by_server = api
        .get("/api/v1/runs?server=web2&deployment=billing")
        .json();
    assert_eq!(ids(&by_server), [APPLY_2, APPLY_1]);
    assert_eq!(by_server["runs"][0]["host_count"], 3);
    assert_eq!(
        by_server["runs"][0]["hosts"].as_array().unwrap().len(),
        1,
        "only the matching host is listed"
    );
    assert_eq!(
        ids(&api.get("/api/v1/runs?since=2026-11-02").json()),
        [DRIFT_3, APPLY_2]
    );
    // 10:30 at +02:00 is 08:30 UTC, before the second run started.
    assert_eq!(
        ids(&api
            .get("/api/v1/runs?since=2026-11-02T10:30:00%2B02:00")
            .json()),
        [DRIFT_3, APPLY_2]
    );
    assert_eq!(
        ids(&api.get("/api/v1/runs?since=2026-11-02T09:00:01Z").json()),
        [DRIFT_3]
    );
    assert_eq!(
        ids(&api.get("/api/v1/runs?client=nobody").json()),
        Vec::<String>::new()
    );

    for bad in [
        "/api/v1/runs?limit=0",
        "/api/v1/runs?limit=5000",
        "/api/v1/runs?limit=many",
        "/api/v1/runs?since=yesterday",
    ] {
        let a = api.get(bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.json()["error"].is_string(), "{bad}: {}", a.body);
    }
}

#[test]
fn one_run_hosts_deployments_and_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&make_ledger(tmp.path()), None, None);

    let one = api.get(&format!("/api/v1/runs/{APPLY_2}"));
    assert_eq!(one.status, 200);
    let v = one.json();
    let expected: Value = serde_json::to_value(apply_2()).unwrap();
    assert_eq!(v["run"], expected, "the whole record, exactly as recorded");
    assert_eq!(v["drift_findings"], json!([]));
    let drift = api.get(&format!("/api/v1/runs/{DRIFT_3}")).json();
    assert_eq!(drift["run"]["mode"], "drift");
    assert_eq!(
        drift["drift_findings"],
        serde_json::to_value(drift_3().1).unwrap()
    );

    let missing = api.get("/api/v1/runs/20991231T000000Z-deadbeef");
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"error": "no run with id `20991231T000000Z-deadbeef`"})
    );

    let hosts = api.get("/api/v1/hosts");
    assert_eq!(hosts.status, 200);
    let v = hosts.json();
    let names: Vec<&str> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["server"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db1", "web1", "web2"]);
    assert_eq!(
        v["hosts"][0],
        json!({
            "server": "db1",
            "client": "globex",
            "last_run": {"id": APPLY_2, "mode": "apply", "finished_at": "2026-11-02T09:02:05Z",
                         "outcome": "unreachable", "message": "db1 did not converge"},
            "drift_findings": 0,
            "deployments": [],
        })
    );
    assert_eq!(
        v["hosts"][1],
        json!({
            "server": "web1",
            "client": "acme",
            "last_run": {"id": DRIFT_3, "mode": "drift", "finished_at": "2026-11-03T09:02:05Z",
                         "outcome": "unchanged"},
            "drift_findings": 1,
            "deployments": [{
                "deployment": "billing", "profile": "prod", "version": "1.1.0",
                "release": "billing-1.1.0", "healthy": true,
                "since": "2026-11-02T09:02:05Z", "run_id": APPLY_2,
            }],
        })
    );
    assert_eq!(v["hosts"][2]["drift_findings"], 2);

    let web2 = api.get("/api/v1/hosts/web2");
    assert_eq!(web2.status, 200);
    let web2 = web2.json();
    assert_eq!(web2, v["hosts"][2]);
    assert_eq!(web2["deployments"][0]["version"], "1.0.0");
    // web2 was rolled back to the release it ran: its `since` is the first run's.
    assert_eq!(web2["deployments"][0]["since"], "2026-11-01T09:02:05Z");
    assert_eq!(web2["deployments"][0]["run_id"], APPLY_2);
    let nobody = api.get("/api/v1/hosts/nobody");
    assert_eq!(nobody.status, 404);
    assert!(nobody.json()["error"].as_str().unwrap().contains("nobody"));

    let deployments = api.get("/api/v1/deployments");
    assert_eq!(deployments.status, 200);
    assert_eq!(
        deployments.json(),
        json!({"deployments": [{
            "client": "acme",
            "deployment": "billing",
            "profile": "prod",
            "versions": ["1.0.0", "1.1.0"],
            "healthy": true,
            "hosts": [
                {"server": "web1", "version": "1.1.0", "release": "billing-1.1.0", "healthy": true,
                 "since": "2026-11-02T09:02:05Z", "run_id": APPLY_2},
                {"server": "web2", "version": "1.0.0", "release": "billing-1.0.0", "healthy": true,
                 "since": "2026-11-01T09:02:05Z", "run_id": APPLY_2},
            ],
        }]})
    );

    let drift = api.get("/api/v1/drift");
    assert_eq!(drift.status, 200);
    assert_eq!(
        drift.json(),
        json!({
            "run": {
                "id": DRIFT_3, "commit": format!("{:0<40}", "3"), "branch": "main",
                "started_at": "2026-11-03T09:00:00Z", "finished_at": "2026-11-03T09:02:05Z",
                "trigger": "watch", "mode": "drift", "outcome": "success", "host_count": 2,
            },
            "findings": serde_json::to_value(drift_3().1).unwrap(),
        })
    );

    let unknown = api.get("/api/v2/everything");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json(), json!({"error": "no such route"}));
    assert_eq!(api.post("/api/v1/runs", &[], b"").status, 405);
}

#[test]
fn a_missing_ledger_reads_as_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state/ledger.sqlite");
    let api = Api::start(&path, None, None);
    assert_eq!(api.get("/api/v1/runs").json(), json!({"runs": []}));
    assert_eq!(api.get("/api/v1/hosts").json(), json!({"hosts": []}));
    assert_eq!(
        api.get("/api/v1/deployments").json(),
        json!({"deployments": []})
    );
    assert_eq!(
        api.get("/api/v1/drift").json(),
        json!({"run": null, "findings": []})
    );
    assert_eq!(api.get(&format!("/api/v1/runs/{APPLY_1}")).status, 404);
    assert_eq!(api.get("/api/v1/hosts/web1").status, 404);
    assert!(!path.exists(), "reading never creates a ledger");
}

#[test]
fn an_unreadable_ledger_is_a_500_that_names_no_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secret-dir-name/ledger.sqlite");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "this is not a database, it is a shopping list\n".repeat(200),
    )
    .unwrap();
    let api = Api::start(&path, None, None);
    let a = api.get("/api/v1/runs");
    assert_eq!(a.status, 500);
    assert!(a.json()["error"].is_string());
    assert!(!a.body.contains("secret-dir-name"), "{}", a.body);
}

#[test]
fn reconcile_needs_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger.sqlite");

    let mut off = Api::start(&ledger, None, None);
    let a = off.post(
        "/api/v1/reconcile",
        &[("authorization", "Bearer anything")],
        b"",
    );
    assert_eq!(a.status, 403);
    assert!(a.json()["error"].as_str().unwrap().contains("disabled"));
    assert!(off.triggers().is_empty());

    let mut api = Api::start(&ledger, Some(TOKEN), None);
    let wrong_token = format!("Bearer {TOKEN}x");
    for (headers, what) in [
        (vec![], "no header"),
        (vec![("authorization", "Bearer wrong")], "wrong token"),
        (
            vec![("authorization", wrong_token.as_str())],
            "token plus one",
        ),
        (
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            "another scheme",
        ),
        (vec![("x-api-token", TOKEN)], "the token in another header"),
    ] {
        let a = api.post("/api/v1/reconcile", &headers, b"");
        assert_eq!(a.status, 401, "{what}");
        assert!(
            a.www_authenticate
                .as_deref()
                .unwrap_or("")
                .starts_with("Bearer"),
            "{what}: {:?}",
            a.www_authenticate
        );
        assert!(a.json()["error"].is_string(), "{what}");
        assert!(!a.body.contains(TOKEN), "{what}: the token is never echoed");
    }
    assert!(api.triggers().is_empty(), "no trigger without the token");

    let bearer = format!("Bearer {TOKEN}");
    let a = api.post("/api/v1/reconcile", &[("authorization", &bearer)], b"");
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(
        a.json(),
        json!({"status": "accepted", "trigger": "reconcile"})
    );
    let lower = format!("bearer {TOKEN}");
    assert_eq!(
        api.post("/api/v1/reconcile", &[("authorization", &lower)], b"")
            .status,
        202,
        "the scheme is case-insensitive"
    );
    assert_eq!(
        api.triggers(),
        vec![
            Trigger::Reconcile {
                reason: "api".into()
            };
            2
        ]
    );

    // A loop that stopped listening: the request cannot be taken.
    drop(api.triggers.take());
    let a = api.post("/api/v1/reconcile", &[("authorization", &bearer)], b"");
    assert_eq!(a.status, 503);
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn git_hook_verifies_github_and_gitlab_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger.sqlite");
    let body = br#"{"ref":"refs/heads/main","after":"1a2b3c4d"}"#;

    let mut off = Api::start(&ledger, Some(TOKEN), None);
    let sig = github_signature(SECRET, body);
    let a = off.post("/hooks/git", &[("x-hub-signature-256", &sig)], body);
    assert_eq!(a.status, 404, "no secret, no hook");
    assert!(off.triggers().is_empty());

    let mut api = Api::start(&ledger, None, Some(SECRET));
    let push = [
        ("x-github-event", "push"),
        ("content-type", "application/json"),
    ];
    let signed = |sig: &str| {
        let mut h = push.to_vec();
        h.push(("x-hub-signature-256", sig));
        h.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let post = |api: &Api, headers: &[(String, String)], body: &[u8]| {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        api.post("/hooks/git", &h, body)
    };

    let a = post(&api, &signed(&sig), body);
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json(), json!({"status": "accepted", "trigger": "fetch"}));
    assert_eq!(
        api.triggers(),
        [Trigger::Fetch {
            reason: "webhook".into()
        }]
    );

    let wrong_key = github_signature("another secret", body);
    let other_body = github_signature(SECRET, b"{}");
    let upper = sig.to_uppercase().replace("SHA256=", "sha256=");
    for (headers, what) in [
        (signed(&wrong_key), "signed with another secret"),
        (signed(&other_body), "signature of another body"),
        (signed("sha256=00"), "a short digest"),
        (signed("sha256=not-hex"), "not hex"),
        (
            signed(&sig.replace("sha256=", "sha1=")),
            "another algorithm",
        ),
        (
            vec![("x-gitlab-token".to_string(), "wrong".to_string())],
            "wrong GitLab token",
        ),
        (Vec::new(), "no signature at all"),
    ] {
        let a = post(&api, &headers, body);
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert!(a.json()["error"].is_string(), "{what}");
        assert!(
            !a.body.contains(SECRET),
            "{what}: the secret is never echoed"
        );
    }
    assert!(api.triggers().is_empty(), "no trigger from a bad signature");
    assert_eq!(
        post(&api, &signed(&upper), body).status,
        202,
        "hex digits in either case"
    );

    let gitlab = [("x-gitlab-event", "Push Hook"), ("x-gitlab-token", SECRET)];
    let a = api.post("/hooks/git", &gitlab, body);
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(api.triggers().len(), 2);

    // GitHub's ping when a hook is created: answered, but nothing to fetch.
    let ping = br#"{"zen":"Keep it logically awesome."}"#;
    let ping_sig = github_signature(SECRET, ping);
    let a = api.post(
        "/hooks/git",
        &[
            ("x-github-event", "ping"),
            ("x-hub-signature-256", &ping_sig),
        ],
        ping,
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!({"status": "pong"}));
    assert!(api.triggers().is_empty());

    // Over the body limit: refused before any signature work, signed or not.
    let big = vec![b'x'; clarity::serve::WEBHOOK_BODY_LIMIT + 1];
    let big_sig = github_signature(SECRET, &big);
    let a = api.post("/hooks/git", &[("x-hub-signature-256", &big_sig)], &big);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.json()["error"].is_string());
    assert!(api.triggers().is_empty());
}

#[test]
fn metrics_show_observed_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&tmp.path().join("ledger.sqlite"), None, None);
    api.metrics.observe_run(&apply_1(), &[]);
    api.metrics.observe_run(&apply_2(), &[]);
    let (drift, findings) = drift_3();
    api.metrics.observe_run(&drift, &findings);
    api.metrics.set_last_applied("main", 1_793_000_000);
    api.metrics.observe_refusal("main");
    api.metrics.observe_refusal("main");
    api.metrics.observe_notification(true);
    api.metrics.observe_notification(false);
    api.metrics.observe_notification(true);

    let m = api.get("/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(m.content_type, "text/plain; version=0.0.4; charset=utf-8");
    let lines: Vec<&str> = m.body.lines().collect();
    for expected in [
        "clarity_reconcile_runs_total{mode=\"apply\",outcome=\"failed\"} 1",
        "clarity_reconcile_runs_total{mode=\"apply\",outcome=\"success\"} 1",
        "clarity_reconcile_runs_total{mode=\"drift\",outcome=\"success\"} 1",
        // Each run took 2 min 5 s.
        "clarity_reconcile_run_duration_seconds_bucket{mode=\"apply\",le=\"120\"} 0",
        "clarity_reconcile_run_duration_seconds_bucket{mode=\"apply\",le=\"300\"} 2",
        "clarity_reconcile_run_duration_seconds_bucket{mode=\"apply\",le=\"+Inf\"} 2",
        "clarity_reconcile_run_duration_seconds_sum{mode=\"apply\"} 250",
        "clarity_reconcile_run_duration_seconds_count{mode=\"apply\"} 2",
        "clarity_deployment_applies_total{deployment=\"billing\",outcome=\"converged\"} 3",
        "clarity_deployment_applies_total{deployment=\"billing\",outcome=\"rolled_back\"} 1",
        "clarity_artifact_download_bytes_total 10192",
        "clarity_artifact_download_seconds_total 2.75",
        "clarity_repository_download_bytes_total{kind=\"http\"} 10192",
        "clarity_repository_download_seconds_total{kind=\"http\"} 2.75",
        "clarity_repository_download_retries_total{kind=\"http\"} 4",
        "clarity_health_check_failures_total{deployment=\"billing\"} 1",
        "clarity_rollbacks_total{deployment=\"billing\",outcome=\"rolled_back\"} 1",
        "clarity_drift_findings{kind=\"file_modified\"} 2",
        "clarity_drift_findings{kind=\"service_stopped\"} 1",
        // The newest run (the drift run) reached every host.
        "clarity_hosts_unreachable 0",
        "clarity_last_applied_commit_timestamp_seconds{branch=\"main\"} 1793000000",
        "clarity_refused_commits_total{branch=\"main\"} 2",
        "clarity_notifications_sent_total 2",
        "clarity_notifications_failed_total 1",
        "# TYPE clarity_reconcile_run_duration_seconds histogram",
        "# TYPE clarity_drift_findings gauge",
        "# TYPE clarity_refused_commits_total counter",
    ] {
        assert!(
            lines.contains(&expected),
            "missing `{expected}` in\n{}",
            m.body
        );
    }
    assert!(
        lines.contains(
            &format!(
                "clarity_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        )
    );

    // After the apply run with db1 unreachable, the gauge said 1; a clean drift run resets it.
    let fresh = Metrics::new();
    fresh.observe_run(&apply_2(), &[]);
    assert!(fresh.render().contains("\nclarity_hosts_unreachable 1\n"));
    // A newer drift run without findings keeps the kinds, at 0.
    let (mut later, _) = drift_3();
    later.id = "20261104T090000Z-00000004".into();
    api.metrics.observe_run(&later, &[]);
    let body = api.get("/metrics").body;
    assert!(
        body.contains("\nclarity_drift_findings{kind=\"file_modified\"} 0\n"),
        "{body}"
    );
}

#[test]
fn serve_returns_after_a_graceful_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let mut api = Api::start(&tmp.path().join("ledger.sqlite"), None, None);
    assert_eq!(api.get("/healthz").status, 200);
    api.shut_down().expect("serve ends with Ok");
    let refused = api.agent.get(&format!("{}/healthz", api.base)).call();
    assert!(refused.is_err(), "nothing listens after the shutdown");
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.openapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "OpenAPI 3.1"
    );
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, operation) in item.as_object().unwrap() {
            if HTTP_METHODS.contains(&key.as_str()) {
                documented.push((key.to_uppercase(), path.clone()));
                assert!(
                    operation["responses"].is_object(),
                    "{key} {path} documents its responses"
                );
                assert!(
                    operation["summary"].is_string(),
                    "{key} {path} has a summary"
                );
            }
        }
    }
    documented.sort();
    let mut routed: Vec<(String, String)> = ROUTES
        .iter()
        .chain(clarity::serve::dashboard::ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routed.sort();
    assert_eq!(
        documented, routed,
        "docs/api.openapi.yaml and serve::ROUTES + dashboard::ROUTES differ"
    );

    // Every $ref points at a schema that exists.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .or_else(|| r.strip_prefix("#/components/responses/"))
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        let found = schemas.contains_key(name)
            || doc["components"]["responses"]
                .as_object()
                .is_some_and(|m| m.contains_key(name));
        assert!(found, "$ref {r} points nowhere");
    }

    // The /metrics description lists every series.
    let metrics = doc["paths"]["/metrics"]["get"]["description"]
        .as_str()
        .unwrap();
    for (name, _, _) in clarity::serve::metrics::SERIES {
        assert!(metrics.contains(name), "/metrics description lacks {name}");
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
