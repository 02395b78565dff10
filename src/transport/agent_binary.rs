//! The reconciler's own binary as the agent it installs on SSH hosts, and its sha256, which
//! names the agent build on a host (`clarity-reconcile-<version>-<12 hex of sha256>`).
//!
//! Hashing the binary (tens to hundreds of MB) costs more CPU than inspecting a whole fleet of
//! hosts, so the sha256 is remembered between runs in a small file in the reconciler's work
//! directory, keyed by the file's identity: its canonical path, device and inode, size, and
//! modification and change times to the nanosecond. Rebuilding or replacing the binary changes
//! at least one of those (a rewrite in place changes the change time, which no user can set),
//! so a different binary is never taken for the one hashed. What is uploaded is still checked
//! against the sha256 on the host, and a file that changes while it is hashed is not
//! remembered. The sha256 names the build; what is installed under that name is the build
//! without its debug information ([`super::upload`]).

use super::upload::{Codec, Payload, Uploads};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The cache file's name in the reconciler's work directory.
pub const HASH_CACHE_FILE: &str = ".agent-sha256.json";
const HASH_CACHE_FORMAT: &str = "clarity.agent-sha256/v1";
/// Binaries remembered at once (a work directory shared by a few reconciler builds).
const HASH_CACHE_ENTRIES: usize = 8;

/// This reconciler's own binary, which it installs as the agent on hosts: hashed at most once
/// per run, and then only when the cache does not know it.
pub struct AgentBinary {
    path: PathBuf,
    cache: Option<PathBuf>,
    sha256: OnceLock<Result<String, String>>,
    /// What is sent to a host that lacks this build: stripped, compressed.
    uploads: Uploads,
}

/// What identifies one version of a file on this machine without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileIdentity {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let path = std::fs::canonicalize(path)?;
        let m = std::fs::metadata(&path)?;
        Ok(FileIdentity {
            path,
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    #[serde(flatten)]
    file: FileIdentity,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    entries: Vec<CacheEntry>,
}

impl AgentBinary {
    /// The binary at `path`, hashed when first needed in this run.
    pub fn new(path: PathBuf) -> AgentBinary {
        AgentBinary {
            uploads: Uploads::new(path.clone(), None),
            path,
            cache: None,
            sha256: OnceLock::new(),
        }
    }

    /// The binary at `path`, its sha256 remembered across runs in `cache_file`, and what is
    /// uploaded of it kept in the same directory.
    pub fn cached(path: PathBuf, cache_file: PathBuf) -> AgentBinary {
        AgentBinary {
            uploads: Uploads::new(path.clone(), cache_file.parent()),
            path,
            cache: Some(cache_file),
            sha256: OnceLock::new(),
        }
    }

    /// The binary as installed on hosts: without debug information (when `objcopy` and a
    /// work directory are at hand), uncompressed. Its sha256 is what a host's file must have.
    pub fn stripped(&self) -> Result<Payload, String> {
        self.uploads.payload(Codec::Plain, self.sha256()?)
    }

    /// What to send to a host that can undo `codec`.
    pub fn payload(&self, codec: Codec) -> Result<Payload, String> {
        self.uploads.payload(codec, self.sha256()?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The binary's sha256 (hex).
    pub fn sha256(&self) -> Result<&str, String> {
        self.sha256
            .get_or_init(|| self.compute())
            .as_deref()
            .map_err(Clone::clone)
    }

    /// `clarity-reconcile-<version>-<12 hex of sha256>`: one file per build on the host.
    pub fn file_name(&self) -> Result<String, String> {
        Ok(format!(
            "clarity-reconcile-{}-{}",
            crate::agent::AGENT_VERSION,
            &self.sha256()?[..12]
        ))
    }

    fn compute(&self) -> Result<String, String> {
        let cannot = |e: std::io::Error| format!("cannot hash {}: {e}", self.path.display());
        let Some(cache) = &self.cache else {
            return hash(&self.path).map_err(cannot);
        };
        let before = FileIdentity::of(&self.path).map_err(cannot)?;
        if let Some(sha) = read_cache(cache, &before) {
            return Ok(sha);
        }
        let sha = hash(&before.path).map_err(cannot)?;
        // Remembered only if the file did not change while it was read.
        if FileIdentity::of(&self.path).is_ok_and(|after| after == before) {
            // Only a cache: a work directory that cannot be written costs a hash per run.
            let _ = write_cache(cache, before, &sha);
        }
        Ok(sha)
    }
}

fn hash(path: &Path) -> std::io::Result<String> {
    crate::digest::sha256_file(path).map(|(h, _)| h)
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn load(cache: &Path) -> Option<CacheFile> {
    let text = std::fs::read(cache).ok()?;
    serde_json::from_slice::<CacheFile>(&text)
        .ok()
        .filter(|c| c.format == HASH_CACHE_FORMAT)
}

fn read_cache(cache: &Path, file: &FileIdentity) -> Option<String> {
    load(cache)?
        .entries
        .into_iter()
        .find(|e| e.file == *file && is_sha256(&e.sha256))
        .map(|e| e.sha256)
}

/// Adds (or replaces) the entry of `file`'s path, keeping the newest few; written to a
/// temporary file renamed into place, so a concurrent run reads the old file or the new one.
fn write_cache(cache: &Path, file: FileIdentity, sha256: &str) -> std::io::Result<()> {
    let mut entries = load(cache).map(|c| c.entries).unwrap_or_default();
    entries.retain(|e| e.file.path != file.path);
    entries.push(CacheEntry {
        file,
        sha256: sha256.to_string(),
    });
    let excess = entries.len().saturating_sub(HASH_CACHE_ENTRIES);
    entries.drain(..excess);
    let body = serde_json::to_vec_pretty(&CacheFile {
        format: HASH_CACHE_FORMAT.into(),
        entries,
    })
    .expect("the cache serializes");
    let dir = cache.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}-{:?}",
        cache
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, cache).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sha(bytes: &[u8]) -> String {
        crate::digest::sha256_hex(bytes)
    }

    /// Replaces the cached hash of every entry, to tell a cache hit from a fresh hash.
    fn poison(cache: &Path, fake: &str) {
        let mut c = load(cache).expect("a cache file");
        for e in &mut c.entries {
            e.sha256 = fake.to_string();
        }
        std::fs::write(cache, serde_json::to_vec(&c).unwrap()).unwrap();
    }

    #[test]
    fn the_hash_is_remembered_and_a_rebuilt_binary_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("clarity-reconcile");
        let cache = dir.path().join("work").join(HASH_CACHE_FILE);
        std::fs::write(&bin, b"build one").unwrap();
        let first = AgentBinary::cached(bin.clone(), cache.clone());
        assert_eq!(first.sha256().unwrap(), sha(b"build one"));
        assert!(cache.is_file(), "the work directory is created for it");

        // Another run of the same file reads the cache (proved by a planted value).
        let fake = "f".repeat(64);
        poison(&cache, &fake);
        let again = AgentBinary::cached(bin.clone(), cache.clone());
        assert_eq!(again.sha256().unwrap(), fake);
        assert!(again.file_name().unwrap().ends_with("-ffffffffffff"));

        // Rebuilt the way cargo does (a new file renamed over the old one), same size.
        let new = dir.path().join("new");
        std::fs::write(&new, b"build two").unwrap();
        std::fs::rename(&new, &bin).unwrap();
        let rebuilt = AgentBinary::cached(bin.clone(), cache.clone());
        assert_eq!(rebuilt.sha256().unwrap(), sha(b"build two"));

        // Rewritten in place with the same size and its old modification time put back: the
        // inode and mtime match, the change time does not.
        let mtime = std::fs::metadata(&bin).unwrap().modified().unwrap();
        poison(&cache, &fake);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&bin, b"build 3!!").unwrap();
        let f = std::fs::File::options().write(true).open(&bin).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let in_place = AgentBinary::cached(bin.clone(), cache.clone());
        assert_eq!(in_place.sha256().unwrap(), sha(b"build 3!!"));
        let c = load(&cache).unwrap();
        assert_eq!(c.entries.len(), 1, "one entry per path: {c:?}");
    }

    #[test]
    fn without_a_usable_cache_the_binary_is_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"x").unwrap();
        // A cache that is not ours, and one that cannot be written (a file as its directory).
        let cache = dir.path().join(HASH_CACHE_FILE);
        std::fs::write(&cache, b"{\"format\":\"other\",\"entries\":[]}").unwrap();
        assert_eq!(
            AgentBinary::cached(bin.clone(), cache.clone())
                .sha256()
                .unwrap(),
            sha(b"x")
        );
        let blocked = bin.join(HASH_CACHE_FILE);
        assert_eq!(
            AgentBinary::cached(bin.clone(), blocked).sha256().unwrap(),
            sha(b"x")
        );
        assert_eq!(AgentBinary::new(bin).sha256().unwrap(), sha(b"x"));
        let missing = AgentBinary::cached(dir.path().join("nope"), cache);
        assert!(missing.sha256().unwrap_err().contains("cannot hash"));
    }

    #[test]
    fn several_binaries_share_a_cache_and_old_entries_go() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join(HASH_CACHE_FILE);
        for i in 0..HASH_CACHE_ENTRIES + 2 {
            let bin = dir.path().join(format!("bin{i}"));
            std::fs::write(&bin, format!("{i}")).unwrap();
            let b = AgentBinary::cached(bin, cache.clone());
            assert_eq!(b.sha256().unwrap(), sha(format!("{i}").as_bytes()));
        }
        let c = load(&cache).unwrap();
        assert_eq!(c.entries.len(), HASH_CACHE_ENTRIES);
        assert!(c.entries[0].file.path.ends_with("bin2"), "{c:?}");
        // An entry whose identity matches but whose hash is not one is ignored.
        let bin = dir.path().join(format!("bin{}", HASH_CACHE_ENTRIES + 1));
        poison(&cache, "not a hash");
        assert_eq!(
            AgentBinary::cached(bin, cache).sha256().unwrap(),
            sha(format!("{}", HASH_CACHE_ENTRIES + 1).as_bytes())
        );
    }
}
