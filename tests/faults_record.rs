//! The fault suite's record rows (docs/reliability.md): after each failure, the record — the
//! ledger, the commit's git note, the status API — must equal what is really on the hosts,
//! checked on the hosts themselves (`readlink current`, the service process alive, the health
//! probe run by hand), and the next run must converge. Two `local` sandbox hosts run a real
//! Python process under the agent's process backend, with a `command` health check that reads
//! a file of the release, so each test decides which release passes which check.

mod support;

use support::sandbox::sha256;
use support::text;

use clarity::ledger::Ledger;
use clarity::service::ServiceBackend;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOSTS: [&str; 2] = ["sbx-1", "sbx-2"];

/// A config repository with two sandbox hosts sharing one deployment (`app`, a canary batch
/// of one, then one host at a time, no failure allowed).
struct Fleet {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    work: PathBuf,
}

/// The program of every version: it only has to stay up. 4.0.0 and 5.0.0 carry padding, for
/// the disk-full rows (150 KiB and 400 KiB).
fn program(version: &str) -> String {
    let padding = match version {
        "4.0.0" => 150 * 1024,
        "5.0.0" => 400 * 1024,
        _ => 0,
    };
    format!(
        "# app {version}\nimport time\nwhile True:\n    time.sleep(60)\n# {}\n",
        "x".repeat(padding)
    )
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
        for v in ["1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"] {
            let text = program(v);
            f.write(&format!("files/app-{v}.py"), &text);
            artifact.push_str(&format!(
                "  - version: \"{v}\"\n    sha256: \"{}\"\n    location: app-{v}.py\n    size: {}\n",
                sha256(text.as_bytes()),
                text.len()
            ));
        }
        f.write("artifacts/app.yml", &artifact);
        support::git(&f.repo, &["init", "-q"]);
        Some(f)
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The deployment at `version`: its release holds `conf/health.txt` = `content`, and its
    /// health check passes when that file says `expect`.
    fn deploy(&self, version: &str, content: &str, expect: &str) {
        self.write(
            "clients/acme/deployments/app/mock.yml",
            &format!(
                "artifact: app\nprofile: mock\nversion: \"{version}\"\ntargets:\n  - server: sbx-1\n    priority: 0\n  - server: sbx-2\n    priority: 1\n\
                 config_files:\n  - destination: conf/health.txt\n    content: \"{content}\\n\"\n\
                 service:\n  command: [\"python3\", \"app-{version}.py\"]\n\
                 health_checks:\n  - type: command\n    command: [\"grep\", \"-qx\", \"{expect}\", \"conf/health.txt\"]\n    interval_s: 1\n    retries: 2\n\
                 rollout:\n  canary: 1\n  batch_size: 1\n  max_failures: 0\n"
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
            .env_remove("CLARITY_AGE_IDENTITY")
            .env_remove("CLARITY_STATE_DIR");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn apply(&self) -> Output {
        self.run(&["--profile", "mock"])
    }

    fn sandbox(&self, host: &str) -> PathBuf {
        self.work.join("sandboxes").join(host)
    }

    fn app_dir(&self, host: &str) -> PathBuf {
        self.sandbox(host).join("opt/clarity/app")
    }

    /// `readlink current` on the host.
    fn current(&self, host: &str) -> Option<String> {
        std::fs::read_link(self.app_dir(host).join("current"))
            .ok()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
    }

    fn backend(&self, host: &str) -> clarity::service::ProcessBackend {
        clarity::service::ProcessBackend::new(self.sandbox(host).join("var/lib/clarity/run"))
    }

    fn running(&self, host: &str) -> bool {
        self.backend(host).state("clarity-app") == clarity::model::host::ServiceState::Running
    }

    /// The health probe an operator would run by hand: the check of the release that runs.
    fn probe(&self, host: &str, expect: &str) -> bool {
        Command::new("grep")
            .args(["-qx", expect, "conf/health.txt"])
            .current_dir(self.app_dir(host).join("current"))
            .status()
            .is_ok_and(|s| s.success())
    }

    fn journal_left(&self, host: &str) -> bool {
        self.sandbox(host)
            .join("var/lib/clarity/journal.json")
            .exists()
    }

    fn ledger(&self) -> Ledger {
        Ledger::open(&self.work.join("ledger.sqlite")).unwrap()
    }

    /// The newest run as `history --output json` shows it.
    fn newest_run(&self) -> Value {
        let o = self.run(&["history", "--output", "json", "--limit", "1"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0].clone()
    }

    /// The run records in the git note on `commit`.
    fn note_runs(&self, commit: &str) -> Vec<Value> {
        support::note_runs(&self.repo, commit)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Stop the processes the agent started, as its own backend would.
        for h in HOSTS {
            let _ = self.backend(h).stop("clarity-app");
        }
    }
}

/// The RESULT column of the host in an apply's summary table.
fn result_of(o: &Output, host: &str) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{host} ")))
        .unwrap_or_default()
        .to_string()
}

fn host_of<'v>(run: &'v Value, server: &str) -> &'v Value {
    run["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["server"] == server)
        .unwrap_or_else(|| panic!("{server} is not in the run: {run}"))
}

/// The deployment record of `app` in a host of a run, if the run recorded one.
fn app_of(host: &Value) -> Option<&Value> {
    host["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "app")
}

/// The status API served in-process from the ledger, as `--watch` serves it.
struct Api {
    base: String,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    fn start(ledger: &Path) -> Api {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (triggers, _) = tokio::sync::mpsc::unbounded_channel();
        let state = Arc::new(clarity::serve::ServeState {
            ledger_path: ledger.to_path_buf(),
            metrics: Arc::new(clarity::serve::metrics::Metrics::new()),
            status: Arc::new(Mutex::new(clarity::watch::WatchStatus::default())),
            triggers,
            api_token: None,
            webhook_secret: None,
            dashboard: Default::default(),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(clarity::serve::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Api {
            base,
            runtime,
            stop: Some(stop),
        }
    }

    fn get(&self, path: &str) -> Value {
        let body = ureq::get(&format!("{}{path}", self.base))
            .config()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_body()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let runtime = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

/// Asserts that every record names, for `host`, the release that is really current there,
/// its version, healthy; and that the host really runs it and passes its check.
fn assert_record_is_the_host(f: &Fleet, api: &Api, host: &str, version: &str, expect: &str) {
    let current = f.current(host).expect("a current release");
    assert!(
        current.starts_with(&format!("{version}-")),
        "{host} runs {current}, not {version}"
    );
    assert!(f.running(host), "{host}: the service is not running");
    assert!(f.probe(host, expect), "{host}: the health probe fails");
    let state = f.ledger().current_deployments(None, Some(host)).unwrap();
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(
        (
            state[0].version.as_str(),
            state[0].release.as_str(),
            state[0].healthy
        ),
        (version, current.as_str(), true),
        "the ledger's current state of {host}"
    );
    let api_host = api.get(&format!("/api/v1/hosts/{host}"));
    let dep = &api_host["deployments"][0];
    assert_eq!(
        (&dep["version"], &dep["release"], &dep["healthy"]),
        (
            &Value::from(version),
            &Value::from(current.as_str()),
            &Value::from(true)
        ),
        "/api/v1/hosts/{host}: {api_host}"
    );
}

#[test]
fn a_failing_canary_is_recorded_on_the_old_release_everywhere_and_drift_agrees() {
    let Some(f) = Fleet::new() else { return };
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0");
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // 2.0.0 ships a release that fails its own check: the canary rolls back, the rollout
    // halts, the second host is never touched.
    f.deploy("2.0.0", "broken", "ok");
    let failing = f.commit("app 2.0.0, broken");
    let o = f.apply();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(result_of(&o, "sbx-1").contains("rolled back"), "{out}");
    assert!(result_of(&o, "sbx-2").contains("not attempted"), "{out}");

    let api = Api::start(&f.work.join("ledger.sqlite"));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "1.0.0", "ok");
    }
    // history and the note: the rolled-back host on the release it went back to, healthy;
    // the untouched host with no record of the failed version at all.
    let run = f.newest_run();
    assert_eq!(run["commit"], failing.as_str(), "{run}");
    assert_eq!(run["outcome"], "failed", "{run}");
    let canary = host_of(&run, "sbx-1");
    assert_eq!(canary["outcome"], "rolled_back", "{run}");
    let dep = app_of(canary).expect("the canary's deployment is recorded");
    assert_eq!(dep["version"], "1.0.0", "{run}");
    assert_eq!(
        dep["release"],
        f.current("sbx-1").unwrap().as_str(),
        "{run}"
    );
    assert_eq!(dep["healthy"], true, "{run}");
    let spared = host_of(&run, "sbx-2");
    assert_eq!(spared["outcome"], "not_attempted", "{run}");
    assert!(app_of(spared).is_none(), "{run}");
    let noted = f.note_runs(&failing);
    assert_eq!(noted.len(), 1);
    let noted_dep = app_of(host_of(&noted[0], "sbx-1")).unwrap();
    assert_eq!(
        (&noted_dep["version"], &noted_dep["healthy"]),
        (&Value::from("1.0.0"), &Value::from(true)),
        "{}",
        noted[0]
    );
    assert!(app_of(host_of(&noted[0], "sbx-2")).is_none());
    // /api/v1/runs says the same as history.
    let runs = api.get("/api/v1/runs?limit=1");
    let api_run = &runs["runs"][0];
    assert_eq!(host_of(api_run, "sbx-1")["outcome"], "rolled_back");
    assert_eq!(
        app_of(host_of(api_run, "sbx-1")).unwrap()["version"],
        "1.0.0"
    );

    // Drift judges the hosts by what they run (the last commit they converged on), for any
    // spelling of the selection: no drift.
    for args in [
        &["drift", "--profile", "mock"][..],
        &["drift", "--profile", "mock,staging", "--server", "sbx-2"][..],
        &["drift", "--profile", "mock,staging", "--server", "sbx-1"][..],
    ] {
        let o = f.run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("wrong-release"), "{}", text(&o));
    }
    assert_eq!(f.newest_run()["outcome"], "no_changes");

    // The watch loop's drift check agrees and heals nothing: it does not re-apply the commit
    // that failed (the head was attempted, so it is not applied again either).
    let watch_log = f.work.join("watch.log");
    let log = std::fs::File::create(&watch_log).unwrap();
    let mut cmd = f.command(&["--watch", "--listen", "off", "--drift-interval", "1"]);
    cmd.args(["--poll-interval", "3600", "--profile", "mock"])
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let watch = support::Server::start("clarity-reconcile --watch", &mut cmd);
    let started = Instant::now();
    let drift_runs = || {
        f.ledger()
            .runs(&clarity::ledger::RunFilter {
                mode: Some(clarity::model::run::RunMode::Drift),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .filter(|r| r.trigger == "watch:drift")
            .collect::<Vec<_>>()
    };
    while drift_runs().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no watch drift runs:\n{}",
            std::fs::read_to_string(&watch_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(watch);
    let log = std::fs::read_to_string(&watch_log).unwrap_or_default();
    for r in drift_runs() {
        assert_eq!(
            r.outcome,
            clarity::model::run::RunOutcome::NoChanges,
            "{r:?}\n{log}"
        );
    }
    assert!(!log.contains("healing drift"), "{log}");
    assert!(!log.contains("applying main"), "{log}");
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "1.0.0", "ok");
    }

    // The next commit converges both hosts.
    f.deploy("3.0.0", "ok", "ok");
    f.commit("app 3.0.0, fixed");
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "3.0.0", "ok");
    }
}

#[test]
fn a_commit_that_changes_the_health_check_is_rolled_back_to_a_release_judged_by_its_own() {
    let Some(f) = Fleet::new() else { return };
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0");
    assert_eq!(f.apply().status.code(), Some(0));
    let before = f.current("sbx-1").unwrap();

    // The new commit expects `ok2`, which neither release says: the new release fails, and
    // the old one passes only its own check (`ok`).
    f.deploy("2.0.0", "ok", "ok2");
    let failing = f.commit("app 2.0.0 with a new check");
    let o = f.apply();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(result_of(&o, "sbx-1").contains("rolled back"), "{out}");
    assert!(!out.contains("RESTORE FAILED"), "{out}");
    assert!(out.contains("(its own)"), "{out}");
    assert_eq!(f.current("sbx-1").unwrap(), before);
    let api = Api::start(&f.work.join("ledger.sqlite"));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "1.0.0", "ok");
    }
    let run = f.note_runs(&failing).remove(0);
    let dep = app_of(host_of(&run, "sbx-1")).unwrap().clone();
    assert_eq!(dep["healthy"], true, "{run}");
    assert!(dep["health"].as_str().unwrap().contains("its own"), "{run}");
    assert!(!f.journal_left("sbx-1"));

    // Fixing the release (it now says `ok2`) converges both hosts under the new check.
    f.deploy("2.0.0", "ok2", "ok2");
    f.commit("app 2.0.0 that passes its check");
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "2.0.0", "ok2");
    }
}

#[test]
fn a_failed_first_install_ends_failed_with_its_state_named_and_no_journal() {
    let Some(f) = Fleet::new() else { return };
    f.deploy("1.0.0", "broken", "ok");
    f.commit("a first install that never gets healthy");
    let o = f.apply();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let row = result_of(&o, "sbx-1");
    assert!(row.contains("failed"), "{out}");
    assert!(!out.contains("RESTORE FAILED"), "{out}");
    assert!(row.contains("first install"), "{out}");
    assert!(row.contains("the service is stopped and removed"), "{out}");
    // The host is as it was before: nothing current, nothing running, no journal; the
    // record holds no release for it.
    assert_eq!(f.current("sbx-1"), None);
    assert!(!f.running("sbx-1"));
    assert!(!f.journal_left("sbx-1"));
    let releases: Vec<_> = std::fs::read_dir(f.app_dir("sbx-1").join("releases"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(releases.is_empty(), "{releases:?}");
    assert!(
        f.ledger()
            .current_deployments(None, Some("sbx-1"))
            .unwrap()
            .is_empty()
    );
    let run = f.newest_run();
    let host = host_of(&run, "sbx-1");
    assert_eq!(host["outcome"], "failed", "{run}");
    assert!(app_of(host).is_none(), "{run}");

    // The next apply does not claim an interrupted apply, and converges.
    f.deploy("1.0.0", "ok", "ok");
    f.commit("a first install that works");
    let o = f.apply();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("interrupted"), "{out}");
    let api = Api::start(&f.work.join("ledger.sqlite"));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "1.0.0", "ok");
    }
}

#[test]
fn a_restore_that_fails_stops_once_leaves_no_journal_and_the_next_apply_is_honest() {
    let Some(f) = Fleet::new() else { return };
    // The check of every release also needs a flag outside the releases.
    let flag = f.work.join("healthy-flag");
    std::fs::create_dir_all(&f.work).unwrap();
    std::fs::write(&flag, "").unwrap();
    let with_flag = |version: &str| {
        f.deploy(version, "ok", "ok");
        let p = f.repo.join("clients/acme/deployments/app/mock.yml");
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "command: [\"grep\", \"-qx\", \"ok\", \"conf/health.txt\"]",
            &format!("command: [\"test\", \"-e\", \"{}\"]", flag.display()),
        );
        std::fs::write(&p, text).unwrap();
    };
    with_flag("1.0.0");
    f.commit("app 1.0.0 with a flag check");
    assert_eq!(f.apply().status.code(), Some(0));
    let before = f.current("sbx-1").unwrap();
    std::fs::remove_file(&flag).unwrap();
    with_flag("2.0.0");
    let failing = f.commit("app 2.0.0 while everything is broken");
    let o = f.apply();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(result_of(&o, "sbx-1").contains("RESTORE FAILED"), "{out}");
    assert!(result_of(&o, "sbx-2").contains("not attempted"), "{out}");
    assert_eq!(f.current("sbx-1").unwrap(), before, "switched back once");
    assert!(!f.journal_left("sbx-1"), "no journal survives the apply");
    // The record says exactly that: the old release, unhealthy, and why.
    let run = f.note_runs(&failing).remove(0);
    let host = host_of(&run, "sbx-1");
    assert_eq!(host["outcome"], "restore_failed", "{run}");
    let dep = app_of(host).unwrap();
    assert_eq!(
        (&dep["release"], &dep["healthy"]),
        (&Value::from(before.as_str()), &Value::from(false)),
        "{run}"
    );
    let state = f.ledger().current_deployments(None, Some("sbx-1")).unwrap();
    assert_eq!(
        (state[0].release.as_str(), state[0].healthy),
        (before.as_str(), false)
    );

    // Once the cause is gone, the next apply converges without inventing an interruption.
    std::fs::write(&flag, "").unwrap();
    let o = f.apply();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("interrupted"), "{out}");
    for h in HOSTS {
        assert!(f.current(h).unwrap().starts_with("2.0.0-"));
        assert!(f.running(h));
    }
}

#[test]
fn a_change_to_the_health_checks_alone_is_planned_and_verified_on_apply() {
    let Some(f) = Fleet::new() else { return };
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0");
    assert_eq!(f.apply().status.code(), Some(0));
    let release = f.current("sbx-1").unwrap();
    let set_check = |argv: &str| {
        let p = f.repo.join("clients/acme/deployments/app/mock.yml");
        let text = std::fs::read_to_string(&p).unwrap();
        let start = text.find("command: [\"grep\"").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        std::fs::write(
            &p,
            format!("{}command: {argv}{}", &text[..start], &text[end..]),
        )
        .unwrap();
    };

    // A check that passes: planned (exit 2), verified, then nothing to do.
    set_check("[\"grep\", \"-q\", \"o\", \"conf/health.txt\"]");
    f.commit("a looser check");
    let plan = f.run(&["--profile", "mock", "--dry-run"]);
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{out}");
    assert!(out.contains("verify health with the new checks"), "{out}");
    assert!(!out.contains("switch release"), "{out}");
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("health check grep -q o conf/health.txt: ok"),
        "{}",
        text(&o)
    );
    assert_eq!(
        f.current("sbx-1").unwrap(),
        release,
        "nothing was reinstalled"
    );
    let plan = f.run(&["--profile", "mock", "--dry-run"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));

    // A check the running release fails: the apply fails and says so; the release keeps
    // running, and the next plan still wants to verify the new check.
    set_check("[\"grep\", \"-qx\", \"nope\", \"conf/health.txt\"]");
    f.commit("a check nothing passes");
    let o = f.apply();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("health check grep -qx nope conf/health.txt: FAILED"),
        "{out}"
    );
    assert_eq!(f.current("sbx-1").unwrap(), release);
    assert!(f.running("sbx-1"));
    assert!(!f.journal_left("sbx-1"));
    let plan = f.run(&["--profile", "mock", "--dry-run"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
}

/// The pids of `pid`'s children, from /proc.
fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

#[test]
fn kill_9_of_the_reconciler_mid_run_leaves_a_consistent_ledger_and_the_next_run_converges() {
    let Some(f) = Fleet::new() else { return };
    // The agents the killed reconciler leaves behind become our children, so they are reaped.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0");
    assert_eq!(f.apply().status.code(), Some(0));
    let first = f.newest_run()["id"].as_str().unwrap().to_string();
    // A slow check keeps the agent mid-apply long enough to kill the reconciler there.
    f.deploy("2.0.0", "ok", "ok");
    let p = f.repo.join("clients/acme/deployments/app/mock.yml");
    let slow = std::fs::read_to_string(&p).unwrap().replace(
        "command: [\"grep\", \"-qx\", \"ok\", \"conf/health.txt\"]",
        "command: [\"sh\", \"-c\", \"sleep 2 && grep -qx ok conf/health.txt\"]",
    );
    std::fs::write(&p, slow).unwrap();
    f.commit("app 2.0.0 with a slow check");
    let mut reconciler = f
        .command(&["--profile", "mock"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !f.journal_left("sbx-1") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent never started its apply"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let agents = children(reconciler.id());
    reconciler.kill().unwrap();
    reconciler.wait().unwrap();
    for pid in agents {
        let pid = nix::unistd::Pid::from_raw(pid);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => break,
            }
        }
    }
    // Nothing of the killed run is in the ledger: a run is recorded whole or not at all.
    assert_eq!(f.newest_run()["id"], first.as_str());
    // The next run finds whatever the agent left (a finished apply, or a journal it rolls
    // back), converges, and the record equals the hosts.
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let api = Api::start(&f.work.join("ledger.sqlite"));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "2.0.0", "ok");
        assert!(!f.journal_left(h));
    }
}

/// A small tmpfs mounted as a host's root, unmounted (lazily: the service may still hold it)
/// when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(root: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(root).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(root)
            .output()
            .unwrap();
        assert!(o.status.success(), "mount tmpfs: {}", text(&o));
        SmallDisk(root.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // The services the agent started on this disk first (their pidfiles are on it), even
        // when the test failed, then the disk.
        StopSandboxes::root(&self.0);
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_host_during_download_or_install_rolls_back_and_is_recorded_so() {
    if !support::require_root() || support::require_program("mount").is_none() {
        return;
    }
    let Some(f) = Fleet::new() else { return };
    // Both hosts' roots on 320 KiB: room for 1.0.0, for 4.0.0 in the cache but not also in a
    // release, and not for 5.0.0 at all.
    let _disks: Vec<SmallDisk> = HOSTS
        .iter()
        .map(|h| SmallDisk::mount(&f.sandbox(h), "320k"))
        .collect();
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0");
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let api = Api::start(&f.work.join("ledger.sqlite"));

    for (version, failing_step) in [("5.0.0", "fetch artifact"), ("4.0.0", "install release")] {
        f.deploy(version, "ok", "ok");
        f.commit(&format!("app {version}, too big for the host"));
        let o = f.apply();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("sbx-1: app: {failing_step} "))
                    && l.contains("FAILED")
                    && l.contains("No space left on device")),
            "{version}: {out}"
        );
        assert!(result_of(&o, "sbx-1").contains("rolled back"), "{out}");
        assert!(result_of(&o, "sbx-2").contains("not attempted"), "{out}");
        for h in HOSTS {
            assert_record_is_the_host(&f, &api, h, "1.0.0", "ok");
            assert!(!f.journal_left(h), "{h}: a journal was left");
        }
        // No partial release was left to fill the disk further.
        let releases: Vec<String> = std::fs::read_dir(f.app_dir("sbx-1").join("releases"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(releases.len(), 1, "{releases:?}");
    }

    // Back to a version that fits: the next run converges.
    f.deploy("2.0.0", "ok", "ok");
    f.commit("app 2.0.0, small again");
    let o = f.apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "2.0.0", "ok");
    }
}

/// Stops every service the agents started in `work`'s sandboxes.
struct StopSandboxes(PathBuf);

impl StopSandboxes {
    /// Stops the services of the one sandbox at `root`.
    fn root(root: &Path) {
        let run = root.join("var/lib/clarity/run");
        let backend = clarity::service::ProcessBackend::new(run.clone());
        for spec in std::fs::read_dir(&run).into_iter().flatten().flatten() {
            let name = spec.file_name().to_string_lossy().into_owned();
            if let Some(service) = name.strip_suffix(".json") {
                let _ = backend.stop(service);
            }
        }
    }
}

impl Drop for StopSandboxes {
    fn drop(&mut self) {
        for sandbox in std::fs::read_dir(self.0.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            StopSandboxes::root(&sandbox.path());
        }
    }
}

/// The "must show", on the example repository's `mock` profile: a commit that changes
/// a version and its health check so that the check fails rolls the host back, and every
/// record names the old version, healthy; drift over two profiles finds nothing.
#[test]
fn the_example_repository_records_a_rolled_back_host_on_its_old_version() {
    if support::require_program("python3").is_none() || support::require_program("git").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let work = tmp.path().join("work");
    support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"),
        &repo,
    );
    support::git(&repo, &["init", "-q"]);
    support::git(&repo, &["add", "-A"]);
    support::git(&repo, &["commit", "-qm", "the example"]);
    let _stop = StopSandboxes(work.clone());
    let host = "nt-sbx-mon01";
    let run = |args: &[&str]| {
        Command::new(support::clarity_bin())
            .args(args)
            .args(["--repo", repo.to_str().unwrap(), "--server", host])
            .arg("--work-dir")
            .arg(&work)
            .env("NO_COLOR", "1")
            .env_remove("CLARITY_AGE_IDENTITY")
            .env_remove("CLARITY_STATE_DIR")
            .output()
            .unwrap()
    };
    let o = run(&["--profile", "mock"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // 0.4.1-demo (the same program under a new version) with a status check at a URL the
    // prober does not serve.
    let artifact = repo.join("artifacts/sip-probe.yml");
    let text_of = |p: &Path| std::fs::read_to_string(p).unwrap();
    let a = text_of(&artifact);
    let demo = a.find("  - version: \"0.4.0-demo\"").unwrap();
    let entry_end = demo + a[demo..].find("size: 4268\n").unwrap() + "size: 4268\n".len();
    let entry = a[demo..entry_end].replace("0.4.0-demo", "0.4.1-demo");
    std::fs::write(
        &artifact,
        format!("{}{entry}{}", &a[..entry_end], &a[entry_end..]),
    )
    .unwrap();
    let dep = repo.join("clients/nordtel/deployments/sip-probe/mock.yml");
    std::fs::write(
        &dep,
        text_of(&dep)
            .replace("version: \"0.4.0-demo\"", "version: \"0.4.1-demo\"")
            .replace(
                "url: http://127.0.0.1:18070/health",
                "url: http://127.0.0.1:18070/health-v2\n    retries: 2",
            ),
    )
    .unwrap();
    support::git(
        &repo,
        &[
            "commit",
            "-qam",
            "sip-probe 0.4.1-demo with a new status check",
        ],
    );
    let failing = support::git(&repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let o = run(&["--profile", "mock"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(result_of(&o, host).contains("rolled back"), "{out}");

    let current = std::fs::read_link(
        work.join("sandboxes")
            .join(host)
            .join("opt/clarity/sip-probe/current"),
    )
    .unwrap()
    .file_name()
    .unwrap()
    .to_string_lossy()
    .into_owned();
    assert!(current.starts_with("0.4.0-demo-"), "{current}");
    let expect = |d: &Value, what: &str| {
        assert_eq!(
            (&d["version"], &d["release"], &d["healthy"]),
            (
                &Value::from("0.4.0-demo"),
                &Value::from(current.as_str()),
                &Value::from(true)
            ),
            "{what}: {d}"
        );
    };
    let sip = |h: &Value| {
        h["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "sip-probe" || d["deployment"] == "sip-probe")
            .cloned()
            .unwrap_or_else(|| panic!("no sip-probe in {h}"))
    };
    let history = run(&["history", "--output", "json", "--limit", "1"]);
    let runs: Value = serde_json::from_slice(&history.stdout).unwrap();
    expect(&sip(host_of(&runs[0], host)), "history --output json");
    let note = support::git(&repo, &["notes", "--ref=clarity", "show", &failing]);
    let noted: Value = note
        .lines()
        .find_map(|l| l.strip_prefix("clarity-run: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap();
    expect(&sip(host_of(&noted, host)), "the git note");
    let api = Api::start(&work.join("ledger.sqlite"));
    expect(
        &sip(&api.get(&format!("/api/v1/hosts/{host}"))),
        "/api/v1/hosts",
    );

    let o = run(&["drift", "--profile", "mock,staging"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_full_disk_under_the_ledger_records_nothing_and_the_next_run_records_the_truth() {
    if !support::require_root() || support::require_program("mount").is_none() {
        return;
    }
    let Some(f) = Fleet::new() else { return };
    let state = f.work.join("state");
    let _disk = SmallDisk::mount(&state, "2m");
    let ledger = state.join("ledger.sqlite");
    let ledger_arg = ledger.to_str().unwrap();
    let apply = |f: &Fleet| f.run(&["--profile", "mock", "--ledger", ledger_arg]);
    let newest = |f: &Fleet| -> Value {
        let o = f.run(&[
            "history", "--output", "json", "--limit", "1", "--ledger", ledger_arg,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()[0].clone()
    };
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0");
    let o = apply(&f);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = newest(&f)["id"].as_str().unwrap().to_string();

    // The disk under the ledger fills up while the hosts are being applied.
    f.deploy("2.0.0", "ok", "ok");
    let p = f.repo.join("clients/acme/deployments/app/mock.yml");
    let slow = std::fs::read_to_string(&p).unwrap().replace(
        "command: [\"grep\", \"-qx\", \"ok\", \"conf/health.txt\"]",
        "command: [\"sh\", \"-c\", \"sleep 1 && grep -qx ok conf/health.txt\"]",
    );
    std::fs::write(&p, slow).unwrap();
    f.commit("app 2.0.0");
    let reconciler = f
        .command(&["--profile", "mock", "--ledger", ledger_arg])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !f.journal_left("sbx-1") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no apply started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let filler = state.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let o = reconciler.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("error: ledger") && out.contains("cannot"),
        "the error names the ledger: {out}"
    );
    // Nothing of the run is in the ledger (it is one transaction), and the ledger still reads.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(newest(&f)["id"], first.as_str());

    // With room again, the next run finds the hosts converged and records what they run.
    let o = apply(&f);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let l = Ledger::open(&ledger).unwrap();
    for h in HOSTS {
        let current = f.current(h).unwrap();
        assert!(current.starts_with("2.0.0-"), "{h}: {current}");
        assert!(f.running(h));
        let s = l.current_deployments(None, Some(h)).unwrap();
        assert_eq!(
            (s[0].version.as_str(), s[0].release.as_str(), s[0].healthy),
            ("2.0.0", current.as_str(), true)
        );
    }
}

/// A webhook receiver on loopback: the bodies it was sent.
fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                kept.lock().unwrap().push(v);
            }
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn one_shot_runs_notify_and_the_notes_rebuild_every_run_kind() {
    let Some(f) = Fleet::new() else { return };
    let (port, received) = webhook_receiver();
    f.write(
        "clarity.yml",
        &format!(
            "keep_releases: 3\nnotify:\n  - url: http://127.0.0.1:{port}/hook\n    events: [apply_failed, rollback, drift]\n"
        ),
    );
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0, notifying");
    assert_eq!(f.apply().status.code(), Some(0));
    assert!(
        received.lock().unwrap().is_empty(),
        "a clean apply raises nothing"
    );

    // A one-shot apply that rolls back notifies before it exits.
    f.deploy("2.0.0", "broken", "ok");
    f.commit("app 2.0.0, broken");
    assert_eq!(f.apply().status.code(), Some(1));
    let events: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(events.contains(&"apply_failed".to_string()), "{events:?}");
    assert!(events.contains(&"rollback".to_string()), "{events:?}");

    // A one-shot drift that finds a hand edit: exit 2, recorded as drift_found, notified.
    let edited = f.app_dir("sbx-2").join("current/conf/health.txt");
    std::fs::write(&edited, "ok\nedited by hand\n").unwrap();
    let o = f.run(&["drift", "--profile", "mock"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let run = f.newest_run();
    assert_eq!(run["outcome"], "drift_found", "{run}");
    assert_eq!(host_of(&run, "sbx-2")["outcome"], "drift", "{run}");
    let drift_event = received
        .lock()
        .unwrap()
        .iter()
        .find(|v| v["event"] == "drift")
        .cloned()
        .expect("a drift notification");
    assert_eq!(drift_event["run_id"], run["id"], "{drift_event}");
    assert!(drift_event["drift_findings"].as_u64().unwrap() >= 1);

    // The notes hold every run the ledger holds, drift runs with their findings.
    let rebuilt = f.work.join("rebuilt.sqlite");
    let o = f.run(&["history", "rebuild", "--ledger", rebuilt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = |l: &Ledger| {
        l.runs(&clarity::ledger::RunFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.outcome, r.drift_findings))
            .collect::<Vec<_>>()
    };
    let original = all(&f.ledger());
    assert_eq!(
        original.len(),
        3,
        "two applies and a drift run: {original:?}"
    );
    assert_eq!(all(&Ledger::open(&rebuilt).unwrap()), original);
}

/// Fault row 7: a second reconciler started while the first is mid-apply on the same hosts.
/// One that cannot wait long enough reports who holds the host and changes nothing there; one
/// that waits applies after the first, from what the host runs then. Nothing interleaves: each
/// host ends on one whole release, no journal, and the record equals the hosts.
#[test]
fn two_reconcilers_against_the_same_hosts_wait_or_name_the_holder_and_never_interleave() {
    let Some(f) = Fleet::new() else { return };
    f.deploy("1.0.0", "ok", "ok");
    f.commit("app 1.0.0");
    assert_eq!(f.apply().status.code(), Some(0));
    f.deploy("2.0.0", "ok", "ok");
    let p = f.repo.join("clients/acme/deployments/app/mock.yml");
    let slow = std::fs::read_to_string(&p).unwrap().replace(
        "command: [\"grep\", \"-qx\", \"ok\", \"conf/health.txt\"]",
        "command: [\"sh\", \"-c\", \"sleep 2 && grep -qx ok conf/health.txt\"]",
    );
    std::fs::write(&p, slow).unwrap();
    let commit = f.commit("app 2.0.0 with a slow check");
    let first = f
        .command(&["--profile", "mock"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !f.journal_left("sbx-1") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first reconciler never started its apply"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The impatient one: the canary host is held, so it names the holder and stops there.
    let impatient = f.run(&["--profile", "mock", "--lock-timeout", "1"]);
    let said = text(&impatient);
    assert_eq!(impatient.status.code(), Some(1), "{said}");
    assert!(said.contains("sbx-1 is locked by PID"), "{said}");
    let refused = f.newest_run();
    assert_eq!(host_of(&refused, "sbx-1")["outcome"], "failed", "{refused}");
    assert!(
        host_of(&refused, "sbx-1")["message"]
            .as_str()
            .is_some_and(|m| m.contains("locked by")),
        "{refused}"
    );
    // The canary failed, so the rollout stopped: the other host was not attempted by it.
    assert_eq!(
        host_of(&refused, "sbx-2")["outcome"],
        "not_attempted",
        "{refused}"
    );
    // The patient one waits for the host the first is on, then plans it again from what it
    // runs by then: nothing is redone, no release switched onto itself, no second restart.
    let patient = f.run(&["--profile", "mock", "--lock-timeout", "120"]);
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let said = text(&patient);
    assert_eq!(patient.status.code(), Some(0), "{said}");
    assert!(
        said.contains("waited for PID") && said.contains("planning again"),
        "{said}"
    );
    assert!(!said.contains("restart service app: ok"), "{said}");
    let waited = f.newest_run();
    for h in HOSTS {
        assert_eq!(host_of(&waited, h)["outcome"], "unchanged", "{waited}");
    }
    let api = Api::start(&f.work.join("ledger.sqlite"));
    for h in HOSTS {
        assert_record_is_the_host(&f, &api, h, "2.0.0", "ok");
        assert!(!f.journal_left(h), "{h}: a journal was left");
        // One whole 2.0.0 release: no second copy, no half-written one beside it.
        let releases: Vec<String> = std::fs::read_dir(f.app_dir(h).join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("2.0.0"))
            .collect();
        assert_eq!(releases.len(), 1, "{h}: {releases:?}");
    }
    let history = f.run(&["history", "--output", "json", "--limit", "3"]);
    let runs: Value = serde_json::from_slice(&history.stdout).unwrap();
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["commit"] == commit.as_str()),
        "{runs}"
    );
}
