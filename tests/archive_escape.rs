//! Hostile tarball artifacts applied end to end to a `local` sandbox host with the real binary:
//! the security review's exploits (a symlink chain through a link to `.`, a hard link written
//! through) must fail the host at its install step with the archive's entry named, and nothing
//! outside the release may change, checked on disk across the whole test directory.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::sandbox::{Fixture, sha256};

enum E<'a> {
    File(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

/// A gzipped tar with the entries exactly as given (names are not cleaned up).
fn archive(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        let (name, data): (&str, &[u8]) = match e {
            E::File(n) => {
                h.set_entry_type(tar::EntryType::Regular);
                (n, b"pwned\n")
            }
            E::Sym(n, t) | E::Hard(n, t) => {
                h.set_entry_type(if matches!(e, E::Sym(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_link_name(t).unwrap();
                (n, b"")
            }
        };
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Every path below `root` with its content (files), target (links) or `dir`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let what = if meta.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            };
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), what);
        }
    }
    out
}

fn apply_hostile(entries: &[E], expected: &str) {
    let Some(f) = Fixture::new() else { return };
    // The sandbox exists before the apply (as on a real host) with a file the exploit aims at;
    // the release is built in <sandbox>/opt/clarity/web/releases/<staging>, four levels down.
    let victim = f.sandbox().join("etc/victim");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::fs::write(&victim, "keep\n").unwrap();
    let bytes = archive(entries);
    std::fs::create_dir_all(f.repo.join("files")).unwrap();
    std::fs::write(f.repo.join("files/evil.tar.gz"), &bytes).unwrap();
    f.write(
        "artifacts/web.yml",
        &format!(
            "id: web\ntype: tarball\nrepository: local\nversions:\n  - version: \"1.0.0\"\n    sha256: \"{}\"\n    location: evil.tar.gz\n",
            sha256(&bytes)
        ),
    );
    f.commit("a tarball escaping its release");
    let top = f.work.parent().unwrap().to_path_buf();
    let before = snapshot(&top);

    let o = f.run(&[], &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    let failed = text
        .lines()
        .find(|l| l.contains(expected))
        .unwrap_or_else(|| panic!("no line says `{expected}`:\n{text}"));
    assert!(
        failed.contains("install release"),
        "the step is named: {failed}\n{text}"
    );
    assert!(text.contains("sbx-1"), "the host is named:\n{text}");
    assert!(f.current().is_none(), "nothing was switched to");

    // Nothing outside the agent's own state (cache, journal), the reconciler's records (ledger,
    // git notes) and the deployment's empty directories changed: no file anywhere holds the payload, the victim
    // is intact, and no release was left behind.
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    let after = snapshot(&top);
    for (path, what) in &after {
        assert!(!what.contains("pwned"), "{} was written", path.display());
        if before.get(path) == Some(what) {
            continue;
        }
        let s = path.to_string_lossy();
        let state = "work/sandboxes/sbx-1/var/lib/clarity";
        let allowed = s.starts_with(state)
            || s.starts_with("config/.git/")
            || s.starts_with("work/") && !s.starts_with("work/sandboxes/")
            || what == "dir"
                && (state.starts_with(&*s) || s.starts_with("work/sandboxes/sbx-1/opt"));
        assert!(allowed, "{} changed to {what:?}", path.display());
    }
    let releases = f.sandbox().join("opt/clarity/web/releases");
    if releases.exists() {
        assert_eq!(
            std::fs::read_dir(&releases).unwrap().count(),
            0,
            "no release or staging directory is left"
        );
    }
}

#[test]
fn a_symlink_chain_through_a_link_to_dot_is_refused_at_install() {
    apply_hostile(
        &[
            E::Sym("a", "."),
            E::Sym("a/a/b", "../../../.."),
            E::File("a/a/b/etc/victim"),
        ],
        "entry `a/a/b` lies beneath `a`, which is a symbolic link",
    );
}

#[test]
fn a_link_chain_resolving_outside_is_refused_at_install() {
    apply_hostile(
        &[
            // Textually `d/b` stays inside (five names down, five `..` up); followed, each `a`
            // is the release itself, so it lands in the sandbox's /etc.
            E::Sym("a", "."),
            E::Sym("d/b", "../a/a/a/a/a/../../../../../etc"),
            E::File("d/b/victim"),
        ],
        "entry `d/b` is a link pointing outside the release",
    );
}

#[test]
fn a_hard_link_overwritten_by_a_later_entry_is_refused_at_install() {
    apply_hostile(
        &[E::File("f"), E::Hard("h", "f"), E::File("h")],
        "entry `h` would replace a file an earlier entry created",
    );
}
