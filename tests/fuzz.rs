//! Fuzz targets as property tests over generated inputs (proptest): the YAML loader, the
//! template renderer with a secret, archive extraction, the agent wire protocol decoder and
//! the webhook signature parser. `cargo fuzz` needs a nightly compiler and a sanitizer
//! rebuild of every dependency (libgit2, libssh2, SQLite, liblzma), which neither exists on a
//! fresh machine nor fits the CI budget; these run on the stable toolchain in the ordinary
//! test binary.
//!
//! Each target first replays its regression fixtures (`tests/fixtures/fuzz/<target>/*.json`,
//! the input as JSON), then generates inputs until `CLARITY_FUZZ_SECONDS` (default 3) have
//! passed, with a fresh seed per round. `scripts/fuzz.sh` runs them for a bounded time each; a
//! failure prints the shrunk input to save as a new fixture.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn budget() -> Duration {
    let secs = std::env::var("CLARITY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

fn fixtures(target: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .map(|p| {
                    let text = std::fs::read_to_string(&p).unwrap();
                    (p, text)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Replays `target`'s fixtures through `check`, then runs `strategy` against it until the
/// budget is spent.
fn fuzz<S>(target: &str, strategy: S, check: impl Fn(&S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Serialize + DeserializeOwned,
{
    for (path, text) in fixtures(target) {
        let input: S::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not an input of {target}: {e}", path.display()));
        if let Err(e) = check(&input) {
            panic!(
                "{target}: regression fixture {} fails again: {e}",
                path.display()
            );
        }
    }
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let seed: [u8; 32] = {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let mut s = [0u8; 32];
            s[..16].copy_from_slice(&nanos.to_le_bytes());
            s[16..24].copy_from_slice(&round.to_le_bytes());
            s
        };
        let config = Config {
            cases: 64,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        match runner.run(&strategy, |v| check(&v)) {
            Ok(()) => cases += 64,
            Err(TestError::Fail(reason, value)) => panic!(
                "{target}: {reason}\nshrunk input, to save as tests/fixtures/fuzz/{target}/<name>.json:\n{}",
                serde_json::to_string_pretty(&value).unwrap()
            ),
            Err(TestError::Abort(reason)) => panic!("{target}: aborted: {reason}"),
        }
    }
    eprintln!("{target}: {cases} generated inputs in {:?}", budget());
}

/// Edits applied to a seed text: mutational fuzzing keeps most inputs close to valid, where
/// the deeper code runs.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Duplicate { at: usize, len: usize },
}

fn apply_edits(seed: &str, edits: &[Edit]) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for e in edits {
        let n = s.len().max(1);
        match e {
            Edit::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(s.len());
                if at < end {
                    s.drain(at..end);
                }
            }
            Edit::Insert { at, text } => {
                let at = at % (s.len() + 1);
                s.splice(at..at, text.chars());
            }
            Edit::Duplicate { at, len } => {
                let at = at % n;
                let end = (at + len).min(s.len());
                let piece: Vec<char> = s.get(at..end).map(|p| p.to_vec()).unwrap_or_default();
                s.splice(at..at, piece);
            }
        }
    }
    s.into_iter().collect()
}

fn edits(fragments: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    let text = prop_oneof![
        3 => proptest::sample::select(fragments).prop_map(str::to_string),
        1 => "\\PC{0,12}",
        1 => proptest::collection::vec(proptest::sample::select(fragments), 1..6).prop_map(|v| v.concat()),
    ];
    let edit = prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), text).prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ];
    proptest::collection::vec(edit, 0..8)
}

const YAML_FRAGMENTS: &[&str] = &[
    "\n",
    ": ",
    "- ",
    "  ",
    "'",
    "\"",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "!!binary ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "#",
    "|\n",
    ">-\n",
    "${SECRET:x}",
    "${ENV:HOME}",
    "${CONFIG:a.b}",
    "${",
    "$${",
    "~",
    "null",
    "0o777",
    "1e400",
    "-.inf",
    "\t",
    "---\n",
    "...\n",
    "? ",
    "%YAML 1.2\n",
    "\u{feff}",
    "\\u0000",
    "../",
    "/etc/passwd",
];

/// Finding: the loader (YAML with positions, schema, model, cross-checks) never panics on
/// any edit of a real deployment file, and every diagnostic points into that file's text.
#[test]
fn fuzz_yaml_loader() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo");
    let snapshot =
        clarity::source::read(&example, &clarity::source::ReadMode::WorkingTree).unwrap();
    const FILE: &str = "clients/nordtel/deployments/smsgateway/mock.yml";
    let seed = std::fs::read_to_string(example.join(FILE)).unwrap();
    fuzz("yaml_loader", edits(YAML_FRAGMENTS), |e| {
        let text = apply_edits(&seed, e);
        let mut snap = snapshot.clone();
        snap.files.get_mut(FILE).unwrap().content =
            clarity::source::Content::File(Arc::from(text.as_bytes()));
        let loaded = clarity::load::load(&snap);
        let lines = text.lines().count() as u32 + 1;
        for d in loaded.diagnostics.sorted() {
            if d.file == FILE {
                prop_assert!(
                    d.line >= 1 && d.line <= lines.max(1),
                    "diagnostic outside the file: {d} ({lines} lines)"
                );
            }
        }
        Ok(())
    });
}

const CANARY: &str = "Zq7-canary-Wx";

const TEMPLATE_FRAGMENTS: &[&str] = &[
    "{{ secret(\"pw\") }}",
    "secret(\"pw\")",
    "{{ ",
    " }}",
    "{% ",
    " %}",
    "|upper",
    "|lower",
    "|reverse",
    "|list",
    "|join(\",\")",
    "|string",
    "|title",
    "|first",
    "|last",
    "|length",
    "|replace(\"Z\", \"z\")",
    "[0:3]",
    "[1]",
    "[::-1]",
    " ~ ",
    "\"a\"",
    " * 3",
    " + ",
    "{% for c in ",
    "{% endfor %}",
    "{{ c }}",
    "{% set x = ",
    "{{ x }}",
    "{% if ",
    "{% endif %}",
    "{% include ",
    "{% import ",
    " as m %}",
    "{% extends ",
    "{% macro m() %}",
    "{% endmacro %}",
    "{{ m() }}",
    "{% filter upper %}",
    "{% endfilter %}",
    " is string",
    " is defined",
    "(",
    ")",
    "config.k",
    "{{ config.k }}",
    "{#",
    "#}",
    "{% raw %}",
    "{% endraw %}",
    "\n",
];

/// Finding 2: whatever a template does with a secret, the value shows only whole, never
/// transformed or in pieces, and never in an error.
#[test]
fn fuzz_template_secrets() {
    use clarity::desired::{SecretBag, Templates};
    let seed = "user=app\npw={{ secret(\"pw\") }}\n{% for c in config.k %}{{ c }}{% endfor %}\n";
    let mut values = std::collections::BTreeMap::new();
    values.insert(
        "pw".to_string(),
        Ok(Some(clarity::secret::SecretString::from(
            CANARY.to_string(),
        ))),
    );
    let bag = Arc::new(SecretBag { values });
    let ctx = minijinja::Value::from_serialize(serde_json::json!({
        "config": { "k": ["x", "y"] }
    }));
    let pieces: Vec<String> = CANARY
        .to_lowercase()
        .as_bytes()
        .windows(4)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    fuzz("template_secrets", edits(TEMPLATE_FRAGMENTS), |e| {
        let src = apply_edits(seed, e);
        let mut inv = clarity::load::Inventory::default();
        inv.templates.insert("t.j2".into(), Arc::from(src.as_str()));
        let (templates, _diags) = Templates::new(&inv);
        let (shown, whole) = match templates.render("t.j2", &ctx, &bag) {
            Ok(text) => (text.clone(), text.replace(CANARY, "")),
            Err(e) => (e.message.clone(), e.message.clone()),
        };
        let lower = whole.to_lowercase();
        for p in &pieces {
            let rev: String = p.chars().rev().collect();
            prop_assert!(
                !lower.contains(p.as_str()) && !lower.contains(&rev),
                "a piece of the secret ({p}) shows in:\n{shown}\nfrom the template:\n{src}"
            );
        }
        Ok(())
    });
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
enum EntryKind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Entry {
    path: String,
    kind: EntryKind,
}

fn tar_path() -> impl Strategy<Value = String> {
    let part = proptest::sample::select(&["a", "b", "c", ".", "..", "x.txt"][..]);
    (any::<bool>(), proptest::collection::vec(part, 1..4)).prop_map(|(abs, parts)| {
        let p = parts.join("/");
        if abs && p.len() % 7 == 0 {
            format!("/{p}")
        } else {
            p
        }
    })
}

fn tar_entries() -> impl Strategy<Value = Vec<Entry>> {
    let kind = prop_oneof![
        3 => Just(EntryKind::File),
        1 => Just(EntryKind::Dir),
        2 => tar_path().prop_map(EntryKind::Symlink),
        1 => tar_path().prop_map(EntryKind::Hardlink),
    ];
    proptest::collection::vec(
        (tar_path(), kind).prop_map(|(path, kind)| Entry { path, kind }),
        1..7,
    )
}

/// The tar bytes for `entries`, names written raw (the tar crate refuses `..` when asked
/// nicely, an attacker does not ask).
fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let name = h.as_old_mut();
        let bytes = e.path.as_bytes();
        let n = bytes.len().min(99);
        name.name[..n].copy_from_slice(&bytes[..n]);
        let data: &[u8] = match &e.kind {
            EntryKind::File => b"written through\n",
            _ => b"",
        };
        match &e.kind {
            EntryKind::File => h.set_entry_type(tar::EntryType::Regular),
            EntryKind::Dir => h.set_entry_type(tar::EntryType::Directory),
            EntryKind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(t).ok();
            }
            EntryKind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(t).ok();
            }
        }
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.clone());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&p, out);
            }
        }
    }
}

/// Finding 1 (fixed by the archive-extraction rewrite): whatever the archive holds, after
/// extraction nothing outside the release changed, and no link inside it leads outside.
#[test]
fn fuzz_archive_extraction() {
    fuzz("archive_extraction", tar_entries(), |entries| {
        let top = tempfile::tempdir().unwrap();
        let outside = top.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "original\n").unwrap();
        let archive = top.path().join("a.tar");
        std::fs::write(&archive, tar_bytes(entries)).unwrap();
        let release = top.path().join("d/r/release");
        let _ = clarity::agent::release::place_artifact(
            clarity::model::ArtifactType::Tarball,
            &archive,
            "a.tar",
            &release,
        );
        prop_assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "original\n"
        );
        let mut all = Vec::new();
        walk(top.path(), &mut all);
        let expected_outside = [
            top.path().join("outside"),
            top.path().join("outside/victim"),
            archive.clone(),
            top.path().join("d"),
            top.path().join("d/r"),
            release.clone(),
        ];
        let real_release = release.canonicalize().unwrap_or(release.clone());
        for p in &all {
            if p.starts_with(&release) {
                if let Ok(real) = p.canonicalize() {
                    prop_assert!(
                        real.starts_with(&real_release),
                        "{} leads to {} outside the release",
                        p.display(),
                        real.display()
                    );
                }
            } else {
                prop_assert!(
                    expected_outside.contains(p),
                    "extraction created {} outside the release",
                    p.display()
                );
            }
        }
        Ok(())
    });
}

/// The agent protocol: an event line and a host state as the agent prints them.
fn wire_seeds() -> (String, String) {
    let event = serde_json::to_string(&clarity::model::apply::AgentEvent::Step {
        deployment: "web".into(),
        action: serde_json::from_str("\"fetch_artifact\"").unwrap(),
        target: "web-1.0.jar".into(),
        status: clarity::model::apply::StepStatus::Ok,
        duration_ms: 12,
        message: Some("fetched".into()),
        bytes: Some(4096),
        attempts: Some(1),
    })
    .unwrap();
    let host = serde_json::to_string(&clarity::model::host::ActualHost::empty(
        clarity::agent::AGENT_VERSION,
    ))
    .unwrap();
    (event, host)
}

const JSON_FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "-1",
    "18446744073709551616",
    "1e999",
    "\"event\":\"done\"",
    "\"outcome\":\"converged\"",
    "\"event\":\"rollback\"",
    "\"format\":",
    "\"deployments\":{}",
    "\u{0}",
    "\n",
];

/// The reconciler's decoder of what an agent prints: never panics, and whatever it accepts
/// prints and reads back as the same value.
#[test]
fn fuzz_agent_wire_protocol() {
    use clarity::model::apply::{AgentEvent, ApplyRequest};
    let (event, host) = wire_seeds();
    let both = format!("{event}\n{host}");
    fuzz("agent_wire_protocol", edits(JSON_FRAGMENTS), |e| {
        let text = apply_edits(&both, e);
        let (line, state) = text.split_once('\n').unwrap_or((&text, ""));
        if let Ok(ev) = serde_json::from_str::<AgentEvent>(line) {
            let again: AgentEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap())
                .map_err(|e| TestCaseError::fail(format!("{ev:?} does not read back: {e}")))?;
            prop_assert_eq!(again, ev);
        }
        let _ = clarity::transport::parse_host_state(state.as_bytes());
        let _ = serde_json::from_str::<ApplyRequest>(&text);
        Ok(())
    });
}

/// The push webhook's GitHub signature check: never panics, and accepts exactly the
/// signatures that decode to the body's HMAC under the secret.
#[test]
fn fuzz_webhook_signature() {
    use hmac::{KeyInit, Mac};
    let strategy = (
        "\\PC{0,20}",
        proptest::collection::vec(any::<u8>(), 0..64),
        prop_oneof![
            "\\PC{0,80}",
            "sha256=[0-9a-fA-F]{0,70}",
            Just(String::new()),
            Just("sha256=".to_string()),
        ],
        any::<bool>(),
    );
    fuzz(
        "webhook_signature",
        strategy,
        |(secret, body, given, use_right)| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(body);
            let right = mac.finalize().into_bytes().to_vec();
            let signature = if *use_right {
                format!("sha256={}", hex::encode(&right))
            } else {
                given.clone()
            };
            let accepted = clarity::serve::github_signature_ok(secret, body, &signature);
            let decodes_right = signature
                .trim()
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h).ok())
                .is_some_and(|d| d == right);
            prop_assert_eq!(accepted, decodes_right, "signature {:?}", signature);
            Ok(())
        },
    );
}
