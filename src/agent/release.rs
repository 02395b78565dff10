//! Installing a release: the verified artifact placed into a fresh directory (copied, made
//! executable, or extracted), its config files and volume links added, then the directory
//! renamed into `releases/<id>` in one step. A release directory is never modified after that
//! rename; switching to it is an atomic symlink replacement.
//!
//! Archive extraction refuses every entry that could write outside the release: absolute
//! paths, `..`, device files, FIFOs, links resolving out of the release through any chain of
//! the archive's own links, entries beneath a link, and entries replacing an earlier one; see
//! `agent::extract`, which also does the writing without following links.

use super::extract::{Beneath, EntryKind, ReleaseTree, normal_path};
use crate::model::ArtifactType;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("archive {archive}: entry `{entry}` {reason}; nothing was installed")]
    UnsafeEntry {
        archive: String,
        entry: String,
        reason: String,
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

fn extract_tar(reader: impl io::Read, archive: &str, dir: &Path) -> Result<(), ReleaseError> {
    let unsafe_entry = |entry: &Path, reason: String| ReleaseError::UnsafeEntry {
        archive: archive.to_string(),
        entry: entry.display().to_string(),
        reason,
    };
    let bad = |e: io::Error| ReleaseError::Archive {
        archive: archive.to_string(),
        message: e.to_string(),
    };
    let mut tar = tar::Archive::new(reader);
    // Check every entry against what the earlier ones built before writing any, so a bad
    // archive leaves nothing behind.
    let mut tree = ReleaseTree::new();
    let mut entries = Vec::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let kind = entry.header().entry_type();
        use tar::EntryType as E;
        let link_target = |entry: &tar::Entry<_>| -> Result<PathBuf, ReleaseError> {
            Ok(entry
                .link_name()
                .map_err(bad)?
                .map(|l| l.into_owned())
                .unwrap_or_default())
        };
        let what = match kind {
            E::Regular | E::Continuous | E::GNUSparse => EntryKind::File,
            E::Directory => EntryKind::Dir,
            E::Symlink => EntryKind::Symlink(link_target(&entry)?),
            E::Link => EntryKind::HardLink(link_target(&entry)?),
            E::XGlobalHeader | E::XHeader | E::GNULongName | E::GNULongLink => continue,
            _ => {
                return Err(unsafe_entry(
                    &path,
                    "is a device file, FIFO or other special file".into(),
                ));
            }
        };
        let rel = tree
            .add(&path, &what)
            .map_err(|r| unsafe_entry(&path, r.to_string()))?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mut data = Vec::new();
        if what == EntryKind::File {
            io::Read::read_to_end(&mut entry, &mut data).map_err(bad)?;
        }
        entries.push((rel, what, mode, data));
    }
    tree.check_links()
        .map_err(|(p, r)| unsafe_entry(&p, r.to_string()))?;
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let out = Beneath::open(dir).map_err(io_err("open", dir))?;
    for (rel, what, mode, data) in entries {
        let target = dir.join(&rel);
        match what {
            EntryKind::Dir => out.dir(&rel).map_err(io_err("create", &target))?,
            EntryKind::File => out
                .file(&rel, mode, &mut &data[..])
                .map_err(io_err("write", &target))?,
            EntryKind::Symlink(to) => out.symlink(&rel, &to).map_err(io_err("link", &target))?,
            EntryKind::HardLink(to) => {
                let to = normal_path(&to).unwrap_or_default();
                out.hard_link(&rel, &to).map_err(io_err("link", &target))?
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
    let unsafe_entry = |entry: &str, reason: String| ReleaseError::UnsafeEntry {
        archive: archive.to_string(),
        entry: entry.to_string(),
        reason,
    };
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    let mut tree = ReleaseTree::new();
    let mut plan = Vec::new();
    for i in 0..zip.len() {
        let f = zip.by_index(i).map_err(bad)?;
        if f.is_symlink() {
            return Err(unsafe_entry(
                f.name(),
                "is a symbolic link (not allowed in zip artifacts)".into(),
            ));
        }
        let what = if f.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        let rel = tree
            .add(Path::new(f.name()), &what)
            .map_err(|r| unsafe_entry(f.name(), r.to_string()))?;
        plan.push((i, rel, what, f.unix_mode().unwrap_or(0o644) & 0o777));
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let out = Beneath::open(dir).map_err(io_err("open", dir))?;
    for (i, rel, what, mode) in plan {
        let target = dir.join(&rel);
        if what == EntryKind::Dir {
            out.dir(&rel).map_err(io_err("create", &target))?;
            continue;
        }
        let mut f = zip.by_index(i).map_err(bad)?;
        out.file(&rel, mode, &mut f)
            .map_err(io_err("write", &target))?;
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

    /// Extracts into `<tmp>/a/b/rel` with a victim file at `<tmp>/victim`; checks that a
    /// refused archive wrote nothing anywhere: the victim is intact and `rel` does not exist.
    fn refused(entries: &[(&str, tar::EntryType, Option<&str>)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("victim"), b"keep").unwrap();
        let rel = dir.path().join("a/b/rel");
        fs::create_dir_all(rel.parent().unwrap()).unwrap();
        let e = extract_tar(&tar_with(entries)[..], "evil.tar", &rel).unwrap_err();
        assert_eq!(fs::read(dir.path().join("victim")).unwrap(), b"keep");
        assert!(!rel.exists(), "nothing is extracted from a refused archive");
        let mut all: Vec<_> = Vec::new();
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p.clone());
                }
                all.push(p.strip_prefix(dir.path()).unwrap().display().to_string());
            }
        }
        all.sort();
        assert_eq!(all, ["a", "a/b", "victim"], "{e}");
        e.to_string()
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    #[test]
    fn a_symlink_chain_through_a_link_to_dot_is_refused() {
        // The review's exploit: `a` is the release, so `a/a/b -> ../..` climbs out two levels,
        // and a later regular entry is written through it.
        let e = refused(&[
            ("a", S, Some(".")),
            ("a/a/b", S, Some("../../..")),
            ("a/a/b/victim", F, None),
        ]);
        assert!(
            e.contains("entry `a/a/b` lies beneath `a`, which is a symbolic link"),
            "{e}"
        );
        let e = refused(&[("a", S, Some(".")), ("b", S, Some("a/a/../../victim"))]);
        assert!(
            e.contains("entry `b` is a link pointing outside the release"),
            "{e}"
        );
    }

    #[test]
    fn links_to_dot_dot_are_refused_and_to_dot_accepted() {
        let e = refused(&[("up", S, Some(".."))]);
        assert!(e.contains("`up` is a link pointing outside"), "{e}");
        let (dir, r) = extract(tar_with(&[("self", S, Some(".")), ("d/up", S, Some(".."))]));
        r.unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("rel/self")).unwrap(),
            Path::new(".")
        );
    }

    #[test]
    fn a_file_through_a_symlinked_directory_is_refused() {
        let e = refused(&[("d", D, None), ("l", S, Some("d")), ("l/f", F, None)]);
        assert!(
            e.contains("`l/f` lies beneath `l`, which is a symbolic link"),
            "{e}"
        );
        let e = refused(&[("l", S, Some("../../../")), ("l/victim", F, None)]);
        assert!(e.contains("`l` is a link pointing outside"), "{e}");
    }

    #[test]
    fn hard_links_to_outside_or_overwritten_through_are_refused() {
        let e = refused(&[("h", H, Some("../../../victim"))]);
        assert!(e.contains("`h` is a link pointing outside"), "{e}");
        let e = refused(&[("h", H, Some("/etc/passwd"))]);
        assert!(e.contains("`h` is a link pointing outside"), "{e}");
        // A hard link to an earlier entry, then a regular entry of the same name: writing it
        // would overwrite the linked file.
        let e = refused(&[("f", F, None), ("h", H, Some("f")), ("h", F, None)]);
        assert!(
            e.contains("`h` would replace a file an earlier entry created"),
            "{e}"
        );
        let e = refused(&[("h", H, Some("missing"))]);
        assert!(e.contains("not a file an earlier entry created"), "{e}");
        let (dir, r) = extract(tar_with(&[("f", F, None), ("h", H, Some("f"))]));
        r.unwrap();
        assert_eq!(fs::read(dir.path().join("rel/h")).unwrap(), b"abc");
    }

    #[test]
    fn an_entry_replacing_a_symlink_is_refused() {
        let e = refused(&[("l", S, Some("x")), ("l", D, None), ("l/f", F, None)]);
        assert!(
            e.contains("`l` would replace a symbolic link an earlier entry created"),
            "{e}"
        );
        let e = refused(&[("l", S, Some("x")), ("l", F, None)]);
        assert!(e.contains("`l` would replace a symbolic link"), "{e}");
    }

    #[test]
    fn zip_duplicates_and_nesting_under_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("evil.zip");
        let mut z = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
        z.start_file("f", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.start_file("f/g", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.finish().unwrap();
        let e = place_artifact(
            ArtifactType::Tarball,
            &zip_path,
            "evil.zip",
            &dir.path().join("rel"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`f/g` lies beneath `f`, which is a file"),
            "{e}"
        );
    }
}
