//! Archive entries placed into a release without ever leaving it. Two halves: a pure model of
//! the release tree that every entry of an archive is checked against (what earlier entries
//! created, symlinks followed at any depth, hard links only to earlier files), and a writer that
//! creates what the model approved through directory handles, opening every path component with
//! `O_NOFOLLOW`, so nothing on disk (a symlink left by a bug, a race) can redirect a write. The
//! model does no I/O and is what the fuzz target drives; the writer touches only the one
//! directory it was opened on.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// What an archive entry asks to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    /// A symbolic link with its target as written in the archive (relative to the link's
    /// directory).
    Symlink(PathBuf),
    /// A hard link to an earlier entry, named relative to the archive's root.
    HardLink(PathBuf),
}

/// What a path of the release already is, according to the entries accepted so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink(PathBuf),
}

impl Node {
    fn noun(&self) -> &'static str {
        match self {
            Node::Dir => "a directory",
            Node::File => "a file",
            Node::Symlink(_) => "a symbolic link",
        }
    }
}

/// Why an entry may not be extracted. The text completes "entry `x` ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is an absolute path")]
    Absolute,
    #[error("contains `..`")]
    DotDot,
    #[error("names the release directory itself")]
    Root,
    #[error(
        "lies beneath `{0}`, which is a symbolic link (entries are never written through links)"
    )]
    BeneathSymlink(String),
    #[error("lies beneath `{0}`, which is a file")]
    BeneathFile(String),
    #[error("would replace {0} an earlier entry created")]
    Replaces(&'static str),
    #[error("is a link pointing outside the release")]
    LinkOutside,
    #[error("is a link without a target")]
    EmptyTarget,
    #[error("is a link whose target goes `..` past `{0}`, which is not a directory of the archive")]
    DotDotPastMissing(String),
    #[error("is a symbolic link loop (more than {MAX_HOPS} links followed)")]
    Loop,
    #[error("is a hard link to `{0}`, which is not a file an earlier entry created")]
    HardLinkTarget(String),
}

/// Symlinks followed while resolving one target, as the kernel's own limit (`ELOOP`).
const MAX_HOPS: usize = 40;

/// The release as built by the entries accepted so far. The release directory itself is the
/// empty path; it always exists.
#[derive(Debug, Default, Clone)]
pub struct ReleaseTree {
    nodes: BTreeMap<PathBuf, Node>,
}

/// An entry's path as a relative path of normal names, or why it is not one.
pub fn normal_path(entry: &Path) -> Result<PathBuf, Refusal> {
    let mut out = PathBuf::new();
    for c in entry.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::DotDot),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::Absolute),
        }
    }
    Ok(out)
}

/// Checks one entry against the tree the earlier entries built and returns the relative path
/// it creates. Does not change the tree; [`ReleaseTree::add`] does both. Every path an accepted
/// entry creates is normal names only, never lies beneath a symlink or a file, never replaces
/// anything but a directory with a directory, and every symlink target resolves (following the
/// tree's symlinks) inside the release.
pub fn resolve_entry(
    tree: &ReleaseTree,
    entry: &Path,
    kind: &EntryKind,
) -> Result<PathBuf, Refusal> {
    let rel = normal_path(entry)?;
    if rel.as_os_str().is_empty() {
        return match kind {
            EntryKind::Dir => Ok(rel),
            _ => Err(Refusal::Root),
        };
    }
    tree.check_parents(&rel)?;
    match (tree.nodes.get(&rel), kind) {
        (None, _) | (Some(Node::Dir), EntryKind::Dir) => {}
        (Some(existing), _) => return Err(Refusal::Replaces(existing.noun())),
    }
    match kind {
        EntryKind::Dir | EntryKind::File => {}
        EntryKind::Symlink(target) => {
            let dir = rel.parent().unwrap_or(Path::new(""));
            tree.resolve_link(dir, target)?;
        }
        EntryKind::HardLink(target) => {
            let t = normal_path(target).map_err(|_| Refusal::LinkOutside)?;
            let shown = || t.display().to_string();
            // linkat follows symlinks in the target's directories: none may be one.
            tree.check_parents(&t)
                .map_err(|_| Refusal::HardLinkTarget(shown()))?;
            if tree.nodes.get(&t) != Some(&Node::File) {
                return Err(Refusal::HardLinkTarget(shown()));
            }
        }
    }
    Ok(rel)
}

impl ReleaseTree {
    pub fn new() -> ReleaseTree {
        ReleaseTree::default()
    }

    /// Accepts an entry (see [`resolve_entry`]) and records what it creates, parents included.
    pub fn add(&mut self, entry: &Path, kind: &EntryKind) -> Result<PathBuf, Refusal> {
        let rel = resolve_entry(self, entry, kind)?;
        let mut parent = PathBuf::new();
        if let Some(dirs) = rel.parent() {
            for c in dirs.components() {
                parent.push(c);
                self.nodes.entry(parent.clone()).or_insert(Node::Dir);
            }
        }
        if !rel.as_os_str().is_empty() {
            let node = match kind {
                EntryKind::Dir => Node::Dir,
                EntryKind::File | EntryKind::HardLink(_) => Node::File,
                EntryKind::Symlink(t) => Node::Symlink(t.clone()),
            };
            self.nodes.insert(rel.clone(), node);
        }
        Ok(rel)
    }

    /// Resolves every symlink again against the finished tree: a later entry may have created
    /// a link that an earlier link's target passes through. Returns the first bad link.
    pub fn check_links(&self) -> Result<(), (PathBuf, Refusal)> {
        for (path, node) in &self.nodes {
            if let Node::Symlink(target) = node {
                let dir = path.parent().unwrap_or(Path::new(""));
                self.resolve_link(dir, target)
                    .map_err(|r| (path.clone(), r))?;
            }
        }
        Ok(())
    }

    /// The directories above `rel` must be directories (or not yet exist).
    fn check_parents(&self, rel: &Path) -> Result<(), Refusal> {
        let mut at = PathBuf::new();
        let Some(dirs) = rel.parent() else {
            return Ok(());
        };
        for c in dirs.components() {
            at.push(c);
            match self.nodes.get(&at) {
                None | Some(Node::Dir) => {}
                Some(Node::Symlink(_)) => {
                    return Err(Refusal::BeneathSymlink(at.display().to_string()));
                }
                Some(Node::File) => return Err(Refusal::BeneathFile(at.display().to_string())),
            }
        }
        Ok(())
    }

    /// Follows `target` from directory `dir` through the tree's symlinks; fails when it would
    /// leave the release. A name the tree does not have may appear later (at run time, or as a
    /// volume link the agent adds), so `..` after such a name is refused: it cannot be judged.
    fn resolve_link(&self, dir: &Path, target: &Path) -> Result<(), Refusal> {
        if target.as_os_str().is_empty() {
            return Err(Refusal::EmptyTarget);
        }
        let mut at: Vec<OsString> = dir.iter().map(OsStr::to_os_string).collect();
        let mut pending: VecDeque<OsString> = VecDeque::new();
        push_front(&mut pending, target)?;
        let mut hops = 0;
        // Set once `at` is not a directory of the tree: nothing below it can be judged.
        let mut unknown: Option<PathBuf> = None;
        while let Some(c) = pending.pop_front() {
            if c == "." {
                continue;
            }
            if c == ".." {
                if let Some(u) = &unknown {
                    return Err(Refusal::DotDotPastMissing(u.display().to_string()));
                }
                if at.pop().is_none() {
                    return Err(Refusal::LinkOutside);
                }
                continue;
            }
            at.push(c);
            if unknown.is_some() {
                continue;
            }
            let here: PathBuf = at.iter().collect();
            match self.nodes.get(&here) {
                Some(Node::Dir) => {}
                Some(Node::File) | None => unknown = Some(here),
                Some(Node::Symlink(t)) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(Refusal::Loop);
                    }
                    at.pop();
                    push_front(&mut pending, t)?;
                }
            }
        }
        Ok(())
    }
}

/// Puts a link target's components in front of what is still to resolve.
fn push_front(pending: &mut VecDeque<OsString>, target: &Path) -> Result<(), Refusal> {
    if target.as_os_str().is_empty() {
        return Err(Refusal::EmptyTarget);
    }
    let mut parts = Vec::new();
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::LinkOutside),
        }
    }
    for p in parts.into_iter().rev() {
        pending.push_front(p);
    }
    Ok(())
}

/// A directory handle that creates entries strictly below it: every component is opened
/// relative to its parent's handle with `O_NOFOLLOW`, and files are created with `O_EXCL`, so
/// a symlink or an existing file on disk fails the write instead of redirecting it.
pub struct Beneath {
    root: OwnedFd,
}

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

impl Beneath {
    /// Opens the existing directory `dir` (not through a symlink at its last component).
    pub fn open(dir: &Path) -> io::Result<Beneath> {
        let root = nix::fcntl::open(dir, dir_flags(), Mode::empty())?;
        Ok(Beneath { root })
    }

    /// The handle of `rel`'s parent directory, creating missing directories, and its last name.
    fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut fd = self.root.try_clone()?;
        for c in rel.parent().unwrap_or(Path::new("")).components() {
            let Component::Normal(c) = c else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a normal path component",
                ));
            };
            fd = open_or_create_dir(&fd, c)?;
        }
        Ok((fd, name))
    }

    pub fn dir(&self, rel: &Path) -> io::Result<()> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let (parent, name) = self.parent(rel)?;
        open_or_create_dir(&parent, name).map(drop)
    }

    /// Creates the new file `rel` with `mode` and the bytes of `data`.
    pub fn file(&self, rel: &Path, mode: u32, data: &mut dyn io::Read) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (parent, name) = self.parent(rel)?;
        let fd = openat(
            &parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut file = fs::File::from(fd);
        io::copy(data, &mut file)?;
        // On the open handle (fchmod): the umask does not narrow it and no path is re-resolved.
        file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
    }

    pub fn symlink(&self, rel: &Path, target: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        Ok(nix::unistd::symlinkat(target, &parent, name)?)
    }

    /// A hard link at `rel` to the existing file `target` (both relative to the root).
    pub fn hard_link(&self, rel: &Path, target: &Path) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(target)?;
        let (parent, name) = self.parent(rel)?;
        // Without AT_SYMLINK_FOLLOW: a symlink at `target` would be linked, not followed.
        Ok(nix::unistd::linkat(
            &from_dir,
            from_name,
            &parent,
            name,
            nix::fcntl::AtFlags::empty(),
        )?)
    }
}

fn open_or_create_dir(parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    match openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ENOENT) => {
            match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(openat(parent, name, dir_flags(), Mode::empty())?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(t: &str) -> EntryKind {
        EntryKind::Symlink(PathBuf::from(t))
    }

    fn build(entries: &[(&str, EntryKind)]) -> Result<ReleaseTree, (String, Refusal)> {
        let mut tree = ReleaseTree::new();
        for (path, kind) in entries {
            tree.add(Path::new(path), kind)
                .map_err(|r| (path.to_string(), r))?;
        }
        tree.check_links()
            .map_err(|(p, r)| (p.display().to_string(), r))?;
        Ok(tree)
    }

    #[test]
    fn ordinary_links_inside_the_release_are_accepted() {
        build(&[
            ("./", EntryKind::Dir),
            ("lib/libx.so.1", EntryKind::File),
            ("lib/libx.so", sym("libx.so.1")),
            ("bin/x", sym("../lib/libx.so")),
            ("self", sym(".")),
            ("lib/up", sym("..")),
            ("logs", sym("var/log/app")),
            ("copy", EntryKind::HardLink("lib/libx.so.1".into())),
        ])
        .unwrap();
    }

    #[test]
    fn links_to_dot_dot_or_absolute_paths_are_refused() {
        assert_eq!(
            build(&[("up", sym(".."))]).unwrap_err().1,
            Refusal::LinkOutside
        );
        assert_eq!(
            build(&[("a/b", sym("../.."))]).unwrap_err().1,
            Refusal::LinkOutside
        );
        assert_eq!(
            build(&[("etc", sym("/etc"))]).unwrap_err().1,
            Refusal::LinkOutside
        );
        assert_eq!(
            build(&[("e", sym(""))]).unwrap_err().1,
            Refusal::EmptyTarget
        );
    }

    #[test]
    fn a_chain_through_a_link_to_dot_is_followed_and_refused() {
        // `a` is the release itself, so `b`'s target climbs out although it looks shallow.
        let e = build(&[("a", sym(".")), ("b", sym("a/a/a/.."))]).unwrap_err();
        assert_eq!(e, ("b".into(), Refusal::LinkOutside));
        let e = build(&[("d/a", sym("..")), ("b", sym("d/a/d/a/.."))]).unwrap_err();
        assert_eq!(e, ("b".into(), Refusal::LinkOutside));
    }

    #[test]
    fn the_order_of_entries_does_not_matter() {
        // A link through a name that does not exist yet is judged when the name appears.
        let e = build(&[("b", sym("c/x")), ("c", sym(".."))]).unwrap_err();
        assert_eq!(e, ("c".into(), Refusal::LinkOutside));
        let e = build(&[("d/b", sym("../x/..")), ("x", sym("d/.."))]).unwrap_err();
        assert_eq!(e, ("d/b".into(), Refusal::DotDotPastMissing("x".into())));
        let tree = build(&[("c", sym("d/q")), ("d", sym(".")), ("q/f", EntryKind::File)]).unwrap();
        tree.check_links().unwrap();
    }

    #[test]
    fn dot_dot_past_a_name_the_archive_does_not_have_is_refused() {
        let e = build(&[("l", sym("vol/../../x"))]).unwrap_err();
        assert_eq!(e.1, Refusal::DotDotPastMissing("vol".into()));
    }

    #[test]
    fn loops_are_refused() {
        let e = build(&[("a", sym("b")), ("b", sym("a"))]).unwrap_err();
        assert_eq!(e.1, Refusal::Loop);
    }

    #[test]
    fn entries_beneath_a_symlink_are_refused_even_when_it_points_inside() {
        let e = build(&[
            ("d", EntryKind::Dir),
            ("l", sym("d")),
            ("l/f", EntryKind::File),
        ]);
        assert_eq!(
            e.unwrap_err(),
            ("l/f".into(), Refusal::BeneathSymlink("l".into()))
        );
        let e = build(&[("a", sym(".")), ("a/a/b", sym("x"))]);
        assert_eq!(e.unwrap_err().1, Refusal::BeneathSymlink("a".into()));
        let e = build(&[("f", EntryKind::File), ("f/g", EntryKind::File)]);
        assert_eq!(e.unwrap_err().1, Refusal::BeneathFile("f".into()));
    }

    #[test]
    fn nothing_but_a_directory_is_replaced_and_only_by_a_directory() {
        let e = build(&[("l", sym("d")), ("l", EntryKind::Dir)]).unwrap_err();
        assert_eq!(e.1, Refusal::Replaces("a symbolic link"));
        let e = build(&[
            ("f", EntryKind::File),
            ("h", EntryKind::HardLink("f".into())),
            ("h", EntryKind::File),
        ]);
        assert_eq!(e.unwrap_err(), ("h".into(), Refusal::Replaces("a file")));
        let e = build(&[("d", EntryKind::Dir), ("d", EntryKind::File)]).unwrap_err();
        assert_eq!(e.1, Refusal::Replaces("a directory"));
        build(&[
            ("d/f", EntryKind::File),
            ("d", EntryKind::Dir),
            ("d/", EntryKind::Dir),
        ])
        .unwrap();
    }

    #[test]
    fn hard_links_only_reach_earlier_files() {
        let e = build(&[("h", EntryKind::HardLink("../etc/passwd".into()))]).unwrap_err();
        assert_eq!(e.1, Refusal::LinkOutside);
        let e = build(&[("h", EntryKind::HardLink("/etc/passwd".into()))]).unwrap_err();
        assert_eq!(e.1, Refusal::LinkOutside);
        let e = build(&[
            ("h", EntryKind::HardLink("later".into())),
            ("later", EntryKind::File),
        ]);
        assert_eq!(e.unwrap_err().1, Refusal::HardLinkTarget("later".into()));
        let e = build(&[
            ("d", EntryKind::Dir),
            ("h", EntryKind::HardLink("d".into())),
        ]);
        assert_eq!(e.unwrap_err().1, Refusal::HardLinkTarget("d".into()));
        let e = build(&[
            ("d/f", EntryKind::File),
            ("l", sym("d")),
            ("h", EntryKind::HardLink("l/f".into())),
        ]);
        assert_eq!(e.unwrap_err().1, Refusal::HardLinkTarget("l/f".into()));
        let e = build(&[("l", sym("x")), ("h", EntryKind::HardLink("l".into()))]);
        assert_eq!(e.unwrap_err().1, Refusal::HardLinkTarget("l".into()));
    }

    #[test]
    fn entry_paths_must_be_normal_names() {
        assert_eq!(
            resolve_entry(&ReleaseTree::new(), Path::new("../x"), &EntryKind::File),
            Err(Refusal::DotDot)
        );
        assert_eq!(
            resolve_entry(&ReleaseTree::new(), Path::new("/x"), &EntryKind::File),
            Err(Refusal::Absolute)
        );
        assert_eq!(
            resolve_entry(&ReleaseTree::new(), Path::new("./"), &EntryKind::File),
            Err(Refusal::Root)
        );
        assert_eq!(
            resolve_entry(&ReleaseTree::new(), Path::new("./a//b"), &EntryKind::File),
            Ok(PathBuf::from("a/b"))
        );
    }

    #[test]
    fn the_writer_never_follows_a_symlink_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().join("rel");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&rel).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, rel.join("esc")).unwrap();
        fs::write(outside.join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), rel.join("v")).unwrap();
        let w = Beneath::open(&rel).unwrap();
        assert!(w.file(Path::new("esc/new"), 0o644, &mut &b"x"[..]).is_err());
        assert!(w.dir(Path::new("esc/sub")).is_err());
        assert!(w.file(Path::new("v"), 0o644, &mut &b"x"[..]).is_err());
        assert!(w.symlink(Path::new("esc/l"), Path::new("x")).is_err());
        assert!(
            w.hard_link(Path::new("h"), Path::new("esc/victim"))
                .is_err()
        );
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        // The release directory itself may not be reached through a link either.
        std::os::unix::fs::symlink(&outside, dir.path().join("rel-link")).unwrap();
        assert!(Beneath::open(&dir.path().join("rel-link")).is_err());

        w.file(Path::new("a/b/c"), 0o750, &mut &b"ok"[..]).unwrap();
        w.hard_link(Path::new("a/h"), Path::new("a/b/c")).unwrap();
        w.symlink(Path::new("a/s"), Path::new("b/c")).unwrap();
        assert_eq!(fs::read(rel.join("a/s")).unwrap(), b"ok");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(rel.join("a/h")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o750);
    }

    /// Random archives from a small alphabet (names, `.`, `..`, `/`), extracted for real; the
    /// kernel then resolves every path of the result, and every path one name below it, and
    /// none may resolve outside the release. Deterministic (a fixed xorshift seed).
    #[test]
    fn whatever_is_accepted_resolves_inside_the_release_on_disk() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        const PARTS: [&str; 5] = ["a", "b", "c", ".", ".."];
        let dir = tempfile::tempdir().unwrap();
        let (mut accepted, mut written) = (0, 0);
        for round in 0..400 {
            let path = |next: &mut dyn FnMut(u64) -> u64| {
                let n = 1 + next(3);
                let mut p: Vec<&str> = (0..n).map(|_| PARTS[next(5) as usize]).collect();
                if next(8) == 0 {
                    p.insert(0, "");
                }
                p.join("/")
            };
            let mut tree = ReleaseTree::new();
            let mut entries = Vec::new();
            for _ in 0..(1 + next(6)) {
                let entry = path(&mut next);
                let kind = match next(4) {
                    0 => EntryKind::Dir,
                    1 => EntryKind::File,
                    2 => EntryKind::Symlink(PathBuf::from(path(&mut next))),
                    _ => EntryKind::HardLink(PathBuf::from(path(&mut next))),
                };
                if let Ok(rel) = tree.add(Path::new(&entry), &kind) {
                    entries.push((rel, kind));
                    accepted += 1;
                }
            }
            if tree.check_links().is_err() {
                continue;
            }
            let base = dir.path().join(round.to_string());
            let rel_dir = base.join("x/y/rel");
            fs::create_dir_all(&rel_dir).unwrap();
            let w = Beneath::open(&rel_dir).unwrap();
            for (rel, kind) in &entries {
                let r = match kind {
                    EntryKind::Dir => w.dir(rel),
                    EntryKind::File => w.file(rel, 0o644, &mut &b"x"[..]),
                    EntryKind::Symlink(t) => w.symlink(rel, t),
                    EntryKind::HardLink(t) => w.hard_link(rel, &normal_path(t).unwrap()),
                };
                r.unwrap_or_else(|e| panic!("{entries:?}: writing {rel:?} failed: {e}"));
                written += 1;
            }
            let root = fs::canonicalize(&rel_dir).unwrap();
            let mut stack = vec![rel_dir.clone()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    let meta = fs::symlink_metadata(&p).unwrap();
                    if meta.is_dir() {
                        stack.push(p.clone());
                    }
                    for probe in
                        std::iter::once(p.clone()).chain(PARTS[..3].iter().map(|n| p.join(n)))
                    {
                        if let Ok(real) = fs::canonicalize(&probe) {
                            assert!(
                                real.starts_with(&root),
                                "{entries:?}: {} resolves to {}",
                                probe.display(),
                                real.display()
                            );
                        }
                    }
                }
            }
            assert_eq!(
                fs::read_dir(base.join("x/y")).unwrap().count(),
                1,
                "{entries:?}"
            );
            assert_eq!(
                fs::read_dir(base.join("x")).unwrap().count(),
                1,
                "{entries:?}"
            );
        }
        assert!(
            accepted > 400 && written > 200,
            "the generator exercises little: {accepted} {written}"
        );
    }
}
