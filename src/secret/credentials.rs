//! systemd credentials: the units load `/etc/clarity/credentials/` with `LoadCredential=`, so
//! each file there (`age-identity`, `api-token`, `webhook-secret`) reaches the service as
//! `$CREDENTIALS_DIRECTORY/clarity_<file>`, readable by the service alone and never part of a
//! unit or of an environment that `systemctl show` prints. This module only finds such a
//! file; it never reads or logs its content.

use std::path::PathBuf;

/// The credential ID the units give the directory (systemd names each file `<ID>_<file>`).
pub const ID: &str = "clarity";

/// `$CREDENTIALS_DIRECTORY/clarity_<name>` when the service was given that credential.
pub fn path(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty())?;
    let file = PathBuf::from(dir).join(format!("{ID}_{name}"));
    file.is_file().then_some(file)
}
