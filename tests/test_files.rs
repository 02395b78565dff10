//! No test file is forgotten. Cargo builds every `tests/*.rs` as a test binary (this file
//! checks that `Cargo.toml` keeps it that way), but a file in a subdirectory runs only when a
//! `mod` declaration reaches it, and a top-level file with no `#[test]` runs nothing. Both are
//! easy to miss in review; this test names them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Every `.rs` file below `dir`, relative to `tests/`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(tests_dir()).unwrap().to_path_buf());
        }
    }
}

/// The modules `file` declares (`mod x;` / `pub mod x;`, not inline `mod x { .. }`).
fn declared_modules(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(|m| m.trim().to_string())
        })
        .collect()
}

#[test]
fn every_test_file_is_compiled_and_every_test_binary_has_tests() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("autotests = false"),
        "Cargo.toml turns off test discovery: tests/*.rs would not all run"
    );
    let mut files = Vec::new();
    rust_files(&tests_dir(), &mut files);
    // Files reached from a top-level test by `mod` declarations, followed down.
    let mut reached: BTreeSet<PathBuf> = BTreeSet::new();
    let mut todo: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.components().count() == 1)
        .cloned()
        .collect();
    while let Some(file) = todo.pop() {
        if !reached.insert(file.clone()) {
            continue;
        }
        // A top-level file or a `mod.rs` declares submodules beside it in its own directory.
        let base = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs") => file.parent().unwrap().to_path_buf(),
            _ if file.components().count() == 1 => PathBuf::new(),
            _ => file.with_extension(""),
        };
        for m in declared_modules(&tests_dir().join(&file)) {
            for candidate in [base.join(format!("{m}.rs")), base.join(&m).join("mod.rs")] {
                if tests_dir().join(&candidate).is_file() {
                    todo.push(candidate);
                }
            }
        }
    }
    let forgotten: Vec<_> = files.iter().filter(|f| !reached.contains(*f)).collect();
    assert!(
        forgotten.is_empty(),
        "test files that no test binary compiles (declare them with `mod`): {forgotten:?}"
    );
    let empty: Vec<_> = files
        .iter()
        .filter(|f| f.components().count() == 1)
        .filter(|f| {
            !std::fs::read_to_string(tests_dir().join(f))
                .unwrap()
                .contains("#[test]")
        })
        .collect();
    assert!(
        empty.is_empty(),
        "test binaries without a single #[test]: {empty:?}"
    );
}
