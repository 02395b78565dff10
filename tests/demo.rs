//! The README's main-job command, run as written: the demo applies the example repository's
//! `mock` profile into sandboxes (services started, health checks passing), and the second
//! plan it shows has nothing to do.

mod support;

use std::path::Path;
use std::process::Command;

struct StopDemo<'a>(&'a Path, &'a Path);

impl Drop for StopDemo<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0.join("scripts/demo.sh"))
            .arg("stop")
            .env("CLARITY_DEMO_WORK_DIR", self.1)
            .env("CLARITY_DEMO_BIN", support::clarity_bin())
            .status();
    }
}

#[test]
fn readme_demo_converges_then_has_nothing_to_do() {
    if support::require_program("java").is_none() || support::require_program("python3").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let _stop = StopDemo(root, work.path());
    let out = Command::new(root.join("scripts/demo.sh"))
        .env("CLARITY_DEMO_WORK_DIR", work.path())
        .env("CLARITY_DEMO_BIN", support::clarity_bin())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let table = text.split("RESULT").nth(1).unwrap_or_default();
    for host in [
        "nt-sbx-mon01",
        "nt-sbx-sms01",
        "sw-sbx-mon01",
        "sw-sbx-sms01",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(host) && l.contains("converged")),
            "{host} did not converge:\n{text}"
        );
    }
    assert!(
        text.contains("Plan: 0 hosts to change, 4 unchanged"),
        "{text}"
    );
    let body = ureq::get("http://127.0.0.1:18080/health")
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(body.contains("OK"), "{body}");

    // `demo.sh stop` decommissions the sandboxes: checked on them, not in its output.
    let stop = Command::new(root.join("scripts/demo.sh"))
        .arg("stop")
        .env("CLARITY_DEMO_WORK_DIR", work.path())
        .env("CLARITY_DEMO_BIN", support::clarity_bin())
        .output()
        .unwrap();
    let stopped = format!(
        "{}{}",
        String::from_utf8_lossy(&stop.stdout),
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(stop.status.success(), "{stopped}");
    for host in [
        "nt-sbx-mon01",
        "nt-sbx-sms01",
        "sw-sbx-mon01",
        "sw-sbx-sms01",
    ] {
        let opt = work.path().join("sandboxes").join(host).join("opt/clarity");
        for d in std::fs::read_dir(&opt).unwrap() {
            let d = d.unwrap().path();
            assert!(
                !d.join("current").exists() && !d.join("releases").exists(),
                "{} still has a release after demo.sh stop:\n{stopped}",
                d.display()
            );
        }
    }
    assert!(
        ureq::get("http://127.0.0.1:18080/health").call().is_err(),
        "the demo's gateway still answers after demo.sh stop"
    );
}
