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
