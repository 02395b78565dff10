//! `--dry-run` with the real binary on the example repository: exit codes, every step for every
//! mock host, JSON that validates against the published schema, `--base`, and a canary secret
//! that must never appear in any output, the most verbose logs included.

mod support;

use support::text;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo")
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::clarity_bin());
    cmd.args(args)
        .env_remove("CLARITY_AGE_IDENTITY")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const MOCK_HOSTS: [&str; 4] = [
    "nt-sbx-mon01",
    "nt-sbx-sms01",
    "sw-sbx-mon01",
    "sw-sbx-sms01",
];

#[test]
fn mock_dry_run_on_empty_sandboxes_lists_every_step_and_exits_2() {
    let work = tempfile::tempdir().unwrap();
    let repo = example();
    let o = run(
        &[
            "--repo",
            repo.to_str().unwrap(),
            "--profile",
            "mock",
            "--dry-run",
            "--work-dir",
            work.path().to_str().unwrap(),
        ],
        &[],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    for host in MOCK_HOSTS {
        assert!(
            out.contains(&format!("host {host} (")),
            "{host} missing:\n{out}"
        );
    }
    let json = run(
        &[
            "--repo",
            repo.to_str().unwrap(),
            "--profile",
            "mock",
            "--dry-run",
            "--output",
            "json",
            "--work-dir",
            work.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(json.status.code(), Some(2));
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let hosts = plan["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts
        .iter()
        .map(|h| h["server"].as_str().unwrap())
        .collect();
    assert_eq!(names, MOCK_HOSTS);
    for h in hosts {
        assert_eq!(h["status"], "changes");
        for d in h["deployments"].as_array().unwrap() {
            let actions: Vec<&str> = d["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["action"].as_str().unwrap())
                .collect();
            for needed in [
                "fetch_artifact",
                "install_release",
                "install_service",
                "switch_release",
                "start_service",
            ] {
                assert!(
                    actions.contains(&needed),
                    "{} on {}: {actions:?}",
                    d["name"],
                    h["server"]
                );
            }
        }
    }
    // Nothing was created by planning.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&plan)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn hosts_that_cannot_be_reached_fail_the_dry_run_unless_allowed() {
    // A copy of the example whose Oslo SMS host points at a loopback port nothing listens on:
    // unreachable without ever leaving the machine (the example's own addresses are paper
    // addresses, refused before any connection; tests/example_addresses.rs).
    let work = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    support::copy_dir(&example(), repo.path());
    let server = repo
        .path()
        .join("clients/nordtel/servers/nt-osl1-sms01.yml");
    let text_of = std::fs::read_to_string(&server).unwrap();
    let closed = support::free_port();
    let text_of = text_of.replace(
        "    address: 192.0.2.43\n",
        &format!("    address: 127.0.0.1\n    port: {closed}\n"),
    );
    assert!(text_of.contains("127.0.0.1"), "{text_of}");
    std::fs::write(&server, text_of).unwrap();
    support::git(repo.path(), &["init", "-q"]);
    support::git(repo.path(), &["add", "-A"]);
    support::git(
        repo.path(),
        &["commit", "-q", "-m", "example with a closed port"],
    );
    let base = [
        "--repo",
        repo.path().to_str().unwrap(),
        "--server",
        "nt-osl1-sms01",
        "--dry-run",
        "--work-dir",
        work.path().to_str().unwrap(),
        "--connect-timeout",
        "1",
        "--known-hosts",
        "/dev/null",
    ];
    let o = run(&base, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("unreachable (pass --allow-unreachable"),
        "{}",
        text(&o)
    );
    let mut allowed = base.to_vec();
    allowed.push("--allow-unreachable");
    let o = run(&allowed, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("UNREACHABLE"));
    // Hosts it could not inspect may have changes pending: never "nothing to do".
    assert!(
        text(&o).contains("not inspected (unreachable) and may have changes pending; exit 2"),
        "{}",
        text(&o)
    );
}

#[test]
fn markdown_output_is_a_pull_request_comment() {
    let work = tempfile::tempdir().unwrap();
    let repo = example();
    let o = run(
        &[
            "--repo",
            repo.to_str().unwrap(),
            "--profile",
            "mock",
            "--dry-run",
            "--output",
            "markdown",
            "--work-dir",
            work.path().to_str().unwrap(),
        ],
        &[],
    );
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.starts_with("### Clarity plan for "), "{md}");
    assert!(md.contains("| host | client | status | deployments |"));
    assert!(md.contains("```diff"));
}

#[test]
fn base_lists_exactly_the_deployments_a_template_change_touches() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config");
    support::copy_dir(&example(), &repo);
    support::git(&repo, &["init", "-q"]);
    support::git(&repo, &["add", "-A"]);
    support::git(&repo, &["commit", "-qm", "base"]);
    let t = repo.join("templates/monitoring-stack/exporter.conf.j2");
    let body = std::fs::read_to_string(&t).unwrap();
    std::fs::write(&t, body.replacen("\"listen\"", "\"listen_address\"", 1)).unwrap();
    support::git(&repo, &["commit", "-qam", "rename listen key"]);
    let work = dir.path().join("work");
    let o = run(
        &[
            "--repo",
            repo.to_str().unwrap(),
            "--profile",
            "mock",
            "--dry-run",
            "--base",
            "HEAD~1",
            "--output",
            "json",
            "--work-dir",
            work.to_str().unwrap(),
        ],
        &[],
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    let changed: Vec<&str> = plan["changed_since_base"]["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let expected: Vec<String> = std::fs::read_dir(repo.join("clients"))
        .unwrap()
        .flat_map(|c| {
            let c = c.unwrap().path();
            let client = c.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::read_dir(c.join("deployments/monitoring-stack"))
                .into_iter()
                .flatten()
                .map(move |p| {
                    format!(
                        "{client}/monitoring-stack/{}",
                        p.unwrap().path().file_stem().unwrap().to_string_lossy()
                    )
                })
        })
        .collect();
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(changed, expected);
}

const CANARY: &str = "CANARY-plan-41c7e2";

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// Stops every sandbox service an apply in `work` started.
struct StopSandboxes(PathBuf);

impl Drop for StopSandboxes {
    fn drop(&mut self) {
        use clarity::service::ServiceBackend;
        for sandbox in std::fs::read_dir(self.0.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let run = sandbox.path().join("var/lib/clarity/run");
            let backend = clarity::service::ProcessBackend::new(run.clone());
            for spec in std::fs::read_dir(&run).into_iter().flatten().flatten() {
                let name = spec.file_name().to_string_lossy().into_owned();
                if let Some(service) = name.strip_suffix(".json") {
                    let _ = backend.stop(service);
                }
            }
        }
    }
}

/// A copy of the example with every mock secret replaced by a canary value encrypted to a
/// fresh key; returns (dir, identity file).
fn canary_repo() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config");
    support::copy_dir(&example(), &repo);
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let recipients = clarity::secret::Recipients::parse(&recipient).unwrap();
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
    // Applying needs a commit.
    support::git(&repo, &["init", "-q"]);
    support::git(&repo, &["add", "-A"]);
    support::git(&repo, &["commit", "-qm", "canary"]);
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

#[test]
fn canary_secret_never_appears_in_validate_plans_or_errors() {
    let (dir, repo, key) = canary_repo();
    let work = dir.path().join("work");
    let r = repo.to_str().unwrap();
    let w = work.to_str().unwrap();
    let k = key.to_str().unwrap();
    // The canary is really there and decryptable: otherwise the test proves nothing.
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

    // Everything runs at the most verbose log level too (CLARITY_LOG=trace, or -vv), in both
    // log formats: what is logged must be as free of the value as what is printed.
    let trace = [("CLARITY_LOG", "trace")];
    let mut outputs = vec![("validate", run(&["--repo", r, "validate"], &trace))];
    for (format, log_format) in [("text", "text"), ("json", "json"), ("markdown", "text")] {
        let o = run(
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
                "--log-format",
                log_format,
            ],
            &trace,
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let out = text(&o);
        assert!(
            out.contains("(sensitive)"),
            "the secret is not used where the test expects it:\n{out}"
        );
        outputs.push((format, o));
    }
    // A real apply into sandboxes: its output, and every file the agent keeps for itself
    // (state, journal, cache, logs), must not carry the value; only the deployed files that
    // need it may.
    let applied = run(
        &[
            "--repo",
            r,
            "--profile",
            "mock",
            "--work-dir",
            w,
            "--age-identity",
            k,
            "-vv",
            "--log-format",
            "json",
        ],
        &[],
    );
    let stop = StopSandboxes(work.clone());
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    // The apply's steps were logged (at trace, with their fields), so the scan below covers them.
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(
        stderr.contains("\"action\":\"write env file\"") && stderr.contains("\"level\":\"DEBUG\""),
        "the apply logged no steps at -vv:\n{stderr}"
    );
    let mut needs_it = Vec::new();
    for file in walk(&work) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        if String::from_utf8_lossy(&bytes).contains(CANARY) {
            needs_it.push(file.strip_prefix(&work).unwrap().display().to_string());
        }
    }
    needs_it.sort();
    for f in &needs_it {
        assert!(
            f.contains("/releases/") && f.ends_with("conf/gateway.properties")
                || f.ends_with("/env"),
            "the canary is in {f}"
        );
    }
    assert!(
        !needs_it.is_empty(),
        "the deployed files should carry the secret"
    );
    outputs.push(("apply", applied));
    drop(stop);
    // The run's git note on the applied commit (notes are compressed in the object store, so
    // read them back through git).
    let note = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["notes", "--ref=clarity", "show", "HEAD"])
        .output()
        .unwrap();
    assert!(
        note.status.success() && !note.stdout.is_empty(),
        "the apply wrote no note"
    );
    outputs.push(("git note", note));
    // An error while rendering a template that also renders a secret.
    let t = repo.join("templates/smsgateway/gateway.properties.j2");
    let body = std::fs::read_to_string(&t).unwrap();
    std::fs::write(
        &t,
        format!("{body}\nbroken={{{{ config.no_such_value }}}}\n"),
    )
    .unwrap();
    let failing = run(
        &[
            "--repo",
            r,
            "--profile",
            "mock",
            "--dry-run",
            "--work-dir",
            w,
            "--age-identity",
            k,
        ],
        &trace,
    );
    assert_ne!(failing.status.code(), Some(0));
    assert!(
        text(&failing).contains("gateway.properties.j2"),
        "{}",
        text(&failing)
    );
    outputs.push(("template error", failing));
    outputs.push((
        "validate with error",
        run(&["--repo", r, "validate", "--output", "json"], &trace),
    ));
    for (what, o) in &outputs {
        assert!(
            !text(o).contains(CANARY),
            "{what} leaked the canary:\n{}",
            text(o)
        );
    }
}
