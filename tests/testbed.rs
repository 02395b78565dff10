//! The container testbed itself (`support::nspawn`): hosts boot with their own names on one
//! private network that the machine's own network namespace cannot see, and a panicking test
//! leaves nothing behind.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::nspawn::Testbed;

const FETCH: &str = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())";

#[test]
fn hosts_boot_on_one_private_network() {
    let started = Instant::now();
    let Some(bed) = Testbed::boot("tb", 2) else {
        return;
    };
    eprintln!("2 hosts booted in {:?}", started.elapsed());
    let (h1, h2) = (bed.host("h1"), bed.host("h2"));
    assert_eq!(h1.exec_ok(&["hostname"]).trim(), "h1");
    assert_eq!(h2.exec_ok(&["hostname"]).trim(), "h2");
    // A server on h1 under h1's own systemd, reached from h2 by name and from the switch
    // namespace by address.
    h1.exec_ok(&[
        "systemd-run",
        "--unit=files",
        "python3",
        "-m",
        "http.server",
        "8000",
        "--directory",
        "/etc",
    ]);
    let url = "http://h1:8000/hostname";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = h2.exec(&["python3", "-c", FETCH, url]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "h1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "h2 cannot reach {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let from_switch = bed
        .network_command("python3")
        .args([
            "-c",
            FETCH,
            &format!("http://{}:8000/hostname", h1.address()),
        ])
        .output()
        .unwrap();
    assert!(
        from_switch.status.success(),
        "{}",
        String::from_utf8_lossy(&from_switch.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&from_switch.stdout).trim(), "h1");
    // Nothing was added to the machine's own network namespace. (A connection attempt proves
    // nothing here: some machines answer every TCP connect through a transparent proxy.)
    let own = std::process::Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&own.stdout);
    assert!(
        !own.contains(&format!(
            "{}.",
            support::nspawn::SUBNET_PREFIX
                .map(|o| o.to_string())
                .join(".")
        )),
        "the testbed network leaked into the machine's:\n{own}"
    );
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(bed.prefix()));
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let seen: std::sync::Mutex<Option<(String, PathBuf, u32)>> = Default::default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(bed) = Testbed::boot("tp", 1) else {
            return;
        };
        let host = bed.host("h1");
        *seen.lock().unwrap() = Some((bed.prefix().to_string(), host.root(), host.leader_pid()));
        panic!("deliberate failure with a booted testbed");
    }));
    let Some((prefix, root, leader)) = seen.into_inner().unwrap() else {
        // Nothing booted. That is a polite skip only on a machine without the prerequisites
        // (boot returned None); under CI boot panics instead, and this test must then fail,
        // not pass for want of anything to check.
        assert!(
            result.is_ok() && !support::in_ci(),
            "the testbed did not boot, so nothing was checked"
        );
        return;
    };
    assert!(result.is_err());
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&prefix),
        "namespaces of {prefix} remain"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&root.display().to_string()),
        "the overlay of {prefix} is still mounted"
    );
    assert!(!root.exists(), "the run directory of {prefix} remains");
    assert!(
        !PathBuf::from(format!("/proc/{leader}")).exists(),
        "the container still runs"
    );
}
