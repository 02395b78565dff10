//! Files replaced whole: the one atomic write (a temporary file in the same directory, fsync,
//! mode, then rename, then the directory synced) and the directory sync that makes a rename
//! durable. A reader, or a crash, sees the old content or the new, never a mix, and the
//! temporary file is never readable by others. It touches only the path it is given and its
//! directory; what an error means is for the caller to say.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The step of an atomic write that failed (`create`, `write`, `sync`, `chmod`, `rename onto`,
/// `create directory`) and the path it failed on.
#[derive(Debug)]
pub struct WriteFailed {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

/// Atomically replaces `path` with `bytes` and `mode`. `before_rename` gets the finished
/// temporary file (content synced, mode set) for what the caller adds, such as an owner; when
/// it fails, nothing is replaced. Any failure removes the temporary file.
pub fn write_atomic<E: From<WriteFailed>>(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    before_rename: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let failed = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| {
            E::from(WriteFailed {
                action,
                path,
                source,
            })
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(failed("create directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A leading dot and a suffix no service manager or application includes (supervisord reads
    // `*.conf`, systemd `*.service`), so nothing ever picks up the temporary file.
    let tmp = dir.join(format!(".{name}.clarity-tmp-{}", std::process::id()));
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(failed("create", &tmp))?;
        f.write_all(bytes).map_err(failed("write", &tmp))?;
        f.sync_all().map_err(failed("sync", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(failed("chmod", &tmp))?;
        before_rename(&tmp)?;
        fs::rename(&tmp, path).map_err(failed("rename onto", path))?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the entries of `dir` durable: a rename (or a new link) survives a crash only once its
/// directory is synced. Best effort: failing to sync loses durability, never content.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::{WriteFailed, write_atomic};

    #[test]
    fn a_failing_step_before_the_rename_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.conf");
        std::fs::write(&path, b"old").unwrap();
        let err = write_atomic(&path, b"new", 0o600, |tmp| {
            assert_eq!(std::fs::read(tmp).unwrap(), b"new");
            Err(WriteFailed {
                action: "set the owner of",
                path: tmp.to_path_buf(),
                source: std::io::Error::other("no such user"),
            })
        })
        .unwrap_err();
        assert_eq!(err.action, "set the owner of");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
