//! Service managers behind one interface, [`ServiceBackend`]: systemd units (production),
//! supervisord programs (hosts where systemd is not PID 1) and a detached process with a
//! pidfile (`mock` sandboxes only). The agent hands every backend the same
//! [`ServiceDefinition`]; each backend renders it into its manager's own format, writes it
//! atomically and drives the manager's command-line tool. Every command is an argv vector,
//! never a shell string, and every failure names the service, the command, its exit status and
//! the tail of what it printed. This module decides nothing about *whether* a service should
//! change; that is the plan's job.

pub mod env_file;
pub mod process;
pub mod supervisor;
pub mod systemd;

use crate::agent::layout::Layout;
use crate::model::ServiceManager;
use crate::model::host::ServiceState;
use crate::model::{Limits, RestartPolicy};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use process::ProcessBackend;
pub use supervisor::SupervisorBackend;
pub use systemd::SystemdBackend;

/// Everything a service manager needs to run one deployment's service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDefinition {
    /// Unit or program name, e.g. `clarity-smsgateway` (see [`service_name`]).
    pub name: String,
    /// Argv. A program with a `/` that is not absolute is resolved against `working_dir`; a
    /// bare name (`java`, `python3`) is looked up in the system's binary directories and, when
    /// it is not there, taken from `working_dir` (a program shipped in the release).
    pub command: Vec<String>,
    /// The deployment's `current` link, so that a release switch needs only a restart.
    pub working_dir: PathBuf,
    /// `KEY="VALUE"` lines (see [`env_file`]), readable by the service's user only.
    pub env_file: Option<PathBuf>,
    pub user: Option<String>,
    pub restart: RestartPolicy,
    /// Start at boot (systemd: enabled; supervisor: `autostart`; process: recorded only).
    pub autostart: bool,
    /// Enforced by systemd only; see docs/services.md.
    pub limits: Option<Limits>,
    /// Output of the service under supervisor and process; systemd logs to the journal.
    pub log_file: PathBuf,
}

/// One service manager. Methods take the service's name, not its definition, so that the
/// agent can stop or inspect a service whose definition it no longer has.
pub trait ServiceBackend: Send + Sync {
    fn kind(&self) -> ServiceManager;
    /// The exact definition text this backend writes (unit file, program section, process
    /// spec); the agent hashes it.
    fn render(&self, def: &ServiceDefinition) -> Result<String, ServiceError>;
    /// Writes the definition (atomically) and makes the manager load it; enables or disables
    /// it per `autostart`. Returns whether anything changed.
    fn install(&self, def: &ServiceDefinition) -> Result<bool, ServiceError>;
    fn start(&self, name: &str) -> Result<(), ServiceError>;
    fn stop(&self, name: &str) -> Result<(), ServiceError>;
    fn restart(&self, name: &str) -> Result<(), ServiceError>;
    /// What the manager says now: `Running`, `Stopped`, `Failed`, `Missing` (it does not know
    /// the service) or `Unknown` (it could not be asked).
    fn state(&self, name: &str) -> ServiceState;
    /// Whether the service starts at boot; `None` when the manager does not know the service
    /// or could not be asked.
    fn enabled(&self, name: &str) -> Option<bool>;
    /// Stops the service and deletes its definition; removing a missing service succeeds.
    fn remove(&self, name: &str) -> Result<(), ServiceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service `{service}`: `{command}` failed ({status}){}", tail(.stderr))]
    Command {
        service: String,
        command: String,
        /// `exit status 3`, `killed by signal 9`.
        status: String,
        /// The last lines the command wrote to stderr, or to stdout when stderr was empty
        /// (supervisorctl reports its errors on stdout).
        stderr: String,
    },
    #[error("service `{service}`: cannot run `{command}`")]
    Spawn {
        service: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("service `{service}`: cannot {action} {}", .path.display())]
    Io {
        service: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("service `{service}`: {message}")]
    Invalid { service: String, message: String },
}

fn tail(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

/// The unit or program name of a deployment's service.
pub fn service_name(deployment: &str) -> String {
    format!("clarity-{deployment}")
}

/// The backend for `manager` on the host whose agent works below `layout`'s root. Production
/// defaults: units in `<root>/etc/systemd/system`, supervisor programs in
/// `<root>/etc/supervisor/conf.d` driven by the system supervisorctl, process pidfiles and
/// specs in the agent's run directory.
pub fn for_host(layout: &Layout, manager: ServiceManager) -> Box<dyn ServiceBackend> {
    match manager {
        ServiceManager::Systemd => Box::new(SystemdBackend::new(layout.root())),
        ServiceManager::Supervisor => Box::new(SupervisorBackend::new(
            layout.host_path(supervisor::DEFAULT_INCLUDE_DIR),
            Vec::new(),
        )),
        ServiceManager::Process => Box::new(ProcessBackend::new(layout.run_dir())),
    }
}

/// The directories service managers search for a bare program name (systemd's own list).
pub const SYSTEM_BIN_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Names end up in file paths and in argv; restricting them keeps both unambiguous (no `/`,
/// no leading `-` that a tool would read as an option, nothing a manager would reinterpret).
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            name,
            "a service name may only use letters, digits, `-`, `_`, `.` and may not start with `-` or `.`",
        ))
    }
}

pub(crate) fn invalid(service: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        service: service.to_string(),
        message: message.into(),
    }
}

pub(crate) fn io_error(
    service: &str,
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ServiceError {
    let service = service.to_string();
    let path = path.to_path_buf();
    move |source| ServiceError::Io {
        service,
        action,
        path,
        source,
    }
}

/// Checks the parts of a definition every backend relies on and returns the absolute program.
/// `search` lists the directories for a bare name, `root` is where they live (the agent's
/// root for systemd, `/` elsewhere).
pub(crate) fn resolve_program(
    def: &ServiceDefinition,
    search: &[PathBuf],
    root: &Path,
) -> Result<PathBuf, ServiceError> {
    check_name(&def.name)?;
    let Some(program) = def.command.first() else {
        return Err(invalid(&def.name, "the command is empty"));
    };
    if program.is_empty() {
        return Err(invalid(&def.name, "the program name is empty"));
    }
    if !def.working_dir.is_absolute() {
        return Err(invalid(
            &def.name,
            format!(
                "working directory {} is not absolute",
                def.working_dir.display()
            ),
        ));
    }
    if let Some(env) = &def.env_file
        && !env.is_absolute()
    {
        return Err(invalid(
            &def.name,
            format!("env file {} is not absolute", env.display()),
        ));
    }
    let path = Path::new(program);
    let resolved = if path.is_absolute() {
        path.to_path_buf()
    } else if program.contains('/') {
        def.working_dir.join(path)
    } else {
        search
            .iter()
            .map(|dir| dir.join(program))
            .find(|p| under_root(root, p).is_file())
            .unwrap_or_else(|| def.working_dir.join(program))
    };
    // Managers want a normalised path; `components` drops `.` and doubled slashes.
    Ok(resolved
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect())
}

/// `path` (absolute, as the host sees it) below `root`.
pub(crate) fn under_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Writes `text` to `path` unless it already holds exactly that, through a temporary file in
/// the same directory, fsync and rename, so a manager never reads half a definition. The mode
/// is set before the rename: a file carrying secrets is never readable by others, not even
/// for a moment.
pub(crate) fn write_if_changed(
    service: &str,
    path: &Path,
    text: &str,
    mode: u32,
) -> Result<bool, ServiceError> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        let perms = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777);
        if perms.is_ok_and(|m| m != mode) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io_error(service, "chmod", path))?;
        }
        return Ok(false);
    }
    crate::atomic_file::write_atomic(path, text.as_bytes(), mode, |_| Ok(())).map_err(
        |e: crate::atomic_file::WriteFailed| ServiceError::Io {
            service: service.to_string(),
            action: e.action,
            path: e.path,
            source: e.source,
        },
    )?;
    Ok(true)
}

/// Deletes a file; one that is already gone is fine.
pub(crate) fn remove_file(service: &str, path: &Path) -> Result<(), ServiceError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(service, "remove", path)(e)),
    }
}

/// An argv for display in errors and logs (never executed through a shell).
pub(crate) fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `argv` to completion with stdin closed and both outputs captured. Only a failure to
/// start is an error here; callers judge the exit status, because managers use non-zero
/// statuses for answers ("disabled", "not running") as well as for failures.
pub(crate) fn run(service: &str, argv: &[String]) -> Result<Output, ServiceError> {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ServiceError::Spawn {
            service: service.to_string(),
            command: display_argv(argv),
            source,
        })
}

/// Runs `argv` and turns a non-zero exit into [`ServiceError::Command`].
pub(crate) fn run_ok(service: &str, argv: &[String]) -> Result<Output, ServiceError> {
    let out = run(service, argv)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_failed(service, argv, &out))
    }
}

pub(crate) fn command_failed(service: &str, argv: &[String], out: &Output) -> ServiceError {
    ServiceError::Command {
        service: service.to_string(),
        command: display_argv(argv),
        status: exit_status(&out.status),
        stderr: last_lines(&out.stderr, &out.stdout),
    }
}

pub(crate) fn exit_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// The last lines of `primary`, or of `fallback` when `primary` is empty.
pub(crate) fn last_lines(primary: &[u8], fallback: &[u8]) -> String {
    const KEEP: usize = 10;
    let text = if String::from_utf8_lossy(primary).trim().is_empty() {
        String::from_utf8_lossy(fallback)
    } else {
        String::from_utf8_lossy(primary)
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(KEEP)..].join("\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn definition(name: &str, command: &[&str]) -> ServiceDefinition {
        ServiceDefinition {
            name: name.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            working_dir: PathBuf::from("/opt/clarity/app/current"),
            env_file: None,
            user: None,
            restart: RestartPolicy::Always,
            autostart: true,
            limits: None,
            log_file: PathBuf::from("/opt/clarity/app/logs/service.log"),
        }
    }

    #[test]
    fn names_are_restricted() {
        for ok in ["clarity-smsgateway", "clarity-a_b.c", "x1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        // `@` would make a systemd template instance, `:` a supervisor group:process name.
        for bad in [
            "", "-x", ".x", "a/b", "a b", "a;b", "a@b", "a:b", "ä", "a\n",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn programs_resolve_against_the_release_or_the_system() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::write(root.path().join("usr/bin/java"), "").unwrap();
        let search: Vec<PathBuf> = SYSTEM_BIN_DIRS.iter().map(PathBuf::from).collect();
        let resolve = |program: &str| {
            resolve_program(&definition("clarity-app", &[program]), &search, root.path()).unwrap()
        };
        assert_eq!(resolve("java"), Path::new("/usr/bin/java"));
        assert_eq!(
            resolve("./bin/run"),
            Path::new("/opt/clarity/app/current/bin/run")
        );
        assert_eq!(
            resolve("bin//run"),
            Path::new("/opt/clarity/app/current/bin/run")
        );
        assert_eq!(
            resolve("run.sh"),
            Path::new("/opt/clarity/app/current/run.sh")
        );
        assert_eq!(resolve("/usr/bin/env"), Path::new("/usr/bin/env"));
        assert!(resolve_program(&definition("clarity-app", &[]), &search, root.path()).is_err());
        let mut relative = definition("clarity-app", &["x"]);
        relative.working_dir = PathBuf::from("opt/app");
        assert!(resolve_program(&relative, &search, root.path()).is_err());
    }

    #[test]
    fn writes_only_when_different_with_the_mode_set_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.conf");
        assert!(write_if_changed("s", &path, "a\n", 0o600).unwrap());
        assert!(!write_if_changed("s", &path, "a\n", 0o600).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!write_if_changed("s", &path, "a\n", 0o600).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a loosened mode is tightened again");
        assert!(write_if_changed("s", &path, "b\n", 0o600).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "x.conf")
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn errors_name_service_command_status_and_stderr_tail() {
        let argv: Vec<String> = ["sh", "-c", "echo one >&2; echo two >&2; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = run_ok("clarity-app", &argv).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("clarity-app"), "{text}");
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("exit status 3"), "{text}");
        assert!(text.contains("one\ntwo"), "{text}");
        let missing = run("clarity-app", &["/nonexistent/tool".to_string()]).unwrap_err();
        assert!(matches!(missing, ServiceError::Spawn { .. }));
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        let many: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = last_lines(many.as_bytes(), b"");
        assert!(tail.starts_with("line 21"));
        assert!(tail.ends_with("line 30"));
        assert_eq!(last_lines(b"  \n", b"from stdout\n"), "from stdout");
    }
}
