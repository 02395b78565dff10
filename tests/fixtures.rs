//! Config-repository fixtures, loaded through the library exactly as `validate` loads them.
//!
//! `tests/fixtures/base/` is a small, complete, valid config repository. Every other fixture is
//! an overlay on it: its files replace or add base files, an optional `deleted.txt` lists base
//! files to remove, and an optional `symlinks.txt` lists `LINK -> TARGET` lines to create (git
//! does not carry symlinks portably). Fixtures under `valid/` must load without errors; those
//! under `invalid/`, named after the violation they show, carry an `expected.txt` with one
//! `FILE:LINE:COL CODE` line per expected error. Warnings are ignored unless `expected.txt`
//! lists some as `warning FILE:LINE:COL CODE`, in which case they must match too.
//!
//! `CLARITY_FIXTURE=<name>` runs only fixtures whose name contains it.
//! `CLARITY_UPDATE_FIXTURES=1` rewrites each `expected.txt` from what the loader reports;
//! review that diff line by line, since it turns whatever the loader does into the expectation.

use clarity::diag::{Diagnostic, Severity};
use clarity::source::{self, Origin, ReadMode};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Files of a fixture folder that describe the overlay rather than belong to it.
const CONTROL_FILES: [&str; 3] = ["expected.txt", "deleted.txt", "symlinks.txt"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One expected or reported diagnostic, as compared: position, code and severity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    file: String,
    line: u32,
    column: u32,
    code: String,
    warning: bool,
}

impl Key {
    fn of(d: &Diagnostic) -> Key {
        Key {
            file: d.file.clone(),
            line: d.line,
            column: d.column,
            code: d.code.to_string(),
            warning: d.severity == Severity::Warning,
        }
    }

    fn parse(line: &str) -> Result<Key, String> {
        let (warning, rest) = match line.split_once(' ') {
            Some(("warning", rest)) => (true, rest.trim()),
            Some(("error", rest)) => (false, rest.trim()),
            _ => (false, line),
        };
        let (location, code) = rest
            .rsplit_once(' ')
            .ok_or_else(|| format!("`{line}` is not `FILE:LINE:COL CODE`"))?;
        let mut parts = location.rsplitn(3, ':');
        let (Some(column), Some(row), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("`{line}` is not `FILE:LINE:COL CODE`"));
        };
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("`{line}`: `{s}` is not a number"))
        };
        Ok(Key {
            file: file.to_string(),
            line: number(row)?,
            column: number(column)?,
            code: code.trim().to_string(),
            warning,
        })
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.warning {
            f.write_str("warning ")?;
        }
        write!(
            f,
            "{}:{}:{} {}",
            self.file, self.line, self.column, self.code
        )
    }
}

fn copy_tree(from: &Path, to: &Path, skip_control_files: bool) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip_control_files && CONTROL_FILES.iter().any(|c| name == *c) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&src, &dst, false);
        } else {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

fn control_lines(dir: &Path, name: &str) -> Vec<String> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Base plus the overlay in `fixture` (none for the base itself), in a fresh directory.
fn materialize(fixture: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("base"), dir.path(), false);
    let Some(fixture) = fixture else {
        return dir;
    };
    copy_tree(fixture, dir.path(), true);
    for path in control_lines(fixture, "deleted.txt") {
        std::fs::remove_file(dir.path().join(&path)).unwrap_or_else(|e| {
            panic!(
                "{}: deleted.txt names {path}, which base lacks: {e}",
                fixture.display()
            )
        });
    }
    for line in control_lines(fixture, "symlinks.txt") {
        let (link, target) = line
            .split_once(" -> ")
            .unwrap_or_else(|| panic!("{}: `{line}` is not `LINK -> TARGET`", fixture.display()));
        let link = dir.path().join(link.trim());
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target.trim(), &link).unwrap();
    }
    dir
}

/// Loads a directory the way `validate` does; returns every diagnostic.
fn load(dir: &Path) -> Vec<Diagnostic> {
    let snapshot = source::read(dir, &ReadMode::WorkingTree).expect("fixture directory reads");
    assert_eq!(
        snapshot.origin,
        Origin::PlainDirectory,
        "fixtures must be read as plain directories; is the temp dir inside a git work tree?"
    );
    clarity::load::load(&snapshot).diagnostics.sorted()
}

fn fixture_dirs(group: &str) -> Vec<PathBuf> {
    let filter = std::env::var("CLARITY_FIXTURE").ok();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join(group))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            filter
                .as_deref()
                .is_none_or(|f| p.file_name().unwrap().to_string_lossy().contains(f))
        })
        .collect();
    dirs.sort();
    dirs
}

fn name(dir: &Path) -> String {
    let parent = dir.parent().unwrap().file_name().unwrap().to_string_lossy();
    format!("{parent}/{}", dir.file_name().unwrap().to_string_lossy())
}

fn expected_of(fixture: &Path) -> Result<Vec<Key>, String> {
    control_lines(fixture, "expected.txt")
        .iter()
        .map(|l| Key::parse(l))
        .collect()
}

/// Compares what was reported with what was expected; `None` when they agree.
fn compare(fixture: &str, expected: &[Key], reported: &[Diagnostic]) -> Option<String> {
    let check_warnings = expected.iter().any(|k| k.warning);
    let expected: BTreeSet<&Key> = expected.iter().collect();
    let relevant: Vec<&Diagnostic> = reported
        .iter()
        .filter(|d| check_warnings || d.severity == Severity::Error)
        .collect();
    let actual: BTreeSet<Key> = relevant.iter().map(|d| Key::of(d)).collect();
    let missing: Vec<&&Key> = expected.iter().filter(|k| !actual.contains(**k)).collect();
    let unexpected: Vec<&&Diagnostic> = relevant
        .iter()
        .filter(|d| !expected.contains(&Key::of(d)))
        .collect();
    if missing.is_empty() && unexpected.is_empty() {
        return None;
    }
    let mut out = format!("\n=== {fixture}: diagnostics differ\n");
    if !missing.is_empty() {
        out.push_str("  expected but not reported:\n");
        for k in missing {
            let _ = writeln!(out, "    - {k}");
        }
    }
    if !unexpected.is_empty() {
        out.push_str("  reported but not expected:\n");
        for d in unexpected {
            let _ = writeln!(out, "    + {}    ({})", Key::of(d), d.message);
        }
    }
    out.push_str("  everything reported:\n");
    for d in reported {
        for line in d.to_string().lines() {
            let _ = writeln!(out, "      {line}");
        }
    }
    Some(out)
}

fn bless(fixture: &Path, expected: &[Key], reported: &[Diagnostic]) {
    let keep_warnings = expected.iter().any(|k| k.warning);
    let mut text = String::new();
    for d in reported {
        if d.severity == Severity::Error || keep_warnings {
            let _ = writeln!(text, "{}", Key::of(d));
        }
    }
    std::fs::write(fixture.join("expected.txt"), text).unwrap();
}

#[test]
fn a_malformed_expectation_is_an_error_never_an_empty_expectation() {
    for bad in [
        "clients/acme/servers/web-1.yml unknown-datacenter",
        "a.yml:x:3 code",
        "a.yml:1:2",
    ] {
        assert!(Key::parse(bad).is_err(), "`{bad}` parsed");
    }
    let ok = Key::parse("warning a.yml:1:2 some-code").unwrap();
    assert!(ok.warning && ok.line == 1 && ok.column == 2 && ok.code == "some-code");
}

#[test]
fn base_is_valid_without_warnings() {
    let dir = materialize(None);
    let reported = load(dir.path());
    assert!(
        reported.is_empty(),
        "base fixture must be clean:\n{}",
        reported
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn valid_fixtures_load_without_errors() {
    let mut failures = String::new();
    for fixture in fixture_dirs("valid") {
        let dir = materialize(Some(&fixture));
        let reported = load(dir.path());
        // A valid fixture may list the warnings it must produce (never errors).
        let expected = expected_of(&fixture)
            .unwrap_or_else(|e| panic!("{}: bad expected.txt: {e}", name(&fixture)));
        assert!(
            expected.iter().all(|k| k.warning),
            "{}: a valid fixture expects only warnings",
            name(&fixture)
        );
        if let Some(diff) = compare(&name(&fixture), &expected, &reported) {
            failures.push_str(&diff);
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn invalid_fixtures_report_exactly_the_expected_errors() {
    let update = std::env::var_os("CLARITY_UPDATE_FIXTURES").is_some();
    let mut failures = String::new();
    let fixtures = fixture_dirs("invalid");
    for fixture in &fixtures {
        let name = name(fixture);
        if !fixture.join("expected.txt").is_file() && !update {
            let _ = writeln!(failures, "\n=== {name}: has no expected.txt");
            continue;
        }
        let expected = match expected_of(fixture) {
            Ok(e) => e,
            Err(e) => {
                let _ = writeln!(failures, "\n=== {name}: bad expected.txt: {e}");
                continue;
            }
        };
        let dir = materialize(Some(fixture));
        let reported = load(dir.path());
        if update {
            bless(fixture, &expected, &reported);
            continue;
        }
        if !reported.iter().any(|d| d.severity == Severity::Error) {
            let _ = writeln!(failures, "\n=== {name}: loads without errors");
        }
        if expected.is_empty() {
            let _ = writeln!(failures, "\n=== {name}: expected.txt lists no diagnostic");
        }
        if let Some(diff) = compare(&name, &expected, &reported) {
            failures.push_str(&diff);
        }
    }
    assert!(failures.is_empty(), "{failures}");
    if std::env::var_os("CLARITY_FIXTURE").is_none() {
        assert!(
            fixtures.len() >= 30,
            "only {} invalid fixtures",
            fixtures.len()
        );
    }
}

#[test]
fn alias_bomb_fails_fast() {
    let fixture = fixtures().join("invalid/yaml.alias_bomb");
    let dir = materialize(Some(&fixture));
    let start = Instant::now();
    let reported = load(dir.path());
    let took = start.elapsed();
    // The budget trips in milliseconds; an unbounded expansion of this bomb would take hours
    // and gigabytes. The bound is far above the real figure so that a loaded CI machine (the
    // whole suite runs in parallel on 2 cores) cannot make it flaky: it only catches a runaway.
    assert!(
        took < Duration::from_secs(30),
        "loading the alias bomb took {took:?}"
    );
    assert!(
        reported.iter().any(|d| d.code == "yaml-budget"),
        "{reported:?}"
    );
}

/// Every file an overlay adds or replaces, relative to the fixture.
fn overlay_files(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            overlay_files(&entry.path(), &rel, out);
        } else if !CONTROL_FILES.iter().any(|c| rel == Path::new(c)) {
            out.push(rel);
        }
    }
}

/// Several invalid fixtures that change different files, applied together: one load must
/// report every one of their errors, not stop at the first file or the first error.
#[test]
fn errors_in_many_files_are_all_reported_in_one_load() {
    let combined = [
        "yaml.syntax_error",
        "server.ram_gb_not_integer",
        "client.unknown_field",
        "deployment.unknown_version",
        "artifact.unknown_repository",
        "repository.field_not_applicable",
        "secrets.plaintext_secret",
    ];
    let dir = materialize(None);
    let mut expected = Vec::new();
    let mut touched = BTreeSet::new();
    for name in combined {
        let fixture = fixtures().join("invalid").join(name);
        let mut files = Vec::new();
        overlay_files(&fixture, Path::new(""), &mut files);
        for f in files {
            assert!(touched.insert(f.clone()), "{name} changes {f:?} again");
        }
        copy_tree(&fixture, dir.path(), true);
        expected.extend(expected_of(&fixture).unwrap());
    }
    let files: BTreeSet<&str> = expected.iter().map(|k| k.file.as_str()).collect();
    assert!(files.len() >= 5, "errors in only {} files", files.len());
    let reported = load(dir.path());
    if let Some(diff) = compare("combined", &expected, &reported) {
        panic!("{diff}");
    }
}

#[test]
fn expected_lines_parse() {
    let k = Key::parse("clients/acme/servers/web-1.yml:4:13 unknown-datacenter").unwrap();
    assert_eq!(
        (
            k.file.as_str(),
            k.line,
            k.column,
            k.code.as_str(),
            k.warning
        ),
        (
            "clients/acme/servers/web-1.yml",
            4,
            13,
            "unknown-datacenter",
            false
        )
    );
    assert!(Key::parse("warning a.yml:1:1 no-service").unwrap().warning);
    assert!(Key::parse("a.yml:x:1 code").is_err());
    assert!(Key::parse("a.yml code").is_err());
}
