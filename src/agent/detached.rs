//! Applies that outlive the connection that started them. Over SSH the reconciler does not run
//! `agent apply` as a child of its session: a dropped connection would take the apply with it
//! half-way. Instead the request is written to a directory of its own under
//! `var/lib/clarity/applies/<id>/` (mode 0700, the request 0600 and deleted as soon as the apply
//! has read it, because it holds secrets), the apply runs in a new session with its events
//! going to `events.jsonl` and its diagnostics to `agent.log`, and the reconciler follows that
//! file, reconnecting and reading on from where it was if the connection drops. Starting is
//! idempotent (a second start of the same id only says it is running), so a reconciler that
//! lost the connection while starting can simply start again.
//!
//! This module never interprets the request or the events beyond recognising the final `done`
//! event; the apply itself is [`super::apply`], with its lock and journal.

use super::layout::Layout;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Applies older than this are removed when a new one starts.
const KEEP_APPLIES: Duration = Duration::from_secs(14 * 24 * 3600);
/// A request nobody picked up for this long is a start that never happened: its secrets go.
const STALE_REQUEST: Duration = Duration::from_secs(3600);
/// How long an apply may take between its start and writing its PID before a follower
/// concludes it never ran.
const START_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DetachedError {
    #[error(
        "`{id}` is not a valid apply id (1 to 64 letters, digits, `-` or `_`, not starting with `-`)"
    )]
    BadId { id: String },
    #[error("apply {id}: {action} {}: {source}", .path.display())]
    Io {
        id: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("apply {id} was never started on this host (no {})", .path.display())]
    NotStarted { id: String, path: PathBuf },
    #[error("apply {id}: the request was already read (or never written): {}", .path.display())]
    NoRequest { id: String, path: PathBuf },
}

/// The files of one detached apply.
#[derive(Debug, Clone)]
pub struct Detached {
    id: String,
    dir: PathBuf,
}

/// What `start` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// A new apply process, with its PID.
    Now(u32),
    /// The apply had been started before (a reconciler starting again after a dropped
    /// connection).
    Already,
}

/// Why following stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEnd {
    /// The `done` event was printed.
    Done,
    /// Nothing new for the idle time (or not following): ask again from the new position.
    Idle,
    /// The apply process is gone and never wrote `done` (killed, host crash): its journal
    /// makes the next apply roll back what it started.
    Gone,
}

impl Detached {
    pub fn new(layout: &Layout, id: &str) -> Result<Detached, DetachedError> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && !id.starts_with('-')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(DetachedError::BadId { id: id.to_string() });
        }
        Ok(Detached {
            id: id.to_string(),
            dir: layout.applies_dir().join(id),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn request_file(&self) -> PathBuf {
        self.dir.join("request.json")
    }

    pub fn events_file(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    fn io(
        &self,
        action: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> DetachedError {
        let (id, path) = (self.id.clone(), path.to_path_buf());
        move |source| DetachedError::Io {
            id,
            action,
            path,
            source,
        }
    }

    /// Stores `request` and starts `program args...` (the agent applying this id) in a session
    /// of its own, its stdout appended to the events file and its stderr to the log. Returns
    /// without waiting for it. Starting an id that was started before starts nothing.
    pub fn start(
        &self,
        layout: &Layout,
        request: &[u8],
        program: &Path,
        args: &[String],
    ) -> Result<Started, DetachedError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let applies = layout.applies_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&applies)
            .map_err(self.io("create", &applies))?;
        prune(&applies, &self.dir);
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.io("create", &self.dir)(e)),
        }
        // The PID file is created exclusively: of two starts racing, exactly one runs.
        let pid_path = self.pid_file();
        let mut pid_file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pid_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(Started::Already),
            Err(e) => return Err(self.io("create", &pid_path)(e)),
        };
        let request_path = self.request_file();
        super::files::write_owned(&request_path, request, 0o600, None).map_err(|e| {
            DetachedError::Io {
                id: self.id.clone(),
                action: "write",
                path: request_path.clone(),
                source: std::io::Error::other(e.message),
            }
        })?;
        let open_append = |path: PathBuf| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(self.io("open", &path))
        };
        let events = open_append(self.events_file())?;
        let log = open_append(self.log_file())?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(events)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_file(&request_path);
                let _ = std::fs::remove_file(&pid_path);
                self.io("start the agent", program)(e)
            })?;
        let pid = child.id();
        let identity = process_identity(pid).unwrap_or_else(|| pid.to_string());
        pid_file
            .write_all(format!("{identity}\n").as_bytes())
            .and_then(|()| pid_file.sync_all())
            .map_err(self.io("write", &pid_path))?;
        Ok(Started::Now(pid))
    }

    /// Reads the request and deletes it, so its secrets stay on disk no longer than needed.
    pub fn take_request(&self) -> Result<Vec<u8>, DetachedError> {
        let path = self.request_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DetachedError::NoRequest {
                    id: self.id.clone(),
                    path,
                });
            }
            Err(e) => return Err(self.io("read", &path)(e)),
        };
        std::fs::remove_file(&path).map_err(self.io("remove", &path))?;
        Ok(bytes)
    }

    /// Whether the apply process is still running: `None` while it is starting (no PID yet).
    fn alive(&self) -> Result<Option<bool>, DetachedError> {
        let path = self.pid_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DetachedError::NotStarted {
                    id: self.id.clone(),
                    path,
                });
            }
            Err(e) => return Err(self.io("read", &path)(e)),
        };
        let recorded = text.trim();
        if recorded.is_empty() {
            let young = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < START_GRACE);
            return Ok(if young { None } else { Some(false) });
        }
        let pid = recorded
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        Ok(Some(pid.and_then(process_identity).is_some_and(|now| {
            now == recorded || !recorded.contains(' ')
        })))
    }

    /// Prints the event lines from line `from` on (complete lines only) to `out` and what the
    /// log gained from byte `log_from` on to `log`. With `follow`, keeps printing until the
    /// `done` event, until the apply is gone, or until nothing new came for `idle`.
    pub fn follow(
        &self,
        from: u64,
        log_from: u64,
        follow: bool,
        idle: Duration,
        out: &mut dyn Write,
        log: &mut dyn Write,
    ) -> Result<FollowEnd, DetachedError> {
        // Fails with NotStarted before anything else when the id is unknown.
        self.alive()?;
        let events_path = self.events_file();
        let mut events = std::io::BufReader::new(
            std::fs::File::open(&events_path).map_err(self.io("open", &events_path))?,
        );
        let mut line_no = 0u64;
        let mut log_pos = log_from;
        let mut last_news = Instant::now();
        let mut pending = Vec::new();
        loop {
            let mut news = false;
            loop {
                let n = events
                    .read_until(b'\n', &mut pending)
                    .map_err(self.io("read", &events_path))?;
                if n == 0 || !pending.ends_with(b"\n") {
                    // A line still being written: read it again when it is complete.
                    let back = pending.len() as i64;
                    events
                        .seek(SeekFrom::Current(-back))
                        .map_err(self.io("read", &events_path))?;
                    pending.clear();
                    break;
                }
                line_no += 1;
                if line_no > from {
                    news = true;
                    let _ = out.write_all(&pending);
                    let _ = out.flush();
                    if is_done(&pending) {
                        return Ok(FollowEnd::Done);
                    }
                }
                pending.clear();
            }
            log_pos += copy_from(&self.log_file(), log_pos, log);
            if !follow {
                return Ok(FollowEnd::Idle);
            }
            if news {
                last_news = Instant::now();
                continue;
            }
            if self.alive()? == Some(false) {
                // It may have written its last lines between the read above and its exit.
                let mut rest = String::new();
                events
                    .read_to_string(&mut rest)
                    .map_err(self.io("read", &events_path))?;
                for l in rest.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                    line_no += 1;
                    if line_no > from {
                        let _ = out.write_all(l.as_bytes());
                        if is_done(l.as_bytes()) {
                            let _ = out.flush();
                            return Ok(FollowEnd::Done);
                        }
                    }
                }
                let _ = out.flush();
                copy_from(&self.log_file(), log_pos, log);
                return Ok(FollowEnd::Gone);
            }
            if last_news.elapsed() >= idle {
                return Ok(FollowEnd::Idle);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn is_done(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(|e| e == "done"))
        .unwrap_or(false)
}

/// Copies `path` from byte `from` to `to`; returns how many bytes were copied.
fn copy_from(path: &Path, from: u64, to: &mut dyn Write) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let n = f.read_to_end(&mut buf).unwrap_or(0);
    let _ = to.write_all(&buf);
    let _ = to.flush();
    n as u64
}

/// Removes applies older than [`KEEP_APPLIES`] and requests nobody picked up (their secrets).
fn prune(applies: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(applies) else {
        return;
    };
    let age = |p: &Path| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default()
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir == keep || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if age(&dir) > KEEP_APPLIES {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let request = dir.join("request.json");
        if request.exists() && age(&request) > STALE_REQUEST {
            let _ = std::fs::remove_file(&request);
        }
    }
}

/// A process as `PID START_TIME` (which no later process can share), `None` when it is gone
/// or a zombie.
pub fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    // After the state come ppid, pgrp, ... : start time is field 22 of the whole line.
    let start = fields.nth(18)?;
    Some(format!("{pid} {start}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (PathBuf, Vec<String>) {
        (
            PathBuf::from("/bin/sh"),
            vec!["-c".to_string(), script.to_string()],
        )
    }

    fn follow_all(d: &Detached, from: u64) -> (FollowEnd, String, String) {
        let (mut out, mut log) = (Vec::new(), Vec::new());
        let end = d
            .follow(from, 0, true, Duration::from_secs(5), &mut out, &mut log)
            .unwrap();
        (
            end,
            String::from_utf8(out).unwrap(),
            String::from_utf8(log).unwrap(),
        )
    }

    #[test]
    fn ids_are_plain_names() {
        let layout = Layout::new("/tmp/x");
        for bad in ["", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(Detached::new(&layout, bad).is_err(), "{bad:?}");
        }
        assert!(Detached::new(&layout, "20261124T050000Z-ab12_c").is_ok());
    }

    #[test]
    fn a_started_apply_is_followed_to_its_done_event_and_starts_only_once() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        let d = Detached::new(&layout, "run1").unwrap();
        // Stands in for the agent: reads and deletes its request, writes two events slowly.
        let (prog, args) = sh(&format!(
            "cat {req} >&2; rm {req}; echo '{{\"event\":\"step\"}}'; sleep 0.3; \
             echo '{{\"event\":\"done\",\"outcome\":\"converged\"}}'",
            req = d.request_file().display()
        ));
        assert!(matches!(
            d.start(&layout, b"secret request", &prog, &args).unwrap(),
            Started::Now(_)
        ));
        assert_eq!(
            d.start(&layout, b"again", &prog, &args).unwrap(),
            Started::Already
        );
        let (end, out, log) = follow_all(&d, 0);
        assert_eq!(end, FollowEnd::Done);
        assert_eq!(
            out,
            "{\"event\":\"step\"}\n{\"event\":\"done\",\"outcome\":\"converged\"}\n"
        );
        assert_eq!(log, "secret request");
        assert!(!d.request_file().exists(), "the request is gone once read");
        // Reading on from where a dropped connection left off.
        let (end, out, _) = follow_all(&d, 1);
        assert_eq!(end, FollowEnd::Done);
        assert_eq!(out, "{\"event\":\"done\",\"outcome\":\"converged\"}\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn an_apply_that_dies_without_done_is_reported_gone() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        let d = Detached::new(&layout, "run2").unwrap();
        let (prog, args) = sh("echo '{\"event\":\"step\"}'; printf '{\"event\":\"do'");
        d.start(&layout, b"{}", &prog, &args).unwrap();
        let (end, out, _) = follow_all(&d, 0);
        assert_eq!(end, FollowEnd::Gone);
        assert_eq!(
            out, "{\"event\":\"step\"}\n",
            "a torn last line is not an event"
        );
    }

    #[test]
    fn following_an_unknown_apply_says_it_never_started() {
        let root = tempfile::tempdir().unwrap();
        let d = Detached::new(&Layout::new(root.path()), "nope").unwrap();
        let e = d
            .follow(
                0,
                0,
                true,
                Duration::from_secs(1),
                &mut Vec::new(),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(matches!(e, DetachedError::NotStarted { .. }), "{e}");
    }
}
