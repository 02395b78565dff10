//! Security findings 2, 3 and 7 (rendered output) with the real binary on a copy of the
//! example repository whose secrets are a canary encrypted to a fresh age key: every way a
//! template could transform or echo a secret is a `validate` error at file:line:col naming the
//! secret, and neither `validate` nor a `--dry-run` in any output format ever prints the value;
//! `${ENV:NAME}` reads only names the reconciler allows; a template asking for 100 MB fails
//! fast.

mod support;

use support::text;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const CANARY: &str = "CANARY-tmpl-9d30b1";
const TEMPLATE: &str = "templates/smsgateway/gateway.properties.j2";

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::clarity_bin());
    // At the most verbose log level: what is logged must be as free of the canary as what is
    // printed.
    cmd.args(args)
        .env_remove("CLARITY_AGE_IDENTITY")
        .env_remove("CLARITY_ALLOW_ENV")
        .env("CLARITY_LOG", "trace")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The example with every nordtel mock secret a canary; returns (dir, repo, identity file).
fn canary_repo() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config");
    support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"),
        &repo,
    );
    let identity = age::x25519::Identity::generate();
    let recipients = clarity::secret::Recipients::parse(&identity.to_public().to_string()).unwrap();
    for client in ["nordtel", "sunwave"] {
        let path = repo.join(format!("secrets/{client}/mock.yml"));
        let entries =
            clarity::secret::file::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut out = std::collections::BTreeMap::new();
        for name in entries.keys() {
            out.insert(
                name.clone(),
                clarity::secret::encrypt(&format!("{CANARY}-{name}"), &recipients).unwrap(),
            );
        }
        std::fs::write(&path, clarity::secret::file::render("# canary\n", &out)).unwrap();
    }
    let key = dir.path().join("canary.agekey");
    std::fs::write(
        &key,
        format!(
            "{}\n",
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string())
        ),
    )
    .unwrap();
    (dir, repo, key)
}

/// Every way of printing the canary in some transformed form that the review found (and a
/// few more), as a line appended to the template; with the column of `secret` in it.
const MISUSES: &[(&str, &str)] = &[
    ("upper", "x={{ secret(\"smpp_password\")|upper }}"),
    ("reverse", "x={{ secret(\"smpp_password\")|reverse }}"),
    (
        "list|join",
        "x={{ secret(\"smpp_password\")|list|join(\" \") }}",
    ),
    ("slicing", "x={{ secret(\"smpp_password\")[0:3] }}"),
    (
        "iterating chars",
        "x={% for c in secret(\"smpp_password\") %}{{ c }}.{% endfor %}",
    ),
    (
        "concatenation",
        "x={{ \"pw:\" ~ secret(\"smpp_password\") }}",
    ),
    ("include", "x={% include secret(\"smpp_password\") %}"),
    ("import", "x={% import secret(\"smpp_password\") as m %}"),
    ("extends", "x={% extends secret(\"smpp_password\") %}"),
    ("a test", "x={{ secret(\"smpp_password\") is string }}"),
    (
        "set",
        "x={% set p = secret(\"smpp_password\") %}{{ p|upper }}",
    ),
];

#[test]
fn every_transformation_of_a_secret_is_a_validate_error_and_nothing_prints_it() {
    let (dir, repo, key) = canary_repo();
    let r = repo.to_str().unwrap();
    let k = key.to_str().unwrap();
    let w = dir.path().join("work");
    let w = w.to_str().unwrap();
    let original = std::fs::read_to_string(repo.join(TEMPLATE)).unwrap();
    // The canary is really decryptable with this key: otherwise the test proves nothing.
    let get = run(
        &[
            "--repo",
            r,
            "--client",
            "nordtel",
            "--profile",
            "mock",
            "secret",
            "get",
            "smpp_password",
            "--age-identity",
            k,
        ],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&get.stdout).contains(CANARY),
        "{}",
        text(&get)
    );
    let line = original.lines().count() + 1;
    for (what, misuse) in MISUSES {
        std::fs::write(repo.join(TEMPLATE), format!("{original}{misuse}\n")).unwrap();
        let column = misuse.find("secret").unwrap() + 1;
        let v = run(&["--repo", r, "validate"], &[]);
        let out = text(&v);
        assert_eq!(v.status.code(), Some(1), "{what}: {out}");
        assert!(
            out.contains(&format!("{TEMPLATE}:{line}:{column}: error[secret-misuse]"))
                && out.contains("secret `smpp_password`"),
            "{what}: no error at the secret's position:\n{out}"
        );
        let mut outputs = vec![
            ("validate", v),
            (
                "validate json",
                run(&["--repo", r, "validate", "--output", "json"], &[]),
            ),
        ];
        for format in ["text", "json", "markdown"] {
            let plan = run(
                &[
                    "--repo",
                    r,
                    "--profile",
                    "mock",
                    "--dry-run",
                    "--output",
                    format,
                    "--work-dir",
                    w,
                    "--age-identity",
                    k,
                ],
                &[],
            );
            assert_eq!(
                plan.status.code(),
                Some(1),
                "{what} {format}: {}",
                text(&plan)
            );
            outputs.push(("dry-run", plan));
        }
        for (how, o) in &outputs {
            let out = text(o);
            assert!(
                !out.contains(CANARY),
                "{what}: {how} printed the canary:\n{out}"
            );
            let upper = CANARY.to_uppercase();
            let reversed: String = CANARY.chars().rev().collect();
            assert!(
                !out.contains(&upper) && !out.contains(&reversed) && !out.contains("C A N"),
                "{what}: {how} printed a transformed canary:\n{out}"
            );
        }
    }
    // The untouched template still plans, with the value redacted in every format.
    std::fs::write(repo.join(TEMPLATE), &original).unwrap();
    for format in ["text", "json"] {
        let plan = run(
            &[
                "--repo",
                r,
                "--profile",
                "mock",
                "--dry-run",
                "--output",
                format,
                "--work-dir",
                w,
                "--age-identity",
                k,
            ],
            &[],
        );
        assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
        assert!(!text(&plan).contains(CANARY), "{}", text(&plan));
        assert!(text(&plan).contains("(sensitive)"), "{}", text(&plan));
    }
}

#[test]
fn a_template_asking_for_100_megabytes_fails_validate_fast() {
    let (_dir, repo, _key) = canary_repo();
    let original = std::fs::read_to_string(repo.join(TEMPLATE)).unwrap();
    let line = original.lines().count() + 1;
    std::fs::write(
        repo.join(TEMPLATE),
        format!("{original}pad={{{{ \"A\" * 100000000 }}}}\n"),
    )
    .unwrap();
    let started = Instant::now();
    let v = run(&["--repo", repo.to_str().unwrap(), "validate"], &[]);
    let took = started.elapsed();
    let out = text(&v);
    assert_eq!(v.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("{TEMPLATE}:{line}:12: error[template-limit]")),
        "{out}"
    );
    assert!(took < Duration::from_secs(10), "validate took {took:?}");
}

#[test]
fn env_references_read_only_what_the_reconciler_allows() {
    let (dir, repo, _key) = canary_repo();
    let r = repo.to_str().unwrap();
    let w = dir.path().join("work");
    let w = w.to_str().unwrap();
    let file = repo.join("clients/nordtel/deployments/smsgateway/mock.yml");
    let original = std::fs::read_to_string(&file).unwrap();
    let (line, column) = {
        let at = original.find("    name: nordtel-smsgw-demo").unwrap();
        (original[..at].lines().count() + 1, "    name: ".len() + 1)
    };
    std::fs::write(
        &file,
        original.replace(
            "    name: nordtel-smsgw-demo",
            "    name: \"${ENV:CI_JOB_TOKEN}\"",
        ),
    )
    .unwrap();
    let token = [("CI_JOB_TOKEN", CANARY)];
    // By default no variable may be read, and the error sits at the reference.
    let v = run(&["--repo", r, "validate", "--deny-warnings"], &token);
    let out = text(&v);
    assert_eq!(v.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "clients/nordtel/deployments/smsgateway/mock.yml:{line}:{column}: error[env-not-allowed]"
        )),
        "{out}"
    );
    let plan = run(
        &[
            "--repo",
            r,
            "--profile",
            "mock",
            "--dry-run",
            "--work-dir",
            w,
        ],
        &token,
    );
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    for o in [&v, &plan] {
        assert!(!text(o).contains(CANARY), "{}", text(o));
    }
    // Allowing another name does not allow this one.
    let other = run(&["--repo", r, "--allow-env", "HOME", "validate"], &token);
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    // The operator allows it, on the command line or in the environment.
    let allowed = run(
        &[
            "--repo",
            r,
            "--allow-env",
            "CI_JOB_TOKEN",
            "validate",
            "--deny-warnings",
        ],
        &token,
    );
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed));
    let plan = run(
        &[
            "--repo",
            r,
            "--profile",
            "mock",
            "--dry-run",
            "--work-dir",
            w,
        ],
        &[
            ("CI_JOB_TOKEN", "visible-because-allowed"),
            ("CLARITY_ALLOW_ENV", "USER,CI_JOB_TOKEN"),
        ],
    );
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        text(&plan).contains("visible-because-allowed"),
        "{}",
        text(&plan)
    );
}
