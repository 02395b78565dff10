//! `file` repositories: a directory on the host (a mounted share, a directory an operator
//! filled by hand). The artifact is copied into the cache like any download, hashed on the way;
//! the repository directory is only ever read, and only below its base.

use super::{Job, cache::Incoming};
use std::io::ErrorKind;
use std::path::Path;

pub(super) fn download(
    dir: &Path,
    job: &Job,
    incoming: &mut Incoming,
) -> Result<(), super::FetchError> {
    if !dir.is_absolute() {
        return Err(
            job.source_problem(format!("the directory `{}` is not absolute", dir.display()))
        );
    }
    let path = dir.join(job.location);
    let mut file = std::fs::File::open(&path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => job.not_found(),
        _ => job.transfer(format!("cannot open: {e}"), false),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| job.transfer(format!("cannot read: {e}"), false))?;
    if !meta.is_file() {
        return Err(job.transfer("not a regular file", false));
    }
    job.check_announced_size(Some(meta.len()))?;
    incoming.announce(Some(meta.len()));
    // A local copy is cheap: resuming would only add a way to go wrong.
    job.restart(incoming)?;
    incoming
        .copy_from(&mut file)
        .map_err(|e| job.copy_error(e))?;
    Ok(())
}
