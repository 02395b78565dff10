//! The units in `systemd/` pass `systemd-analyze verify` on a real systemd (a Debian container
//! booted with nspawn) with no warnings at all: an unknown or misspelt key only warns, so the
//! test reads stderr, not just the exit status.

mod support;

use std::path::Path;
use support::nspawn::{Options, Testbed};

#[test]
fn shipped_units_verify_without_warnings() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let Some(bed) = Testbed::boot_with(
        "su",
        Options {
            bind_ro: vec![units.clone()],
            ..Options::hosts(1)
        },
    ) else {
        return;
    };
    let host = bed.host("h1");
    // The programs the units run must exist for verify; the binary under test stands in for
    // the package's /usr/bin/clarity-reconcile.
    host.exec_ok(&[
        "cp",
        support::clarity_bin().to_str().unwrap(),
        "/usr/bin/clarity-reconcile",
    ]);
    // The environment file the reconciler's unit requires.
    host.exec_ok(&[
        "sh",
        "-c",
        "mkdir -p /etc/clarity && echo CLARITY_REPO=/var/lib/clarity/source > /etc/clarity/reconciler.env",
    ]);
    host.exec_ok(&[
        "useradd",
        "--system",
        "--home-dir",
        "/var/lib/clarity",
        "clarity",
    ]);
    for unit in [
        "clarity-reconcile.service",
        "clarity-drift.service",
        "clarity-drift.timer",
    ] {
        host.exec_ok(&[
            "cp",
            units.join(unit).to_str().unwrap(),
            &format!("/etc/systemd/system/{unit}"),
        ]);
    }
    let out = host.exec(&[
        "systemd-analyze",
        "verify",
        "/etc/systemd/system/clarity-reconcile.service",
        "/etc/systemd/system/clarity-drift.service",
        "/etc/systemd/system/clarity-drift.timer",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}
