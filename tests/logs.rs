//! Logs as an operator and a log collector rely on them, from the real binary converging real
//! `local` sandbox hosts: `--log-format json` writes one JSON object per line on stderr, with
//! the run id, host, deployment and step of every apply step, while stdout keeps the readable
//! plan and step lines; the watch loop, run as the service unit runs it, adds the branch and
//! commit; `-q` leaves only errors; `CLARITY_LOG` filters and wins over `-v`; a bad filter is a
//! usage error naming it; and a secret of the example repository never shows in the most
//! verbose logs, in either format.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::sandbox::Fixture;

/// The binary against `repo` with `work` as its work dir, the log settings of the caller only.
fn clarity(repo: &Path, work: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::clarity_bin());
    cmd.args(["--repo", repo.to_str().unwrap()])
        .args(["--work-dir", work.to_str().unwrap(), "--profile", "mock"])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CLARITY_LOG")
        .env_remove("CLARITY_LOG_FORMAT")
        .env_remove("CLARITY_AGE_IDENTITY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Every stderr line as a JSON object; panics on a line that is not one.
fn json_lines(o: &Output) -> Vec<Value> {
    stderr(o)
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v @ Value::Object(_)) => v,
            other => panic!(
                "not a JSON object on stderr: {l:?} ({other:?})\n{}",
                both(o)
            ),
        })
        .collect()
}

/// The id of the run an apply recorded, as it says on stdout.
fn recorded_run(o: &Output) -> String {
    let out = stdout(o);
    out.lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no recorded run:\n{}", both(o)))
        .to_string()
}

/// Changes what the sandbox serves, committed (that file alone), so that the next apply has
/// steps to log.
fn change(f: &Fixture, greeting: &str) {
    f.set_deployment("1.0.0", greeting, "");
    let file = "clients/acme/deployments/web/mock.yml";
    support::git(&f.repo, &["commit", "-qm", greeting, "--", file]);
}

#[test]
fn json_logs_are_one_object_per_line_with_run_host_deployment_and_step() {
    let Some(f) = Fixture::new() else { return };
    let o = clarity(&f.repo, &f.work, &["--log-format", "json", "-vv"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert_eq!(f.get("/").map(|r| r.1), Some("hello\n".into()));
    let run_id = recorded_run(&o);
    let lines = json_lines(&o);
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l[key].is_string(), "no {key} in {l:?}");
        }
    }
    // -vv reaches trace: the transport's debug lines are there, with their host.
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"
            && l["target"] == "clarity::transport"
            && l["host"] == "sbx-1"),
        "{}",
        stderr(&o)
    );
    let steps: Vec<_> = lines.iter().filter(|l| l.get("step").is_some()).collect();
    let actions: Vec<&str> = steps
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    for action in ["fetch artifact", "install release", "health check"] {
        assert!(actions.contains(&action), "no {action} step in {actions:?}");
    }
    for s in &steps {
        assert_eq!(s["level"], "INFO", "{s:?}");
        assert_eq!(s["run_id"], run_id.as_str(), "{s:?}");
        assert_eq!(s["host"], "sbx-1", "{s:?}");
        assert_eq!(s["deployment"], "web", "{s:?}");
        assert_eq!(s["status"], "ok", "{s:?}");
        let step = s["step"].as_str().unwrap();
        assert!(step.starts_with(s["action"].as_str().unwrap()), "{s:?}");
    }
    // The host's end, with the outcome the summary table shows.
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "agent finished: converged"
                && l["run_id"] == run_id.as_str()
                && l["host"] == "sbx-1"),
        "{}",
        stderr(&o)
    );
    // The readable output stays on stdout, as text: step lines and the summary, no JSON.
    let out = stdout(&o);
    assert!(out.contains("sbx-1: web: install release"), "{out}");
    assert!(out.contains("converged"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with('{')), "{out}");
}

#[test]
fn quiet_leaves_errors_only_and_clarity_log_filters_over_the_flags() {
    let Some(f) = Fixture::new() else { return };
    // An uncommitted change makes every apply warn.
    let settings = std::fs::read_to_string(f.repo.join("clarity.yml")).unwrap();
    std::fs::write(
        f.repo.join("clarity.yml"),
        format!("{settings}# not committed\n"),
    )
    .unwrap();
    let levels = |o: &Output| -> Vec<String> {
        json_lines(o)
            .iter()
            .map(|l| l["level"].as_str().unwrap().to_string())
            .collect()
    };

    let o = clarity(&f.repo, &f.work, &["--log-format", "json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let default = levels(&o);
    assert!(default.contains(&"WARN".to_string()), "{}", stderr(&o));
    assert!(default.contains(&"INFO".to_string()), "{}", stderr(&o));
    assert!(!default.contains(&"DEBUG".to_string()), "{}", stderr(&o));

    change(&f, "quiet");
    let o = clarity(&f.repo, &f.work, &["--log-format", "json", "-q"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert_eq!(stderr(&o), "", "-q logs errors only");
    // It did apply, and said so on stdout as always.
    assert_eq!(f.get("/").map(|r| r.1), Some("quiet\n".into()));
    assert!(stdout(&o).contains("recorded run"), "{}", stdout(&o));

    change(&f, "text quiet");
    let o = clarity(&f.repo, &f.work, &["-q"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert_eq!(stderr(&o), "", "-q logs errors only");

    // The text format renders the level as the prefix.
    change(&f, "text");
    let o = clarity(&f.repo, &f.work, &[], &[]);
    assert!(
        stderr(&o)
            .contains("warning: 1 uncommitted change in the config repository is not applied"),
        "{}",
        stderr(&o)
    );

    // CLARITY_LOG wins over -vv.
    change(&f, "filtered");
    let o = clarity(
        &f.repo,
        &f.work,
        &["--log-format", "json", "-vv"],
        &[("CLARITY_LOG", "warn")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert_eq!(levels(&o), ["WARN"], "{}", stderr(&o));

    // Directives by target: the fleet apply's step events alone, at info.
    change(&f, "targeted");
    let o = clarity(
        &f.repo,
        &f.work,
        &[],
        &[
            ("CLARITY_LOG", "clarity::apply::fleet=info"),
            ("CLARITY_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let lines = json_lines(&o);
    assert!(!lines.is_empty(), "{}", both(&o));
    assert!(
        lines
            .iter()
            .all(|l| l["target"] == "clarity::apply::fleet" && l["level"] == "INFO"),
        "{}",
        stderr(&o)
    );
    assert!(
        lines.iter().any(|l| l["step"].is_string()),
        "{}",
        stderr(&o)
    );
    assert_eq!(f.get("/").map(|r| r.1), Some("targeted\n".into()));

    // A filter that is not one stops the command before it does anything, and says why.
    change(&f, "never applied");
    let o = clarity(&f.repo, &f.work, &[], &[("CLARITY_LOG", "clarity=loud")]);
    assert_eq!(o.status.code(), Some(64), "{}", both(&o));
    let err = stderr(&o);
    assert!(
        err.contains("error: CLARITY_LOG: `clarity=loud` is not a log filter"),
        "{err}"
    );
    assert!(
        err.contains("hint: CLARITY_LOG takes RUST_LOG-style directives"),
        "{err}"
    );
    assert_eq!(f.get("/").map(|r| r.1), Some("targeted\n".into()));
}

/// Stops every sandbox service an apply in `work` started.
struct StopSandboxes(PathBuf);

impl Drop for StopSandboxes {
    fn drop(&mut self) {
        use clarity::service::ServiceBackend;
        for sandbox in std::fs::read_dir(self.0.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let run = sandbox.path().join("var/lib/clarity/run");
            let backend = clarity::service::ProcessBackend::new(run.clone());
            for spec in std::fs::read_dir(&run).into_iter().flatten().flatten() {
                let name = spec.file_name().to_string_lossy().into_owned();
                if let Some(service) = name.strip_suffix(".json") {
                    let _ = backend.stop(service);
                }
            }
        }
    }
}

#[test]
fn a_secret_of_the_example_never_shows_in_trace_logs() {
    if support::require_program("java").is_none() || support::require_program("python3").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config");
    support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"),
        &repo,
    );
    support::git(&repo, &["init", "-q"]);
    support::git(&repo, &["add", "-A"]);
    support::git(&repo, &["commit", "-qm", "example"]);
    let work = dir.path().join("work");
    let key = repo.join("demo-mock.agekey");
    let k = key.to_str().unwrap();
    // The value is really there and decryptable: otherwise the test proves nothing.
    let get = clarity(
        &repo,
        &work,
        &[
            "--client",
            "nordtel",
            "secret",
            "get",
            "api_token",
            "--age-identity",
            k,
        ],
        &[],
    );
    let secret = stdout(&get).trim().to_string();
    assert!(get.status.success() && secret.len() >= 8, "{}", both(&get));

    let stop = StopSandboxes(work.clone());
    let json = clarity(
        &repo,
        &work,
        &["--age-identity", k, "--log-format", "json", "-vv"],
        &[],
    );
    assert_eq!(json.status.code(), Some(0), "{}", both(&json));
    let lines = json_lines(&json);
    assert!(
        lines
            .iter()
            .any(|l| l["host"] == "nt-sbx-sms01" && l["action"] == "write env file"),
        "the env file with the secret is not among the logged steps:\n{}",
        stderr(&json)
    );
    // The env file on the host has the value: the logs ran where the secret was used.
    let env =
        std::fs::read_to_string(work.join("sandboxes/nt-sbx-sms01/opt/clarity/smsgateway/env"))
            .unwrap();
    assert!(
        env.contains(&secret),
        "the secret is not in the deployed env file"
    );

    // The same in text, at trace through CLARITY_LOG, on a change that writes the env file
    // with the secret again.
    let deployment = repo.join("clients/nordtel/deployments/smsgateway/mock.yml");
    let yml = std::fs::read_to_string(&deployment).unwrap();
    let yml = yml.replacen("env_vars:\n", "env_vars:\n  LOG_TEST: \"1\"\n", 1);
    std::fs::write(&deployment, yml).unwrap();
    support::git(&repo, &["commit", "-qam", "one more env var"]);
    let text = clarity(
        &repo,
        &work,
        &["--age-identity", k, "--client", "nordtel"],
        &[("CLARITY_LOG", "trace")],
    );
    assert_eq!(text.status.code(), Some(0), "{}", both(&text));
    assert!(
        stderr(&text).contains("debug: local: agent apply run_id="),
        "not at the most verbose level:\n{}",
        stderr(&text)
    );
    assert!(
        stderr(&text).contains("note: write env file env: ok"),
        "{}",
        stderr(&text)
    );
    drop(stop);
    for (what, o) in [("json", &json), ("text", &text)] {
        assert!(
            !both(o).contains(&secret),
            "the {what} logs leaked the secret:\n{}",
            both(o)
        );
    }
}

#[test]
fn the_watch_loop_logs_json_lines_with_the_run_branch_host_and_step() {
    let Some(f) = Fixture::new() else { return };
    let top = f.work.parent().unwrap().to_path_buf();
    let (out_path, err_path) = (top.join("watch.out"), top.join("watch.err"));
    let mut cmd = Command::new(support::clarity_bin());
    cmd.args(["--watch", "--repo", f.repo.to_str().unwrap()])
        .args(["--work-dir", f.work.to_str().unwrap()])
        .args([
            "--listen",
            "off",
            "--poll-interval",
            "3600",
            "--drift-interval",
            "0",
        ])
        // As the service unit runs it.
        .args(["--log-format", "json"])
        .env("NO_COLOR", "1")
        .env_remove("CLARITY_LOG")
        .env_remove("CLARITY_LOG_FORMAT")
        .env_remove("CLARITY_AGE_IDENTITY")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let daemon = support::Server::start("clarity-reconcile --watch", &mut cmd);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let start = std::time::Instant::now();
    while !read(&out_path).contains("recorded run ") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(90),
            "the loop recorded no run:\n{}{}",
            read(&out_path),
            read(&err_path)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // SIGTERM, as systemd stops it; the loop exits on its own.
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = std::time::Instant::now();
    while !read(&err_path).contains("\"message\":\"stopped\"") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the loop did not stop:\n{}",
            read(&err_path)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(daemon);
    assert_eq!(f.get("/").map(|r| r.1), Some("hello\n".into()));

    let out = read(&out_path);
    let run_id = out
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let head = support::git(&f.repo, &["rev-parse", "HEAD"]);
    let err = read(&err_path);
    let lines: Vec<Value> = err
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| panic!("not a JSON object on stderr: {l:?}\n{err}"))
        })
        .collect();
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("applying main@"))
            && l["branch"] == "main"
            && l["commit"] == head[..8]),
        "{err}"
    );
    let steps: Vec<&Value> = lines.iter().filter(|l| l["step"].is_string()).collect();
    assert!(
        steps.iter().any(|s| s["action"] == "switch release"),
        "{err}"
    );
    for s in &steps {
        assert_eq!(s["run_id"], run_id.as_str(), "{s}");
        assert_eq!(s["branch"], "main", "{s}");
        assert_eq!(s["host"], "sbx-1", "{s}");
        assert_eq!(s["deployment"], "web", "{s}");
    }
    // The plan and the step lines are text on stdout, as in a one-shot run.
    assert!(out.contains("sbx-1: web: switch release"), "{out}");
}

#[test]
fn validation_errors_and_the_final_error_are_json_events_too() {
    let Some(f) = Fixture::new() else { return };
    f.write(
        "clients/acme/servers/sbx-1.yml",
        "hostname: sbx-1\ndatacenter: nowhere\nagent:\n  transport: local\n  root: sandboxes/sbx-1\n  service_manager: process\n",
    );
    let o = clarity(
        &f.repo,
        &f.work,
        &["--dry-run", "--log-format", "json"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let lines = json_lines(&o);
    let diag = lines
        .iter()
        .find(|l| l["file"] == "clients/acme/servers/sbx-1.yml")
        .unwrap_or_else(|| panic!("no diagnostic event:\n{}", stderr(&o)));
    assert_eq!(diag["level"], "ERROR", "{diag}");
    assert_eq!(diag["line"], 2, "{diag}");
    assert!(diag["column"].as_u64().is_some_and(|c| c > 0), "{diag}");
    assert!(diag["code"].is_string(), "{diag}");
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing was planned")),
        "{last}"
    );
    assert!(
        last["hint"]
            .as_str()
            .is_some_and(|h| h.contains("validate")),
        "{last}"
    );
    // The same run in text keeps the lines people read.
    let o = clarity(&f.repo, &f.work, &["--dry-run"], &[]);
    let err = stderr(&o);
    assert!(err.contains("clients/acme/servers/sbx-1.yml:2:"), "{err}");
    assert!(
        err.contains("error: the config repository has 1 error"),
        "{err}"
    );
}
