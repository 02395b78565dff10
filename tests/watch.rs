//! `--watch` end to end with the real binary: a bare git repository the tests push to, a
//! `local` sandbox host running a real Python service, the status API and `/metrics` asked with
//! `curl`, signed commits made with the real `git` and `ssh-keygen`, and SIGTERM in the middle of
//! a run.

mod support;

use hmac::{KeyInit, Mac};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::sandbox::{Fixture, SERVICE, Version};

/// The watch loop following a bare `origin.git` that the fixture's repository pushes to.
struct Watch {
    daemon: Option<support::Server>,
    origin: PathBuf,
    log: PathBuf,
    api: String,
    token: &'static str,
    secret: &'static str,
}

const TOKEN: &str = "api-token-for-tests";
const SECRET: &str = "webhook-secret-for-tests";

impl Watch {
    /// The bare `origin.git` next to the fixture, created (and added as the fixture's remote)
    /// the first time.
    fn origin(f: &Fixture) -> PathBuf {
        let top = f.work.parent().unwrap();
        let origin = top.join("origin.git");
        if !origin.exists() {
            support::git(
                top,
                &[
                    "clone",
                    "-q",
                    "--bare",
                    f.repo.to_str().unwrap(),
                    origin.to_str().unwrap(),
                ],
            );
            support::git(
                &f.repo,
                &["remote", "add", "origin", origin.to_str().unwrap()],
            );
        }
        origin
    }

    fn start(f: &Fixture, extra: &[&str]) -> Watch {
        let origin = Watch::origin(f);
        Watch::start_following(f, origin.to_str().unwrap(), extra)
    }

    /// Follows `source` (the bare origin's path or a URL for it).
    fn start_following(f: &Fixture, source: &str, extra: &[&str]) -> Watch {
        let origin = Watch::origin(f);
        let top = f.work.parent().unwrap().to_path_buf();
        std::fs::write(top.join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(top.join("secret"), SECRET).unwrap();
        let port = support::free_port();
        let log = top.join(format!("watch-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(support::clarity_bin());
        cmd.args(["--watch", "--repo", source])
            .arg("--work-dir")
            .arg(&f.work)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--api-token-file")
            .arg(top.join("token"))
            .arg("--webhook-secret-file")
            .arg(top.join("secret"))
            .args(["--poll-interval", "3600"])
            .args(extra)
            .args(if extra.contains(&"--drift-interval") {
                &[][..]
            } else {
                &["--drift-interval", "0"][..]
            })
            .env("NO_COLOR", "1")
            .env_remove("CLARITY_AGE_IDENTITY")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let daemon = support::Server::start("clarity-reconcile --watch", &mut cmd);
        assert!(
            support::wait_for_port(port, Duration::from_secs(30)),
            "the status API never listened:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Watch {
            daemon: Some(daemon),
            origin,
            log,
            api: format!("http://127.0.0.1:{port}"),
            token: TOKEN,
            secret: SECRET,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `cond`, failing with the loop's log.
    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; the loop's log:\n{}",
            self.log()
        );
    }

    /// `curl` with the given extra arguments; the HTTP status and the body.
    fn curl(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("{}{path}", self.api))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.curl(path, &[]);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn note(&self, commit: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.origin)
            .args(["notes", "--ref", "clarity", "show", commit])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sends SIGTERM and waits for the loop to exit; its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let daemon = self.daemon.as_ref().unwrap();
        let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                    std::mem::forget(self.daemon.take());
                    return std::os::unix::process::ExitStatusExt::from_raw(code << 8);
                }
                Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => {
                    std::mem::forget(self.daemon.take());
                    panic!("the loop died of {sig:?}:\n{}", self.log());
                }
                _ => {}
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the loop did not stop after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn push(f: &Fixture) -> String {
    support::git(&f.repo, &["push", "-q", "origin", "main"]);
    head(&f.repo)
}

fn head(repo: &Path) -> String {
    support::git(repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string()
}

fn greeting(f: &Fixture) -> Option<String> {
    f.get("/").map(|(_, body)| body.trim().to_string())
}

fn prerequisites() -> Option<Fixture> {
    support::require_program("curl")?;
    support::require_program("git")?;
    Fixture::new()
}

#[test]
fn pushed_commits_converge_get_a_note_and_show_in_the_api_and_metrics() {
    let Some(f) = prerequisites() else { return };
    let w = Watch::start(&f, &[]);
    let first = head(&f.repo);
    w.wait(
        "the first commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("hello") && w.note(&first).is_some(),
    );
    assert!(w.note(&first).unwrap().contains("Clarity apply"));

    f.set_deployment("1.0.0", "hello again", "");
    f.commit("new greeting");
    let second = push(&f);
    w.wait(
        "the pushed commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("hello again") && w.note(&second).is_some(),
    );

    // The API: the two apply runs of main, the host and its deployment, no drift yet.
    let runs = w.json("/api/v1/runs");
    let runs = runs["runs"].as_array().unwrap_or_else(|| panic!("{runs}"));
    let applied: Vec<&serde_json::Value> = runs.iter().filter(|r| r["mode"] == "apply").collect();
    assert_eq!(applied.len(), 2, "{runs:?}");
    assert_eq!(applied[0]["commit"], second.as_str());
    assert_eq!(applied[1]["commit"], first.as_str());
    assert!(
        applied
            .iter()
            .all(|r| r["branch"] == "main" && r["trigger"] == "watch")
    );
    let id = applied[0]["id"].as_str().unwrap();
    let run = w.json(&format!("/api/v1/runs/{id}"));
    assert_eq!(run["run"]["hosts"][0]["server"], "sbx-1", "{run}");
    assert_eq!(run["run"]["hosts"][0]["outcome"], "converged", "{run}");
    let host = w.json("/api/v1/hosts/sbx-1");
    assert_eq!(host["deployments"][0]["deployment"], "web", "{host}");
    assert_eq!(host["deployments"][0]["version"], "1.0.0", "{host}");
    assert_eq!(w.curl("/api/v1/hosts/nope", &[]).0, 404);
    let health = w.json("/healthz");
    assert_eq!(health["status"], "ok", "{health}");

    let (code, metrics) = w.curl("/metrics", &[]);
    assert_eq!(code, 200);
    let series = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        series("clarity_reconcile_runs_total")
            .iter()
            .any(|l| l.contains("mode=\"apply\"") && l.ends_with(" 2")),
        "{metrics}"
    );
    assert!(
        series("clarity_last_applied_commit_timestamp_seconds")
            .iter()
            .any(|l| l.contains("branch=\"main\"")),
        "{metrics}"
    );

    // The push webhook: a bad signature is rejected, a good one accepted.
    let body = r#"{"ref":"refs/heads/main"}"#;
    let (code, _) = w.curl(
        "/hooks/git",
        &[
            "-X",
            "POST",
            "-H",
            "X-Hub-Signature-256: sha256=0000000000000000000000000000000000000000000000000000000000000000",
            "--data",
            body,
        ],
    );
    assert_eq!(code, 401);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(w.secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!(
        "X-Hub-Signature-256: sha256={}",
        hex::encode(mac.finalize().into_bytes())
    );
    let (code, _) = w.curl(
        "/hooks/git",
        &["-X", "POST", "-H", &signature, "--data", body],
    );
    assert_eq!(code, 202);

    // Triggering a run needs the token.
    assert_eq!(w.curl("/api/v1/reconcile", &["-X", "POST"]).0, 401);
    let bearer = format!("Authorization: Bearer {}", w.token);
    assert_eq!(
        w.curl("/api/v1/reconcile", &["-X", "POST", "-H", &bearer])
            .0,
        202
    );
    w.wait("the API-triggered run", Duration::from_secs(60), || {
        w.json("/api/v1/runs")["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["trigger"] == "watch:api"))
    });
    for secret in [TOKEN, SECRET] {
        assert!(!w.log().contains(secret), "the log shows a secret");
    }
}

/// An ed25519 key made with the real ssh-keygen, and an allowed_signers file that trusts it.
fn ssh_signer(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("signer");
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "release-manager",
            "-f",
        ])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = dir.join("allowed_signers");
    std::fs::write(&allowed, format!("tests@clarity.invalid {public}")).unwrap();
    (key, allowed)
}

fn signed_commit(f: &Fixture, key: &Path, msg: &str) {
    support::git(&f.repo, &["add", "-A"]);
    support::git(
        &f.repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={}", key.display()),
            "commit",
            "-S",
            "-qm",
            msg,
        ],
    );
}

#[test]
fn an_unsigned_commit_is_refused_when_signatures_are_required() {
    let Some(_) = support::require_program("ssh-keygen") else {
        return;
    };
    let Some(f) = prerequisites() else { return };
    let keys = f.work.parent().unwrap().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (key, allowed) = ssh_signer(&keys);
    // The fixture's first commit is unsigned: the signed history starts with the next one.
    f.set_deployment("1.0.0", "signed hello", "");
    signed_commit(&f, &key, "signed");
    let signed = head(&f.repo);
    let w = Watch::start(
        &f,
        &[
            "--require-signed-commits",
            "--trusted-keys",
            allowed.to_str().unwrap(),
        ],
    );
    w.wait(
        "the signed commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("signed hello") && w.note(&signed).is_some(),
    );

    f.set_deployment("1.0.0", "sneaky hello", "");
    f.commit("unsigned change");
    let unsigned = push(&f);
    w.wait("the refusal", Duration::from_secs(60), || {
        w.log().contains("refused")
    });
    let short = &unsigned[..8];
    let log = w.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refused") && l.contains(short) && l.contains("not signed")),
        "{log}"
    );
    // Nothing applied: the host still serves the signed greeting.
    assert_eq!(greeting(&f).as_deref(), Some("signed hello"));
    // The refusal is in the ledger (through the API and `history`) and in the commit's note.
    w.wait("the refusal's record", Duration::from_secs(30), || {
        w.json("/api/v1/runs")["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["outcome"] == "refused"))
    });
    let runs = w.json("/api/v1/runs");
    let refused = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "refused")
        .unwrap_or_else(|| panic!("{runs}"))
        .clone();
    assert_eq!(refused["commit"], unsigned.as_str());
    let history = Command::new(support::clarity_bin())
        .args(["history", "show"])
        .arg(refused["id"].as_str().unwrap())
        .arg("--work-dir")
        .arg(&f.work)
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("refused") && history.contains("not signed"),
        "{history}"
    );
    w.wait("the refusal's note", Duration::from_secs(30), || {
        w.note(&unsigned).is_some_and(|n| n.contains("REFUSED"))
    });
}

#[test]
fn sigterm_during_a_run_finishes_the_host_in_flight_and_stops() {
    let Some(f) = prerequisites() else { return };
    let mut w = Watch::start(&f, &[]);
    w.wait(
        "the first commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("hello"),
    );
    // Version 2 takes a few seconds to come up, so the SIGTERM lands while the host is
    // between its switch and its health check.
    let slow = format!("import time\ntime.sleep(3)\n{SERVICE}");
    f.set_versions(&[
        Version {
            version: "1.0.0",
            file: "web-1.0.0.py",
            content: SERVICE.as_bytes(),
            sha256: None,
        },
        Version {
            version: "2.0.0",
            file: "web-2.0.0.py",
            content: slow.as_bytes(),
            sha256: None,
        },
    ]);
    f.set_deployment("2.0.0", "hello v2", "");
    f.commit("version 2");
    let v2 = push(&f);
    w.wait("the run to start", Duration::from_secs(60), || {
        w.log().contains(&format!("applying main@{}", &v2[..8]))
    });
    std::thread::sleep(Duration::from_millis(500));
    let status = w.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", w.log());
    let log = w.log();
    // The signal arrived while the run was in flight: it was recorded after the stop began.
    let stopping = log.find("stopping").unwrap_or_else(|| panic!("{log}"));
    let applying = log.find(&format!("applying main@{}", &v2[..8])).unwrap();
    let recorded = log[applying..]
        .find("recorded run")
        .map(|i| i + applying)
        .unwrap_or_else(|| panic!("the run in flight was not recorded:\n{log}"));
    assert!(stopping < recorded, "{log}");
    // The host in flight finished: on the whole new release, healthy, recorded.
    assert_eq!(
        f.current().as_deref().map(|r| r.starts_with("2.0.0")),
        Some(true),
        "{log}"
    );
    let release = f.sandbox().join("opt/clarity/web/current");
    assert!(release.join("web-2.0.0.py").is_file(), "{log}");
    assert_eq!(greeting(&f).as_deref(), Some("hello v2"));
    let history = Command::new(support::clarity_bin())
        .args(["history", "--output", "json"])
        .arg("--work-dir")
        .arg(&f.work)
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains(&v2), "{history}");
}

/// Sends the push webhook with a valid GitHub signature; the HTTP status.
fn webhook(w: &Watch) -> u16 {
    let body = r#"{"ref":"refs/heads/main"}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(w.secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!(
        "X-Hub-Signature-256: sha256={}",
        hex::encode(mac.finalize().into_bytes())
    );
    w.curl(
        "/hooks/git",
        &["-X", "POST", "-H", &signature, "--data", body],
    )
    .0
}

#[test]
fn a_remote_is_fetched_on_the_webhook_and_rewritten_history_is_refused_unless_allowed() {
    let Some(f) = prerequisites() else { return };
    // Follow the bare origin by URL: fetched, not watched.
    let origin = Watch::origin(&f);
    let url = format!("file://{}", origin.display());
    let mut w = Watch::start_following(&f, &url, &[]);
    w.wait(
        "the first commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("hello"),
    );
    f.set_deployment("1.0.0", "fetched", "");
    f.commit("second");
    push(&f);
    // No poll for an hour: nothing moves until the webhook says so.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(greeting(&f).as_deref(), Some("hello"));
    assert_eq!(webhook(&w), 202);
    w.wait(
        "the webhook's fetch to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("fetched"),
    );

    // A force-push that drops the applied commit from the branch is refused.
    support::git(&f.repo, &["reset", "-q", "--hard", "HEAD~1"]);
    f.set_deployment("1.0.0", "rewritten", "");
    f.commit("rewritten");
    support::git(&f.repo, &["push", "-q", "--force", "origin", "main"]);
    let rewritten = head(&f.repo);
    assert_eq!(webhook(&w), 202);
    w.wait("the refusal", Duration::from_secs(60), || {
        w.log().contains("was rewritten")
    });
    assert_eq!(greeting(&f).as_deref(), Some("fetched"));
    assert!(w.log().contains(&rewritten[..8]), "{}", w.log());
    assert!(w.terminate().success());

    // With --allow-rewrite the same head is applied.
    let w = Watch::start_following(&f, &url, &["--allow-rewrite"]);
    let bearer = format!("Authorization: Bearer {}", w.token);
    assert_eq!(
        w.curl("/api/v1/reconcile", &["-X", "POST", "-H", &bearer])
            .0,
        202
    );
    w.wait(
        "the rewritten head to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("rewritten"),
    );
}

#[test]
fn a_last_applied_commit_missing_from_the_repository_leads_to_a_full_reconcile() {
    let Some(f) = prerequisites() else { return };
    let mut w = Watch::start(&f, &[]);
    w.wait(
        "the first commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("hello"),
    );
    assert!(w.terminate().success());
    // The repository is recreated with new history (the ledger survives, its commit does
    // not), and the reconciler's mirror is gone, as on a rebuilt machine.
    std::fs::remove_dir_all(f.repo.join(".git")).unwrap();
    support::git(&f.repo, &["init", "-q"]);
    f.set_deployment("1.0.0", "new history", "");
    f.commit("a new root");
    support::git(
        &f.repo,
        &["remote", "add", "origin", w.origin.to_str().unwrap()],
    );
    support::git(&f.repo, &["push", "-q", "--force", "origin", "main"]);
    support::git(w.origin.as_path(), &["gc", "-q", "--prune=now"]);
    std::fs::remove_dir_all(f.work.join("mirror")).unwrap();
    let w = Watch::start(&f, &[]);
    w.wait("the full reconcile", Duration::from_secs(60), || {
        greeting(&f).as_deref() == Some("new history")
    });
    assert!(
        w.log().contains("is not in the repository any more"),
        "{}",
        w.log()
    );
    // Recorded as such: the run's trigger says it was a full reconcile, and why.
    w.wait("the run to be recorded", Duration::from_secs(60), || {
        w.log().contains("recorded run")
    });
    let history = Command::new(support::clarity_bin())
        .args(["history", "--output", "json", "--limit", "1"])
        .arg("--work-dir")
        .arg(&f.work)
        .output()
        .unwrap();
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert!(
        history[0]["trigger"]
            .as_str()
            .is_some_and(|t| t.contains("full reconcile: the last applied commit")),
        "{history}"
    );
}

/// A webhook receiver for notifications: a real HTTP listener that keeps each body.
fn notification_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
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
            if reader.read_exact(&mut body).is_ok() {
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn drift_is_checked_on_an_interval_notified_and_healed_where_marked() {
    let Some(f) = prerequisites() else { return };
    let (port, notifications) = notification_receiver();
    f.write(
        "clarity.yml",
        &format!(
            "keep_releases: 3\nnotify:\n  - url: http://127.0.0.1:{port}/hook\n    events: [drift]\n"
        ),
    );
    f.set_deployment("1.0.0", "hello", "drift: heal\n");
    f.commit("heal drift");
    let w = Watch::start(&f, &["--drift-interval", "2"]);
    w.wait(
        "the first commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("hello"),
    );
    let managed = f
        .sandbox()
        .join("opt/clarity/web/current/conf/greeting.txt");
    std::fs::write(&managed, "edited by hand\n").unwrap();
    w.wait("the drift to be healed", Duration::from_secs(60), || {
        std::fs::read_to_string(&managed).is_ok_and(|t| t == "hello\n")
    });
    let log = w.log();
    assert!(log.contains("healing drift of web on main"), "{log}");
    w.wait("the drift notification", Duration::from_secs(30), || {
        !notifications.lock().unwrap().is_empty()
    });
    let event: serde_json::Value = serde_json::from_str(&notifications.lock().unwrap()[0]).unwrap();
    assert_eq!(event["event"], "drift", "{event}");
    assert_eq!(event["mode"], "drift", "{event}");
    assert!(event["drift_findings"].as_u64().unwrap() >= 1, "{event}");
    // The drift run and the heal run are in the ledger.
    w.wait("the heal run's record", Duration::from_secs(60), || {
        let runs = w.json("/api/v1/runs");
        let triggers: Vec<String> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["trigger"].as_str().map(str::to_string))
            .collect();
        triggers.iter().any(|t| t == "watch:drift") && triggers.iter().any(|t| t == "watch:heal")
    });
}

#[test]
fn a_burst_of_pushes_coalesces_into_few_passes_that_end_on_the_last_commit() {
    let Some(f) = prerequisites() else { return };
    let w = Watch::start(&f, &[]);
    w.wait(
        "the first commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("hello"),
    );
    let mut pushed = Vec::new();
    for i in 1..=6 {
        f.set_deployment("1.0.0", &format!("burst {i}"), "");
        f.commit(&format!("burst {i}"));
        pushed.push(push(&f));
    }
    let last = pushed.last().unwrap().clone();
    w.wait(
        "the last commit to converge",
        Duration::from_secs(90),
        || greeting(&f).as_deref() == Some("burst 6") && w.note(&last).is_some(),
    );
    let runs = w.json("/api/v1/runs");
    let applied: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["mode"] == "apply")
        .filter_map(|r| r["commit"].as_str())
        .filter(|c| pushed.iter().any(|p| p == c))
        .collect();
    // Six pushes, passes that never overlap: the first pass takes what had arrived, the
    // next one the rest; never one pass per push.
    assert!(applied.len() < pushed.len(), "{applied:?}");
    assert_eq!(applied.first().copied(), Some(last.as_str()), "{applied:?}");
}

/// Removes the loop's ledger (and its WAL files), as a lost disk or an operator would.
fn delete_ledger(f: &Fixture) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(f.work.join(format!("ledger.sqlite{suffix}")));
    }
}

/// A note on `target` in `origin` copied from the run note of `from`, claiming a successful
/// apply of `target` finished in 2099: what anyone who can push notes can forge.
fn forge_note(origin: &Path, from: &str, target: &str) {
    let out = Command::new("git")
        .arg("-C")
        .arg(origin)
        .args(["notes", "--ref", "clarity", "show", from])
        .output()
        .unwrap();
    let note = String::from_utf8_lossy(&out.stdout);
    let line = note
        .lines()
        .find_map(|l| l.strip_prefix("clarity-run: "))
        .unwrap_or_else(|| panic!("no run in the note of {from}: {note}"));
    let mut run: serde_json::Value = serde_json::from_str(line).unwrap();
    run["id"] = "20991231T000000Z-f0f0f0f0".into();
    run["commit"] = target.into();
    run["started_at"] = "2099-12-31T00:00:00Z".into();
    run["finished_at"] = "2099-12-31T00:00:01Z".into();
    run["outcome"] = "success".into();
    run["mode"] = "apply".into();
    support::git(
        origin,
        &[
            "notes",
            "--ref",
            "clarity",
            "add",
            "-f",
            "-m",
            &format!("clarity-run: {run}"),
            target,
        ],
    );
}

// Security review, finding 4: with signatures required by the repository's own clarity.yml
// (no key configured on the reconciler), an unsigned commit that lifts the requirement is not
// applied after the ledger is deleted (b), after `history rebuild` took a forged, future-dated
// note marking it applied (c, d: and the refusal is not repeated in a loop), nor as a
// force-push with --allow-rewrite (a); a signed rewrite still is.
#[test]
fn approval_survives_a_lost_ledger_forged_notes_a_future_clock_and_a_rewrite() {
    let Some(_) = support::require_program("ssh-keygen") else {
        return;
    };
    let Some(f) = prerequisites() else { return };
    let initial = head(&f.repo);
    let keys = f.work.parent().unwrap().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (key, allowed) = ssh_signer(&keys);
    let settings = |require: bool| {
        format!(
            "keep_releases: 3\napproval:\n  require_signed_commits: {require}\n  trusted_keys:\n    - keys/allowed_signers\n"
        )
    };
    f.write(
        "keys/allowed_signers",
        &std::fs::read_to_string(&allowed).unwrap(),
    );
    f.write("clarity.yml", &settings(true));
    f.set_deployment("1.0.0", "signed hello", "");
    signed_commit(&f, &key, "require signatures");
    let signed = head(&f.repo);

    // A first start knows no trusted base: refused until the operator names one.
    let mut w = Watch::start(&f, &[]);
    w.wait(
        "the refusal for want of a base",
        Duration::from_secs(60),
        || w.log().contains("no trusted base"),
    );
    assert_eq!(greeting(&f), None, "{}", w.log());
    assert!(w.terminate().success());
    let mut w = Watch::start(&f, &["--trust-from", &signed]);
    w.wait(
        "the signed commit to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("signed hello") && w.note(&signed).is_some(),
    );
    assert!(w.log().contains("named with --trust-from"), "{}", w.log());

    // An unsigned commit that also lifts the requirement is refused.
    f.write("clarity.yml", &settings(false));
    f.set_deployment("1.0.0", "sneaky hello", "");
    f.commit("unsigned, lifting the requirement");
    let unsigned = push(&f);
    w.wait("the refusal", Duration::from_secs(60), || {
        w.log().lines().any(|l| {
            l.contains("refused") && l.contains(&unsigned[..8]) && l.contains("not signed")
        })
    });
    assert!(w.terminate().success());

    // (b) The ledger is lost: the same head is still refused.
    delete_ledger(&f);
    let mut w = Watch::start(&f, &[]);
    w.wait(
        "the refusal without a ledger",
        Duration::from_secs(60),
        || w.log().contains("no trusted base"),
    );
    assert_eq!(greeting(&f).as_deref(), Some("signed hello"));
    assert!(w.terminate().success());

    // (c, d) A forged note says the unsigned commit was applied, in 2099; the ledger is
    // rebuilt from the notes, and another unsigned commit follows.
    delete_ledger(&f);
    forge_note(&w.origin, &signed, &unsigned);
    let rebuilt = Command::new(support::clarity_bin())
        .args(["history", "rebuild", "--repo"])
        .arg(&w.origin)
        .arg("--work-dir")
        .arg(&f.work)
        .output()
        .unwrap();
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    f.set_deployment("1.0.0", "sneakier hello", "");
    f.commit("unsigned, on top of the forged one");
    let next = push(&f);
    let mut w = Watch::start(&f, &[]);
    w.wait(
        "the refusal after the rebuild",
        Duration::from_secs(60),
        || {
            w.log().lines().any(|l| {
                l.contains("refused") && l.contains(&next[..8]) && l.contains("no trusted base")
            })
        },
    );
    // Its own note writes and the future-dated record do not make the loop judge again.
    std::thread::sleep(Duration::from_secs(5));
    let refusals = w.log().matches("refused: main").count();
    assert_eq!(refusals, 1, "{}", w.log());
    assert_eq!(greeting(&f).as_deref(), Some("signed hello"));
    assert!(w.terminate().success());

    // (a) A force-push of unsigned history, with --allow-rewrite: judged from the trusted
    // commit, which requires signatures, so refused.
    support::git(&f.repo, &["reset", "-q", "--hard", &initial]);
    f.set_deployment("1.0.0", "rewritten hello", "");
    f.commit("unsigned rewrite");
    support::git(&f.repo, &["push", "-q", "--force", "origin", "main"]);
    let rewritten = head(&f.repo);
    let mut w = Watch::start(&f, &["--allow-rewrite", "--trust-from", &signed]);
    w.wait("the rewrite's refusal", Duration::from_secs(60), || {
        w.log().lines().any(|l| {
            l.contains("refused") && l.contains(&rewritten[..8]) && l.contains("not signed")
        })
    });
    assert_eq!(greeting(&f).as_deref(), Some("signed hello"));
    // A signed rewrite is applied: the key trusted at the base vouches for it.
    support::git(&f.repo, &["reset", "-q", "--hard", &initial]);
    f.set_deployment("1.0.0", "signed rewrite", "");
    signed_commit(&f, &key, "signed rewrite");
    support::git(&f.repo, &["push", "-q", "--force", "origin", "main"]);
    let bearer = format!("Authorization: Bearer {}", w.token);
    assert_eq!(
        w.curl("/api/v1/reconcile", &["-X", "POST", "-H", &bearer])
            .0,
        202
    );
    w.wait(
        "the signed rewrite to converge",
        Duration::from_secs(60),
        || greeting(&f).as_deref() == Some("signed rewrite"),
    );
    assert!(w.terminate().success());
}
