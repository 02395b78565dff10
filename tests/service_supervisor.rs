//! The supervisor backend against a real supervisord (Debian's `supervisor` package), started
//! by the test in the foreground with its own configuration, unix socket and include
//! directory, and stopped (and reaped) at the end.

mod service_common;
mod support;

use clarity::model::RestartPolicy;
use clarity::model::host::ServiceState;
use clarity::service::{ServiceBackend, ServiceDefinition, SupervisorBackend};
use service_common::{make_releases, tricky_args, wait_for_server, wait_until, write_env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// supervisord in the foreground; on drop it gets SIGTERM, so it stops its programs before it
/// exits (SIGKILL would orphan them), and is reaped.
struct Supervisord {
    child: Child,
    conf: PathBuf,
}

impl Supervisord {
    fn start(dir: &Path) -> Supervisord {
        let conf = dir.join("supervisord.conf");
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\nchmod=0700\n\n\
                 [supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
                 [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
                 [include]\nfiles = {d}/conf.d/*.conf\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("supervisord")
            .args(["-n", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start supervisord");
        let sup = Supervisord { child, conf };
        wait_until("supervisord answers", Duration::from_secs(20), || {
            sup.ctl(&["pid"]).status.success()
        });
        sup
    }

    fn ctl_args(&self) -> Vec<String> {
        vec!["-c".to_string(), self.conf.display().to_string()]
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("supervisorctl")
            .args(self.ctl_args())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn definition(name: &str, base: &Path, command: Vec<String>) -> ServiceDefinition {
    ServiceDefinition {
        name: name.to_string(),
        command,
        working_dir: base.join("current"),
        env_file: Some(base.join("env")),
        user: None,
        restart: RestartPolicy::Always,
        autostart: true,
        limits: None,
        log_file: base.join("logs").join(format!("{name}.log")),
    }
}

#[test]
fn supervisor_backend_against_a_real_supervisord() {
    if support::require_program("supervisord").is_none()
        || support::require_program("supervisorctl").is_none()
        || support::require_program("python3").is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisord::start(&dir.path().join("supervisor"));
    let backend = SupervisorBackend::new(dir.path().join("supervisor/conf.d"), sup.ctl_args());
    let base = dir.path().join("opt/clarity/web");
    make_releases(&base);
    write_env(
        &base.join("env"),
        &[
            ("APP_GREETING", "hello, \"world\" 50% $HOME"),
            ("APP_LIST", "a,b=c d"),
            ("APP_EMPTY", ""),
        ],
    );
    let port = support::free_port();
    let mut command = vec!["python3".to_string(), "serve.py".into(), port.to_string()];
    command.extend(tricky_args());
    let mut def = definition("clarity-web", &base, command.clone());

    assert_eq!(backend.state("clarity-web"), ServiceState::Missing);
    assert!(backend.install(&def).unwrap(), "a new program is a change");
    assert!(
        !backend.install(&def).unwrap(),
        "the same program again is not"
    );
    let conf = backend.config_path("clarity-web");
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the section holds the environment: root only");

    // autostart: loading the program started it.
    let first = wait_for_server(port, None);
    assert_eq!(
        first["argv"],
        serde_json::json!(command[2..]),
        "every argument arrives verbatim"
    );
    assert_eq!(first["env"]["APP_GREETING"], "hello, \"world\" 50% $HOME");
    assert_eq!(first["env"]["APP_LIST"], "a,b=c d");
    assert_eq!(first["env"]["APP_EMPTY"], "");
    assert_eq!(
        PathBuf::from(first["cwd"].as_str().unwrap()),
        base.join("releases/r1").canonicalize().unwrap()
    );
    assert_eq!(backend.state("clarity-web"), ServiceState::Running);
    assert_eq!(backend.enabled("clarity-web"), Some(true));

    backend.restart("clarity-web").unwrap();
    let second = wait_for_server(port, Some(first["pid"].as_u64().unwrap()));
    assert_ne!(first["pid"], second["pid"], "a restart is a new process");

    backend.stop("clarity-web").unwrap();
    assert_eq!(backend.state("clarity-web"), ServiceState::Stopped);
    assert_eq!(
        sup.ctl(&["status", "clarity-web"]).status.code(),
        Some(3),
        "supervisorctl: stopped"
    );
    backend.stop("clarity-web").unwrap();
    backend.start("clarity-web").unwrap();
    backend.start("clarity-web").unwrap();
    assert_eq!(backend.state("clarity-web"), ServiceState::Running);
    let log = std::fs::read_to_string(base.join("logs/clarity-web.log")).unwrap();
    assert!(log.matches("listening on").count() >= 3, "{log}");

    // An update: supervisord applies a changed section by restarting the program.
    let before = wait_for_server(port, None)["pid"].as_u64().unwrap();
    service_common::switch_current(&base, "r2");
    def.command = vec![
        "python3".into(),
        "serve.py".into(),
        port.to_string(),
        "second edition".into(),
    ];
    assert!(backend.install(&def).unwrap());
    let updated = wait_for_server(port, Some(before));
    assert_eq!(
        updated["argv"],
        serde_json::json!([port.to_string(), "second edition"])
    );

    // autostart off: loaded but not started.
    def.autostart = false;
    assert!(backend.install(&def).unwrap());
    assert_eq!(backend.enabled("clarity-web"), Some(false));
    assert_eq!(backend.state("clarity-web"), ServiceState::Stopped);

    // A program that exits at once: supervisord retries, then gives up (FATAL) → Failed.
    let failing = definition(
        "clarity-failing",
        &base,
        vec![
            "python3".into(),
            "-c".into(),
            "import sys; sys.exit(3)".into(),
        ],
    );
    backend.install(&failing).unwrap();
    wait_until(
        "the failing program is FATAL",
        Duration::from_secs(30),
        || {
            String::from_utf8_lossy(&sup.ctl(&["status", "clarity-failing"]).stdout)
                .contains("FATAL")
        },
    );
    assert_eq!(backend.state("clarity-failing"), ServiceState::Failed);
    let err = backend.start("clarity-failing").unwrap_err().to_string();
    assert!(
        err.contains("clarity-failing") && err.contains("supervisorctl"),
        "{err}"
    );

    // A value supervisord cannot carry is refused, by name, without showing it; nothing is
    // written.
    write_env(
        &base.join("env-bad"),
        &[("APP_TOKEN", "s3cret\nsecond line")],
    );
    let mut bad = definition("clarity-bad", &base, vec!["python3".into(), "-V".into()]);
    bad.env_file = Some(base.join("env-bad"));
    let err = backend.install(&bad).unwrap_err().to_string();
    assert!(
        err.contains("APP_TOKEN") && !err.contains("s3cret"),
        "{err}"
    );
    assert!(!backend.config_path("clarity-bad").exists());

    for name in ["clarity-web", "clarity-failing"] {
        backend.remove(name).unwrap();
        assert_eq!(backend.state(name), ServiceState::Missing, "{name}");
        assert_eq!(backend.enabled(name), None);
        assert!(!backend.config_path(name).exists());
        backend.remove(name).unwrap();
    }
    assert!(!support::wait_for_port(port, Duration::from_millis(10)));

    // A supervisord that cannot be asked: Unknown, not Missing.
    let nowhere = SupervisorBackend::new(
        dir.path().join("nowhere"),
        vec![
            "-s".into(),
            format!("unix://{}/no.sock", dir.path().display()),
        ],
    );
    assert_eq!(nowhere.state("clarity-web"), ServiceState::Unknown);
}
