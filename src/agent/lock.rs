//! One apply per host at a time: an exclusive `flock` on `var/lib/clarity/lock`, which the
//! kernel releases when the holder dies (even by `kill -9`), so a crashed agent never leaves a
//! stale lock. The file's content says who holds it, for the message the next agent prints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct HostLock {
    file: File,
    /// Who held the host while this lock waited for it, if anyone did: the host may have
    /// changed since the waiting apply was planned.
    pub waited_for: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("host {host} is locked by {holder}; gave up after {waited:?}")]
    Timeout {
        host: String,
        holder: String,
        waited: Duration,
    },
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl HostLock {
    /// Takes the lock, waiting up to `timeout`; `on_wait` is told once who holds it.
    pub fn acquire(
        path: &Path,
        host: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<HostLock, LockError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let start = Instant::now();
        let mut waited_for = None;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = holder(&mut file);
                    if start.elapsed() >= timeout {
                        return Err(LockError::Timeout {
                            host: host.to_string(),
                            holder,
                            waited: start.elapsed(),
                        });
                    }
                    if waited_for.is_none() {
                        on_wait(&format!(
                            "host {host} is locked by {holder}; waiting up to {timeout:?}"
                        ));
                        waited_for = Some(holder);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let me = format!(
            "PID {} on {} since {}",
            std::process::id(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "?".into()),
            crate::clock::now_rfc3339()
        );
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(me.as_bytes());
        let _ = file.sync_all();
        Ok(HostLock { file, waited_for })
    }
}

fn holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut s);
    if s.trim().is_empty() {
        "another agent".into()
    } else {
        s.trim().to_string()
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_times_out_with_the_holders_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let _first = HostLock::acquire(&p, "h1", Duration::from_secs(1), &mut |_| {}).unwrap();
        let mut waited = Vec::new();
        let e = HostLock::acquire(&p, "h1", Duration::from_millis(200), &mut |m| {
            waited.push(m.to_string())
        })
        .err()
        .unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("PID {}", std::process::id())),
            "{msg}"
        );
        assert_eq!(waited.len(), 1);
    }

    #[test]
    fn released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let first = HostLock::acquire(&p, "h", Duration::from_secs(1), &mut |_| {}).unwrap();
        assert_eq!(first.waited_for, None);
        drop(first);
        let second = HostLock::acquire(&p, "h", Duration::from_millis(10), &mut |_| {}).unwrap();
        assert_eq!(second.waited_for, None, "a free lock is not waited for");
    }

    #[test]
    fn a_lock_that_was_waited_for_says_whom_it_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let first = HostLock::acquire(&p, "h", Duration::from_secs(1), &mut |_| {}).unwrap();
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || {
                HostLock::acquire(&p, "h", Duration::from_secs(10), &mut |_| {})
                    .unwrap()
                    .waited_for
                    .clone()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        let waited = waiter.join().unwrap().expect("it waited");
        assert!(
            waited.contains(&format!("PID {}", std::process::id())),
            "{waited}"
        );
    }
}
