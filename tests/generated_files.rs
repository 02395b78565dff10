//! Generated files are checked in (editors and readers use them without building Clarity);
//! these tests fail when they no longer match what the code generates. Run with
//! `CLARITY_UPDATE_GENERATED=1` to rewrite them.

use clarity::model::FileKind;
use std::path::Path;

fn check(path: &str, expected: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("CLARITY_UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} is stale: regenerate it with `CLARITY_UPDATE_GENERATED=1 cargo test --test generated_files`"
    );
}

#[test]
fn schemas_match_the_types() {
    for (file, text) in clarity::cli::all_schemas() {
        check(&format!("schemas/{file}"), &text);
    }
}

#[test]
fn config_reference_matches_the_schemas() {
    check(
        "docs/config-reference.md",
        &clarity::model::docs::config_reference(),
    );
}

#[test]
fn cli_reference_matches_the_arguments() {
    check("docs/cli-reference.md", &clarity::cli::cli_reference());
}

#[test]
fn man_pages_match_the_arguments() {
    let pages = clarity::cli::completions::man_pages();
    assert!(pages.iter().any(|(name, _)| name == "clarity-reconcile.1"));
    assert!(
        pages
            .iter()
            .any(|(name, _)| name == "clarity-reconcile-validate.1")
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for (name, text) in &pages {
        check(&format!("man/{name}"), text);
    }
    // No page is left behind for a command that no longer exists.
    if std::env::var_os("CLARITY_UPDATE_GENERATED").is_none() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                pages.iter().any(|(name, _)| *name == file),
                "man/{file} belongs to no command: remove it"
            );
        }
    }
}

#[test]
fn config_reference_documents_every_field() {
    // Every property of every schema appears as a row, so no field goes undocumented.
    let doc = clarity::model::docs::config_reference();
    for kind in FileKind::ALL {
        let schema = kind.schema().to_value();
        let mut names = Vec::new();
        collect(&schema, &mut names);
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")) || doc.contains(&format!(".{name}`")),
                "field `{name}` of {} is missing from the config reference",
                kind.name()
            );
        }
    }
}

fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
        out.extend(props.keys().cloned());
    }
    if let Some(defs) = v.get("$defs").and_then(|d| d.as_object()) {
        for d in defs.values() {
            collect(d, out);
        }
    }
}
