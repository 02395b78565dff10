//! The dashboard end to end. Its ledger is written by real runs of the real binary on the
//! example repository's `mock` profile (sandboxes with real services): an apply that
//! converges, a commit whose health check fails on one host (with output holding `<script>`,
//! quotes and Unicode) and cannot be restored, and a drift check after a hand edit. Pages are
//! snapshotted, escaping, the CSP and the token option are checked over HTTP, and headless
//! Chromium (WebDriver through chromedriver) loads each page, checks the DOM and saves the
//! screenshots docs/dashboard.md shows. A second test runs `--watch` and sees a pushed commit
//! reach an open fleet page through Server-Sent Events, without a reload. Two more write
//! records by hand into a real ledger, for what real runs here cannot produce cheaply: names
//! that are HTML, a refused commit, a halted rollout, stale hosts.

mod support;

use clarity::ledger::{Ledger, RunFilter};
use clarity::model::run::{HostRecord, RUN_FORMAT, RunMode, RunOutcome, RunRecord};
use clarity::serve::{Metrics, ServeState, dashboard};
use clarity::watch::WatchStatus;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MOCK_HOSTS: [&str; 4] = [
    "nt-sbx-mon01",
    "nt-sbx-sms01",
    "sw-sbx-mon01",
    "sw-sbx-sms01",
];
/// The ports the example's mock deployments listen on; each test gets free ones instead, so
/// that it never meets another test's (or a demo's) services.
const MOCK_PORTS: [u16; 6] = [18080, 18081, 18090, 18091, 18070, 18071];
const TOKEN: &str = "dashboard-token-for-tests";

/// A copy of the example repository in git, with free ports, and a work directory.
struct MockFleet {
    dir: tempfile::TempDir,
    repo: PathBuf,
    work: PathBuf,
    /// Free port → the example's port, to write snapshots in the example's terms.
    ports: BTreeMap<u16, u16>,
    commits: Vec<String>,
}

impl MockFleet {
    fn new() -> Option<MockFleet> {
        support::require_program("git")?;
        support::require_program("python3")?;
        support::require_program("java")?;
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("config");
        let work = dir.path().join("work");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        support::copy_dir(&root.join("example-config-repo"), &repo);
        let mut ports = BTreeMap::new();
        let mut taken = Vec::new();
        for p in MOCK_PORTS {
            let free = loop {
                let f = support::free_port();
                if !taken.contains(&f) && !MOCK_PORTS.contains(&f) {
                    break f;
                }
            };
            taken.push(free);
            ports.insert(free, p);
        }
        for client in ["nordtel", "sunwave"] {
            for d in ["smsgateway", "monitoring-stack", "sip-probe"] {
                let f = repo.join(format!("clients/{client}/deployments/{d}/mock.yml"));
                let mut text = std::fs::read_to_string(&f).unwrap();
                for (free, example) in &ports {
                    text = text.replace(&example.to_string(), &free.to_string());
                }
                std::fs::write(&f, text).unwrap();
            }
        }
        support::git(&repo, &["init", "-q"]);
        support::git(&repo, &["add", "-A"]);
        support::git(&repo, &["commit", "-qm", "the example fleet"]);
        let head = support::git(&repo, &["rev-parse", "HEAD"])
            .trim()
            .to_string();
        Some(MockFleet {
            dir,
            repo,
            work,
            ports,
            commits: vec![head],
        })
    }

    fn commit(&mut self, file: &str, edit: impl Fn(String) -> String, message: &str) {
        let path = self.repo.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
        support::git(&self.repo, &["commit", "-qam", message]);
        let head = support::git(&self.repo, &["rev-parse", "HEAD"])
            .trim()
            .to_string();
        self.commits.push(head);
    }

    fn clarity(&self, args: &[&str]) -> std::process::Output {
        Command::new(support::clarity_bin())
            .args(args)
            .arg("--repo")
            .arg(&self.repo)
            .arg("--work-dir")
            .arg(&self.work)
            .args(["--profile", "mock"])
            .env("CLARITY_AGE_IDENTITY", self.repo.join("demo-mock.agekey"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    /// The free port standing in for the example's `port`.
    fn port_of(&self, port: u16) -> u16 {
        *self.ports.iter().find(|(_, p)| **p == port).unwrap().0
    }

    fn ledger(&self) -> PathBuf {
        self.work.join("ledger.sqlite")
    }
}

impl Drop for MockFleet {
    fn drop(&mut self) {
        // The sandbox services lead their own process groups; their pidfiles name them.
        for host in MOCK_HOSTS {
            let run = self
                .work
                .join(format!("sandboxes/{host}/var/lib/clarity/run"));
            for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if let Some(pid) = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
        let _ = &self.dir;
    }
}

/// Three real runs: all converge; then sw-sbx-mon01's sip-probe gets a health check that
/// always fails (printing hostile text) and cannot be restored; then a drift check finds a
/// hand-edited file on nt-sbx-mon01, and on nt-sbx-sms01 a stopped gateway whose port another
/// process (returned, still running) took.
fn real_runs() -> Option<(MockFleet, support::Server)> {
    let mut f = MockFleet::new()?;
    let out = f.clarity(&[]);
    assert!(
        out.status.success(),
        "first apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    f.commit(
        "clients/sunwave/deployments/sip-probe/mock.yml",
        |t| {
            t.replace("interval_s: 5", "interval_s: 7")
                .replace(
                    "config_files:",
                    "env_vars:\n  PROBE_TOKEN: \"${SECRET:api_token}\"\nconfig_files:",
                )
                .replace(
                r#"command: ["python3", "sip-probe", "--config", "sip-probe.json", "--check"]"#,
                r#"command: ["python3", "-c", "import sys; print('<script>alert(1)</script> \"probe\" down ü'); sys.exit(1)"]
    interval_s: 1
    retries: 1"#,
            )
        },
        "sip-probe: a stricter health check",
    );
    let out = f.clarity(&[]);
    assert!(
        !out.status.success(),
        "the second apply fails on sw-sbx-mon01"
    );
    let edited = f
        .work
        .join("sandboxes/nt-sbx-mon01/opt/clarity/sip-probe/current/sip-probe.json");
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("\n\"hand-edited\": true\n");
    std::fs::write(&edited, text).unwrap();
    // nt-sbx-sms01's gateway stops and another program takes its port.
    let pidfile = f
        .work
        .join("sandboxes/nt-sbx-sms01/var/lib/clarity/run/clarity-smsgateway.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let port = f.port_of(18080);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "port {port} stays taken after the gateway died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let squatter = support::Server::start(
        "python3 -m http.server",
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(f.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    assert!(support::wait_for_port(port, Duration::from_secs(10)));
    let out = f.clarity(&["drift"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "drift found: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The record names the process that really holds the port.
    let l = Ledger::open_reader(&f.ledger()).unwrap();
    let drift = l.newest_run(Some(RunMode::Drift)).unwrap().unwrap();
    let conflict: Vec<_> = l
        .drift_findings(&drift.id)
        .unwrap()
        .into_iter()
        .filter(|x| x.kind == "port-conflict")
        .collect();
    assert_eq!(conflict.len(), 1, "{conflict:?}");
    assert_eq!(conflict[0].server, "nt-sbx-sms01");
    assert_eq!(
        conflict[0].detail,
        format!(
            "port {port}/tcp is held by python3 (pid {}), not by smsgateway",
            squatter.pid()
        )
    );
    Some((f, squatter))
}

/// `serve` on a loopback port in its own runtime, stopped on drop.
struct Served {
    base: String,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Served {
    fn start(ledger: &Path, repo: Option<&Path>, require_token: bool) -> Served {
        Served::with(
            ledger,
            dashboard::Options {
                repo: repo.map(Path::to_path_buf),
                drift_interval: None,
                require_token,
            },
        )
    }

    fn with(ledger: &Path, options: dashboard::Options) -> Served {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // The loop's end of the trigger channel: kept open, never read (pages send nothing).
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx);
        let state = Arc::new(ServeState {
            ledger_path: ledger.to_path_buf(),
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(Mutex::new(WatchStatus::default())),
            triggers: tx,
            api_token: Some(TOKEN.into()),
            webhook_secret: None,
            dashboard: options,
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(clarity::serve::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Served {
            base,
            runtime,
            stop: Some(stop),
            served: Some(served),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), served).await });
        }
    }
}

struct Page {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

fn get(url: &str, auth: Option<&str>) -> Page {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .proxy(None)
        .build()
        .new_agent();
    let mut req = agent.get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let mut r = req.call().unwrap();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Page {
        status: r.status().as_u16(),
        headers,
        body: r.body_mut().read_to_string().unwrap(),
    }
}

/// `<main>` of a page, with what differs between runs (ids, hashes, times, durations, ports,
/// paths) replaced by stable names.
fn normalized(f: &MockFleet, body: &str, runs: &[String]) -> String {
    let start = body.find("<main").expect("a <main>");
    let end = body.find("</main>").expect("a </main>") + "</main>".len();
    let mut s = body[start..end].to_string();
    for (i, id) in runs.iter().enumerate() {
        s = s.replace(id, &format!("RUN-{}", i + 1));
    }
    for (i, c) in f.commits.iter().enumerate() {
        let name = format!("COMMIT-{}", (b'A' + i as u8) as char);
        s = s.replace(c.as_str(), &name).replace(&c[..12], &name);
    }
    for (free, example) in &f.ports {
        s = s.replace(&free.to_string(), &example.to_string());
    }
    s = s.replace(f.dir.path().to_str().unwrap(), "TMP");
    for (pattern, with) in [
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME"),
        (r"\b\d+ ms\b", "N ms"),
        (r"\b\d+(\.\d+)?s\b", "N.Ns"),
        (r"-[0-9a-f]{12}\b", "-HASH"),
        (r"\(pid \d+\)", "(pid N)"),
        (r"cli:[^ <]+", "cli:USER@HOST"),
        // How many probes a healthy start took depends on the machine's speed.
        (r"healthy after \d+ probes?", "healthy after N probes"),
        (r"\b[0-9a-f]{64}\b", "SHA256"),
    ] {
        s = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&s, with)
            .into_owned();
    }
    s
}

fn run_ids(ledger: &Path) -> Vec<String> {
    let l = Ledger::open_reader(ledger).unwrap();
    let mut ids: Vec<String> = l
        .runs(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.reverse();
    ids
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard")
}

#[test]
fn pages_from_real_runs() {
    let Some((f, _squatter)) = real_runs() else {
        return;
    };
    let runs = run_ids(&f.ledger());
    assert_eq!(runs.len(), 3, "apply, apply, drift");
    let api = Served::start(&f.ledger(), Some(&f.repo), false);

    // The fleet: every host, the worst first in "needs attention".
    let fleet = get(&format!("{}/", api.base), None);
    assert_eq!(fleet.status, 200);
    assert_eq!(
        fleet.headers["content-security-policy"],
        dashboard::CONTENT_SECURITY_POLICY
    );
    assert!(!dashboard::CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    assert_eq!(fleet.headers["cache-control"], "no-store");
    assert!(
        !fleet.body.contains("<script>") && !fleet.body.contains(" style="),
        "no inline script or style"
    );
    insta::assert_snapshot!("fleet", normalized(&f, &fleet.body, &runs));

    let host = get(&format!("{}/hosts/sw-sbx-mon01", api.base), None);
    assert_eq!(host.status, 200);
    // The failing health check printed HTML, quotes and Unicode: shown, escaped.
    assert!(
        host.body
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &quot;probe&quot; down ü"),
        "{}",
        host.body
    );
    assert!(!host.body.contains("<script>alert"));
    insta::assert_snapshot!("host", normalized(&f, &host.body, &runs));

    let drifted = get(&format!("{}/hosts/nt-sbx-mon01", api.base), None);
    assert!(drifted.body.contains("sip-probe.json"), "{}", drifted.body);
    let conflict = get(&format!("{}/hosts/nt-sbx-sms01", api.base), None);
    assert!(
        conflict.body.contains(&format!(
            "conflict: port {}&#x2f;tcp is held by python3 (pid {})",
            f.port_of(18080),
            _squatter.pid()
        )),
        "{}",
        conflict.body
    );
    insta::assert_snapshot!("host_port_conflict", normalized(&f, &conflict.body, &runs));

    let run = get(&format!("{}/runs/{}", api.base, runs[1]), None);
    assert_eq!(run.status, 200);
    insta::assert_snapshot!("run", normalized(&f, &run.body, &runs));

    let deployment = format!(
        "{}/deployments/sunwave/sip-probe/mock?from={}&to={}&server=sw-sbx-mon01",
        api.base, f.commits[0], f.commits[1]
    );
    let diff = get(&deployment, None);
    assert_eq!(diff.status, 200);
    assert!(diff.body.contains("class=\"add\""), "{}", diff.body);
    insta::assert_snapshot!("deployment_diff", normalized(&f, &diff.body, &runs));
    // The new variable comes from a secret: the diff shows that it changed, never its value.
    assert!(
        diff.body.contains("+PROBE_TOKEN=(sensitive)"),
        "{}",
        diff.body
    );
    if let Some(secret) = demo_secret(&f.repo, "sunwave", "api_token") {
        for page in [&fleet, &host, &run, &diff] {
            assert!(
                !page.body.contains(secret.trim()),
                "a secret value on a page"
            );
        }
    }

    for missing in ["/hosts/nowhere", "/runs/20990101T000000Z-00000000"] {
        let p = get(&format!("{}{missing}", api.base), None);
        assert_eq!(p.status, 404, "{missing}");
        assert!(p.headers["content-type"].starts_with("text/html"));
    }

    // A real headless Chromium: the same pages, their DOM, and the screenshots for the docs.
    let Some((chromium, driver)) = support::browser::require_chromium() else {
        return;
    };
    let b = support::browser::Browser::start(&chromium, &driver);
    b.goto(&format!("{}/", api.base));
    assert_eq!(b.count("#hosts tbody tr[data-server]"), 4);
    for h in MOCK_HOSTS {
        assert!(
            b.count(&format!("#hosts tr[data-server='{h}']")) == 1,
            "{h}"
        );
    }
    let worst = b.text("#attention li").unwrap();
    // The failing commit changed the health check itself; the restored release is judged by
    // its own checks, so the host is rolled back (healthy), not "restore failed".
    assert!(worst.starts_with("rolled back sw-sbx-mon01"), "{worst}");
    assert_eq!(
        b.eval("return document.querySelector('#attention li:nth-child(2)').dataset.server;"),
        "nt-sbx-mon01",
        "drifted comes after rolled back"
    );
    b.wait_for(
        "the live indicator (the script ran under the CSP and /events answered)",
        Duration::from_secs(10),
        "return !document.getElementById('live').hidden;",
    );
    b.screenshot(&screenshots_dir().join("fleet.png"));
    b.goto(&format!("{}/?client=sunwave", api.base));
    assert_eq!(
        b.count("#hosts tbody tr[data-server]"),
        2,
        "filtered to sunwave"
    );
    b.goto(&format!("{}/hosts/sw-sbx-mon01", api.base));
    let health = b
        .text(".deployment[data-deployment='sip-probe'] .health")
        .unwrap();
    assert!(
        health.contains("<script>alert(1)</script> \"probe\" down ü"),
        "shown as text: {health}"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('main script').length;"),
        0,
        "no element was injected"
    );
    b.screenshot(&screenshots_dir().join("host.png"));
    b.goto(&format!("{}/runs/{}", api.base, runs[1]));
    assert!(
        b.text("#reasons")
            .unwrap()
            .contains("sw-sbx-mon01 (rolled_back)")
    );
    b.screenshot(&screenshots_dir().join("run.png"));
    b.goto(&deployment);
    assert!(b.count("#diff .add") > 0);
    b.screenshot(&screenshots_dir().join("diff.png"));
}

/// The plaintext of a demo secret, decrypted with the `age` CLI and the public demo identity
/// (to check that no page shows it).
fn demo_secret(repo: &Path, client: &str, name: &str) -> Option<String> {
    support::require_program("age")?;
    let text = std::fs::read_to_string(repo.join(format!("secrets/{client}/mock.yml"))).unwrap();
    let armored: String = text
        .lines()
        .skip_while(|l| *l != format!("{name}: |"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let mut child = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(repo.join("demo-mock.agekey"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(armored.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "age decrypts the demo secret");
    let plain = String::from_utf8(out.stdout).unwrap();
    assert!(plain.trim().len() >= 8, "a real secret value");
    Some(plain)
}

fn hostile_run() -> RunRecord {
    let server = "<img src=x onerror=alert(1)>\"'ü";
    RunRecord {
        format: RUN_FORMAT.into(),
        id: "20261101T090000Z-0000000a".into(),
        commit: format!("{:0<40}", "a"),
        branch: Some("<b>main</b>".into()),
        started_at: "2026-11-01T09:00:00Z".into(),
        finished_at: "2026-11-01T09:01:00Z".into(),
        trigger: "watch".into(),
        mode: RunMode::Apply,
        outcome: RunOutcome::Failed,
        message: None,
        hosts: vec![HostRecord {
            server: server.into(),
            client: "<script>alert('client')</script>".into(),
            outcome: clarity::model::run::HostOutcome::Failed,
            duration_ms: 10,
            message: Some("it said \"<script>alert(2)</script>\" — ünïcödé".into()),
            deployments: Vec::new(),
            steps: Vec::new(),
        }],
        rollout: Default::default(),
        kind: Default::default(),
    }
}

#[test]
fn every_value_is_escaped_and_the_token_guards_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    Ledger::open(&path)
        .unwrap()
        .record_run(&hostile_run())
        .unwrap();
    let open = Served::start(&path, None, false);
    let page = get(&format!("{}/", open.base), None);
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<img"), "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<b>main"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;ü")
    );
    assert!(
        page.body
            .contains("&lt;script&gt;alert(2)&lt;&#x2f;script&gt;&quot; — ünïcödé")
    );
    // In a URL, the name is percent-encoded.
    assert!(
        page.body
            .contains("/hosts/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%22%27%C3%BC")
    );
    let host = get(
        &format!(
            "{}/hosts/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%22%27%C3%BC",
            open.base
        ),
        None,
    );
    assert_eq!(host.status, 200);
    assert!(!host.body.contains("<img"));

    // Before the first run there is no ledger: an empty fleet, not an error.
    let empty = Served::start(&tmp.path().join("none-yet.sqlite"), None, false);
    let p = get(&format!("{}/", empty.base), None);
    assert_eq!(p.status, 200);
    assert!(p.body.contains("No run has been recorded"), "{}", p.body);
    assert!(
        !tmp.path().join("none-yet.sqlite").exists(),
        "reading creates no ledger"
    );

    let guarded = Served::start(&path, None, true);
    for route in ["/", "/events", "/runs/20261101T090000Z-0000000a"] {
        let p = get(&format!("{}{route}", guarded.base), None);
        assert_eq!(p.status, 401, "{route}");
        assert!(p.headers["www-authenticate"].starts_with("Basic "));
        assert!(!p.body.contains(TOKEN));
        let p = get(&format!("{}{route}", guarded.base), Some("Bearer wrong"));
        assert_eq!(p.status, 401, "{route}");
    }
    let p = get(
        &format!("{}/", guarded.base),
        Some(&format!("Bearer {TOKEN}")),
    );
    assert_eq!(p.status, 200);
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{TOKEN}"));
    let p = get(
        &format!("{}/", guarded.base),
        Some(&format!("Basic {basic}")),
    );
    assert_eq!(p.status, 200);
    // The static script and style hold nothing from the ledger.
    let js = get(&format!("{}/static/dashboard.js", guarded.base), None);
    assert_eq!(js.status, 200);
    assert!(js.headers["content-type"].starts_with("text/javascript"));
}

/// `clarity-reconcile --watch` on the mock profile, stopped with SIGTERM (by PID) on drop.
struct Watching {
    daemon: Option<support::Server>,
    base: String,
    log: PathBuf,
}

impl Watching {
    fn start(f: &MockFleet) -> Watching {
        let port = support::free_port();
        let log = f.dir.path().join("watch.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(support::clarity_bin());
        cmd.args(["--watch", "--profile", "mock"])
            .arg("--repo")
            .arg(&f.repo)
            .arg("--work-dir")
            .arg(&f.work)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--poll-interval", "3600", "--drift-interval", "0"])
            .env("CLARITY_AGE_IDENTITY", f.repo.join("demo-mock.agekey"))
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let daemon = support::Server::start("clarity-reconcile --watch", &mut cmd);
        let w = Watching {
            daemon: Some(daemon),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        assert!(
            support::wait_for_port(port, Duration::from_secs(30)),
            "--listen never listened:\n{}",
            w.log()
        );
        w
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what}; the loop's log:\n{}",
            self.log()
        );
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(
                    nix::sys::wait::WaitStatus::Exited(..)
                    | nix::sys::wait::WaitStatus::Signaled(..),
                ) = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
                {
                    std::mem::forget(d);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Still running: dropping the handle kills and reaps it.
        }
    }
}

#[test]
fn watch_serves_the_fleet_page_and_updates_it_live() {
    let Some(mut f) = MockFleet::new() else {
        return;
    };
    let browser = support::browser::require_chromium();
    let w = Watching::start(&f);
    let runs = || {
        let p = get(&format!("{}/api/v1/runs", w.base), None);
        serde_json::from_str::<serde_json::Value>(&p.body).unwrap()["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    w.wait("the first apply run", Duration::from_secs(90), || {
        runs().len() == 1
    });

    // GET / names every host of the mock profile with its outcome, as the ledger has it.
    let page = get(&format!("{}/", w.base), None);
    assert_eq!(page.status, 200);
    let hosts: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/api/v1/hosts", w.base), None).body).unwrap();
    for h in MOCK_HOSTS {
        let recorded = hosts["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["server"] == h)
            .unwrap_or_else(|| panic!("{h} is in the ledger"))["last_run"]["outcome"]
            .as_str()
            .unwrap()
            .to_string();
        let row_start = page
            .body
            .find(&format!("<tr data-server=\"{h}\""))
            .unwrap_or_else(|| panic!("{h} on the fleet page:\n{}", page.body));
        let row = &page.body[row_start..row_start + page.body[row_start..].find("</tr>").unwrap()];
        assert!(
            row.contains(&format!("outcome-{recorded}\"")),
            "{h} shows its outcome {recorded}: {row}"
        );
    }

    let Some((chromium, driver)) = browser else {
        return;
    };
    let b = support::browser::Browser::start(&chromium, &driver);
    b.goto(&format!("{}/", w.base));
    b.wait_for(
        "the event stream to open",
        Duration::from_secs(15),
        "return !document.getElementById('live').hidden;",
    );
    // A mark a reload would wipe out.
    b.eval("window.clarityMark = 'kept'; return true;");
    f.commit(
        "clients/nordtel/deployments/sip-probe/mock.yml",
        |t| t.replace("interval_s: 5", "interval_s: 6"),
        "sip-probe: probe a little less often",
    );
    let short = f.commits[1][..12].to_string();
    b.wait_for(
        "the pushed commit on the open fleet page",
        Duration::from_secs(90),
        &format!(
            "var r = document.querySelector(\"#hosts tr[data-server='nt-sbx-mon01']\"); \
             return !!r && r.innerText.indexOf({}) >= 0;",
            serde_json::json!(short)
        ),
    );
    assert_eq!(
        b.eval("return window.clarityMark;"),
        "kept",
        "the page updated without a reload"
    );
    assert!(
        b.eval("return Number(document.body.getAttribute('data-live-updates'));")
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
    b.wait_for(
        "the loop to finish the pass (a `busy` event clears the header)",
        Duration::from_secs(60),
        "return document.getElementById('busy').textContent === '';",
    );
    assert_eq!(
        b.text("#hosts tr[data-server='nt-sbx-mon01'] .state")
            .as_deref(),
        Some("converged")
    );
    b.screenshot(&screenshots_dir().join("live.png"));
    assert_eq!(runs().len(), 2, "{}", w.log());
}

fn record(id: &str, branch: &str, outcome: RunOutcome, hosts: Vec<(&str, &str)>) -> RunRecord {
    let at = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &id[0..4],
        &id[4..6],
        &id[6..8],
        &id[9..11],
        &id[11..13],
        &id[13..15]
    );
    RunRecord {
        format: RUN_FORMAT.into(),
        id: id.into(),
        commit: format!("{:0<40}", &id[id.len() - 1..]),
        branch: Some(branch.into()),
        started_at: at.clone(),
        finished_at: at,
        trigger: "watch".into(),
        mode: RunMode::Apply,
        outcome,
        message: (outcome == RunOutcome::Refused)
            .then(|| "commit 2000000000 is not signed by a trusted key".to_string()),
        hosts: hosts
            .into_iter()
            .map(|(server, outcome)| HostRecord {
                server: server.into(),
                client: "acme".into(),
                outcome: clarity::model::run::HostOutcome::parse(outcome),
                duration_ms: 5,
                message: (outcome == "not_attempted")
                    .then(|| "web: the failure budget (0) is spent".to_string()),
                deployments: Vec::new(),
                steps: Vec::new(),
            })
            .collect(),
        rollout: Default::default(),
        kind: Default::default(),
    }
}

/// The states the ledger alone decides: a refused commit on a host's branch, a rollout that
/// halted before a host, and hosts no run listed for longer than twice the drift interval.
#[test]
fn refused_halted_and_stale_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    let mut l = Ledger::open(&path).unwrap();
    l.record_run(&record(
        "20261101T090000Z-00000001",
        "main",
        RunOutcome::Success,
        vec![("a1", "converged")],
    ))
    .unwrap();
    l.record_run(&record(
        "20261101T100000Z-00000003",
        "staging",
        RunOutcome::Failed,
        vec![("a2", "not_attempted"), ("a3", "converged")],
    ))
    .unwrap();
    l.record_run(&record(
        "20261102T090000Z-00000002",
        "main",
        RunOutcome::Refused,
        Vec::new(),
    ))
    .unwrap();
    drop(l);
    let api = Served::start(&path, None, false);
    let page = get(&format!("{}/", api.base), None).body;
    let state = |body: &str, server: &str| {
        let at = body
            .find(&format!("<tr data-server=\"{server}\" data-state=\""))
            .unwrap_or_else(|| panic!("{server}:\n{body}"));
        let rest = &body[at..];
        let start = rest.find("data-state=\"").unwrap() + "data-state=\"".len();
        rest[start..start + rest[start..].find('"').unwrap()].to_string()
    };
    assert_eq!(state(&page, "a1"), "awaiting_approval");
    assert_eq!(state(&page, "a2"), "mid_rollout");
    assert_eq!(
        state(&page, "a3"),
        "converged",
        "no drift interval: never stale"
    );
    assert!(
        page.contains("is not signed by a trusted key"),
        "the refusal banner"
    );
    let run = get(
        &format!("{}/runs/20261101T100000Z-00000003", api.base),
        None,
    )
    .body;
    assert!(run.contains("a2 (not_attempted): web: the failure budget (0) is spent"));
    drop(api);

    // With a drift interval, hosts last listed weeks ago are stale (unless worse).
    let stale = Served::with(
        &path,
        dashboard::Options {
            drift_interval: Some(Duration::from_secs(900)),
            ..dashboard::Options::default()
        },
    );
    let page = get(&format!("{}/", stale.base), None).body;
    assert_eq!(state(&page, "a1"), "awaiting_approval");
    assert_eq!(state(&page, "a2"), "mid_rollout");
    assert_eq!(state(&page, "a3"), "stale");
    let filtered = get(&format!("{}/?outcome=stale", stale.base), None).body;
    assert!(filtered.contains("data-server=\"a3\"") && !filtered.contains("data-server=\"a1\""));
    drop(stale);

    // A run recorded before the ledger kept batches (a v7 writer: steps, no batches) says so;
    // the run page never cuts batches anew from today's settings.
    let mut old = record(
        "20261103T090000Z-00000004",
        "main",
        RunOutcome::Success,
        vec![("a4", "converged")],
    );
    old.hosts[0].steps.push(clarity::model::run::StepRecord {
        deployment: "web".into(),
        action: clarity::model::apply::Action::SwitchRelease,
        target: "1.0.0-0123456789ab".into(),
        status: clarity::model::apply::StepStatus::Ok,
        duration_ms: 3,
        message: None,
        bytes: None,
        repository_kind: None,
        retries: None,
    });
    let mut l = Ledger::open(&path).unwrap();
    l.record_run(&old).unwrap();
    drop(l);
    let api = Served::start(&path, None, false);
    let run = get(
        &format!("{}/runs/20261103T090000Z-00000004", api.base),
        None,
    )
    .body;
    assert!(
        run.contains(
            "Batches not recorded: this run was recorded before the ledger kept each run's batches."
        ),
        "{run}"
    );
}
