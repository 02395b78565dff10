//! The container testbed itself (`support::nspawn`): hosts boot with their own names on one
//! private network that the machine's own network namespace cannot see, and a panicking test
//! leaves nothing behind.

mod support;

use std::path::{Path, PathBuf};
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
    serve_etc(h1);
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
    assert_eq!(hostname_from_switch(&bed, h1), "h1");
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

/// Serves h's `/etc` over HTTP on port 8000, under the host's own systemd.
fn serve_etc(host: &support::nspawn::Host) {
    host.exec_ok(&[
        "systemd-run",
        "--unit=files",
        "python3",
        "-m",
        "http.server",
        "8000",
        "--directory",
        "/etc",
    ]);
}

/// `/etc/hostname` as [`serve_etc`] on `host` serves it, fetched from the switch namespace by
/// address; waits up to 10 s for the server to listen.
fn hostname_from_switch(bed: &Testbed, host: &support::nspawn::Host) -> String {
    let url = format!("http://{}:8000/hostname", host.address());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = bed
            .network_command("python3")
            .args(["-c", FETCH, &url])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the switch namespace cannot reach {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a booted testbed had made, observed while it ran.
#[derive(Debug)]
struct Made {
    prefix: String,
    run_dir: PathBuf,
    root: PathBuf,
    /// `PID START_TIME` of the container's PID 1 and of its systemd-nspawn.
    processes: Vec<String>,
    /// The container's PID namespace, as `/proc/PID/ns/pid` names it.
    pid_namespace: PathBuf,
}

fn netns_of(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip netns list: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(prefix))
        .map(str::to_string)
        .collect()
}

/// Every process of the machine whose PID namespace is `namespace`.
fn processes_in(namespace: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|ns| ns == namespace))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|m| Path::new(m).starts_with(path))
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    const DELIBERATE: &str = "deliberate failure with a booted testbed";
    let made: std::sync::Mutex<Option<Made>> = Default::default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(bed) = Testbed::boot("tp", 1) else {
            return;
        };
        let host = bed.host("h1");
        // It booted: the host runs its own systemd, answers on the private network, and
        // everything the teardown must remove exists.
        assert_eq!(host.exec_ok(&["hostname"]).trim(), "h1");
        serve_etc(host);
        assert_eq!(hostname_from_switch(&bed, host), "h1");
        let leader = host.leader_pid();
        let root = host.root();
        let nspawn: u32 = std::fs::read_to_string(root.parent().unwrap().join("nspawn.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let processes: Vec<String> = [leader, nspawn]
            .map(|pid| {
                support::nspawn::process_identity(pid)
                    .unwrap_or_else(|| panic!("process {pid} of the testbed does not run"))
            })
            .into();
        let pid_namespace = std::fs::read_link(format!("/proc/{leader}/ns/pid")).unwrap();
        let inside = processes_in(&pid_namespace);
        assert!(
            inside.len() >= 3,
            "the container's PID namespace holds only {inside:?} (systemd, the HTTP server, ...)"
        );
        let run_dir = root.parent().unwrap().parent().unwrap().to_path_buf();
        let netns = netns_of(bed.prefix());
        assert_eq!(
            netns.len(),
            2,
            "the switch's and h1's namespaces: {netns:?}"
        );
        assert!(mounted(&root), "{} is not mounted", root.display());
        assert!(run_dir.join("owner").is_file(), "{}", run_dir.display());
        *made.lock().unwrap() = Some(Made {
            prefix: bed.prefix().to_string(),
            run_dir,
            root,
            processes,
            pid_namespace,
        });
        panic!("{DELIBERATE}");
    }));
    let Some(made) = made.into_inner().unwrap() else {
        // Nothing booted. A failure on the way (under CI, a missing prerequisite is one) is
        // this test's failure; a return is a polite skip, allowed only off CI.
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        assert!(
            !support::in_ci(),
            "the testbed did not boot, so nothing was checked"
        );
        return;
    };
    let payload = result.expect_err("the closure panicked after booting");
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    assert_eq!(
        message,
        Some(DELIBERATE),
        "the closure failed before its deliberate panic"
    );
    let left = netns_of(&made.prefix);
    assert!(
        left.is_empty(),
        "namespaces of {} remain: {left:?}",
        made.prefix
    );
    for identity in &made.processes {
        let pid: u32 = identity.split_whitespace().next().unwrap().parse().unwrap();
        assert_ne!(
            support::nspawn::process_identity(pid).as_ref(),
            Some(identity),
            "process {pid} of {} still runs",
            made.prefix
        );
    }
    let inside = processes_in(&made.pid_namespace);
    assert!(
        inside.is_empty(),
        "processes of the container remain: {inside:?}"
    );
    assert!(
        !mounted(&made.root),
        "the overlay of {} is still mounted",
        made.prefix
    );
    assert!(!made.run_dir.exists(), "{} remains", made.run_dir.display());
}
