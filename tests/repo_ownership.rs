//! A local config repository that belongs to another user (the usual case for a service
//! account reading a repository people push to): git and libgit2 both refuse it. The
//! reconciler must say whose it is and name both ways out, and the documented way out
//! (`safe.directory` in the reconciler user's own git configuration) must really work, for
//! reading commits (libgit2) and for the watch loop's clone of the source (git).

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::sandbox::Fixture;

/// `nobody`, who exists on every Debian system and owns nothing of ours.
const OTHER_UID: u32 = 65534;

fn chown_recursive(path: &std::path::Path) {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{OTHER_UID}:{OTHER_UID}"))
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_repository_of_another_user_is_refused_with_both_fixes_and_safe_directory_works() {
    if !support::require_root() || support::require_program("git").is_none() {
        return;
    }
    let Some(f) = Fixture::new() else { return };
    chown_recursive(&f.repo);
    assert_eq!(std::fs::metadata(&f.repo).unwrap().uid(), OTHER_UID);
    let repo = f.repo.canonicalize().unwrap();
    let home = tempfile::tempdir().unwrap();

    // validate (libgit2) and --watch (before the mirror's clone) both refuse, with the owner,
    // the repository and both fixes; nothing is read as plain files.
    let validate = Command::new(support::clarity_bin())
        .args(["validate", "--repo"])
        .arg(&repo)
        .env("HOME", home.path())
        .output()
        .unwrap();
    let watch = Command::new(support::clarity_bin())
        .args(["--watch", "--listen", "off", "--repo"])
        .arg(&repo)
        .arg("--work-dir")
        .arg(&f.work)
        .env("HOME", home.path())
        .output()
        .unwrap();
    for (what, out) in [("validate", &validate), ("--watch", &watch)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "error: the git repository {} belongs to nobody, not to root",
                repo.display()
            )),
            "{what}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("chown -R root: {}", repo.display())),
            "{what}: {stderr}"
        );
        for trusted in [repo.clone(), repo.join(".git")] {
            assert!(
                stderr.contains(&format!(
                    "git config --file ~root/.gitconfig --add safe.directory {}`",
                    trusted.display()
                )),
                "{what}: {stderr}"
            );
        }
        assert!(
            stderr.contains("/var/lib/clarity/.gitconfig"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("plain files"), "{what}: {stderr}");
    }
    assert!(!f.work.join("mirror").exists());

    // The fix the hint gives, in the user's own git configuration (here a fresh HOME).
    let gitconfig = home.path().join(".gitconfig");
    for trusted in [repo.clone(), repo.join(".git")] {
        let out = Command::new("git")
            .arg("config")
            .arg("--file")
            .arg(&gitconfig)
            .args(["--add", "safe.directory"])
            .arg(&trusted)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let validate = Command::new(support::clarity_bin())
        .args(["validate", "--repo"])
        .arg(&repo)
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    // The watch loop clones the source with git and applies its head.
    let log = f.work.parent().unwrap().join("watch.log");
    let out = std::fs::File::create(&log).unwrap();
    let daemon = support::Server::start(
        "clarity-reconcile --watch",
        Command::new(support::clarity_bin())
            .args([
                "--watch",
                "--listen",
                "off",
                "--drift-interval",
                "0",
                "--repo",
            ])
            .arg(&repo)
            .arg("--work-dir")
            .arg(&f.work)
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    );
    let start = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("recorded run") || start.elapsed() > Duration::from_secs(60) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(daemon);
    assert!(text.contains("recorded run"), "{text}");
    assert!(!text.contains("dubious ownership"), "{text}");
    assert_eq!(
        f.current().as_deref().map(|r| r.starts_with("1.0.0")),
        Some(true),
        "{text}"
    );
}
