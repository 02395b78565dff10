//! The content-addressed artifact cache: one directory, one file per artifact, named by its
//! lowercase sha256. A file gets that name only by an atomic rename after its content was
//! hashed while it was written (one pass, no second read), fsynced, and matched the expected
//! sha256 and size; until then it is a uniquely named `.incoming-*` file that is deleted on any
//! failure. The one exception is a transfer that was interrupted: its bytes stay in the
//! artifact's `.partial-<sha256>` file (held under an exclusive `flock` while in use), and the
//! next download of that artifact re-hashes them and asks the server only for the rest, so the
//! final sha256 still covers the whole file. So a name in the cache is a promise about the
//! content, concurrent fetches of one artifact cannot corrupt it, and a crash leaves at most a
//! temporary file that the next fetch resumes or `prune` removes. "Recently
//! used" is the file's modification time, which `get` refreshes, so `prune` can evict the least
//! recently used entries. This module must not decide where artifacts come from, nor keep
//! anything outside its directory.

use super::Progress;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, SystemTime};

/// Prefix of the temporary files downloads are written to. Never 64 hex digits, so a reader
/// listing the cache cannot mistake one for an artifact.
const INCOMING: &str = ".incoming-";

/// Prefix of the one resumable temporary file per artifact.
const PARTIAL: &str = ".partial-";

/// The largest download accepted when the artifact declares no size and the repository sets
/// no `max_download_size`: a server that streams without end must not fill the disk.
pub const DEFAULT_MAX_UNDECLARED: u64 = 4 << 30;

/// A temporary file untouched for this long belongs to a download that died with its process.
const STALE_INCOMING: Duration = Duration::from_secs(3600);

/// Read size while downloading and hashing: large enough that per-call overhead vanishes next
/// to SHA-256 and the disk, small enough to stay in cache.
const BUFFER: usize = 256 * 1024;

/// Buffers read but not yet hashed and written.
const IN_FLIGHT: usize = 4;

/// A content-addressed artifact cache in one directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// Entries this value fetched or handed out; `prune` keeps them, because a caller may be
    /// about to use them.
    used: Mutex<BTreeSet<String>>,
}

/// What `prune` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The sha256 of every entry removed, least recently used first.
    pub removed: Vec<String>,
    pub freed_bytes: u64,
    /// The size of what is left.
    pub kept_bytes: u64,
    /// Temporary files of downloads abandoned long ago, removed as well.
    pub stale_incoming_removed: usize,
}

impl Cache {
    /// A cache in `dir`. Nothing is touched until an artifact is fetched.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache {
            dir: dir.into(),
            used: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact with this sha256 is (or would be) kept. Something that is not a
    /// sha256 gives a path that never exists, so no argument can point outside the cache.
    pub fn path(&self, sha256: &str) -> PathBuf {
        if is_sha256(sha256) {
            self.dir.join(sha256.to_ascii_lowercase())
        } else {
            self.dir.join(".not-a-sha256")
        }
    }

    /// The cached artifact with this sha256, if present, marked as recently used.
    pub fn get(&self, sha256: &str) -> Option<PathBuf> {
        let path = self.path(sha256);
        let file = File::open(&path).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        // Best effort: a cache on a read-only mount still serves what it has.
        let _ = file.set_modified(SystemTime::now());
        self.mark_used(sha256);
        Some(path)
    }

    fn mark_used(&self, sha256: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(sha256.to_ascii_lowercase());
        }
    }

    /// Removes least recently used entries until the cache holds at most `max_bytes`. It never
    /// removes the most recently used entry (the one just fetched) nor any entry this `Cache`
    /// value fetched or returned, so it may stay above the limit. Temporary files not written
    /// to for an hour (downloads whose process died) go as well.
    pub fn prune(&self, max_bytes: u64) -> io::Result<PruneReport> {
        let mut report = PruneReport::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(e),
        };
        let now = SystemTime::now();
        let mut artifacts: Vec<(SystemTime, String, u64)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(INCOMING) || name.starts_with(PARTIAL) {
                let idle = now.duration_since(modified).unwrap_or_default();
                if idle > STALE_INCOMING && std::fs::remove_file(entry.path()).is_ok() {
                    report.stale_incoming_removed += 1;
                }
            } else if meta.is_file() && is_sha256(&name) && name == name.to_ascii_lowercase() {
                artifacts.push((modified, name, meta.len()));
            }
        }
        // Oldest first; the name breaks ties so the order is stable.
        artifacts.sort();
        let mut total: u64 = artifacts.iter().map(|a| a.2).sum();
        let newest = artifacts.last().map(|a| a.1.clone());
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        for (_, name, size) in &artifacts {
            if total <= max_bytes {
                break;
            }
            if Some(name) == newest.as_ref() || used.contains(name) {
                continue;
            }
            match std::fs::remove_file(self.dir.join(name)) {
                Ok(()) => {
                    total -= size;
                    report.freed_bytes += size;
                    report.removed.push(name.clone());
                }
                // Someone else pruned it first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= size,
                Err(e) => return Err(e),
            }
        }
        report.kept_bytes = total;
        Ok(report)
    }

    /// A temporary file for a download of `sha256`: the artifact's resumable `.partial-` file
    /// when no other download holds it (its bytes so far are hashed again, so `offset` says
    /// where the transfer may go on), otherwise a fresh uniquely named one. Without a declared
    /// size, more than `max_undeclared` bytes are refused. The error carries the path it is
    /// about.
    pub(super) fn incoming<'p>(
        &'p self,
        sha256: &str,
        declared_size: Option<u64>,
        max_undeclared: u64,
        progress: &'p mut dyn FnMut(Progress),
    ) -> Result<Incoming<'p>, (PathBuf, io::Error)> {
        std::fs::create_dir_all(&self.dir).map_err(|e| (self.dir.clone(), e))?;
        let limit = match declared_size {
            Some(size) => Limit::Declared(size),
            None => Limit::Cap(max_undeclared),
        };
        let (file, temp, resumable) = self.temp_file(sha256)?;
        let mut incoming = Incoming {
            file: Some(file),
            temp,
            final_path: self.path(sha256),
            dir: self.dir.clone(),
            hasher: Sha256::new(),
            written: 0,
            offset: 0,
            transferred: 0,
            resumable,
            discard: false,
            total: declared_size,
            limit,
            progress,
            used: &self.used,
            sha256: sha256.to_string(),
        };
        if resumable {
            incoming
                .take_over_partial()
                .map_err(|e| (incoming.temp.clone(), e))?;
        }
        Ok(incoming)
    }

    /// The locked file a download writes to, its path, and whether it is the resumable one.
    fn temp_file(
        &self,
        sha256: &str,
    ) -> Result<(Flock<File>, PathBuf, bool), (PathBuf, io::Error)> {
        let partial = self.dir.join(format!("{PARTIAL}{sha256}"));
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(|e| (partial.clone(), e))?;
        if let Ok(file) = Flock::lock(opened, FlockArg::LockExclusiveNonblock) {
            return Ok((file, partial, true));
        }
        // Another download of the same artifact holds the partial file: this one starts from
        // nothing in a file of its own rather than wait or share.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let temp = self
                .dir
                .join(format!("{INCOMING}{sha256}-{}-{n}", std::process::id()));
            // `create_new` makes the name ours alone: a leftover from a dead process with the
            // same pid is skipped, never appended to or truncated.
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => {
                    let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
                        .map_err(|(_, e)| (temp.clone(), io::Error::from(e)))?;
                    return Ok((file, temp, false));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err((temp, e)),
            }
        }
    }
}

/// What bounds a download's size.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// The artifact's declared size: more is not the artifact.
    Declared(u64),
    /// No size declared: the repository's cap.
    Cap(u64),
}

impl Limit {
    fn bytes(self) -> u64 {
        match self {
            Limit::Declared(n) | Limit::Cap(n) => n,
        }
    }
}

/// A download in progress: a temporary file in the cache, hashed as it is written. Dropping it
/// without `finish` deletes the file.
pub(super) struct Incoming<'p> {
    file: Option<Flock<File>>,
    temp: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    /// Bytes in the file (and hashed), resumed ones included.
    written: u64,
    /// Bytes that were already there when this download started.
    offset: u64,
    /// Bytes this download received.
    transferred: u64,
    /// Whether this is the artifact's `.partial-` file, kept when a transfer is interrupted.
    resumable: bool,
    /// What is in the file is not a prefix of the artifact (it was too long, did not hash
    /// right, or a write failed): nothing of it is kept. Otherwise a partial file that holds
    /// bytes stays for the next download to resume.
    discard: bool,
    total: Option<u64>,
    limit: Limit,
    progress: &'p mut dyn FnMut(Progress),
    used: &'p Mutex<BTreeSet<String>>,
    sha256: String,
}

/// Why copying into the cache stopped.
#[derive(Debug)]
pub(super) enum CopyError {
    /// Reading from the source failed after `after` bytes.
    Read { after: u64, error: io::Error },
    /// Writing the cache file failed.
    Write(PathBuf, io::Error),
    /// The source sent more than the declared size.
    TooLarge { limit: u64 },
    /// No size was declared and the source sent more than the repository's cap.
    OverCap { cap: u64 },
}

/// Why a finished download did not become a cache entry.
#[derive(Debug)]
pub(super) enum FinishError {
    Mismatch { sha256: String, size: u64 },
    Io(PathBuf, io::Error),
}

impl<'p> Incoming<'p> {
    /// Hashes what an earlier, interrupted download left in the partial file, so the transfer
    /// can go on after it. Content longer than the declared size cannot be a prefix of the
    /// artifact and is dropped.
    fn take_over_partial(&mut self) -> io::Result<()> {
        let file = self.file.as_mut().expect("open until finished");
        let len = file.metadata()?.len();
        if len == 0 || len > self.limit.bytes() {
            return self.restart();
        }
        file.seek(SeekFrom::Start(0))?;
        let read = crate::digest::feed(&mut **file, &mut self.hasher)?;
        self.written = read;
        self.offset = read;
        Ok(())
    }

    /// The temporary file, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.temp
    }

    /// Bytes already in the file: the offset a resuming transfer asks the source for.
    pub(super) fn resume_at(&self) -> u64 {
        self.written
    }

    /// Throws away what is in the file and starts from its first byte: for a source that
    /// cannot (or would not) send only the rest.
    pub(super) fn restart(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
        }
        self.hasher = Sha256::new();
        self.written = 0;
        self.offset = 0;
        Ok(())
    }

    /// Bytes found in the partial file when this download began (0 when it started afresh).
    pub(super) fn resumed_from(&self) -> u64 {
        self.offset
    }

    /// The size the server announced, for progress; a declared size takes precedence.
    pub(super) fn announce(&mut self, total: Option<u64>) {
        if matches!(self.limit, Limit::Cap(_)) {
            self.total = total;
        }
    }

    /// Copies everything `reader` gives into the file, hashing it on the way.
    pub(super) fn copy_from(&mut self, reader: &mut dyn Read) -> Result<u64, CopyError> {
        // Hashing costs about as much as a fast network read (0.8 s per GiB here), so it runs
        // with the writes on a second thread while this one reads: a download then takes about
        // as long as the slower of the two, not their sum. Buffers go round between the
        // threads, so memory stays at `IN_FLIGHT + 1` buffers whatever the artifact's size.
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(IN_FLIGHT);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..=IN_FLIGHT {
            let _ = empty_tx.send(vec![0; BUFFER]);
        }
        let mut file = self.file.take().expect("open until finished");
        let mut hasher = std::mem::replace(&mut self.hasher, Sha256::new());
        let start = self.written;
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                for (buffer, n) in full_rx {
                    hasher.update(&buffer[..n]);
                    if let Err(e) = file.write_all(&buffer[..n]) {
                        // Dropping the channels ends the reading side's loop.
                        return (file, hasher, Err(e));
                    }
                    let _ = empty_tx.send(buffer);
                }
                (file, hasher, Ok(()))
            });
            let read = loop {
                // No buffer back means the worker stopped on a write error, reported below.
                let Ok(mut buffer) = empty_rx.recv() else {
                    break Ok(());
                };
                let n = loop {
                    match reader.read(&mut buffer) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                let n = match n {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(error) => {
                        break Err(CopyError::Read {
                            after: self.written,
                            error,
                        });
                    }
                };
                if self.written + n as u64 > self.limit.bytes() {
                    self.discard = true;
                    break Err(match self.limit {
                        Limit::Declared(limit) => CopyError::TooLarge { limit },
                        Limit::Cap(cap) => CopyError::OverCap { cap },
                    });
                }
                if full_tx.send((buffer, n)).is_err() {
                    break Ok(());
                }
                self.written += n as u64;
                self.transferred += n as u64;
                (self.progress)(Progress {
                    downloaded: self.written,
                    total: self.total,
                });
            };
            drop(full_tx);
            let (file, hasher, written) = worker.join().expect("the hashing thread does not panic");
            self.file = Some(file);
            self.hasher = hasher;
            if written.is_err() {
                // What reached the file is unknown: nothing of it is kept.
                self.discard = true;
            }
            written.map_err(|e| CopyError::Write(self.temp.clone(), e))?;
            read.map(|()| self.written - start)
        })
    }

    /// Verifies the download and, if it is the artifact, renames it to its cache name; returns
    /// the path and the bytes this download transferred (resumed ones not counted).
    /// The file is fsynced before the rename and the directory after, so after a crash the
    /// name either is absent or holds the whole verified content.
    pub(super) fn finish(
        mut self,
        expected_sha256: &str,
        expected_size: Option<u64>,
    ) -> Result<(PathBuf, u64), FinishError> {
        let file = self.file.take().expect("finished once");
        if let Err(e) = file.sync_all() {
            self.file = Some(file);
            return Err(FinishError::Io(self.temp.clone(), e));
        }
        let hasher = std::mem::replace(&mut self.hasher, Sha256::new());
        let actual = hex::encode(hasher.finalize());
        // A complete transfer that is not the artifact leaves nothing worth resuming.
        self.discard = true;
        if actual != expected_sha256 || expected_size.is_some_and(|s| s != self.written) {
            // Drop deletes the temporary file.
            return Err(FinishError::Mismatch {
                sha256: actual,
                size: self.written,
            });
        }
        // Renamed while still locked, so no other download opens the partial file in between.
        let renamed = std::fs::rename(&self.temp, &self.final_path);
        drop(file);
        renamed.map_err(|e| FinishError::Io(self.final_path.clone(), e))?;
        // The rename is durable only once the directory is; failing to sync it loses nothing
        // but durability, and the content is verified either way.
        crate::atomic_file::sync_dir(&self.dir);
        if let Ok(mut used) = self.used.lock() {
            used.insert(self.sha256.clone());
        }
        self.temp = PathBuf::new();
        Ok((self.final_path.clone(), self.transferred))
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        let keep = self.resumable && !self.discard && self.written > 0;
        if !self.temp.as_os_str().is_empty() && !keep {
            // Removed while still locked, so no other download takes over a dying file.
            let _ = std::fs::remove_file(&self.temp);
        }
        drop(self.file.take());
    }
}

/// Whether `s` is a sha256 in hexadecimal (either case).
pub(super) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn put(cache: &Cache, content: &[u8]) -> (String, PathBuf) {
        let sha = crate::digest::sha256_hex(content);
        let mut progress = |_: Progress| {};
        let mut inc = cache.incoming(&sha, None, 1 << 30, &mut progress).unwrap();
        inc.copy_from(&mut &content[..]).unwrap();
        let (path, n) = inc.finish(&sha, Some(content.len() as u64)).unwrap();
        assert_eq!(n, content.len() as u64);
        (sha, path)
    }

    fn age(path: &Path, secs_ago: u64) {
        File::open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .unwrap();
    }

    #[test]
    fn paths_stay_inside_the_cache() {
        let c = Cache::new("/c");
        assert_eq!(c.path(&EMPTY.to_uppercase()), Path::new("/c").join(EMPTY));
        assert_eq!(c.path("../../etc/passwd"), Path::new("/c/.not-a-sha256"));
        assert_eq!(c.get("../x"), None);
    }

    #[test]
    fn mismatch_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let mut progress = |_: Progress| {};
        let mut inc = cache.incoming(EMPTY, None, 1 << 30, &mut progress).unwrap();
        inc.copy_from(&mut &b"not empty"[..]).unwrap();
        let e = inc.finish(EMPTY, None).unwrap_err();
        assert!(matches!(e, FinishError::Mismatch { size: 9, .. }), "{e:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_interrupted_copy_is_kept_and_the_next_one_goes_on_after_it() {
        struct Flaky<'a>(&'a [u8], usize);
        impl Read for Flaky<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 == 0 {
                    return Err(io::ErrorKind::ConnectionReset.into());
                }
                let n = buf.len().min(self.1).min(1000).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                self.1 -= n;
                Ok(n)
            }
        }
        let content: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
        let sha = crate::digest::sha256_hex(&content);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let mut seen = 0;
        let mut progress = |p: Progress| seen = p.downloaded;
        let mut inc = cache.incoming(&sha, None, 1 << 20, &mut progress).unwrap();
        match inc.copy_from(&mut Flaky(&content, 5000)).unwrap_err() {
            CopyError::Read { after, error } => {
                assert_eq!(
                    (after, error.kind()),
                    (5000, io::ErrorKind::ConnectionReset)
                );
            }
            e => panic!("{e:?}"),
        }
        drop(inc);
        assert_eq!(seen, 5000);
        let partial = dir.path().join(format!("{PARTIAL}{sha}"));
        assert_eq!(std::fs::read(&partial).unwrap(), &content[..5000]);

        // While one download holds the partial file, another starts afresh in its own file.
        let mut p1 = |_: Progress| {};
        let mut p2 = |_: Progress| {};
        let first = cache.incoming(&sha, None, 1 << 20, &mut p1).unwrap();
        let second = cache.incoming(&sha, None, 1 << 20, &mut p2).unwrap();
        assert_eq!((first.resume_at(), second.resume_at()), (5000, 0));
        drop(second);
        drop(first);

        let mut progress = |_: Progress| {};
        let mut inc = cache.incoming(&sha, None, 1 << 20, &mut progress).unwrap();
        assert_eq!(inc.resume_at(), 5000);
        inc.copy_from(&mut &content[5000..]).unwrap();
        let (path, transferred) = inc.finish(&sha, Some(9000)).unwrap();
        assert_eq!(transferred, 4000);
        assert_eq!(std::fs::read(path).unwrap(), content);
        assert!(!partial.exists());
    }

    #[test]
    fn a_resumed_prefix_that_is_not_the_artifact_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        std::fs::write(dir.path().join(format!("{PARTIAL}{EMPTY}")), b"junk").unwrap();
        let mut progress = |_: Progress| {};
        let inc = cache.incoming(EMPTY, None, 1 << 20, &mut progress).unwrap();
        assert_eq!(inc.resume_at(), 4);
        assert!(matches!(
            inc.finish(EMPTY, None),
            Err(FinishError::Mismatch { size: 4, .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn more_than_the_cap_is_stopped_when_no_size_is_declared() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let mut progress = |_: Progress| {};
        let mut inc = cache.incoming(EMPTY, None, 10, &mut progress).unwrap();
        let e = inc.copy_from(&mut &[0u8; 11][..]).unwrap_err();
        assert!(matches!(e, CopyError::OverCap { cap: 10 }), "{e:?}");
        drop(inc);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn large_copies_hash_every_buffer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let content: Vec<u8> = (0..(BUFFER * 9 + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (sha, path) = put(&cache, &content);
        assert_eq!(std::fs::read(&path).unwrap(), content);
        assert_eq!(
            crate::digest::sha256_file(&path).unwrap(),
            (sha, content.len() as u64)
        );
    }

    #[test]
    fn more_than_declared_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let mut progress = |_: Progress| {};
        let mut inc = cache
            .incoming(EMPTY, Some(3), 1 << 30, &mut progress)
            .unwrap();
        let e = inc.copy_from(&mut &b"four"[..]).unwrap_err();
        assert!(matches!(e, CopyError::TooLarge { limit: 3 }), "{e:?}");
        drop(inc);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn prune_evicts_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Cache::new(dir.path());
        let (a, pa) = put(&writer, &[1; 100]);
        let (b, pb) = put(&writer, &[2; 100]);
        let (c, pc) = put(&writer, &[3; 100]);
        age(&pa, 300);
        age(&pb, 200);
        age(&pc, 100);
        let cache = Cache::new(dir.path());
        // Using `a` makes `b` the least recently used.
        assert_eq!(cache.get(&a), Some(pa.clone()));
        let other = Cache::new(dir.path());
        let r = other.prune(200).unwrap();
        assert_eq!(r.removed, vec![b.clone()]);
        assert_eq!((r.freed_bytes, r.kept_bytes), (100, 200));
        assert!(pa.exists() && !pb.exists() && pc.exists());
        // The most recently used entry (`a`) survives any limit.
        let r = other.prune(0).unwrap();
        assert_eq!(r.removed, vec![c]);
        assert!(pa.exists());
        assert_eq!(r.kept_bytes, 100);
    }

    #[test]
    fn prune_keeps_what_this_cache_handed_out_and_clears_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let (a, pa) = put(&cache, &[1; 10]);
        let (_, pb) = put(&cache, &[2; 10]);
        age(&pa, 1000);
        age(&pb, 10);
        let stale = dir.path().join(format!("{INCOMING}{a}-1-1"));
        std::fs::write(&stale, b"partial").unwrap();
        age(&stale, 7200);
        let fresh = dir.path().join(format!("{INCOMING}{a}-1-2"));
        std::fs::write(&fresh, b"partial").unwrap();
        let r = cache.prune(0).unwrap();
        assert!(r.removed.is_empty(), "{r:?}");
        assert_eq!(r.stale_incoming_removed, 1);
        assert!(!stale.exists() && fresh.exists());
        assert!(pa.exists() && pb.exists());
    }
}
