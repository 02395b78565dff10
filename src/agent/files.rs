//! Writing files on a host: always to a temp file in the same directory, fsync, then rename, so
//! a reader (or a crash) sees the old content or the new, never a mix. Mode and owner are set
//! on the temp file before the rename.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {message}")]
pub struct FileError {
    pub action: &'static str,
    pub path: String,
    pub message: String,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> FileError + 'a {
    move |e| FileError {
        action,
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `0640` → 0o640.
pub fn parse_mode(mode: &str) -> u32 {
    u32::from_str_radix(mode, 8).unwrap_or(0o644)
}

/// Atomically replaces `path` with `bytes`, `mode` and (when given) `owner` (`user` or
/// `user:group`).
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<&str>,
) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err("create directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.clarity-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_compat(0o600)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        f.write_all(bytes).map_err(err("write", &tmp))?;
        f.sync_all().map_err(err("sync", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(err("chmod", &tmp))?;
        if let Some(owner) = owner {
            chown(&tmp, owner)?;
        }
        fs::rename(&tmp, path).map_err(err("rename onto", path))?;
        // The rename is durable only once the directory entry is.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

trait ModeCompat {
    fn mode_compat(&mut self, mode: u32) -> &mut Self;
}

impl ModeCompat for fs::OpenOptions {
    fn mode_compat(&mut self, mode: u32) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, mode)
    }
}

/// Sets the owner of `path` from `user` or `user:group`, resolving names on this host.
pub fn chown(path: &Path, owner: &str) -> Result<(), FileError> {
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let e = |message: String| FileError {
        action: "set the owner of",
        path: path.display().to_string(),
        message,
    };
    let u = nix::unistd::User::from_name(user)
        .map_err(|x| e(x.to_string()))?
        .ok_or_else(|| e(format!("no user `{user}` on this host")))?;
    let gid = match group {
        Some(g) => {
            nix::unistd::Group::from_name(g)
                .map_err(|x| e(x.to_string()))?
                .ok_or_else(|| e(format!("no group `{g}` on this host")))?
                .gid
        }
        None => u.gid,
    };
    nix::unistd::chown(path, Some(u.uid), Some(gid)).map_err(|x| e(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_with_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/conf.yml");
        write_atomic(&p, b"x: 1\n", 0o640, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x: 1\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        write_atomic(&p, b"x: 2\n", 0o600, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x: 2\n");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn unknown_owner_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let e = write_atomic(&p, b"", 0o644, Some("no-such-user-xyz")).unwrap_err();
        assert!(e.to_string().contains("no user `no-such-user-xyz`"), "{e}");
        assert!(!p.exists());
    }
}
