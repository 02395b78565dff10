//! `clarity-reconcile validate` as users run it: the real binary, real directories, a real
//! `git` for the tests about commits, and the exit codes and output lines scripts rely on.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example_repo() -> PathBuf {
    manifest_dir().join("example-config-repo")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The `file:line:col: severity[code]:` prefix of every diagnostic line on stdout.
    fn diagnostics(&self, severity: &str) -> Vec<String> {
        let marker = format!(": {severity}[");
        let mut lines: Vec<String> = self
            .stdout
            .lines()
            .filter_map(|l| {
                let at = l.find(&marker)?;
                let end = at + marker.len() + l[at + marker.len()..].find("]:")? + 2;
                Some(l[..end].to_string())
            })
            .collect();
        lines.sort();
        lines
    }
}

fn validate(args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_clarity-reconcile"))
        .arg("validate")
        .args(args)
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Replaces the one occurrence of `from` in `file` with `to`; returns the 1-based line and
/// column at which `mark` (a piece of `to`) now starts, where the diagnostic must point.
fn inject(root: &Path, file: &str, from: &str, to: &str, mark: &str) -> (usize, usize) {
    let path = root.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(from).count(), 1, "`{from}` in {file}");
    let at = text.find(from).unwrap() + to.find(mark).expect("mark is part of the new text");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = at - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

#[test]
fn example_repo_is_valid() {
    let run = validate(&["--repo", path_arg(&example_repo())]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stdout.contains("valid: 0 errors, 0 warnings"),
        "{}",
        run.show()
    );
}

/// A copy of the example repository with five errors in five files, and the diagnostics (as
/// `file:line:col: error[code]:`) that each must produce.
fn example_with_five_errors() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&example_repo(), dir.path());
    let root = dir.path();
    let injected = [
        (
            "clients/nordtel/servers/nt-osl1-sms02.yml",
            "datacenter: osl1",
            "datacenter: osl9",
            "osl9",
            "unknown-datacenter",
        ),
        (
            "clients/nordtel/client.yml",
            "status: active\n",
            "status: active\nregion: nordics\n",
            "region",
            "unknown-field",
        ),
        (
            "artifacts/sip-probe.yml",
            "location: sip-probe/0.3.0/sip-probe",
            "location: sip-probe/0.3.0/../../sip-probe",
            "sip-probe/0.3.0/..",
            "path-escape",
        ),
        (
            "clients/sunwave/deployments/smsgateway/prod.yml",
            "version: \"2.4.0\"",
            "version: \"2.4.9\"",
            "\"2.4.9\"",
            "unknown-version",
        ),
        (
            "clients/sunwave/deployments/monitoring-stack/mock.yml",
            "template: monitoring-stack/exporter.conf.j2",
            "template: monitoring-stack/exporter.cfg.j2",
            "monitoring-stack/exporter.cfg.j2",
            "unknown-template",
        ),
    ];
    let mut expected: Vec<String> = injected
        .iter()
        .map(|(file, from, to, mark, code)| {
            let (line, column) = inject(root, file, from, to, mark);
            format!("{file}:{line}:{column}: error[{code}]:")
        })
        .collect();
    expected.sort();
    (dir, expected)
}

#[test]
fn five_errors_in_five_files_are_reported_with_their_positions() {
    let (dir, expected) = example_with_five_errors();
    let run = validate(&["--repo", path_arg(dir.path())]);
    assert_eq!(run.code, 1, "{}", run.show());
    assert_eq!(run.diagnostics("error"), expected, "{}", run.show());
    assert!(run.diagnostics("warning").is_empty(), "{}", run.show());
    assert!(
        run.stdout
            .contains("validation failed: 5 errors, 0 warnings"),
        "{}",
        run.show()
    );
}

#[test]
fn json_output_lists_the_same_five_errors() {
    let (dir, expected) = example_with_five_errors();
    let run = validate(&["--repo", path_arg(dir.path()), "--output", "json"]);
    assert_eq!(run.code, 1, "{}", run.show());
    let value: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.show()));
    let items = value.as_array().expect("a JSON array");
    let mut reported: Vec<String> = items
        .iter()
        .map(|d| {
            for field in ["message", "file", "line", "column", "code", "severity"] {
                assert!(d.get(field).is_some(), "`{field}` missing in {d}");
            }
            format!(
                "{}:{}:{}: {}[{}]:",
                d["file"].as_str().unwrap(),
                d["line"],
                d["column"],
                d["severity"].as_str().unwrap(),
                d["code"].as_str().unwrap()
            )
        })
        .collect();
    reported.sort();
    assert_eq!(reported, expected, "{}", run.show());
}

/// A git repository whose committed config is valid, with an uncommitted edit that breaks it.
fn git_repo_with_broken_worktree() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&manifest_dir().join("tests/fixtures/base"), dir.path());
    support::git(dir.path(), &["init", "-q"]);
    support::git(dir.path(), &["add", "-A"]);
    support::git(dir.path(), &["commit", "-q", "-m", "valid config"]);
    let file = "clients/acme/servers/web-2.yml";
    let (line, column) = inject(
        dir.path(),
        file,
        "datacenter: ber1",
        "datacenter: ber9",
        "ber9",
    );
    (
        dir,
        format!("{file}:{line}:{column}: error[unknown-datacenter]:"),
    )
}

#[test]
fn uncommitted_edit_is_validated_and_named_without_rev() {
    let (dir, expected) = git_repo_with_broken_worktree();
    let run = validate(&["--repo", path_arg(dir.path())]);
    assert_eq!(run.code, 1, "{}", run.show());
    assert_eq!(run.diagnostics("error"), vec![expected], "{}", run.show());
    assert!(
        run.stdout.contains("1 uncommitted change")
            && run.stdout.contains("clients/acme/servers/web-2.yml"),
        "validate must say it read uncommitted changes:\n{}",
        run.show()
    );
}

#[test]
fn rev_head_validates_the_commit_only() {
    let (dir, _) = git_repo_with_broken_worktree();
    let run = validate(&["--repo", path_arg(dir.path()), "--rev", "HEAD"]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(run.stdout.contains("valid: 0 errors"), "{}", run.show());
    assert!(!run.stdout.contains("uncommitted"), "{}", run.show());
}

#[test]
fn unknown_rev_is_an_error_with_a_hint() {
    let (dir, _) = git_repo_with_broken_worktree();
    let run = validate(&["--repo", path_arg(dir.path()), "--rev", "no-such-branch"]);
    assert_eq!(run.code, 1, "{}", run.show());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("error: ") && l.contains("no-such-branch")),
        "{}",
        run.show()
    );
    assert!(
        lines.iter().any(|l| l.starts_with("hint: ")),
        "{}",
        run.show()
    );
}

#[test]
fn plain_directory_is_validated_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&manifest_dir().join("tests/fixtures/base"), dir.path());
    let run = validate(&["--repo", path_arg(dir.path())]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains("not inside a git repository")),
        "{}",
        run.show()
    );
    assert!(run.stdout.contains("valid: 0 errors"), "{}", run.show());
}

#[test]
fn deny_warnings_turns_a_warning_into_failure() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&manifest_dir().join("tests/fixtures/base"), dir.path());
    let file = "clients/acme/servers/web-2.yml";
    let (line, column) = inject(
        dir.path(),
        file,
        "service_manager: systemd",
        "service_manager: process",
        "process",
    );
    let at = format!("{file}:{line}:{column}:");

    let lenient = validate(&["--repo", path_arg(dir.path())]);
    assert_eq!(lenient.code, 0, "{}", lenient.show());
    assert_eq!(
        lenient.diagnostics("warning"),
        vec![format!("{at} warning[unsafe-setting]:")],
        "{}",
        lenient.show()
    );

    let strict = validate(&["--repo", path_arg(dir.path()), "--deny-warnings"]);
    assert_eq!(strict.code, 1, "{}", strict.show());
    assert_eq!(
        strict.diagnostics("error"),
        vec![format!("{at} error[unsafe-setting]:")],
        "{}",
        strict.show()
    );
}

#[test]
fn template_errors_are_reported_once_each_with_their_position_and_hint() {
    // A syntax error in one template and an undefined variable in the other: `validate` renders
    // every template for every host that uses it and reports each problem once, at the line in
    // the template, with its hint. The whole output is a snapshot, hints included.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&example_repo(), dir.path());
    let (syntax_line, _) = inject(
        dir.path(),
        "templates/smsgateway/gateway.properties.j2",
        "http.port={{ config.http_port }}",
        "http.port={{ config.http_port }\n",
        "{{ config.http_port }",
    );
    let (render_line, _) = inject(
        dir.path(),
        "templates/monitoring-stack/exporter.conf.j2",
        "{{ server.hostname }}",
        "{{ server.hostname }} {{ config.no_such_value }}",
        "{{ config.no_such_value }}",
    );
    let run = validate(&["--repo", path_arg(dir.path())]);
    assert_eq!(run.code, 1, "{}", run.show());
    let diagnostics = run.diagnostics("error");
    assert_eq!(
        diagnostics,
        [
            format!(
                "templates/monitoring-stack/exporter.conf.j2:{render_line}:1: error[template-render]:"
            ),
            format!(
                "templates/smsgateway/gateway.properties.j2:{syntax_line}:1: error[template-syntax]:"
            ),
        ],
        "{}",
        run.show()
    );
    let normalised = run
        .stdout
        .replace(path_arg(dir.path()), "<repo>")
        .lines()
        // The summary counts the example's files, which grows with the example.
        .filter(|l| !l.starts_with("validation failed:"))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("validate_template_errors", normalised);
}
