//! Usage errors and help, as scripts see them: a mistyped option or a missing value exits 64
//! (`EX_USAGE`), never 1 or 2, which mean "error" and "changes pending / drift found" to scripts
//! and to the drift unit's `SuccessExitStatus=2`; `--help` and `--version` succeed.

mod support;

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(support::clarity_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_usage_error_exits_64_and_says_what_was_wrong() {
    for (args, says) in [
        (
            &["--no-such-option"][..],
            "unexpected argument '--no-such-option'",
        ),
        (&["drift", "--bogus"][..], "unexpected argument '--bogus'"),
        (
            &["validate", "--repo"][..],
            "a value is required for '--repo <PATH>'",
        ),
        (
            &["--output", "yaml", "--dry-run"][..],
            "invalid value 'yaml'",
        ),
        (&["completions"][..], "required arguments were not provided"),
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(64), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn help_and_version_succeed_and_the_agent_is_not_in_the_top_level_help() {
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(
        help.contains("validate") && help.contains("drift"),
        "{help}"
    );
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("agent ")),
        "the agent is an implementation detail of the reconciler:\n{help}"
    );
    // Still there for the reconciler to run.
    let (code, agent_help, _) = run(&["agent", "--help"]);
    assert_eq!(code, Some(0));
    assert!(agent_help.contains("inspect"), "{agent_help}");
    let (code, version, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(version.starts_with("clarity-reconcile "), "{version}");
}

/// The SSH options, as `--help` lists them.
const SSH_OPTIONS: [&str; 5] = [
    "--identity <FILE>",
    "--known-hosts <FILE>",
    "--ssh-config <FILE>",
    "--connect-timeout <SECONDS>",
    "--parallel <N>",
];

#[test]
fn only_the_commands_that_reach_hosts_list_the_ssh_options() {
    for command in [
        &["plan"][..],
        &["apply"],
        &["watch"],
        &["drift"],
        &["rollback"],
        &["resume"],
        &["decommission"],
        &[],
    ] {
        let args = [command, &["--help"]].concat();
        let (code, help, _) = run(&args);
        assert_eq!(code, Some(0), "{args:?}");
        for option in SSH_OPTIONS {
            assert!(help.contains(option), "{args:?} lacks {option}:\n{help}");
        }
    }
    for command in [
        &["validate"][..],
        &["schema"],
        &["secret"],
        &["secret", "get"],
        &["history"],
        &["history", "show"],
        &["agent"],
        &["agent", "inspect"],
        &["completions"],
    ] {
        let args = [command, &["--help"]].concat();
        let (code, help, _) = run(&args);
        assert_eq!(code, Some(0), "{args:?}");
        for option in SSH_OPTIONS {
            assert!(!help.contains(option), "{args:?} lists {option}:\n{help}");
        }
    }
}

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo")
}

/// What one command prints in a fresh directory (the work directory is `work` in it).
fn in_fresh_dir(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let run = support::runner::Runner::new(dir.path())
        .placeholder(&example(), "[REPO]")
        .run(args);
    run.snapshot()
}

#[test]
fn plan_is_the_dry_run_and_takes_its_options_before_or_after_it() {
    let repo = example();
    let repo = repo.to_str().unwrap();
    let options = [
        "--repo",
        repo,
        "--profile",
        "mock",
        "--assume-empty-hosts",
        "--work-dir",
        "work",
    ];
    let dry_run = in_fresh_dir(&[&options[..], &["--dry-run"]].concat());
    assert!(dry_run.starts_with("exit: 2\n"), "{dry_run}");
    assert!(dry_run.contains("host nt-sbx-mon01"), "{dry_run}");
    let plan = in_fresh_dir(&[&["plan"][..], &options].concat());
    assert_eq!(plan, dry_run);
    // The selection given before the subcommand, as when it was a global option.
    let before = |profile: &str| {
        in_fresh_dir(&[
            "--profile",
            profile,
            "plan",
            "--repo",
            repo,
            "--assume-empty-hosts",
            "--work-dir",
            "work",
        ])
    };
    assert_eq!(before("mock"), dry_run);
    let other = before("staging");
    assert_ne!(other, dry_run, "--profile before `plan` is not ignored");
}

#[test]
fn apply_is_the_bare_form_and_watch_is_watch() {
    // A plain directory (no git): the plan is computed, then applying refuses without a commit.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    support::copy_dir(&example(), &repo);
    let runner = support::runner::Runner::new(dir.path());
    let options = [
        "--repo",
        "repo",
        "--profile",
        "mock",
        "--assume-empty-hosts",
        "--work-dir",
        "work",
    ];
    let bare = runner.run(&options);
    assert_eq!(bare.code, Some(1), "{}", bare.snapshot());
    assert!(
        bare.stderr.contains("applying needs a commit"),
        "{}",
        bare.snapshot()
    );
    let apply = runner.run(&[&["apply"][..], &options].concat());
    assert_eq!(apply.snapshot(), bare.snapshot());

    // `watch` refuses what `--watch` refuses, as a usage error.
    for args in [&["watch", "--dry-run"][..], &["--watch", "--dry-run"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(64), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("--dry-run"), "{args:?}: {stderr}");
    }
    let watch = runner.run(&["watch", "--repo", "repo", "--assume-empty-hosts"]);
    assert_eq!(watch.code, Some(64), "{}", watch.snapshot());
    assert!(
        watch
            .stderr
            .contains("--watch cannot be combined with --base or --assume-empty-hosts"),
        "{}",
        watch.snapshot()
    );
    // `apply` has no `--dry-run`: that is `plan`.
    let (code, _, stderr) = run(&["apply", "--dry-run"]);
    assert_eq!(code, Some(64), "{stderr}");
}
