//! A rollout paused after its canary (`rollout.pause_after_canary`), checked on the hosts
//! themselves: three `local` sandbox hosts run a real Python process under the agent's process
//! backend. The canary host moves to the new release (`readlink current`) while the others stay
//! on theirs; the ledger, the commit's note and the status API say `awaiting_approval` and name
//! the waiting hosts; `resume RUN` converges the rest without touching the canary again and
//! records who resumed it and when; a watch loop resumes a pause whose timeout passed, and
//! does not apply the paused commit again meanwhile.

mod support;

use support::sandbox::sha256;
use support::text;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const HOSTS: [&str; 3] = ["sbx-1", "sbx-2", "sbx-3"];

struct Fleet {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    work: PathBuf,
}

fn program(version: &str) -> String {
    format!("# app {version}\nimport time\nwhile True:\n    time.sleep(60)\n")
}

impl Fleet {
    fn new() -> Option<Fleet> {
        support::require_program("python3")?;
        support::require_program("git")?;
        let dir = tempfile::tempdir().unwrap();
        let f = Fleet {
            repo: dir.path().join("config"),
            work: dir.path().join("work"),
            _dir: dir,
        };
        support::sandbox::write_local_hosts(&|path, text| f.write(path, text), &HOSTS);
        let mut artifact = String::from("id: app\ntype: script\nrepository: local\nversions:\n");
        for v in ["1.0.0", "2.0.0"] {
            let text = program(v);
            f.write(&format!("files/app-{v}.py"), &text);
            artifact.push_str(&format!(
                "  - version: \"{v}\"\n    sha256: \"{}\"\n    location: app-{v}.py\n    size: {}\n",
                sha256(text.as_bytes()),
                text.len()
            ));
        }
        f.write("artifacts/app.yml", &artifact);
        support::git(&f.repo, &["init", "-q", "-b", "main"]);
        Some(f)
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The deployment at `version`: a canary of one, then one host at a time, with `pause`
    /// (a YAML value for `pause_after_canary`, or nothing).
    fn deploy(&self, version: &str, pause: Option<&str>) {
        self.write(
            "clients/acme/deployments/app/mock.yml",
            &format!(
                "artifact: app\nprofile: mock\nversion: \"{version}\"\ntargets:\n  - server: sbx-1\n    priority: 0\n  - server: sbx-2\n    priority: 1\n  - server: sbx-3\n    priority: 2\n\
                 service:\n  command: [\"python3\", \"app-{version}.py\"]\n\
                 health_checks:\n  - type: command\n    command: [\"test\", \"-f\", \"app-{version}.py\"]\n    interval_s: 1\n    retries: 2\n\
                 rollout:\n  canary: 1\n  batch_size: 1\n  max_failures: 0\n{}",
                pause
                    .map(|p| format!("  pause_after_canary: {p}\n"))
                    .unwrap_or_default()
            ),
        );
    }

    fn commit(&self, message: &str) -> String {
        support::git(&self.repo, &["add", "-A"]);
        support::git(&self.repo, &["commit", "-qm", message]);
        support::git(&self.repo, &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(support::clarity_bin());
        cmd.args(args)
            .args(["--repo", self.repo.to_str().unwrap()])
            .arg("--work-dir")
            .arg(&self.work)
            .env("NO_COLOR", "1")
            .env("USER", "operator")
            .env_remove("CLARITY_AGE_IDENTITY")
            .env_remove("CLARITY_STATE_DIR");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn validate(&self) -> Output {
        Command::new(support::clarity_bin())
            .args(["validate", "--repo", self.repo.to_str().unwrap()])
            .output()
            .unwrap()
    }

    fn apply(&self) -> Output {
        self.run(&["--profile", "mock"])
    }

    fn sandbox(&self, host: &str) -> PathBuf {
        self.work.join("sandboxes").join(host)
    }

    /// `readlink current` on the host: the release it runs.
    fn current(&self, host: &str) -> Option<String> {
        support::current_release(&self.sandbox(host), "app")
    }

    fn backend(&self, host: &str) -> clarity::service::ProcessBackend {
        clarity::service::ProcessBackend::new(self.sandbox(host).join("var/lib/clarity/run"))
    }

    fn running(&self, host: &str) -> bool {
        use clarity::service::ServiceBackend;
        self.backend(host).state("clarity-app") == clarity::model::host::ServiceState::Running
    }

    /// A run as `history show --output json` prints it from the ledger.
    fn show(&self, id: &str) -> Value {
        let o = self.run(&["history", "show", id, "--output", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The run records in the git note on `commit`.
    fn note_runs(&self, commit: &str) -> Vec<Value> {
        support::note_runs(&self.repo, commit)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        use clarity::service::ServiceBackend;
        for h in HOSTS {
            let _ = self.backend(h).stop("clarity-app");
        }
    }
}

/// The id in the apply's `recorded run ID (...)` line.
fn recorded_id(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no recorded run in:\n{}", text(o)))
        .to_string()
}

fn host_outcome(run: &Value, server: &str) -> String {
    run["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["server"] == server)
        .map(|h| h["outcome"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "absent".into())
}

/// `(unit, canary, hosts, state)` of each recorded batch.
fn batches(run: &Value) -> Vec<(String, bool, Vec<String>, String)> {
    run["batches"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    (
                        b["unit"].as_str().unwrap().to_string(),
                        b["canary"].as_bool().unwrap(),
                        b["hosts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|h| h.as_str().unwrap().to_string())
                            .collect(),
                        b["state"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn batch(hosts: &[&str], canary: bool, state: &str) -> (String, bool, Vec<String>, String) {
    (
        "acme/app/mock".into(),
        canary,
        hosts.iter().map(|h| h.to_string()).collect(),
        state.into(),
    )
}

/// Every host on 1.0.0 (no pause), then 2.0.0 committed with `pause`.
fn fleet_on_v1_then(pause: &str) -> Option<(Fleet, String, String)> {
    let f = Fleet::new()?;
    f.deploy("1.0.0", None);
    f.commit("app 1.0.0");
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v1 = f.current("sbx-1").unwrap();
    for h in HOSTS {
        assert_eq!(f.current(h).as_deref(), Some(v1.as_str()), "{h}");
    }
    f.deploy("2.0.0", Some(pause));
    let commit = f.commit("app 2.0.0, paused after the canary");
    Some((f, v1, commit))
}

#[test]
fn a_paused_canary_waits_resumes_on_the_command_and_is_recorded() {
    let Some((f, v1, commit)) = fleet_on_v1_then("true") else {
        return;
    };

    // The plan shows the order before anything is applied.
    let o = f.run(&["--profile", "mock", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let plan = text(&o);
    assert!(
        plan.contains("rollout acme/app/mock: canary sbx-1; then sbx-2 | sbx-3; max_failures 0; pauses after the canary until `resume`"),
        "{plan}"
    );

    let o = f.apply();
    assert_eq!(
        o.status.code(),
        Some(4),
        "a paused rollout exits 4:\n{}",
        text(&o)
    );
    let paused = recorded_id(&o);
    let out = text(&o);
    assert!(
        out.contains(&format!("continue with: clarity-reconcile resume {paused}")),
        "{out}"
    );
    // On the hosts: the canary runs 2.0.0, the others still run their 1.0.0 release.
    let v2 = f.current("sbx-1").unwrap();
    assert_ne!(v2, v1);
    assert!(v2.starts_with("2.0.0"), "{v2}");
    assert!(f.running("sbx-1"));
    for h in ["sbx-2", "sbx-3"] {
        assert_eq!(
            f.current(h).as_deref(),
            Some(v1.as_str()),
            "{h} was touched"
        );
        assert!(f.running(h), "{h} stopped");
    }
    // The ledger says the same.
    let run = f.show(&paused);
    assert_eq!(run["outcome"], "awaiting_approval", "{run}");
    assert_eq!(host_outcome(&run, "sbx-1"), "converged");
    assert_eq!(host_outcome(&run, "sbx-2"), "awaiting_approval");
    assert_eq!(host_outcome(&run, "sbx-3"), "awaiting_approval");
    assert_eq!(
        batches(&run),
        vec![
            batch(&["sbx-1"], true, "applied"),
            batch(&["sbx-2"], false, "awaiting_approval"),
            batch(&["sbx-3"], false, "awaiting_approval"),
        ]
    );
    assert!(run.get("pause_deadline").is_none(), "no timeout: {run}");
    assert!(run.get("resumed").is_none(), "{run}");
    // The note on the commit too.
    let notes = f.note_runs(&commit);
    let noted = notes.iter().find(|r| r["id"] == paused.as_str()).unwrap();
    assert_eq!(noted["outcome"], "awaiting_approval");
    assert_eq!(batches(noted), batches(&run));
    let note_text = support::git(&f.repo, &["notes", "--ref=clarity", "show", &commit]);
    assert!(
        note_text.contains("waiting: sbx-2, sbx-3; continue with `clarity-reconcile resume"),
        "{note_text}"
    );

    // A watch loop on the same ledger leaves the paused commit alone: a pause without a
    // timeout waits for `resume`. Its dashboard shows the pause in a real browser.
    let runs_before = f.run(&["history", "--output", "json"]);
    let watch_port = support::free_port();
    let log = f.work.join("watch-paused.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = f.command(&[
        "--watch",
        "--listen",
        &format!("127.0.0.1:{watch_port}"),
        "--poll-interval",
        "1",
        "--drift-interval",
        "0",
    ]);
    cmd.stdout(log_file.try_clone().unwrap()).stderr(log_file);
    let watch = support::Server::start("clarity-reconcile --watch", &mut cmd);
    assert!(support::wait_for_port(watch_port, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_secs(3));
    if let Some((chromium, driver)) = support::browser::require_chromium() {
        let b = support::browser::Browser::start(&chromium, &driver);
        b.goto(&format!("http://127.0.0.1:{watch_port}/runs/{paused}"));
        let pause = b.text("#pause").unwrap_or_default();
        assert!(
            pause.contains("Waiting hosts: sbx-2, sbx-3")
                && pause.contains(&format!("clarity-reconcile resume {paused}")),
            "{pause}"
        );
        assert_eq!(b.count("ol.batches li.batch-awaiting_approval"), 2);
        b.screenshot(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard/paused.png"),
        );
        b.goto(&format!("http://127.0.0.1:{watch_port}/"));
        assert_eq!(b.count("p.paused"), 1);
        assert_eq!(b.count("tr[data-state=awaiting_approval]"), 2);
    }
    drop(watch);
    let runs_after = f.run(&["history", "--output", "json"]);
    assert_eq!(
        runs_before.stdout,
        runs_after.stdout,
        "the watch loop applied something while the rollout was paused:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for h in ["sbx-2", "sbx-3"] {
        assert_eq!(f.current(h).as_deref(), Some(v1.as_str()), "{h}");
    }

    // Resuming applies the waiting hosts only, batch by batch, without a canary.
    let o = f.run(&["resume", &paused[..16]]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let resumed = recorded_id(&o);
    for h in HOSTS {
        assert_eq!(f.current(h).as_deref(), Some(v2.as_str()), "{h}");
        assert!(f.running(h), "{h}");
    }
    let run = f.show(&resumed);
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(run["commit"], commit.as_str());
    assert_eq!(run["resumes"], paused.as_str());
    assert!(
        run["trigger"]
            .as_str()
            .unwrap()
            .starts_with("cli:operator@"),
        "{run}"
    );
    assert_eq!(
        host_outcome(&run, "sbx-1"),
        "absent",
        "the canary is not redone"
    );
    assert_eq!(
        batches(&run),
        vec![
            batch(&["sbx-2"], false, "applied"),
            batch(&["sbx-3"], false, "applied"),
        ]
    );
    // Who resumed the pause, and when, is on the paused run.
    let run = f.show(&paused);
    assert_eq!(run["resumed"]["run"], resumed.as_str(), "{run}");
    assert!(
        run["resumed"]["by"]
            .as_str()
            .unwrap()
            .starts_with("cli:operator@")
    );
    assert!(run["resumed"]["at"].as_str().unwrap().ends_with('Z'));

    // A pause is resumed once.
    let o = f.run(&["resume", &paused]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("was resumed already, by cli:operator@"),
        "{}",
        text(&o)
    );
    // And a run that did not pause cannot be resumed.
    let o = f.run(&["resume", &resumed]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is not paused"), "{}", text(&o));
}

#[test]
fn pause_after_canary_without_a_canary_is_a_validation_error() {
    let Some(f) = Fleet::new() else {
        return;
    };
    f.deploy("1.0.0", Some("{timeout: 10m}"));
    let file = f.repo.join("clients/acme/deployments/app/mock.yml");
    let yaml = std::fs::read_to_string(&file)
        .unwrap()
        .replace("  canary: 1\n", "");
    std::fs::write(&file, yaml).unwrap();
    f.commit("a pause without a canary");
    let o = f.validate();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("clients/acme/deployments/app/mock.yml:")
            && out.contains("`rollout.pause_after_canary` needs `rollout.canary`"),
        "{out}"
    );
    assert!(out.contains("hint: add `canary: 1`"), "{out}");
    // A malformed timeout is a schema error with its place.
    f.deploy("1.0.0", Some("{timeout: soon}"));
    f.commit("a bad timeout");
    let o = f.validate();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("mock.yml:"), "{}", text(&o));
}

/// The watch loop's status API, polled until `ok` says yes.
fn wait_api(port: u16, path: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some((200, body)) = support::http_get(port, path) {
            last = serde_json::from_str(&body).unwrap_or(Value::Null);
            if ok(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("GET {path} never satisfied the test; last answer: {last}");
}

#[test]
fn the_watch_loop_shows_a_pause_in_the_api_and_resumes_it_when_its_timeout_passes() {
    let Some((f, v1, commit)) = fleet_on_v1_then("{timeout: 10s}") else {
        return;
    };
    let port = support::free_port();
    let log = f.work.join("watch.log");
    std::fs::create_dir_all(&f.work).unwrap();
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = f.command(&[
        "--watch",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--poll-interval",
        "1",
        "--drift-interval",
        "0",
    ]);
    cmd.stdout(log_file.try_clone().unwrap()).stderr(log_file);
    let watch = support::Server::start("clarity-reconcile --watch", &mut cmd);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        support::wait_for_port(port, Duration::from_secs(30)),
        "{}",
        log_text()
    );
    let is_paused = |r: &Value| {
        r["runs"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["outcome"] == "awaiting_approval"))
    };
    let runs = wait_api(port, "/api/v1/runs", Duration::from_secs(60), is_paused);
    let paused = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "awaiting_approval")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // While it waits: the canary moved, the others did not, and the API says who waits.
    let started_wait = Instant::now();
    let detail = support::http_get(port, &format!("/api/v1/runs/{paused}")).unwrap();
    let detail: Value = serde_json::from_str(&detail.1).unwrap();
    let run = &detail["run"];
    assert_eq!(run["outcome"], "awaiting_approval", "{detail}");
    assert_eq!(host_outcome(run, "sbx-2"), "awaiting_approval");
    assert_eq!(host_outcome(run, "sbx-3"), "awaiting_approval");
    assert_eq!(run["commit"], commit.as_str());
    assert!(run["pause_deadline"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        detail["waiting_hosts"],
        serde_json::json!(["sbx-2", "sbx-3"]),
        "{detail}"
    );
    // The dashboard, served by the same loop: the fleet page says who waits and how to go
    // on; the run page shows the recorded batches and the pause.
    let (status, fleet) = support::http_get(port, "/").unwrap();
    assert_eq!(status, 200);
    let (status, page) = support::http_get(port, &format!("/runs/{paused}")).unwrap();
    assert_eq!(status, 200);
    assert!(
        started_wait.elapsed() < Duration::from_secs(8),
        "the machine is too slow for the 10 s pause this test relies on"
    );
    assert_eq!(f.current("sbx-2").as_deref(), Some(v1.as_str()));
    assert_eq!(f.current("sbx-3").as_deref(), Some(v1.as_str()));
    assert!(f.current("sbx-1").unwrap().starts_with("2.0.0"));
    assert!(
        fleet.contains("paused after a healthy canary")
            && fleet.contains(&format!("<code>clarity-reconcile resume {paused}</code>"))
            && fleet.contains(r#"<a class="waiting" href="/hosts/sbx-2">sbx-2</a>, <a class="waiting" href="/hosts/sbx-3">sbx-3</a>"#),
        "{fleet}"
    );
    assert!(
        fleet.contains(r#"data-server="sbx-2" data-state="awaiting_approval""#),
        "{fleet}"
    );
    assert!(
        page.contains("<h2>Awaiting approval</h2>")
            && page.contains(&format!(
                r#"<code id="resume-command">clarity-reconcile resume {paused}</code>"#
            )),
        "{page}"
    );
    assert!(
        page.contains(r#"<li class="batch-applied"><b>canary</b> <span class="batch-state">applied</span>: <a href="/hosts/sbx-1">sbx-1</a>"#)
            && page.contains(r#"<li class="batch-awaiting_approval"><span class="batch-state">awaiting approval</span>: <a href="/hosts/sbx-2">sbx-2</a>"#),
        "{page}"
    );
    assert!(
        page.contains("Failure budget: 0 used of 0, 0 left."),
        "{page}"
    );

    // After its timeout, the loop resumes it by itself.
    let resumed_run = |r: &Value| {
        r["runs"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["trigger"] == "watch:timeout"))
    };
    let runs = wait_api(port, "/api/v1/runs", Duration::from_secs(60), resumed_run);
    let all = runs["runs"].as_array().unwrap();
    let resume = all
        .iter()
        .find(|r| r["trigger"] == "watch:timeout")
        .unwrap();
    assert_eq!(resume["outcome"], "success", "{runs}\n{}", log_text());
    // The loop passed over the paused head every second meanwhile; exactly one run applied
    // it before the resumption: no second canary.
    let applied_v2 = all
        .iter()
        .filter(|r| r["commit"] == commit.as_str() && r["trigger"] != "watch:timeout")
        .count();
    assert_eq!(applied_v2, 1, "{runs}");
    for h in HOSTS {
        assert!(f.current(h).unwrap().starts_with("2.0.0"), "{h}");
        assert!(f.running(h), "{h}");
    }
    let detail = support::http_get(port, &format!("/api/v1/runs/{paused}")).unwrap();
    let detail: Value = serde_json::from_str(&detail.1).unwrap();
    assert_eq!(detail["run"]["resumed"]["by"], "watch:timeout", "{detail}");
    assert_eq!(detail["run"]["resumed"]["run"], resume["id"]);
    assert_eq!(detail["waiting_hosts"], serde_json::json!([]), "{detail}");
    let (_, page) = support::http_get(port, &format!("/runs/{paused}")).unwrap();
    assert!(page.contains("Resumed by <b>watch:timeout</b>"), "{page}");
    let (_, fleet) = support::http_get(port, "/").unwrap();
    assert!(!fleet.contains("paused after a healthy canary"), "{fleet}");
    drop(watch);
}
