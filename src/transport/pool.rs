//! The SSH connections a process keeps: at most `--max-connections` open at once (opening one
//! more closes the least recently used idle one, or waits for one to become idle), at most
//! `--max-uploads` agent uploads at once, and, across the passes of `--watch`, the same
//! [`Fleet`] with the same connections, kept alive between passes by keepalives (a connection
//! whose keepalive fails is closed, and the next command opens a new one).
//!
//! A one-shot run gets its fleet from here too, and [`close_all`] says goodbye to every
//! connection when the process ends (a connection that just vanishes leaves a zombie on hosts
//! whose init does not reap). This module knows connections only as slots and idle hosts: it
//! runs no command of its own on a host but the SSH keepalive.

use super::ssh::{Fleet, SshHost};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Seconds between keepalives on an idle kept connection: well inside the idle timeouts of
/// NAT gateways and firewalls (commonly 5 minutes or more).
pub const KEEPALIVE_S: u32 = 30;

/// How long a thread waits for a slot before looking for an idle connection to close again.
const SLOT_POLL: Duration = Duration::from_millis(20);

/// Limits shared by the hosts of one fleet.
pub struct Pool {
    max_connections: usize,
    open: Mutex<usize>,
    freed: Condvar,
    /// Every host that may hold a connection (to find the least recently used idle one).
    hosts: Mutex<Vec<Weak<Mutex<SshHost>>>>,
    uploads: Semaphore,
    /// Agents installed by the fleet's hosts (for a run's summary line).
    installs: std::sync::atomic::AtomicUsize,
}

impl Pool {
    pub fn new(max_connections: usize, max_uploads: usize) -> Pool {
        Pool {
            max_connections: max_connections.max(1),
            open: Mutex::new(0),
            freed: Condvar::new(),
            hosts: Mutex::new(Vec::new()),
            uploads: Semaphore::new(max_uploads.max(1)),
            installs: Default::default(),
        }
    }

    pub(super) fn installed(&self) {
        self.installs.fetch_add(1, Ordering::SeqCst);
    }

    /// Agents installed so far by this fleet's hosts.
    pub fn installs(&self) -> usize {
        self.installs.load(Ordering::SeqCst)
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        *self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn register(&self, host: &Arc<Mutex<SshHost>>) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.retain(|h| h.strong_count() > 0);
        hosts.push(Arc::downgrade(host));
    }

    /// A slot for one more connection, for the host `me` (locked by the caller, so never a
    /// candidate for closing): free, or freed by closing the least recently used idle
    /// connection, or waited for until `deadline` (`None` then).
    pub(super) fn acquire(self: &Arc<Self>, me: &str, deadline: Instant) -> Option<Slot> {
        loop {
            {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                if *open < self.max_connections {
                    *open += 1;
                    return Some(Slot(self.clone()));
                }
            }
            // Closed outside the counter's lock: dropping it gives its slot back.
            if let Some(closed) = self.take_least_recently_used(me) {
                drop(closed);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let wait = SLOT_POLL.min(deadline - now);
            let _ = self.freed.wait_timeout(open, wait);
        }
    }

    /// The connection of the idle host (one nobody holds) that was used longest ago.
    fn take_least_recently_used(&self, me: &str) -> Option<super::ssh::Pooled> {
        let hosts: Vec<Arc<Mutex<SshHost>>> = self
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut oldest: Option<(Instant, std::sync::MutexGuard<'_, SshHost>)> = None;
        for h in &hosts {
            // A host someone holds is busy (or is the caller): never closed under it.
            let Ok(guard) = h.try_lock() else { continue };
            if guard.name() == me {
                continue;
            }
            let Some(used) = guard.idle_since() else {
                continue;
            };
            if oldest.as_ref().is_none_or(|(t, _)| used < *t) {
                oldest = Some((used, guard));
            }
        }
        oldest.and_then(|(_, mut g)| g.take_connection())
    }

    /// One of the `--max-uploads` upload permits, waited for.
    pub(super) fn upload_permit(&self) -> Permit<'_> {
        self.uploads.acquire()
    }

    /// Sends a keepalive on every idle connection whose interval is due; closes those whose
    /// keepalive fails (the next command reconnects).
    fn keep_alive(&self) {
        let hosts: Vec<Arc<Mutex<SshHost>>> = self
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for h in hosts {
            if let Ok(mut guard) = h.try_lock() {
                guard.keep_alive();
            }
        }
    }
}

/// One open connection's place in the pool, given back when dropped.
pub struct Slot(Arc<Pool>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        *open = open.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

struct Semaphore {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Semaphore {
    fn new(n: usize) -> Semaphore {
        Semaphore {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

/// An upload permit, given back when dropped.
pub struct Permit<'a>(&'a Semaphore);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// The fleets of this process, each with the key of the settings it was made with.
type Fleets = Mutex<Vec<(String, Arc<Fleet>)>>;

fn shared() -> &'static Fleets {
    static SHARED: OnceLock<Fleets> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

static KEEP: AtomicBool = AtomicBool::new(false);

/// The fleet made with the settings `key` names: the one an earlier run of this process made,
/// with its open connections, or a new one from `make`.
pub fn fleet(key: String, make: impl FnOnce() -> Fleet) -> Arc<Fleet> {
    let mut fleets = shared().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, f)) = fleets.iter().find(|(k, _)| *k == key) {
        return f.clone();
    }
    let f = Arc::new(make());
    fleets.push((key, f.clone()));
    f
}

/// From now on (a `--watch` process), a host's connection outlives the run that opened it:
/// the next pass finds it open. Starts the keepalive thread.
pub fn keep_between_runs() {
    if KEEP.swap(true, Ordering::SeqCst) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("ssh-keepalive".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(u64::from(KEEPALIVE_S) / 3));
                let fleets: Vec<Arc<Fleet>> = shared()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(_, f)| f.clone())
                    .collect();
                for f in fleets {
                    f.pool().keep_alive();
                }
            }
        });
}

/// Whether connections outlive their runs ([`keep_between_runs`]).
pub fn keeps_between_runs() -> bool {
    KEEP.load(Ordering::SeqCst)
}

/// Closes every connection of every fleet, saying goodbye (the end of the process).
pub fn close_all() {
    let fleets: Vec<(String, Arc<Fleet>)> =
        std::mem::take(&mut *shared().lock().unwrap_or_else(|e| e.into_inner()));
    for (_, f) in fleets {
        f.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_permits_are_bounded() {
        let pool = Arc::new(Pool::new(4, 2));
        let running = Arc::new(Mutex::new((0usize, 0usize)));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (pool, running) = (pool.clone(), running.clone());
                std::thread::spawn(move || {
                    let _p = pool.upload_permit();
                    {
                        let mut r = running.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.1.max(r.0);
                    }
                    std::thread::sleep(Duration::from_millis(30));
                    running.lock().unwrap().0 -= 1;
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(running.lock().unwrap().1, 2);
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let pool = Arc::new(Pool::new(2, 1));
        let soon = || Instant::now() + Duration::from_millis(50);
        let a = pool.acquire("a", soon()).unwrap();
        let _b = pool.acquire("b", soon()).unwrap();
        assert_eq!(pool.open(), 2);
        assert!(pool.acquire("c", soon()).is_none(), "no idle host to close");
        drop(a);
        assert!(pool.acquire("c", soon()).is_some());
    }
}
