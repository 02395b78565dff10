//! The process backend (for `mock` sandboxes) with real processes: a Python HTTP server
//! started detached, restarted and stopped; a process that dies (and stays a zombie) shows as
//! failed; SIGTERM escalates to SIGKILL; a program that exits at once fails the start.

mod service_common;
mod support;

use clarity::model::RestartPolicy;
use clarity::model::host::ServiceState;
use clarity::service::{ProcessBackend, ServiceBackend, ServiceDefinition};
use service_common::{
    make_releases, proc_state, tricky_args, wait_for_server, wait_until, write_env,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn definition(name: &str, base: &Path, command: &[&str]) -> ServiceDefinition {
    ServiceDefinition {
        name: name.to_string(),
        command: command.iter().map(|s| s.to_string()).collect(),
        working_dir: base.join("current"),
        env_file: None,
        user: None,
        restart: RestartPolicy::Always,
        autostart: true,
        limits: None,
        log_file: base.join("logs").join(format!("{name}.log")),
    }
}

fn pid_of(backend: &ProcessBackend, name: &str) -> u32 {
    std::fs::read_to_string(backend.pid_path(name))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn sandbox() -> Option<(tempfile::TempDir, PathBuf, ProcessBackend)> {
    support::require_program("python3")?;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("opt/clarity/web");
    make_releases(&base);
    let backend = ProcessBackend::new(dir.path().join("var/lib/clarity/run"));
    Some((dir, base, backend))
}

#[test]
fn process_backend_runs_restarts_and_stops_a_real_server() {
    let Some((_dir, base, backend)) = sandbox() else {
        return;
    };
    write_env(
        &base.join("env"),
        &[
            ("APP_GREETING", "hello \"world\" 50% $HOME"),
            ("APP_EMPTY", ""),
        ],
    );
    let port = support::free_port().to_string();
    let mut command = vec!["python3".to_string(), "serve.py".into(), port.clone()];
    command.extend(tricky_args());
    let mut def = definition("clarity-web", &base, &[]);
    def.command = command.clone();
    def.env_file = Some(base.join("env"));

    assert_eq!(backend.state("clarity-web"), ServiceState::Missing);
    assert!(backend.install(&def).unwrap());
    assert!(!backend.install(&def).unwrap());
    assert_eq!(
        backend.state("clarity-web"),
        ServiceState::Stopped,
        "installed, not started"
    );
    assert_eq!(backend.enabled("clarity-web"), Some(true));

    backend.start("clarity-web").unwrap();
    let port: u16 = port.parse().unwrap();
    let first = wait_for_server(port, None);
    assert_eq!(backend.state("clarity-web"), ServiceState::Running);
    assert_eq!(first["argv"], serde_json::json!(command[2..]));
    assert_eq!(first["env"]["APP_GREETING"], "hello \"world\" 50% $HOME");
    assert_eq!(first["env"]["APP_EMPTY"], "");
    let pid = pid_of(&backend, "clarity-web");
    assert_eq!(first["pid"], pid);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid, "the process leads its own process group");

    backend.start("clarity-web").unwrap();
    assert_eq!(
        pid_of(&backend, "clarity-web"),
        pid,
        "start of a running service is a no-op"
    );

    backend.restart("clarity-web").unwrap();
    let second = wait_for_server(port, Some(u64::from(pid)));
    assert_ne!(second["pid"], pid);
    assert_eq!(proc_state(pid), None, "the old process is gone and reaped");

    backend.stop("clarity-web").unwrap();
    assert_eq!(backend.state("clarity-web"), ServiceState::Stopped);
    assert!(!backend.pid_path("clarity-web").exists());
    let log = std::fs::read_to_string(base.join("logs/clarity-web.log")).unwrap();
    assert_eq!(
        log.matches("listening on").count(),
        2,
        "the log is appended to: {log}"
    );

    backend.remove("clarity-web").unwrap();
    assert_eq!(backend.state("clarity-web"), ServiceState::Missing);
    assert_eq!(backend.enabled("clarity-web"), None);
    backend.remove("clarity-web").unwrap();
}

#[test]
fn a_dead_process_is_failed_even_as_a_zombie() {
    let Some((_dir, base, backend)) = sandbox() else {
        return;
    };
    let def = definition("clarity-dies", &base, &["sh", "-c", "sleep 0.5; exit 1"]);
    backend.install(&def).unwrap();
    backend.start("clarity-dies").unwrap();
    let pid = pid_of(&backend, "clarity-dies");
    assert_eq!(backend.state("clarity-dies"), ServiceState::Running);
    // Nobody waits for it (this test process is its parent and does not), so it stays a
    // zombie: exactly what a dead detached process looks like under a PID 1 that does not reap.
    wait_until("the process is a zombie", Duration::from_secs(10), || {
        proc_state(pid) == Some('Z')
    });
    assert_eq!(backend.state("clarity-dies"), ServiceState::Failed);
    backend.stop("clarity-dies").unwrap();
    assert_eq!(proc_state(pid), None, "stop reaps its own zombie");
    assert_eq!(backend.state("clarity-dies"), ServiceState::Stopped);
}

#[test]
fn stop_escalates_to_sigkill() {
    let Some((_dir, base, backend)) = sandbox() else {
        return;
    };
    let backend = backend.with_stop_timeout(Duration::from_millis(500));
    let def = definition(
        "clarity-stubborn",
        &base,
        &[
            "python3",
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)",
        ],
    );
    backend.install(&def).unwrap();
    backend.start("clarity-stubborn").unwrap();
    wait_until("SIGTERM is ignored", Duration::from_secs(10), || {
        std::fs::read_to_string(base.join("logs/clarity-stubborn.log"))
            .is_ok_and(|l| l.contains("ready"))
    });
    let pid = pid_of(&backend, "clarity-stubborn");
    let started = Instant::now();
    backend.stop("clarity-stubborn").unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "SIGTERM first, then the timeout"
    );
    assert_eq!(proc_state(pid), None);
    assert_eq!(backend.state("clarity-stubborn"), ServiceState::Stopped);
}

#[test]
fn a_program_that_exits_at_once_fails_the_start() {
    let Some((_dir, base, backend)) = sandbox() else {
        return;
    };
    let def = definition(
        "clarity-broken",
        &base,
        &["sh", "-c", "echo cannot open config >&2; exit 7"],
    );
    backend.install(&def).unwrap();
    let err = backend.start("clarity-broken").unwrap_err().to_string();
    assert!(
        err.contains("clarity-broken")
            && err.contains("exit status 7")
            && err.contains("cannot open config"),
        "{err}"
    );
    assert_eq!(backend.state("clarity-broken"), ServiceState::Failed);
    let err = backend.start("clarity-missing").unwrap_err().to_string();
    assert!(err.contains("not installed"), "{err}");
}
