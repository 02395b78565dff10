//! Small things an operator reads in plans and summaries, each checked with the real binary
//! against a real sandbox host: a repair diff names the file the host has (and its hash, read
//! on the host), a restart names the host file it picks up, the summary's DETAIL says what its
//! times are, `--base` ignores an unused version added to a shared artifact file, and the
//! unreachable-host error says the others were planned.

mod support;

use std::process::Output;
use support::sandbox::{Fixture, sha256};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The fixture's deployment with a host file (outside the release) holding `host_text`, on
/// `servers`.
fn deployment_with_host_file(f: &Fixture, host_text: &str, servers: &[&str]) {
    let targets: String = servers
        .iter()
        .map(|s| format!("  - server: {s}\n"))
        .collect();
    f.write(
        "clients/acme/deployments/web/mock.yml",
        &format!(
            "artifact: web\nprofile: mock\nversion: \"1.0.0\"\ntargets:\n{targets}\
             env_vars:\n  PORT: \"{port}\"\n\
             config_files:\n  - destination: conf/greeting.txt\n    content: \"hello\\n\"\n\
             \x20 - destination: /etc/web/limits.conf\n    content: \"{host_text}\\n\"\n\
             service:\n  command: [\"python3\", \"web-1.0.0.py\"]\n\
             health_checks:\n  - type: http\n    url: http://127.0.0.1:{port}/health\n    interval_s: 1\n    retries: 10\n",
            port = f.port
        ),
    );
}

#[test]
fn a_repair_diff_names_the_hosts_file_and_the_summary_labels_its_times() {
    let Some(f) = Fixture::new() else { return };
    let o = f.run(&[], &[]);
    assert!(o.status.success(), "{}", both(&o));
    // The summary row says what each time is, not `0.3s; 1.3s`.
    let row = stdout(&o)
        .lines()
        .find(|l| l.starts_with("sbx-1 "))
        .unwrap()
        .to_string();
    let labelled =
        regex::Regex::new(r"converged +web applied in \d+\.\ds, healthy after \d+\.\ds$").unwrap();
    assert!(labelled.is_match(&row), "{row}");

    // Someone edits the file on the host.
    let release = f.current().unwrap();
    let on_host = f
        .sandbox()
        .join("opt/clarity/web/releases")
        .join(&release)
        .join("conf/greeting.txt");
    assert!(on_host.is_file(), "{}", on_host.display());
    std::fs::write(&on_host, "edited by hand\n").unwrap();
    let host_hash = sha256(&std::fs::read(&on_host).unwrap());

    let o = f.run(&["--dry-run"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    let plan = stdout(&o);
    assert!(!plan.contains("--- /dev/null"), "{plan}");
    assert!(
        plan.contains(&format!(
            "--- a/conf/greeting.txt (on the host: sha256 {}…, content not shown)",
            &host_hash[..12]
        )),
        "{plan}"
    );
    assert!(plan.contains("+hello"), "{plan}");
    // The edited content itself is never shown (it may hold secrets).
    assert!(!plan.contains("edited by hand"), "{plan}");
}

#[test]
fn a_restart_for_a_host_file_names_that_file_not_a_new_release() {
    let Some(f) = Fixture::new() else { return };
    deployment_with_host_file(&f, "max = 1", &["sbx-1"]);
    f.commit("a host file");
    let o = f.run(&[], &[]);
    assert!(o.status.success(), "{}", both(&o));
    let on_host = f.sandbox().join("etc/web/limits.conf");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), "max = 1\n");
    let release = f.current().unwrap();

    deployment_with_host_file(&f, "max = 2", &["sbx-1"]);
    f.commit("only the host file changes");
    let o = f.run(&["--dry-run"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    let plan = stdout(&o);
    assert!(
        plan.contains("~ restart service web (to pick up /etc/web/limits.conf)"),
        "{plan}"
    );
    assert!(!plan.contains("new release"), "{plan}");
    assert!(!plan.contains("switch release"), "{plan}");
    // Applied, the host keeps its release and gets the file.
    let o = f.run(&[], &[]);
    assert!(o.status.success(), "{}", both(&o));
    assert_eq!(f.current(), Some(release));
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), "max = 2\n");
}

fn head(f: &Fixture) -> String {
    support::git(&f.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string()
}

fn changed_since(f: &Fixture, base: &str) -> String {
    let o = f.run(&["--dry-run", "--assume-empty-hosts", "--base", base], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    stdout(&o)
        .lines()
        .find(|l| l.starts_with("Deployments changed since"))
        .unwrap_or_else(|| panic!("{}", both(&o)))
        .to_string()
}

#[test]
fn base_ignores_a_version_added_to_the_shared_artifact_file_and_sees_the_used_one() {
    let Some(f) = Fixture::new() else { return };
    let first = head(&f);
    // A new release of the artifact is announced; the deployment stays on 1.0.0.
    let artifact = f.repo.join("artifacts/web.yml");
    let text = std::fs::read_to_string(&artifact).unwrap();
    let added = format!(
        "{text}  - version: \"2.0.0\"\n    sha256: \"{}\"\n    location: web-2.0.0.py\n",
        "a".repeat(64)
    );
    std::fs::write(&artifact, &added).unwrap();
    f.commit("announce 2.0.0");
    assert_eq!(
        changed_since(&f, &first),
        format!("Deployments changed since {first}: none")
    );
    // The entry the deployment uses changes: that is a change of the deployment.
    let second = head(&f);
    let size = regex::Regex::new(r"(?m)^    size: \d+$").unwrap();
    std::fs::write(&artifact, size.replace(&added, "    size: 7").into_owned()).unwrap();
    f.commit("1.0.0's size corrected");
    assert_eq!(
        changed_since(&f, &second),
        format!("Deployments changed since {second}: acme/web/mock")
    );
}

#[test]
fn an_unreachable_host_does_not_stop_the_others_being_planned_and_the_error_says_so() {
    let Some(f) = Fixture::new() else { return };
    let closed = support::free_port();
    f.write(
        "clients/acme/servers/far-1.yml",
        &format!(
            "hostname: far-1\ndatacenter: lab\nagent:\n  transport: ssh\n  ssh:\n    address: 127.0.0.1\n    port: {closed}\n"
        ),
    );
    deployment_with_host_file(&f, "max = 1", &["sbx-1", "far-1"]);
    f.commit("a second host nobody can reach");
    let o = f.run(
        &[
            "--dry-run",
            "--connect-timeout",
            "1",
            "--known-hosts",
            "/dev/null",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "error: 1 host is unreachable; the plan of the other host is above (pass --allow-unreachable to not fail the run for an unreachable host)"
        ),
        "{err}"
    );
    assert!(!err.contains("to plan the others anyway"), "{err}");
    // The other host was planned indeed: its plan is on stdout.
    let plan = stdout(&o);
    assert!(plan.contains("host sbx-1 (acme): changes"), "{plan}");
    assert!(plan.contains("host far-1 (acme): UNREACHABLE"), "{plan}");
}
