//! Config-repository fixtures, loaded through the library exactly as `validate` loads them
//! (with the operator's defaults). It must not change what the loader reports, only compare it.
//!
//! `tests/fixtures/base/` is a small, complete, valid config repository. Every other fixture is
//! an overlay on it: its files replace or add base files, an optional `deleted.txt` lists base
//! files to remove, and an optional `symlinks.txt` lists `LINK -> TARGET` lines to create (git
//! does not carry symlinks portably). Fixtures under `valid/` must load without errors; those
//! under `invalid/`, named after the violation they show, carry an `expected.txt` with one
//! `FILE:LINE:COL CODE` line per expected error. Warnings are ignored unless `expected.txt`
//! lists some as `warning FILE:LINE:COL CODE`, in which case they must match too. A malformed
//! line fails, naming the file and line. Every diagnostic code the source emits must appear in
//! some fixture's `expected.txt`.
//!
//! `CLARITY_FIXTURE=<name>` runs only fixtures whose name contains it.
//! `CLARITY_UPDATE_FIXTURES=1` rewrites each `expected.txt` from what the loader reports;
//! review that diff line by line, since it turns whatever the loader does into the expectation.

use clarity::apply::prepare::Inputs;
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

    /// One line of `expected.txt`: `[warning|error] FILE:LINE:COL CODE`, nothing more. A line
    /// that is not exactly that is an error, never something to skip.
    fn parse(line: &str) -> Result<Key, String> {
        let malformed = || format!("`{line}` is not `[warning] FILE:LINE:COL CODE`");
        let words: Vec<&str> = line.split_whitespace().collect();
        let (warning, location, code) = match words[..] {
            ["warning", location, code] => (true, location, code),
            ["error", location, code] | [location, code] => (false, location, code),
            _ => return Err(malformed()),
        };
        if !is_code(code) {
            return Err(format!("`{line}`: `{code}` is not a diagnostic code"));
        }
        let mut parts = location.rsplitn(3, ':');
        let (Some(column), Some(row), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("`{line}`: `{s}` is not a number"))
        };
        Ok(Key {
            file: file.to_string(),
            line: number(row)?,
            column: number(column)?,
            code: code.to_string(),
            warning,
        })
    }
}

/// Whether `s` looks like a diagnostic code: lowercase words joined by `-`.
fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && s.as_bytes()[0].is_ascii_lowercase()
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

/// The meaningful lines of a control file, each with its 1-based line number; none when the
/// file does not exist. A file that exists but cannot be read fails the test.
fn control_lines(dir: &Path, name: &str) -> Vec<(usize, String)> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .map(|(i, l)| (i, l.to_string()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
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
    for (_, path) in control_lines(fixture, "deleted.txt") {
        std::fs::remove_file(dir.path().join(&path)).unwrap_or_else(|e| {
            panic!(
                "{}: deleted.txt names {path}, which base lacks: {e}",
                fixture.display()
            )
        });
    }
    for (_, line) in control_lines(fixture, "symlinks.txt") {
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

/// Loads a directory the way `validate` does with the operator's defaults (no `--allow-env`,
/// no `--allow-file-root`, no `--allow-http-credentials`): the loader's checks, the operator's,
/// and, when those find no error, every template rendered and every reference resolved for
/// every host. Returns every diagnostic.
fn load(dir: &Path) -> Vec<Diagnostic> {
    let snapshot = source::read(dir, &ReadMode::WorkingTree).expect("fixture directory reads");
    assert_eq!(
        snapshot.origin,
        Origin::PlainDirectory,
        "fixtures must be read as plain directories; is the temp dir inside a git work tree?"
    );
    let inputs = Inputs::default();
    let mut loaded = clarity::load::load(&snapshot);
    let operator = inputs.operator_checks(&loaded.inventory);
    loaded.diagnostics.extend(operator);
    if !loaded.has_errors() {
        let desired = clarity::desired::check(&loaded.inventory, &inputs.allow_env);
        loaded.diagnostics.extend(desired);
    }
    loaded.diagnostics.sorted()
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

/// The keys `expected.txt` lists; an error names the file and line of the first malformed one.
fn expected_of(fixture: &Path) -> Result<Vec<Key>, String> {
    control_lines(fixture, "expected.txt")
        .iter()
        .map(|(n, l)| {
            Key::parse(l)
                .map_err(|e| format!("{}:{n}: {e}", fixture.join("expected.txt").display()))
        })
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
        "warnings a.yml:1:2 code",
        "warning: a.yml:1:2 code",
        "a.yml:1:2 code trailing",
        "a.yml:1:2 Not_A_Code",
    ] {
        assert!(Key::parse(bad).is_err(), "`{bad}` parsed");
    }
    let ok = Key::parse("warning a.yml:1:2 some-code").unwrap();
    assert!(ok.warning && ok.line == 1 && ok.column == 2 && ok.code == "some-code");

    // Through the file, as the fixture tests read it: the error names the file and the line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expected.txt");
    std::fs::write(
        &file,
        "# comment\na.yml:1:1 some-code\n\na.yml:1 some-code\n",
    )
    .unwrap();
    let e = expected_of(dir.path()).expect_err("a malformed line was accepted");
    assert!(
        e.starts_with(&format!("{}:4: ", file.display())),
        "the error does not name the file and line: {e}"
    );
    // Unreadable is not absent: a file that is not UTF-8 fails instead of expecting nothing.
    std::fs::write(&file, b"a.yml:1:1 some-code\n\xff\n").unwrap();
    let unreadable = std::panic::catch_unwind(|| expected_of(dir.path()));
    assert!(
        unreadable.is_err(),
        "an unreadable expected.txt read as {unreadable:?}"
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(expected_of(dir.path()), Ok(Vec::new()));
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

/// Every file below `dir`, as a path under `rel`, leaving out a fixture's control files: for a
/// fixture (`rel` empty), every file its overlay adds or replaces.
fn files_below(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            files_below(&entry.path(), &rel, out);
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
        files_below(&fixture, Path::new(""), &mut files);
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

/// Every diagnostic code the source can emit, each with the `file:line` of one place that
/// emits it. A code is the first argument of `Diagnostic::error(` or `Diagnostic::warning(`:
/// a string literal, or a name bound by a `let` just before (each code-like literal of that
/// statement counts) or a `&'static str` parameter of the enclosing function (the first
/// argument of each call of it counts). A call this cannot read fails the test, so a new way
/// of passing codes is noticed rather than missed. Test modules are left out.
fn codes_in_source() -> std::collections::BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    files_below(&root.join("src"), Path::new("src"), &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    files.sort();
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|rel| {
            let text = std::fs::read_to_string(root.join(rel)).unwrap();
            let text = match text.find("\n#[cfg(test)]\nmod tests") {
                Some(end) => text[..end].to_string(),
                None => text,
            };
            (rel.display().to_string(), text)
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    let mut unreadable = Vec::new();
    for (rel, text) in &sources {
        // diag.rs defines the constructors; its `code` is theirs, not an emitted one.
        if rel == "src/diag.rs" {
            continue;
        }
        // A helper that takes the code as a parameter is called from its own file, or, when
        // it is in a `mod.rs`, from the files of that module too.
        let scope: Vec<&str> = match rel.strip_suffix("mod.rs") {
            Some(dir) => sources
                .iter()
                .filter(|(r, _)| r.starts_with(dir))
                .map(|(_, t)| t.as_str())
                .collect(),
            None => vec![text.as_str()],
        };
        let text = text.as_str();
        let line_of = |at: usize| text[..at].matches('\n').count() + 1;
        for call in ["Diagnostic::error(", "Diagnostic::warning("] {
            for (at, _) in text.match_indices(call) {
                let place = format!("{rel}:{}", line_of(at));
                let found = codes_of_call(text, at + call.len(), &scope);
                if found.is_empty() {
                    unreadable.push(place);
                    continue;
                }
                for code in found {
                    codes.entry(code).or_insert_with(|| place.clone());
                }
            }
        }
    }
    assert!(
        unreadable.is_empty(),
        "cannot tell which code these calls emit (pass a literal, or a name bound just before):\n  {}",
        unreadable.join("\n  ")
    );
    codes
}

/// The codes the call whose arguments start at `args` can emit; empty when unreadable.
fn codes_of_call(text: &str, args: usize, scope: &[&str]) -> Vec<String> {
    let rest = text[args..].trim_start();
    if let Some(literal) = rest.strip_prefix('"') {
        let code = &literal[..literal.find('"').unwrap()];
        return if is_code(code) {
            vec![code.to_string()]
        } else {
            Vec::new()
        };
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || !rest[name.len()..].trim_start().starts_with(',') {
        return Vec::new();
    }
    // The function the call is in: the last `fn ` before it.
    let Some(fn_at) = text[..args].rfind("fn ") else {
        return Vec::new();
    };
    let header = &text[fn_at..fn_at + text[fn_at..].find('{').unwrap()];
    if header.contains(&format!("{name}: &'static str")) {
        let function: String = header[3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let mut codes = Vec::new();
        for caller in scope {
            for (at, _) in caller.match_indices(&format!("{function}(")) {
                let head = caller[..at]
                    .strip_suffix("super::")
                    .unwrap_or(&caller[..at]);
                let before = head.chars().next_back();
                if head.ends_with("fn ")
                    || before
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '.')
                {
                    continue;
                }
                let found = codes_of_call(caller, at + function.len() + 1, scope);
                if found.is_empty() {
                    return Vec::new();
                }
                codes.extend(found);
            }
        }
        return codes;
    }
    let body = &text[fn_at..args];
    let binding = [format!("let {name} ="), format!("let ({name},")]
        .iter()
        .filter_map(|b| body.rfind(b.as_str()))
        .max();
    let Some(start) = binding else {
        return Vec::new();
    };
    statement_literals(&body[start..])
        .into_iter()
        .filter(|l| is_code(l))
        .collect()
}

/// The string literals of the statement `text` starts with (up to its `;` outside brackets).
fn statement_literals(text: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut depth = 0i32;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ';' if depth == 0 => break,
            '"' => {
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        c => literal.push(c),
                    }
                }
                literals.push(literal);
            }
            _ => {}
        }
    }
    literals
}

/// Every code the source can emit is shown by at least one fixture: an `invalid/` fixture for
/// an error, or an `expected.txt` line of any fixture for a warning. A new code without a
/// fixture fails here, naming where it is emitted.
#[test]
fn every_diagnostic_code_has_a_fixture() {
    let emitted = codes_in_source();
    let mut shown = BTreeSet::new();
    for group in ["invalid", "valid"] {
        for entry in std::fs::read_dir(fixtures().join(group)).unwrap() {
            let dir = entry.unwrap().path();
            let expected = expected_of(&dir).unwrap_or_else(|e| panic!("{e}"));
            shown.extend(expected.into_iter().map(|k| k.code));
        }
    }
    assert!(
        emitted.len() >= 40
            && emitted.contains_key("template-syntax")
            // Through a helper that takes the code, called from the other files of its module.
            && emitted.contains_key("unknown-datacenter"),
        "the source scan found only {emitted:?}"
    );
    let missing: Vec<String> = emitted
        .iter()
        .filter(|(code, _)| !shown.contains(*code))
        .map(|(code, place)| format!("{code} (emitted at {place})"))
        .collect();
    assert!(
        missing.is_empty(),
        "no fixture shows these codes; add one under tests/fixtures/invalid/ (or a warning \
         line to a valid fixture's expected.txt):\n  {}",
        missing.join("\n  ")
    );
}
