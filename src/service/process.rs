//! The process backend, for `mock` sandboxes only, never production: it starts the command as
//! a detached child in its own process group (stdin closed, stdout and stderr appended to the
//! log file, the environment from the env file), and keeps two files in the agent's run
//! directory: `<name>.json`, the process spec `install` writes, and `<name>.pid`, the running
//! process (its PID, then its start time, so a recycled PID is never mistaken for it).
//!
//! Nothing supervises the process: the restart policy is recorded in the spec but not
//! enforced, a crash stays a crash until the next apply, and nothing starts it at boot. A
//! process that died shows as `Failed`, including a zombie nobody reaped (on machines whose
//! PID 1 does not reap orphans, that is how a dead detached process looks). `stop` sends
//! SIGTERM to the process group, then SIGKILL after a timeout.

use super::{
    ServiceBackend, ServiceDefinition, ServiceError, env_file, invalid, io_error, remove_file,
    resolve_program, write_if_changed,
};
use crate::model::host::ServiceState;
use crate::model::{RestartPolicy, ServiceManager};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `format` of a process spec.
pub const PROCESS_SPEC_FORMAT: &str = "clarity.process/v1";

/// How long `start` watches a new process: one that exits this soon fails the start.
const START_GRACE: Duration = Duration::from_millis(200);

pub struct ProcessBackend {
    run_dir: PathBuf,
    stop_timeout: Duration,
}

/// What `install` writes and `start` runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub format: String,
    pub name: String,
    /// The command with its program resolved to an absolute path.
    pub argv: Vec<String>,
    pub working_dir: PathBuf,
    pub env_file: Option<PathBuf>,
    pub user: Option<String>,
    pub log_file: PathBuf,
    pub autostart: bool,
    /// Recorded only: this backend does not restart anything.
    pub restart: RestartPolicy,
}

impl ProcessBackend {
    /// Specs and pidfiles in `run_dir` (the agent's `var/lib/clarity/run`); `stop` waits 10 s
    /// for SIGTERM before it sends SIGKILL.
    pub fn new(run_dir: impl Into<PathBuf>) -> ProcessBackend {
        ProcessBackend {
            run_dir: run_dir.into(),
            stop_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_stop_timeout(mut self, timeout: Duration) -> ProcessBackend {
        self.stop_timeout = timeout;
        self
    }

    pub fn spec_path(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.json"))
    }

    pub fn pid_path(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.pid"))
    }

    fn spec(&self, name: &str) -> Result<Option<ProcessSpec>, ServiceError> {
        let path = self.spec_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(name, "read", &path)(e)),
        };
        let spec: ProcessSpec = serde_json::from_str(&text)
            .map_err(|e| invalid(name, format!("{}: {e}", path.display())))?;
        if spec.format != PROCESS_SPEC_FORMAT {
            return Err(invalid(
                name,
                format!(
                    "{}: format `{}`, expected `{PROCESS_SPEC_FORMAT}`",
                    path.display(),
                    spec.format
                ),
            ));
        }
        Ok(Some(spec))
    }

    fn pid_record(&self, name: &str) -> Option<PidRecord> {
        PidRecord::parse(&std::fs::read_to_string(self.pid_path(name)).ok()?)
    }

    fn spawn(&self, spec: &ProcessSpec) -> Result<(), ServiceError> {
        let name = spec.name.as_str();
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            // Its own process group: a signal to the agent's group (Ctrl-C, a hangup of the
            // SSH session) does not reach it, and `stop` can signal everything it started.
            .process_group(0);
        // A clean environment, as systemd gives a service: the search path and locale, the
        // user's identity, then the env file.
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| super::SYSTEM_BIN_DIRS.join(":").into()),
        );
        for var in ["LANG", "LC_ALL", "TZ"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        match &spec.user {
            Some(user) => {
                let entry = nix::unistd::User::from_name(user)
                    .ok()
                    .flatten()
                    .ok_or_else(|| invalid(name, format!("user `{user}` does not exist")))?;
                let euid = nix::unistd::geteuid();
                if entry.uid != euid {
                    if !euid.is_root() {
                        return Err(invalid(
                            name,
                            format!("cannot run as user `{user}`: the agent is not root"),
                        ));
                    }
                    // std drops supplementary groups when a root parent sets the uid.
                    cmd.uid(entry.uid.as_raw()).gid(entry.gid.as_raw());
                }
                cmd.env("HOME", &entry.dir)
                    .env("USER", &entry.name)
                    .env("LOGNAME", &entry.name);
            }
            None => {
                for var in ["HOME", "USER", "LOGNAME"] {
                    if let Some(v) = std::env::var_os(var) {
                        cmd.env(var, v);
                    }
                }
            }
        }
        if let Some(path) = &spec.env_file {
            cmd.envs(env_file::read(name, path)?);
        }
        if let Some(dir) = spec.log_file.parent() {
            std::fs::create_dir_all(dir).map_err(io_error(name, "create directory", dir))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .map_err(io_error(name, "open log file", &spec.log_file))?;
        let log_err = log
            .try_clone()
            .map_err(io_error(name, "open log file", &spec.log_file))?;
        cmd.stdout(log).stderr(log_err);
        let mut child = cmd.spawn().map_err(|source| ServiceError::Spawn {
            service: name.to_string(),
            command: super::display_argv(&spec.argv),
            source,
        })?;
        let pid = child.id();
        let record = PidRecord {
            pid,
            start_time: proc_stat(pid).map(|s| s.start_time),
        };
        std::fs::create_dir_all(&self.run_dir).map_err(io_error(
            name,
            "create directory",
            &self.run_dir,
        ))?;
        write_if_changed(name, &self.pid_path(name), &record.render(), 0o644)?;
        let watched = Instant::now();
        while watched.elapsed() < START_GRACE {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read(&spec.log_file).unwrap_or_default();
                return Err(ServiceError::Command {
                    service: name.to_string(),
                    command: super::display_argv(&spec.argv),
                    status: super::exit_status(&status),
                    stderr: super::last_lines(&log, b""),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropping the handle neither kills nor waits: the process outlives the agent.
        drop(child);
        Ok(())
    }
}

impl ServiceBackend for ProcessBackend {
    fn kind(&self) -> ServiceManager {
        ServiceManager::Process
    }

    fn render(&self, def: &ServiceDefinition) -> Result<String, ServiceError> {
        // The agent's own search path first: on a laptop, python3 may live in a version
        // manager's directory.
        let mut search: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .filter(|d| d.is_absolute())
                    .collect()
            })
            .unwrap_or_default();
        search.extend(super::SYSTEM_BIN_DIRS.iter().map(PathBuf::from));
        let program = resolve_program(def, &search, Path::new("/"))?;
        let mut argv = vec![program.to_string_lossy().into_owned()];
        argv.extend(def.command[1..].iter().cloned());
        let spec = ProcessSpec {
            format: PROCESS_SPEC_FORMAT.to_string(),
            name: def.name.clone(),
            argv,
            working_dir: def.working_dir.clone(),
            env_file: def.env_file.clone(),
            user: def.user.clone(),
            log_file: def.log_file.clone(),
            autostart: def.autostart,
            restart: def.restart,
        };
        let mut text = serde_json::to_string_pretty(&spec)
            .map_err(|e| invalid(&def.name, format!("cannot encode the process spec: {e}")))?;
        text.push('\n');
        Ok(text)
    }

    fn install(&self, def: &ServiceDefinition) -> Result<bool, ServiceError> {
        let text = self.render(def)?;
        write_if_changed(&def.name, &self.spec_path(&def.name), &text, 0o644)
    }

    fn start(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        let spec = self
            .spec(name)?
            .ok_or_else(|| invalid(name, "not installed: no process spec"))?;
        if self.state(name) == ServiceState::Running {
            return Ok(());
        }
        self.spawn(&spec)
    }

    fn stop(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        let Some(record) = self.pid_record(name) else {
            return remove_file(name, &self.pid_path(name));
        };
        let pid = Pid::from_raw(record.pid as i32);
        if record.alive() {
            signal_group(pid, Signal::SIGTERM);
            if !wait_gone(&record, self.stop_timeout) {
                signal_group(pid, Signal::SIGKILL);
                if !wait_gone(&record, Duration::from_secs(5)) {
                    return Err(invalid(
                        name,
                        format!("process {} survived SIGKILL", record.pid),
                    ));
                }
            }
            // Stragglers of the group (a child that ignored SIGTERM) go with their leader.
            // Only now: for a process that was already dead, the group id may be recycled.
            let _ = killpg(pid, Signal::SIGKILL);
        }
        reap(pid);
        remove_file(name, &self.pid_path(name))
    }

    fn restart(&self, name: &str) -> Result<(), ServiceError> {
        self.stop(name)?;
        self.start(name)
    }

    fn state(&self, name: &str) -> ServiceState {
        if super::check_name(name).is_err() {
            return ServiceState::Unknown;
        }
        match self.pid_record(name) {
            Some(record) if record.alive() => ServiceState::Running,
            // A pidfile nobody removed: the process ended without `stop` (or is a zombie).
            Some(_) => ServiceState::Failed,
            None if self.pid_path(name).exists() => ServiceState::Unknown,
            None if self.spec_path(name).exists() => ServiceState::Stopped,
            None => ServiceState::Missing,
        }
    }

    fn enabled(&self, name: &str) -> Option<bool> {
        super::check_name(name).ok()?;
        self.spec(name).ok().flatten().map(|s| s.autostart)
    }

    fn remove(&self, name: &str) -> Result<(), ServiceError> {
        self.stop(name)?;
        remove_file(name, &self.spec_path(name))
    }
}

/// A pidfile: the PID on the first line, the process's start time (clock ticks after boot,
/// from /proc) on the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    pub start_time: Option<u64>,
}

impl PidRecord {
    pub fn parse(text: &str) -> Option<PidRecord> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok().filter(|p| *p > 0)?;
        let start_time = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("start_time="))
            .and_then(|t| t.parse().ok());
        Some(PidRecord { pid, start_time })
    }

    fn render(&self) -> String {
        match self.start_time {
            Some(t) => format!("{}\nstart_time={t}\n", self.pid),
            None => format!("{}\n", self.pid),
        }
    }

    /// The recorded process exists, is not a zombie, and is the same process (same start
    /// time) rather than a newcomer that got a recycled PID.
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some(stat) => {
                !matches!(stat.state, 'Z' | 'X')
                    && self.start_time.is_none_or(|t| t == stat.start_time)
            }
            None => false,
        }
    }
}

struct ProcStat {
    state: char,
    start_time: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name sits in parentheses and may itself contain blanks or parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        // Field 22 of stat(5); `rest` starts at field 3.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn signal_group(pid: Pid, signal: Signal) {
    // The process leads its own group; if it no longer does, signal it alone.
    if killpg(pid, signal).is_err() {
        let _ = kill(pid, signal);
    }
}

/// Collects the exit status when the process is this agent's own child, so it does not stay
/// a zombie; for any other process this does nothing.
fn reap(pid: Pid) {
    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
}

fn wait_gone(record: &PidRecord, timeout: Duration) -> bool {
    let pid = Pid::from_raw(record.pid as i32);
    let start = Instant::now();
    loop {
        reap(pid);
        if !record.alive() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfiles_with_and_without_start_time() {
        assert_eq!(
            PidRecord::parse("42\nstart_time=7\n"),
            Some(PidRecord {
                pid: 42,
                start_time: Some(7)
            })
        );
        assert_eq!(
            PidRecord::parse(" 42 \n"),
            Some(PidRecord {
                pid: 42,
                start_time: None
            })
        );
        assert_eq!(PidRecord::parse("x\n"), None);
        assert_eq!(PidRecord::parse("0\n"), None);
        let r = PidRecord {
            pid: 9,
            start_time: Some(3),
        };
        assert_eq!(PidRecord::parse(&r.render()), Some(r));
    }

    #[test]
    fn liveness_checks_the_start_time() {
        let me = std::process::id();
        let start = proc_stat(me).unwrap().start_time;
        assert!(
            PidRecord {
                pid: me,
                start_time: Some(start)
            }
            .alive()
        );
        assert!(
            PidRecord {
                pid: me,
                start_time: None
            }
            .alive()
        );
        assert!(
            !PidRecord {
                pid: me,
                start_time: Some(start + 1)
            }
            .alive(),
            "a recycled PID"
        );
        assert!(
            !PidRecord {
                pid: 999_999_999,
                start_time: None
            }
            .alive()
        );
    }

    #[test]
    fn states_from_spec_and_pidfile() {
        let dir = tempfile::tempdir().unwrap();
        let backend = ProcessBackend::new(dir.path());
        assert_eq!(backend.state("clarity-x"), ServiceState::Missing);
        assert_eq!(backend.enabled("clarity-x"), None);
        let def = crate::service::tests::definition("clarity-x", &["/bin/sleep", "30"]);
        assert!(backend.install(&def).unwrap());
        assert!(!backend.install(&def).unwrap());
        assert_eq!(backend.state("clarity-x"), ServiceState::Stopped);
        assert_eq!(backend.enabled("clarity-x"), Some(true));
        std::fs::write(
            backend.pid_path("clarity-x"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(backend.state("clarity-x"), ServiceState::Running);
        std::fs::write(backend.pid_path("clarity-x"), "999999999\n").unwrap();
        assert_eq!(backend.state("clarity-x"), ServiceState::Failed);
        std::fs::write(backend.pid_path("clarity-x"), "garbage\n").unwrap();
        assert_eq!(backend.state("clarity-x"), ServiceState::Unknown);
    }
}
