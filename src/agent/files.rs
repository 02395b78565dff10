//! Writing files on a host through `atomic_file` (a temp file in the same directory, fsync, then
//! rename), so a reader (or a crash) sees the old content or the new, never a mix. Mode and
//! owner are set on the temp file before the rename.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {message}")]
pub struct FileError {
    pub action: &'static str,
    pub path: String,
    pub message: String,
}

impl From<crate::atomic_file::WriteFailed> for FileError {
    fn from(e: crate::atomic_file::WriteFailed) -> FileError {
        FileError {
            action: e.action,
            path: e.path.display().to_string(),
            message: e.source.to_string(),
        }
    }
}

/// `0640` → 0o640.
pub fn parse_mode(mode: &str) -> u32 {
    u32::from_str_radix(mode, 8).unwrap_or(0o644)
}

/// Atomically replaces `path` with `bytes`, `mode` and (when given) `owner` (`user` or
/// `user:group`), the owner set on the temporary file before the rename.
pub fn write_owned(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<&str>,
) -> Result<(), FileError> {
    crate::atomic_file::write_atomic(path, bytes, mode, |tmp| match owner {
        Some(owner) => chown(tmp, owner),
        None => Ok(()),
    })
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
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_with_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/conf.yml");
        write_owned(&p, b"x: 1\n", 0o640, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x: 1\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        write_owned(&p, b"x: 2\n", 0o600, None).unwrap();
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
        let e = write_owned(&p, b"", 0o644, Some("no-such-user-xyz")).unwrap_err();
        assert!(e.to_string().contains("no user `no-such-user-xyz`"), "{e}");
        assert!(!p.exists());
    }
}
