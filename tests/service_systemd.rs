//! The systemd backend against real systemd: rendered units checked by `systemd-analyze
//! verify` on this machine, then the whole life of a service (install, enable, start, a crash
//! and its automatic restart, an update, disable, stop, remove) inside a container booted with
//! real systemd as PID 1. The container half re-executes this test binary inside the
//! container (see `support::nspawn`).

mod service_common;
mod support;

use clarity::model::host::ServiceState;
use clarity::model::{Limits, RestartPolicy};
use clarity::service::{ServiceBackend, ServiceDefinition, SystemdBackend};
use service_common::{make_releases, switch_current, tricky_args, wait_for_server, write_env};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::nspawn;

fn definition(name: &str, command: Vec<String>) -> ServiceDefinition {
    ServiceDefinition {
        name: name.to_string(),
        command,
        working_dir: PathBuf::from("/opt/clarity/web/current"),
        env_file: Some(PathBuf::from("/opt/clarity/web/env")),
        user: None,
        restart: RestartPolicy::Always,
        autostart: true,
        limits: Some(Limits {
            memory_mb: Some(128),
            nofile: Some(4096),
            cpu_percent: Some(50),
        }),
        log_file: PathBuf::from("/opt/clarity/web/logs/service.log"),
    }
}

/// `systemd-analyze verify` of one unit file: (exit ok, stderr).
fn verify(unit: &Path) -> (bool, String) {
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("cannot run systemd-analyze");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    if support::require_program("systemd-analyze").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = SystemdBackend::system();
    let mut args = vec!["/usr/bin/python3".to_string(), "serve.py".into()];
    args.extend(tricky_args());
    let mut cases = vec![definition("clarity-web", args)];
    let mut minimal = definition("clarity-minimal", vec!["python3".into(), "-V".into()]);
    minimal.env_file = None;
    minimal.limits = None;
    minimal.restart = RestartPolicy::Never;
    cases.push(minimal);
    let mut on_failure = definition(
        "clarity-on-failure",
        vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
    );
    on_failure.restart = RestartPolicy::OnFailure;
    on_failure.user = Some("root".into());
    on_failure.working_dir = PathBuf::from("/opt/100% sure/current");
    cases.push(on_failure);
    for def in cases {
        let text = backend.render(&def).unwrap();
        let path = dir.path().join(format!("{}.service", def.name));
        std::fs::write(&path, &text).unwrap();
        let (ok, stderr) = verify(&path);
        assert!(
            ok && stderr.trim().is_empty(),
            "{}:\n{text}\nsystemd-analyze verify: {stderr}",
            def.name
        );
    }
}

#[test]
fn testbed_reads_mirrors_from_both_apt_formats() {
    assert_eq!(
        nspawn::mirror_from_one_line(
            "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n"
        ),
        Some("http://m.example/debian".into())
    );
    assert_eq!(
        nspawn::mirror_from_one_line(
            "deb http://s.example/debian-security bookworm-security main\n"
        ),
        None
    );
    let deb822 = "Types: deb\n# http://snapshot.example\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://s.example/debian-security\nSuites: bookworm-security\n";
    assert_eq!(
        nspawn::mirror_from_deb822(deb822),
        Some("http://m.example/debian".into())
    );
    assert_eq!(
        nspawn::mirror_from_deb822("Types: deb-src\nURIs: http://x\nSuites: bookworm\n"),
        None
    );
    assert_eq!(nspawn::base36(4_194_304), "2hwcg");
}

#[test]
fn systemd_backend_in_a_real_container() {
    let started = Instant::now();
    let Some(bed) = nspawn::Testbed::boot("sd", 1) else {
        return;
    };
    eprintln!("container booted in {:?}", started.elapsed());
    let host = bed.host("h1");
    assert!(
        host.run_test_inside("inner_systemd_backend", &[]),
        "the systemd backend test failed inside the container (output above)"
    );
    // Nothing of the service is left in the container.
    assert!(
        !host
            .root()
            .join("etc/systemd/system/clarity-web.service")
            .exists()
    );
}

/// The inner half of `systemd_backend_in_a_real_container`; does nothing outside a container.
#[test]
fn inner_systemd_backend() {
    if !nspawn::inside_container() {
        return;
    }
    let base = Path::new("/opt/clarity/web");
    make_releases(base);
    write_env(
        &base.join("env"),
        &[
            ("APP_GREETING", "hello \"world\" 100% $HOME"),
            ("APP_EMPTY", ""),
        ],
    );
    sh(&[
        "useradd",
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "clarityweb",
    ]);

    let backend = SystemdBackend::system();
    let unit = backend.unit_path("clarity-web");
    let mut command = vec!["python3".to_string(), "serve.py".into(), "8080".into()];
    command.extend(tricky_args());
    let mut def = definition("clarity-web", command.clone());
    def.user = Some("clarityweb".into());

    assert!(backend.install(&def).unwrap(), "a new unit is a change");
    assert!(
        !backend.install(&def).unwrap(),
        "installing the same unit again changes nothing"
    );
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        backend.render(&def).unwrap()
    );
    let (ok, stderr) = verify(&unit);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    assert_eq!(
        sh(&["systemctl", "is-enabled", "clarity-web.service"]).1,
        "enabled"
    );
    assert_eq!(backend.enabled("clarity-web"), Some(true));
    assert_eq!(backend.state("clarity-web"), ServiceState::Stopped);

    backend.start("clarity-web").unwrap();
    let first = wait_for_server(8080, None);
    assert_eq!(
        sh(&["systemctl", "is-active", "clarity-web.service"]).1,
        "active"
    );
    assert_eq!(backend.state("clarity-web"), ServiceState::Running);
    assert_eq!(
        first["argv"],
        serde_json::json!(command[2..]),
        "every argument arrives verbatim"
    );
    assert_eq!(first["env"]["APP_GREETING"], "hello \"world\" 100% $HOME");
    assert_eq!(first["env"]["APP_EMPTY"], "");
    assert_eq!(first["cwd"], "/opt/clarity/web/releases/r1");
    assert_eq!(first["user"], "clarityweb");
    let limits = sh(&[
        "systemctl",
        "show",
        "-p",
        "MemoryMax,LimitNOFILE,CPUQuotaPerSecUSec",
        "clarity-web.service",
    ])
    .1;
    for expected in [
        "MemoryMax=134217728",
        "LimitNOFILE=4096",
        "CPUQuotaPerSecUSec=500ms",
    ] {
        assert!(limits.contains(expected), "{expected} in {limits}");
    }

    // Restart=always: a killed main process comes back with a new PID.
    let pid = main_pid("clarity-web");
    assert_eq!(first["pid"], pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let restarted = loop {
        let now = main_pid("clarity-web");
        if now != 0 && now != pid && backend.state("clarity-web") == ServiceState::Running {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "systemd did not restart the killed process"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let after_crash = wait_for_server(8080, Some(pid));
    assert_eq!(after_crash["pid"], restarted);

    // An update: a new release behind the same `current` link and a changed argument; the
    // new definition is installed and a restart makes both take effect.
    switch_current(base, "r2");
    let mut command = vec![
        "python3".to_string(),
        "serve.py".into(),
        "8080".into(),
        "second edition".into(),
    ];
    command.push("50%".into());
    def.command = command.clone();
    assert!(backend.install(&def).unwrap());
    backend.restart("clarity-web").unwrap();
    let updated = wait_for_server(8080, Some(restarted));
    assert_eq!(updated["argv"], serde_json::json!(command[2..]));
    assert_eq!(updated["cwd"], "/opt/clarity/web/releases/r2");
    let (ok, stderr) = verify(&unit);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    // autostart off: disabled, still running until stopped.
    def.autostart = false;
    assert!(backend.install(&def).unwrap());
    assert_eq!(
        sh(&["systemctl", "is-enabled", "clarity-web.service"]).1,
        "disabled"
    );
    assert_eq!(backend.enabled("clarity-web"), Some(false));
    assert!(!backend.install(&def).unwrap());

    backend.stop("clarity-web").unwrap();
    assert_eq!(backend.state("clarity-web"), ServiceState::Stopped);
    assert_eq!(
        sh(&["systemctl", "is-active", "clarity-web.service"]).1,
        "inactive"
    );

    // A service that dies at once is Failed (Restart=no, so it stays that way).
    let mut failing = definition(
        "clarity-failing",
        vec![
            "python3".into(),
            "-c".into(),
            "import sys; sys.exit(3)".into(),
        ],
    );
    failing.restart = RestartPolicy::Never;
    failing.env_file = None;
    backend.install(&failing).unwrap();
    backend.start("clarity-failing").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.state("clarity-failing") != ServiceState::Failed {
        assert!(
            Instant::now() < deadline,
            "state {:?}",
            backend.state("clarity-failing")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A start of a program that does not exist fails (Type=exec) and says why.
    let mut missing = definition("clarity-missing", vec!["bin/not-there".into()]);
    missing.env_file = None;
    backend.install(&missing).unwrap();
    let err = backend.start("clarity-missing").unwrap_err().to_string();
    assert!(
        err.contains("clarity-missing") && err.contains("systemctl"),
        "{err}"
    );

    for name in ["clarity-web", "clarity-failing", "clarity-missing"] {
        backend.remove(name).unwrap();
        assert_eq!(backend.state(name), ServiceState::Missing, "{name}");
        assert_eq!(backend.enabled(name), None, "{name}");
        assert!(!backend.unit_path(name).exists());
        backend.remove(name).unwrap();
    }
    assert!(
        !sh(&["systemctl", "--failed", "--plain", "--no-legend"])
            .1
            .contains("clarity-"),
        "removed units do not linger as failed"
    );
}

/// Runs a command, returns (success, trimmed stdout).
fn sh(argv: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn main_pid(unit: &str) -> u64 {
    sh(&[
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        &format!("{unit}.service"),
    ])
    .1
    .parse()
    .unwrap()
}
