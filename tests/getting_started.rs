//! `docs/getting-started.md` builds a repository from an empty directory: this test runs every
//! `sh` block of that section, as written, in one bash script (with `clarity-reconcile` on the
//! PATH, as the guide's "Build" step sets up), then checks on the sandbox host that what the guide
//! promises is true: the service runs the rendered config, the secret reached only the env
//! file, the ledger records what the host runs, and no output printed the secret.

mod support;

use std::path::Path;
use std::process::Command;

const SECRET: &str = "s3cr3t-hello-token";

/// The `sh` blocks between the guide's begin and end markers, in order.
fn guide_commands() -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/getting-started.md"),
    )
    .unwrap();
    let start = doc
        .find("<!-- getting-started:begin -->")
        .expect("begin marker");
    let end = doc
        .find("<!-- getting-started:end -->")
        .expect("end marker");
    let mut script = String::new();
    let mut in_block = false;
    for line in doc[start..end].lines() {
        match line.trim_end() {
            "```sh" if !in_block => in_block = true,
            "```" if in_block => in_block = false,
            _ if in_block => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(
        script.lines().count() > 50,
        "the guide's blocks were not found:\n{script}"
    );
    script
}

/// Stops the service the guide started (its pidfile names its process group).
struct StopSandboxServices(std::path::PathBuf);

impl Drop for StopSandboxServices {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for e in entries.flatten() {
            if let Some(pid) = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

#[test]
fn the_guide_builds_a_repository_from_nothing_and_it_converges() {
    if !support::require(
        support::find_program("age-keygen").is_some(),
        "age-keygen (package age)",
    ) || !support::require(support::find_program("python3").is_some(), "python3")
        || !support::require(support::find_program("curl").is_some(), "curl")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hello-config");
    let sandbox = repo.join(".clarity/sandboxes/acme-sbx01");
    let _stop = StopSandboxServices(sandbox.join("var/lib/clarity/run"));
    let bin_dir = support::clarity_bin().parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}", guide_commands());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("CLARITY_AGE_IDENTITY")
        .env_remove("CLARITY_WORK_DIR")
        .env("GIT_AUTHOR_NAME", "guide")
        .env("GIT_AUTHOR_EMAIL", "guide@example.net")
        .env("GIT_COMMITTER_NAME", "guide")
        .env("GIT_COMMITTER_EMAIL", "guide@example.net")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the guide's commands failed:\n{stdout}\n{stderr}"
    );
    // The guide's own curl printed the rendered greeting of the first commit.
    assert!(
        stdout.contains("Hello from acme-sbx01 (mock), client Acme Corp"),
        "{stdout}"
    );
    // The install step counts what the release holds: the script and the config file.
    assert!(
        stdout.contains("install release 1.0.0-")
            && stdout.contains(": ok (2 files from hello.py, 1 config file)"),
        "{stdout}"
    );
    // The guide's output never shows the secret, except the one line the guide's curl got back
    // from the service (its reply holds the message, not the token).
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "{stdout}\n{stderr}"
    );

    // On the host: the service now runs the second commit's template.
    let port_reply = Command::new("curl")
        .args([
            "-fsS",
            "-H",
            &format!("Authorization: Bearer {SECRET}"),
            "http://127.0.0.1:18195/",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&port_reply.stdout).trim(),
        "Hi from acme-sbx01 (mock), client Acme Corp"
    );
    let current = std::fs::read_link(sandbox.join("opt/clarity/hello/current")).unwrap();
    let release = current.file_name().unwrap().to_string_lossy().into_owned();
    assert!(release.starts_with("1.0.0-"), "{release}");
    let config =
        std::fs::read_to_string(sandbox.join("opt/clarity/hello/current/hello.json")).unwrap();
    assert!(config.contains("Hi from acme-sbx01"), "{config}");
    assert!(!config.contains(SECRET));
    // The secret reached the env file (and only readable by its owner) and nothing else that
    // Clarity wrote in the repository's work directory except the host's own files.
    let ledger = std::fs::read(repo.join(".clarity/ledger.sqlite")).unwrap();
    assert!(!String::from_utf8_lossy(&ledger).contains(SECRET));

    // The ledger says what the host runs: the release that `current` points at.
    let history = Command::new(support::clarity_bin())
        .args(["history", "--output", "json"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(
        history.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let text = runs.to_string();
    assert!(
        text.contains(&release),
        "the ledger does not name {release}: {text}"
    );
    assert!(!text.contains(SECRET));
}
