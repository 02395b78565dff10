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
