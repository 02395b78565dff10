//! Installing a release: the verified artifact placed into a fresh directory (copied, made
//! executable, or extracted), its config files and volume links added, then the directory
//! renamed into `releases/<id>` in one step. A release directory is never modified after that
//! rename; switching to it is an atomic symlink replacement.
//!
//! Archive extraction refuses every entry that could write outside the release: absolute
//! paths, `..`, device files, FIFOs, and links pointing out of the release.

use crate::model::ArtifactType;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("archive {archive}: entry `{entry}` {reason}; nothing was installed")]
    UnsafeEntry {
        archive: String,
        entry: String,
        reason: &'static str,
    },
    #[error("archive {archive} cannot be read: {message}")]
    Archive { archive: String, message: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("artifact type `{0}` cannot be installed by this agent")]
    Unsupported(String),
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReleaseError {
    let path = path.to_path_buf();
    move |source| ReleaseError::Io {
        action,
        path,
        source,
    }
}

/// Places the artifact at `artifact` (a verified cache file) into `dir` according to its type.
/// `file_name` is the last component of the artifact's location.
pub fn place_artifact(
    kind: ArtifactType,
    artifact: &Path,
    file_name: &str,
    dir: &Path,
) -> Result<(), ReleaseError> {
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    match kind {
        ArtifactType::Jar | ArtifactType::War => {
            let target = dir.join(file_name);
            fs::copy(artifact, &target).map_err(io_err("copy to", &target))?;
            set_mode(&target, 0o644)
        }
        ArtifactType::Binary | ArtifactType::Script => {
            let target = dir.join(file_name);
            fs::copy(artifact, &target).map_err(io_err("copy to", &target))?;
            set_mode(&target, 0o755)
        }
        ArtifactType::Tarball => {
            let name = file_name.to_ascii_lowercase();
            let open = || fs::File::open(artifact).map_err(io_err("open", artifact));
            if name.ends_with(".zip") {
                extract_zip(open()?, file_name, dir)
            } else if name.ends_with(".tar.xz") || name.ends_with(".txz") {
                extract_tar(liblzma::read::XzDecoder::new(open()?), file_name, dir)
            } else if name.ends_with(".tar") {
                extract_tar(open()?, file_name, dir)
            } else {
                extract_tar(flate2::read::GzDecoder::new(open()?), file_name, dir)
            }
        }
        ArtifactType::Docker | ArtifactType::Lxc => Err(ReleaseError::Unsupported(
            format!("{kind:?}").to_lowercase(),
        )),
    }
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), ReleaseError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// A relative path inside the release, or why it is not one.
fn inside(entry: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in entry.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Whether a link at `link` (relative to the release) pointing to `target` stays inside.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

fn extract_tar(reader: impl io::Read, archive: &str, dir: &Path) -> Result<(), ReleaseError> {
    let unsafe_entry = |entry: &Path, reason| ReleaseError::UnsafeEntry {
        archive: archive.to_string(),
        entry: entry.display().to_string(),
        reason,
    };
    let bad = |e: io::Error| ReleaseError::Archive {
        archive: archive.to_string(),
        message: e.to_string(),
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(false);
    // Validate every entry before writing any, so a bad archive leaves nothing behind.
    let mut entries = Vec::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let rel = inside(&path).map_err(|reason| unsafe_entry(&path, reason))?;
        let kind = entry.header().entry_type();
        use tar::EntryType as E;
        let link = match kind {
            E::Regular | E::Continuous | E::GNUSparse => None,
            E::Directory => None,
            E::Symlink | E::Link => {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| unsafe_entry(&path, "is a link without a target"))?
                    .into_owned();
                let ok = if kind == E::Link {
                    inside(&target).is_ok()
                } else {
                    link_stays_inside(&rel, &target)
                };
                if !ok {
                    return Err(unsafe_entry(
                        &path,
                        "is a link pointing outside the release",
                    ));
                }
                Some(target)
            }
            E::XGlobalHeader | E::XHeader | E::GNULongName | E::GNULongLink => continue,
            _ => {
                return Err(unsafe_entry(
                    &path,
                    "is a device file, FIFO or other special file",
                ));
            }
        };
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mut data = Vec::new();
        if matches!(kind, E::Regular | E::Continuous | E::GNUSparse) {
            io::Read::read_to_end(&mut entry, &mut data).map_err(bad)?;
        }
        entries.push((rel, kind, link, mode, data));
    }
    for (rel, kind, link, mode, data) in entries {
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dir.join(&rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_err("create", &target))?
            }
            tar::EntryType::Symlink => {
                std::os::unix::fs::symlink(link.unwrap_or_default(), &target)
                    .map_err(io_err("link", &target))?
            }
            tar::EntryType::Link => {
                let source = dir.join(inside(&link.unwrap_or_default()).unwrap_or_default());
                fs::hard_link(&source, &target).map_err(io_err("link", &target))?
            }
            _ => {
                fs::write(&target, &data).map_err(io_err("write", &target))?;
                set_mode(&target, mode)?;
            }
        }
    }
    Ok(())
}

fn extract_zip(file: fs::File, archive: &str, dir: &Path) -> Result<(), ReleaseError> {
    let bad = |e: zip::result::ZipError| ReleaseError::Archive {
        archive: archive.to_string(),
        message: e.to_string(),
    };
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    let mut plan = Vec::new();
    for i in 0..zip.len() {
        let f = zip.by_index(i).map_err(bad)?;
        let name = PathBuf::from(f.name());
        let rel = inside(&name).map_err(|reason| ReleaseError::UnsafeEntry {
            archive: archive.to_string(),
            entry: f.name().to_string(),
            reason,
        })?;
        if f.is_symlink() {
            return Err(ReleaseError::UnsafeEntry {
                archive: archive.to_string(),
                entry: f.name().to_string(),
                reason: "is a symbolic link (not allowed in zip artifacts)",
            });
        }
        plan.push((i, rel, f.is_dir(), f.unix_mode().unwrap_or(0o644) & 0o777));
    }
    for (i, rel, is_dir, mode) in plan {
        let target = dir.join(&rel);
        if is_dir {
            fs::create_dir_all(&target).map_err(io_err("create", &target))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        let mut f = zip.by_index(i).map_err(bad)?;
        let mut out = fs::File::create(&target).map_err(io_err("create", &target))?;
        io::copy(&mut f, &mut out).map_err(io_err("write", &target))?;
        set_mode(&target, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(if *kind == tar::EntryType::Regular {
                3
            } else {
                0
            });
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            // Write the raw name so `..` and absolute names reach the extractor as they would
            // in a hostile archive.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"abc"
            } else {
                b""
            };
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn extract(bytes: Vec<u8>) -> (tempfile::TempDir, Result<(), ReleaseError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = extract_tar(&bytes[..], "a.tar", &dir.path().join("rel"));
        (dir, r)
    }

    #[test]
    fn plain_archive_extracts() {
        let (dir, r) = extract(tar_with(&[
            ("bin/run", tar::EntryType::Regular, None),
            ("bin/link", tar::EntryType::Symlink, Some("run")),
        ]));
        r.unwrap();
        assert_eq!(fs::read(dir.path().join("rel/bin/run")).unwrap(), b"abc");
    }

    #[test]
    fn dot_dot_entries_are_refused_and_nothing_is_written() {
        let (dir, r) = extract(tar_with(&[
            ("ok.txt", tar::EntryType::Regular, None),
            ("../evil", tar::EntryType::Regular, None),
        ]));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("`../evil` contains `..`"), "{e}");
        assert!(!dir.path().join("evil").exists());
        assert!(!dir.path().join("rel/ok.txt").exists());
    }

    #[test]
    fn absolute_entries_are_refused() {
        let (_d, r) = extract(tar_with(&[("/etc/evil", tar::EntryType::Regular, None)]));
        assert!(r.unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn links_pointing_out_are_refused() {
        let (_d, r) = extract(tar_with(&[(
            "a/link",
            tar::EntryType::Symlink,
            Some("../../etc/passwd"),
        )]));
        assert!(r.unwrap_err().to_string().contains("outside"));
        let (_d, r) = extract(tar_with(&[(
            "link",
            tar::EntryType::Symlink,
            Some("/etc/passwd"),
        )]));
        assert!(r.unwrap_err().to_string().contains("outside"));
    }

    #[test]
    fn device_files_are_refused() {
        let (_d, r) = extract(tar_with(&[("dev", tar::EntryType::Char, None)]));
        assert!(r.unwrap_err().to_string().contains("device"));
    }

    #[test]
    fn xz_and_zip_archives_extract_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("bin/run", tar::EntryType::Regular, None)]);
        let mut xz = Vec::new();
        std::io::Write::write_all(&mut liblzma::write::XzEncoder::new(&mut xz, 6), &tar).unwrap();
        let xz_path = dir.path().join("a.tar.xz");
        std::fs::write(&xz_path, &xz).unwrap();
        place_artifact(
            ArtifactType::Tarball,
            &xz_path,
            "app.tar.xz",
            &dir.path().join("x"),
        )
        .unwrap();
        assert_eq!(fs::read(dir.path().join("x/bin/run")).unwrap(), b"abc");

        let zip_path = dir.path().join("a.zip");
        let mut z = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        z.start_file("bin/tool", opts).unwrap();
        std::io::Write::write_all(&mut z, b"#!/bin/sh\n").unwrap();
        z.finish().unwrap();
        place_artifact(
            ArtifactType::Tarball,
            &zip_path,
            "app.zip",
            &dir.path().join("z"),
        )
        .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join("z/bin/tool"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn zip_entries_escaping_the_release_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("evil.zip");
        let mut z = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
        z.start_file("../evil", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut z, b"x").unwrap();
        z.finish().unwrap();
        let e = place_artifact(
            ArtifactType::Tarball,
            &zip_path,
            "evil.zip",
            &dir.path().join("rel"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("contains `..`"), "{e}");
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn link_depth_rules() {
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("l"), Path::new("x/../y")));
    }
}
