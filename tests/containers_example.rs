//! The example repository's container deployments (a Docker status board and the monitoring
//! stack as an LXC container, in staging and prod) validate and plan with their container
//! steps, and the mock demo stays free of containers (it needs no runtime).

mod support;

use std::path::Path;
use std::process::Command;

fn plan(profile: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let o = Command::new(support::clarity_bin())
        .args(["--repo"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"))
        .args(["--profile", profile, "--dry-run", "--assume-empty-hosts"])
        .arg("--work-dir")
        .arg(work.path())
        .env("NO_COLOR", "1")
        .env_remove("CLARITY_AGE_IDENTITY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

#[test]
fn staging_and_prod_plan_the_docker_and_lxc_deployments() {
    for profile in ["staging", "prod"] {
        let p = plan(profile);
        for s in [
            "+ status-board 3.",
            "? load image status-board",
            "(known after apply: the image id is known once the archive is loaded)",
            "+ create container clarity-status-board-",
            "port 8088 → 8080/tcp, volume /srv/telco/status-board → /var/lib/status-board, network bridge, dns 192.0.2.53,192.0.2.54, memory 256 MiB, cpu 50%, restart on-failure",
            "~ start container clarity-status-board-",
            "? health check board-config",
            "+ monitoring-stack-lxc 2.4.0",
            "+ create container clarity-monitoring-stack-lxc-2.4.0-",
            "network host",
            "start at boot",
            "~ prune containers monitoring-stack-lxc",
        ] {
            assert!(p.contains(s), "{profile} plan lacks `{s}`:\n{p}");
        }
        assert!(
            !p.contains("load image monitoring-stack-lxc"),
            "an lxc artifact has no image to load:\n{p}"
        );
    }
}

#[test]
fn the_mock_demo_plans_no_containers() {
    let p = plan("mock");
    for s in ["load image", "create container", "start container"] {
        assert!(!p.contains(s), "mock plan has `{s}`:\n{p}");
    }
}

/// Replaces `from` by `to` in `file` below `root` and returns the 1-based line of `mark`.
fn inject(root: &Path, file: &str, from: &str, to: &str, mark: &str) -> usize {
    let p = root.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{file} lacks `{from}`");
    let text = text.replacen(from, to, 1);
    std::fs::write(&p, &text).unwrap();
    let at = text
        .find(mark)
        .unwrap_or_else(|| panic!("{file} lacks `{mark}`"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn bad_container_settings_are_all_reported_with_their_positions() {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"),
        dir.path(),
    );
    let root = dir.path();
    let deps = "clients/nordtel/deployments";
    let cases = [
        (
            format!("{deps}/status-board/prod.yml"),
            "host_path: /srv/telco/status-board",
            "host_path: /var/lib/status-board",
            "/var/lib/status-board",
            "path-escape",
        ),
        (
            format!("{deps}/status-board/staging.yml"),
            "dns: [192.0.2.53, 192.0.2.54]",
            "dns: [192.0.2.53, dns.example]",
            "dns.example",
            "container-settings",
        ),
        (
            format!("{deps}/status-board/prod.yml"),
            "external: 8088",
            "external: 9100",
            "9100",
            "port-conflict",
        ),
        (
            format!("{deps}/monitoring-stack-lxc/prod.yml"),
            "    mode: host",
            "    mode: bridge",
            "mode: bridge",
            "container-settings",
        ),
        (
            format!("{deps}/monitoring-stack/staging.yml"),
            "health_checks:",
            "container:\n  init: true\nhealth_checks:",
            "init: true",
            "container-settings",
        ),
    ];
    let mut expected = Vec::new();
    for (file, from, to, mark, code) in &cases {
        let line = inject(root, file, from, to, mark);
        expected.push(format!("{file}:{line}:"));
        expected.push(format!("error[{code}]"));
    }
    let o = Command::new(support::clarity_bin())
        .args(["validate", "--repo"])
        .arg(root)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{out}");
    for e in &expected {
        assert!(out.contains(e.as_str()), "validate lacks `{e}`:\n{out}");
    }
    assert!(out.contains("5 errors"), "{out}");
}
