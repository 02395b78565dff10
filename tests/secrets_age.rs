//! Secrets against the real world: interop with the `age` command-line tool in both
//! directions (what `age -a -r` encrypts, Clarity decrypts; what `clarity-reconcile secret
//! set` writes, `age -d -i` decrypts), and a canary value that must never show up in any
//! output except `secret get`'s. Without `age` installed these tests skip on a developer machine;
//! under CI (`CI=true` or `CI=1`, `support::in_ci`) a missing `age` is a failure (the test script
//! installs it).

mod support;

use support::text;

use clarity::secret::{Identities, decrypt, file};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_clarity-reconcile");
const CANARY: &str = "CANARY-7f3a9c-do-not-print";

/// Whether the `age` tools are there; under CI (`support::in_ci`) their absence panics, as
/// every other prerequisite's does.
fn age_available() -> bool {
    let works = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    support::require(
        works("age") && works("age-keygen"),
        "the age CLI (`age`, `age-keygen`; Debian package `age`)",
    )
}

/// A config repository (plain directory) with clients acme and globex, each with its own
/// age key listed in its recipients.txt, and initech without recipients.
struct Repo {
    dir: tempfile::TempDir,
    keys: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let repo = Repo { dir, keys };
        for (id, code) in [
            ("acme", "ACME"),
            ("globex", "GLOBEX"),
            ("initech", "INITECH"),
        ] {
            repo.write(
                &format!("clients/{id}/client.yml"),
                &format!("id: {id}\ncode: {code}\nname: {id} Ltd\n"),
            );
        }
        for client in ["acme", "globex"] {
            let key = repo.key(client);
            let out = Command::new("age-keygen")
                .arg("-o")
                .arg(&key)
                .output()
                .unwrap();
            assert!(out.status.success(), "age-keygen: {out:?}");
            repo.write(
                &format!("secrets/{client}/recipients.txt"),
                &format!(
                    "# who may read {client}'s secrets\n\n{}\n",
                    repo.public_key(client)
                ),
            );
        }
        repo
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn key(&self, client: &str) -> PathBuf {
        self.keys.path().join(format!("{client}.agekey"))
    }

    fn public_key(&self, client: &str) -> String {
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(self.key(client))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap()
    }

    /// Runs the real binary on this repo with `stdin` piped in; the caller's
    /// CLARITY_AGE_IDENTITY never leaks into the test.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_with(self.root(), args, stdin)
    }
}

fn run_with(repo: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("CLARITY_AGE_IDENTITY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses early exits without reading stdin: a closed pipe is expected.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().unwrap()
}

/// Runs an `age` tool with `stdin`, returning stdout (and asserting success).
fn age(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("age")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn what_age_encrypts_clarity_decrypts() {
    if !age_available() {
        return;
    }
    let repo = Repo::new();
    let value = "pa55 wörd: with spaces\tand a tab";
    let enc = age(&["-a", "-r", &repo.public_key("acme")], value.as_bytes());
    assert!(enc.status.success(), "{}", text(&enc));
    let armored = String::from_utf8(enc.stdout).unwrap();
    assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));

    // The library, directly.
    let ids = Identities::from_file(&repo.key("acme")).unwrap();
    assert_eq!(decrypt(&armored, &ids).unwrap().expose(), value);

    // The binary, from a secrets file written the way an operator would by hand.
    let block: String = armored.lines().map(|l| format!("  {l}\n")).collect();
    repo.write(
        "secrets/acme/prod.yml",
        &format!("# by hand\ndb_password: |\n{block}"),
    );
    let valid = repo.run(&["validate"], "");
    assert!(valid.status.success(), "{}", text(&valid));
    let key = repo.key("acme");
    let got = repo.run(
        &[
            "secret",
            "get",
            "--client",
            "acme",
            "--profile",
            "prod",
            "db_password",
            "--age-identity",
            key.to_str().unwrap(),
        ],
        "",
    );
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(String::from_utf8(got.stdout).unwrap(), value);
}

#[test]
fn what_clarity_encrypts_age_decrypts_and_only_for_its_client() {
    if !age_available() {
        return;
    }
    let repo = Repo::new();
    let set = |name: &str, stdin: &str, extra: &[&str]| {
        let mut args = vec![
            "secret",
            "set",
            "--client",
            "acme",
            "--profile",
            "staging",
            name,
        ];
        args.extend_from_slice(extra);
        let out = repo.run(&args, stdin);
        assert!(out.status.success(), "{}", text(&out));
        out
    };
    set("api_token", "tok-123\n", &[]);
    set("motd", "line one\nline two\n", &["--keep-newline"]);
    // Replacing one entry keeps the other and the file's leading comment.
    set("api_token", "tok-456\n", &[]);
    let written = repo.read("secrets/acme/staging.yml");
    assert!(written.starts_with("# Secrets of client acme"), "{written}");
    let entries = file::parse(&written).unwrap();
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        vec!["api_token", "motd"]
    );

    let acme_key = repo.key("acme");
    let globex_key = repo.key("globex");
    for (name, expected) in [("api_token", "tok-456"), ("motd", "line one\nline two\n")] {
        let dec = age(
            &["-d", "-i", acme_key.to_str().unwrap()],
            entries[name].as_bytes(),
        );
        assert!(dec.status.success(), "{}", text(&dec));
        assert_eq!(String::from_utf8(dec.stdout).unwrap(), expected);
        // Client isolation holds for the reference implementation too.
        let other = age(
            &["-d", "-i", globex_key.to_str().unwrap()],
            entries[name].as_bytes(),
        );
        assert!(!other.status.success());
    }

    // The file `set` wrote is a valid secrets file to the loader.
    let valid = repo.run(&["validate"], "");
    assert!(valid.status.success(), "{}", text(&valid));
    let listed = repo.run(&["secret", "list", "--output", "json"], "");
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(json[0]["client"], "acme");
    assert_eq!(json[0]["names"], serde_json::json!(["api_token", "motd"]));
}

#[test]
fn rekey_follows_the_recipients_file() {
    if !age_available() {
        return;
    }
    let repo = Repo::new();
    let out = repo.run(
        &[
            "secret",
            "set",
            "--client",
            "acme",
            "--profile",
            "prod",
            "db",
        ],
        "v1",
    );
    assert!(out.status.success(), "{}", text(&out));
    let globex_key = repo.key("globex");
    let acme_key = repo.key("acme");
    let get_with = |key: &Path| {
        repo.run(
            &[
                "secret",
                "get",
                "--client",
                "acme",
                "--profile",
                "prod",
                "db",
                "--age-identity",
                key.to_str().unwrap(),
            ],
            "",
        )
    };
    assert!(!get_with(&globex_key).status.success());
    // Add a second key for acme (here: globex's, to have a second real key), then rekey.
    let recipients = repo.read("secrets/acme/recipients.txt");
    repo.write(
        "secrets/acme/recipients.txt",
        &format!("{recipients}{}\n", repo.public_key("globex")),
    );
    let rekey = repo.run(
        &[
            "secret",
            "rekey",
            "--client",
            "acme",
            "--age-identity",
            acme_key.to_str().unwrap(),
        ],
        "",
    );
    assert!(rekey.status.success(), "{}", text(&rekey));
    assert!(
        text(&rekey).contains("rekeyed acme/prod"),
        "{}",
        text(&rekey)
    );
    let got = get_with(&globex_key);
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(got.stdout, b"v1");
    // Rekeying with a key that cannot decrypt fails and writes nothing.
    let out = repo.run(
        &[
            "secret",
            "set",
            "--client",
            "globex",
            "--profile",
            "prod",
            "db",
        ],
        "g1",
    );
    assert!(out.status.success(), "{}", text(&out));
    let before = repo.read("secrets/globex/prod.yml");
    let refused = repo.run(
        &[
            "secret",
            "rekey",
            "--client",
            "globex",
            "--age-identity",
            acme_key.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("not a recipient of client globex's secrets"));
    assert_eq!(repo.read("secrets/globex/prod.yml"), before);
}

#[test]
fn the_canary_reaches_no_output_but_secret_get() {
    if !age_available() {
        return;
    }
    let repo = Repo::new();
    let acme_key = repo.key("acme");
    let globex_key = repo.key("globex");
    let acme_key = acme_key.to_str().unwrap();
    let globex_key = globex_key.to_str().unwrap();
    let base = ["--client", "acme", "--profile", "prod"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| s.to_string())
            .chain(base.iter().map(|s| s.to_string()))
            .collect()
    };
    let mut outputs: Vec<(String, Output)> = Vec::new();
    let mut record = |label: &str, args: Vec<String>, stdin: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = repo.run(&args, stdin);
        outputs.push((label.to_string(), out));
    };

    record("set", with(&["secret", "set", "db_password"]), CANARY);
    record(
        "set json",
        with(&["secret", "set", "other", "--output", "json"]),
        "not the canary",
    );
    record("list", vec!["secret".into(), "list".into()], "");
    record(
        "list json",
        vec![
            "secret".into(),
            "list".into(),
            "--output".into(),
            "json".into(),
        ],
        "",
    );
    record("validate", vec!["validate".into()], "");
    record(
        "validate json",
        vec!["validate".into(), "--output".into(), "json".into()],
        "",
    );
    record(
        "get, wrong identity",
        with(&["secret", "get", "db_password", "--age-identity", globex_key]),
        "",
    );
    record(
        "get, no identity",
        with(&["secret", "get", "db_password"]),
        "",
    );
    record(
        "get, unknown name",
        with(&["secret", "get", "db_passwort", "--age-identity", acme_key]),
        "",
    );
    record(
        "rekey",
        vec![
            "secret".into(),
            "rekey".into(),
            "--client".into(),
            "acme".into(),
            "--age-identity".into(),
            acme_key.into(),
        ],
        "",
    );
    record(
        "rekey, wrong identity",
        vec![
            "secret".into(),
            "rekey".into(),
            "--client".into(),
            "acme".into(),
            "--age-identity".into(),
            globex_key.into(),
        ],
        "",
    );
    record(
        "get",
        with(&["secret", "get", "db_password", "--age-identity", acme_key]),
        "",
    );

    let (last, rest) = outputs.split_last().unwrap();
    for (label, out) in rest {
        assert!(
            !text(out).contains(CANARY),
            "{label} printed the canary:\n{}",
            text(out)
        );
    }
    let expected_ok = [
        "set",
        "set json",
        "list",
        "list json",
        "validate",
        "validate json",
        "rekey",
    ];
    for (label, out) in rest {
        assert_eq!(
            out.status.success(),
            expected_ok.contains(&label.as_str()),
            "{label}: {}",
            text(out)
        );
    }
    assert!(text(&rest[6].1).contains("hint: this identity is not a recipient"));
    assert!(last.1.status.success(), "{}", text(&last.1));
    assert_eq!(String::from_utf8_lossy(&last.1.stdout), CANARY);
    assert!(!repo.read("secrets/acme/prod.yml").contains(CANARY));
}

#[test]
fn refusals_say_what_and_how() {
    if !age_available() {
        return;
    }
    let repo = Repo::new();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "secret",
                "set",
                "--client",
                "nope",
                "--profile",
                "prod",
                "a",
            ],
            "unknown client `nope`",
        ),
        (
            &["secret", "set", "--client", "acme", "--profile", "qa", "a"],
            "unknown profile `qa`",
        ),
        (
            &[
                "secret",
                "set",
                "--client",
                "acme",
                "--profile",
                "prod",
                "9lives",
            ],
            "not a valid secret name",
        ),
        (
            &[
                "secret",
                "set",
                "--client",
                "initech",
                "--profile",
                "prod",
                "a",
            ],
            "has no recipients",
        ),
        (
            &["secret", "set", "--client", "acme", "a"],
            "needs --client and --profile",
        ),
        (
            &[
                "secret",
                "set",
                "--client",
                "acme",
                "--profile",
                "prod",
                "--rev",
                "HEAD",
                "a",
            ],
            "--rev does not apply",
        ),
    ];
    for (args, message) in cases {
        let out = repo.run(args, "stdin-marker-93");
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {shown}");
        assert!(
            shown.contains("error: ") && shown.contains(message),
            "{args:?}: {shown}"
        );
        assert!(shown.contains("hint: "), "{args:?}: {shown}");
        assert!(
            !shown.contains("stdin-marker"),
            "{args:?} echoed its input: {shown}"
        );
    }
    assert!(!repo.root().join("secrets/initech").exists());
    assert!(!repo.root().join("secrets/acme/prod.yml").exists());

    // A private key pasted into recipients.txt is caught by validate, with the line.
    let secret_key = std::fs::read_to_string(repo.key("globex")).unwrap();
    let secret_line = secret_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    repo.write(
        "secrets/initech/recipients.txt",
        &format!("# oops\n{secret_line}\n"),
    );
    let valid = repo.run(&["validate"], "");
    let shown = text(&valid);
    assert!(!valid.status.success());
    assert!(
        shown.contains("secrets/initech/recipients.txt:2:1") && shown.contains("private key"),
        "{shown}"
    );
    assert!(
        !shown.contains(secret_line),
        "validate echoed a private key"
    );
}
