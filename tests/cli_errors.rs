//! Error output as an operator reads it, whole: the `error:` line, every `caused by:` line and
//! the `hint:`, with the exit code, as insta snapshots (tests/snapshots/cli_errors__*.snap). A
//! change to any of those lines shows up in review. Each case runs the real binary through
//! `support::runner` on a real git repository or a real missing file.

mod support;

use support::runner::Runner;

/// A copy of the example repository committed into a fresh git repository.
fn example() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config");
    support::copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"),
        &repo,
    );
    support::git(&repo, &["init", "-q"]);
    support::git(&repo, &["add", "-A"]);
    support::git(&repo, &["commit", "-qm", "example"]);
    (dir, repo)
}

#[test]
fn a_config_repository_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let run = Runner::new(dir.path()).run(&["validate", "--repo", "no-such-repo"]);
    insta::assert_snapshot!(run.snapshot());
}

#[test]
fn a_revision_the_repository_does_not_have() {
    let (dir, _repo) = example();
    let run = Runner::new(dir.path()).run(&[
        "--repo",
        "config",
        "--rev",
        "no-such-branch",
        "--profile",
        "mock",
        "--dry-run",
    ]);
    insta::assert_snapshot!(run.snapshot());
}

#[test]
fn history_without_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let run = Runner::new(dir.path()).run(&["history", "--work-dir", "work"]);
    insta::assert_snapshot!(run.snapshot());
}

#[test]
fn an_age_identity_that_cannot_be_read() {
    let (dir, _repo) = example();
    let run = Runner::new(dir.path()).run(&[
        "--repo",
        "config",
        "--profile",
        "mock",
        "--dry-run",
        "--assume-empty-hosts",
        "--age-identity",
        "missing.agekey",
    ]);
    insta::assert_snapshot!(run.snapshot());
}

#[test]
fn a_repository_with_errors_lists_them_all_and_plans_nothing() {
    let (dir, repo) = example();
    let server = std::fs::read_dir(repo.join("clients"))
        .unwrap()
        .map(|e| e.unwrap().path().join("client.yml"))
        .find(|p| p.is_file())
        .unwrap();
    let text = std::fs::read_to_string(&server).unwrap();
    std::fs::write(&server, format!("{text}surprise: field\n")).unwrap();
    let artifact = repo.join("artifacts/sip-probe.yml");
    let text = std::fs::read_to_string(&artifact).unwrap();
    std::fs::write(
        &artifact,
        text.replacen("type:", "type: nonsense\nold_type:", 1),
    )
    .unwrap();
    support::git(&repo, &["commit", "-qam", "two mistakes"]);
    let run = Runner::new(dir.path()).run(&[
        "--repo",
        "config",
        "--profile",
        "mock",
        "--dry-run",
        "--assume-empty-hosts",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.snapshot());
    insta::assert_snapshot!(run.snapshot());
}

#[test]
fn watch_combined_with_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = Runner::new(dir.path()).run(&["--watch", "--dry-run", "--repo", "."]);
    insta::assert_snapshot!(run.snapshot());
}

#[test]
fn a_mistyped_option() {
    let dir = tempfile::tempdir().unwrap();
    let run = Runner::new(dir.path()).run(&["drift", "--profle", "mock"]);
    insta::assert_snapshot!(run.snapshot());
}
