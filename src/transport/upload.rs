//! The agent as it travels to a host on first contact: this binary without its debug
//! information (`objcopy --strip-debug`: the line tables are most of a build's size and the
//! agent needs none of them), compressed in a format the host can undo with a program it has
//! (zstd, else xz, else gzip, which every Debian host has; else sent as is). Prepared once per
//! build, when the first host needs it, and kept in the reconciler's work directory beside the
//! hash cache (`.agent-upload/`); every file there is checked against its recorded sha256
//! before it is used again, so a corrupt or foreign cache is rebuilt, never trusted. The host
//! checks the sha256 of the decompressed file before anything runs it (`ssh::install`).
//!
//! It touches only that cache directory and runs only the local `objcopy`; never a host.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The cache directory's name in the reconciler's work directory.
pub const UPLOAD_CACHE_DIR: &str = ".agent-upload";

/// How an upload is compressed, in order of preference: zstd decompresses about thirty times
/// faster than xz, which matters when fifty hosts unpack at once on a small machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Xz,
    Gzip,
    Plain,
}

impl Codec {
    /// The codecs a host may have, best first ([`Codec::Plain`] needs nothing).
    pub const PREFERENCE: [Codec; 3] = [Codec::Zstd, Codec::Xz, Codec::Gzip];

    /// The host program that undoes it.
    pub fn program(self) -> Option<&'static str> {
        match self {
            Codec::Zstd => Some("zstd"),
            Codec::Xz => Some("xz"),
            Codec::Gzip => Some("gzip"),
            Codec::Plain => None,
        }
    }

    /// The file name suffix the host program expects (and removes when decompressing).
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::Zstd => ".zst",
            Codec::Xz => ".xz",
            Codec::Gzip => ".gz",
            Codec::Plain => "",
        }
    }

    /// The argv that turns `path` + [`Self::suffix`] into `path`, removing the compressed
    /// file and keeping its mode (0600 until checked).
    pub fn decompress_argv(self, compressed: &str) -> Option<Vec<&str>> {
        match self {
            Codec::Zstd => Some(vec!["zstd", "-d", "-q", "-f", "--rm", "--", compressed]),
            Codec::Xz => Some(vec!["xz", "-d", "-f", "--", compressed]),
            Codec::Gzip => Some(vec!["gzip", "-d", "-f", "--", compressed]),
            Codec::Plain => None,
        }
    }

    /// The first of `PREFERENCE` whose program is among `found` (the paths `which` printed).
    pub fn best_of(found: &str) -> Codec {
        let names: Vec<&str> = found
            .lines()
            .filter_map(|l| l.trim().rsplit('/').next())
            .collect();
        Codec::PREFERENCE
            .into_iter()
            .find(|c| c.program().is_some_and(|p| names.contains(&p)))
            .unwrap_or(Codec::Plain)
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Xz => "xz",
            Codec::Gzip => "gzip",
            Codec::Plain => "uncompressed",
        }
    }

    fn index(self) -> usize {
        match self {
            Codec::Zstd => 0,
            Codec::Xz => 1,
            Codec::Gzip => 2,
            Codec::Plain => 3,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A file ready to be sent, and what the host must end up with.
#[derive(Debug, Clone)]
pub struct Payload {
    /// What is sent.
    pub path: PathBuf,
    pub codec: Codec,
    /// Bytes sent.
    pub size: u64,
    /// The sha256 the decompressed file must have on the host.
    pub sha256: String,
}

/// The stripped agent and its compressed forms, made when first asked for.
pub struct Uploads {
    source: PathBuf,
    /// `None`: no work directory to keep them in; the binary is sent as it is.
    dir: Option<PathBuf>,
    stripped: OnceLock<Result<Payload, String>>,
    compressed: [OnceLock<Result<Payload, String>>; 4],
}

impl Uploads {
    /// The uploads of `source` (whose sha256 is `source_sha256`), kept under `cache_root`.
    pub fn new(source: PathBuf, cache_root: Option<&Path>) -> Uploads {
        Uploads {
            source,
            dir: cache_root.map(|r| r.join(UPLOAD_CACHE_DIR)),
            stripped: OnceLock::new(),
            compressed: Default::default(),
        }
    }

    /// What to send to a host that can undo `codec`: the stripped binary compressed with it.
    /// `source_sha256` names the build (its cache directory).
    pub fn payload(&self, codec: Codec, source_sha256: &str) -> Result<Payload, String> {
        self.compressed[codec.index()]
            .get_or_init(|| self.make(codec, source_sha256))
            .clone()
    }

    /// The binary without debug information (or the binary itself, without a cache or
    /// `objcopy`).
    fn stripped(&self, source_sha256: &str) -> Result<Payload, String> {
        self.stripped
            .get_or_init(|| self.strip(source_sha256))
            .clone()
    }

    fn build_dir(&self, source_sha256: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(&source_sha256[..12]))
    }

    fn strip(&self, source_sha256: &str) -> Result<Payload, String> {
        let as_is = || -> Result<Payload, String> {
            let (sha256, size) = crate::digest::sha256_file(&self.source)
                .map_err(|e| format!("cannot read {}: {e}", self.source.display()))?;
            Ok(Payload {
                path: self.source.clone(),
                codec: Codec::Plain,
                size,
                sha256,
            })
        };
        let Some(dir) = self.build_dir(source_sha256) else {
            return as_is();
        };
        let path = dir.join("clarity-reconcile");
        if let Some(p) = cached(&path, Codec::Plain) {
            return Ok(p);
        }
        if prepare_dir(self.dir.as_deref().expect("a build dir has a root"), &dir).is_err() {
            return as_is();
        }
        let tmp = temporary(&path);
        let stripped = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&self.source)
            .arg(&tmp)
            .output()
            .is_ok_and(|o| o.status.success());
        if !stripped {
            // No binutils here: the agent travels with its debug information, compressed all
            // the same.
            let _ = std::fs::remove_file(&tmp);
            return as_is();
        }
        record(&tmp, &path, Codec::Plain).or_else(|_| as_is())
    }

    fn make(&self, codec: Codec, source_sha256: &str) -> Result<Payload, String> {
        let stripped = self.stripped(source_sha256)?;
        let Some(dir) = self
            .build_dir(source_sha256)
            .filter(|_| codec != Codec::Plain)
        else {
            return Ok(stripped);
        };
        let path = dir.join(format!("clarity-reconcile{}", codec.suffix()));
        if let Some(p) = cached(&path, codec) {
            return Ok(Payload {
                sha256: stripped.sha256,
                ..p
            });
        }
        let tmp = temporary(&path);
        let made = compress(&stripped.path, &tmp, codec)
            .and_then(|()| record(&tmp, &path, codec).map_err(|e| e.to_string()));
        match made {
            Ok(p) => Ok(Payload {
                sha256: stripped.sha256,
                ..p
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(format!(
                    "cannot compress {} with {codec} into {}: {e}",
                    stripped.path.display(),
                    dir.display()
                ))
            }
        }
    }
}

/// Creates the build's directory and removes other builds' (one build is kept at a time).
fn prepare_dir(root: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".part-{}", std::process::id()));
    PathBuf::from(name)
}

fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

/// A file made by an earlier run, if it still has the sha256 recorded beside it.
fn cached(path: &Path, codec: Codec) -> Option<Payload> {
    let recorded = std::fs::read_to_string(sidecar(path)).ok()?;
    let (sha256, size) = crate::digest::sha256_file(path).ok()?;
    (recorded.trim() == sha256).then(|| Payload {
        path: path.to_path_buf(),
        codec,
        size,
        sha256,
    })
}

/// Moves a finished `tmp` into place with its sha256 beside it (the sidecar last: a file
/// without one is made again).
fn record(tmp: &Path, path: &Path, codec: Codec) -> std::io::Result<Payload> {
    let (sha256, size) = crate::digest::sha256_file(tmp)?;
    let _ = std::fs::remove_file(sidecar(path));
    std::fs::rename(tmp, path)?;
    std::fs::write(sidecar(path), format!("{sha256}\n"))?;
    Ok(Payload {
        path: path.to_path_buf(),
        codec,
        size,
        sha256,
    })
}

fn compress(from: &Path, to: &Path, codec: Codec) -> Result<(), String> {
    let mut input = std::fs::File::open(from).map_err(|e| e.to_string())?;
    let output = BufWriter::new(std::fs::File::create(to).map_err(|e| e.to_string())?);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    match codec {
        Codec::Zstd => {
            // Level 9 with a long window: a third of a stripped build, in about a second on
            // two cores, once per build.
            let mut enc = zstd::stream::Encoder::new(output, 9).map_err(|e| e.to_string())?;
            let _ = enc.multithread(threads);
            let _ = enc.long_distance_matching(true);
            let _ = enc.window_log(27);
            std::io::copy(&mut input, &mut enc)
                .and_then(|_| enc.finish()?.flush())
                .map_err(|e| e.to_string())
        }
        Codec::Xz => {
            // Preset 1: most of xz's gain at a fraction of its time.
            let mut enc = liblzma::write::XzEncoder::new(output, 1);
            std::io::copy(&mut input, &mut enc)
                .and_then(|_| enc.finish()?.flush())
                .map_err(|e| e.to_string())
        }
        Codec::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(output, flate2::Compression::new(6));
            std::io::copy(&mut input, &mut enc)
                .and_then(|_| enc.finish()?.flush())
                .map_err(|e| e.to_string())
        }
        Codec::Plain => Err("nothing to compress".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_codec_is_the_first_the_host_has() {
        assert_eq!(Codec::best_of("/usr/bin/gzip\n/usr/bin/xz\n"), Codec::Xz);
        assert_eq!(Codec::best_of("/usr/bin/zstd\n"), Codec::Zstd);
        assert_eq!(Codec::best_of("/bin/gzip\n"), Codec::Gzip);
        assert_eq!(Codec::best_of(""), Codec::Plain);
        assert_eq!(Codec::best_of("/usr/bin/zstdcat\n"), Codec::Plain);
    }

    /// Every codec's file, undone by the host program of that name, is the stripped binary;
    /// a cache entry that no longer matches its recorded sha256 is made again.
    #[test]
    fn payloads_decompress_to_the_stripped_binary_and_a_corrupt_cache_is_remade() {
        let dir = tempfile::tempdir().unwrap();
        // A small real program stands in for the (large) agent: stripping and compressing
        // are what is checked, not their speed.
        let exe = dir.path().join("ls");
        std::fs::copy("/bin/ls", &exe).unwrap();
        let source_sha = crate::digest::sha256_file(&exe).unwrap().0;
        let uploads = Uploads::new(exe.clone(), Some(dir.path()));
        let plain = uploads.payload(Codec::Plain, &source_sha).unwrap();
        assert!(plain.path.starts_with(dir.path()), "{plain:?}");
        let size = std::fs::metadata(&exe).unwrap().len();
        assert!(plain.size <= size, "{} > {size}", plain.size);
        for codec in Codec::PREFERENCE {
            let program = codec.program().unwrap();
            if Command::new(program).arg("--version").output().is_err() {
                eprintln!("skipping {codec}: no {program} here");
                continue;
            }
            let p = uploads.payload(codec, &source_sha).unwrap();
            assert_eq!(p.sha256, plain.sha256);
            assert!(p.size < plain.size, "{codec}: {} of {}", p.size, plain.size);
            let work = dir.path().join(format!("host-{codec}"));
            std::fs::create_dir_all(&work).unwrap();
            let sent = work.join(format!("agent{}", codec.suffix()));
            std::fs::copy(&p.path, &sent).unwrap();
            let sent = sent.to_str().unwrap();
            let argv = codec.decompress_argv(sent).unwrap();
            let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
            assert!(out.status.success(), "{out:?}");
            let got = crate::digest::sha256_file(&work.join("agent")).unwrap().0;
            assert_eq!(got, plain.sha256, "{codec}");
            assert!(!Path::new(sent).exists(), "{codec} removes what it undid");
        }
        // Another run finds the stripped file; one that was tampered with is made again.
        std::fs::write(&plain.path, b"tampered").unwrap();
        let again = Uploads::new(exe, Some(dir.path()));
        let remade = again.payload(Codec::Plain, &source_sha).unwrap();
        assert_eq!(remade.sha256, plain.sha256);
    }
}
