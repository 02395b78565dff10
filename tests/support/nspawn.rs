//! Real hosts with real systemd for end-to-end tests: Debian containers booted with
//! `systemd-nspawn`, each with its own network namespace, overlay root filesystem and hostname,
//! on a private network that exists only inside namespaces the test created (the bridge sits
//! in a "switch" namespace of its own; nothing is added to the machine's own network).
//!
//! The base root filesystem is built once per machine with debootstrap and cached under
//! `target/testbed/rootfs`; every container writes to its own overlay upper directory, so the
//! base stays pristine. Every resource is named after a per-testbed prefix (the caller's tag,
//! the test process's PID, a counter), so parallel test runs do not collide, and [`Testbed`]
//! tears everything down on drop, also when the test panics. Resources of a test process that
//! died without unwinding (Ctrl-C, a CI timeout) are swept by the next testbed that boots.
//!
//! Code runs inside a container either as a command (`Host::exec`) or as a test of the
//! current test binary (`Host::run_test_inside`): the binary's target directory is bound
//! read-only at the same path, and [`inside_container`] tells the test that it is the inner
//! half.
//!
//! Needs root, `systemd-nspawn` (package systemd-container), `debootstrap`, `nsenter`, `ip`
//! and a Debian mirror in the apt sources.

use super::{require, require_program, require_root};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The Debian release of the containers (the same as the CI machine, so test binaries built
/// there run inside).
pub const SUITE: &str = "bookworm";

/// Packages of the base root filesystem. libssl3: the test binaries link the system OpenSSL.
/// git: the reconciler's service follows its config repository with it.
/// sudo: hosts reached as a non-root SSH user run the agent with `sudo -n`.
pub const INCLUDE: [&str; 10] = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "procps",
    "python3",
    "libssl3",
    "git",
    "sudo",
];

/// Set in the environment of a test binary re-executed inside a container.
pub const INSIDE_ENV: &str = "CLARITY_TESTBED_INSIDE";

/// The network inside every testbed (private, and only ever configured inside the testbed's
/// own namespaces, so every testbed can use the same one).
pub const SUBNET_PREFIX: [u8; 3] = {
    let [a, b, c, _] = super::net::TESTBED.base.octets();
    [a, b, c]
};
/// The switch namespace's own address on the bridge.
pub const SWITCH_ADDRESS: Ipv4Addr = {
    let [a, b, c] = SUBNET_PREFIX;
    Ipv4Addr::new(a, b, c, 1)
};

const MARKER: &str = ".clarity-testbed";

/// True in the inner half of a test re-executed by [`Host::run_test_inside`].
pub fn inside_container() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// Whether this machine can boot containers: root and the programs. Skips politely on a
/// laptop, fails under CI (see [`super::require`]).
pub fn prerequisites() -> bool {
    require_root()
        && [
            "systemd-nspawn",
            "debootstrap",
            "nsenter",
            "ip",
            "setsid",
            "chroot",
            "mount",
            "umount",
        ]
        .iter()
        .all(|p| require_program(p).is_some())
}

/// What a testbed boots.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host names, one container each.
    pub hosts: Vec<String>,
    /// Put into `/root/.ssh/authorized_keys` of every host.
    pub authorized_key: Option<String>,
    /// More directories bound read-only at the same path inside every host (the directory
    /// holding the test binaries is always bound).
    pub bind_ro: Vec<PathBuf>,
}

impl Options {
    /// `n` hosts named `h1` … `hN`.
    pub fn hosts(n: usize) -> Options {
        Options {
            hosts: (1..=n).map(|i| format!("h{i}")).collect(),
            authorized_key: None,
            bind_ro: Vec::new(),
        }
    }
}

/// Booted containers on one private network; everything is torn down on drop.
pub struct Testbed {
    prefix: String,
    run_dir: PathBuf,
    switch_netns: String,
    hosts: Vec<Host>,
    /// Namespaces a test added ([`Testbed::add_netns`]), deleted with the testbed.
    extra_netns: std::sync::Mutex<Vec<String>>,
}

/// One container.
pub struct Host {
    name: String,
    netns: String,
    address: Ipv4Addr,
    dir: PathBuf,
    leader: Option<u32>,
    nspawn: Option<Child>,
    /// Directories bound read-only into the container, for booting it again.
    binds: Vec<PathBuf>,
}

impl Testbed {
    /// Boots `n` hosts (`h1` … `hN`). `tag` names the test (up to 3 lowercase letters or
    /// digits) and goes into every resource name. `None` when the prerequisites are missing on
    /// a developer machine (the test should return); panics on any failure.
    pub fn boot(tag: &str, n: usize) -> Option<Testbed> {
        Testbed::boot_with(tag, Options::hosts(n))
    }

    pub fn boot_with(tag: &str, options: Options) -> Option<Testbed> {
        if !prerequisites() {
            return None;
        }
        assert!(
            (1..=3).contains(&tag.len())
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "testbed tag {tag:?}: 1 to 3 lowercase letters or digits"
        );
        assert!(
            !options.hosts.is_empty() && options.hosts.len() <= 200,
            "1 to 200 hosts"
        );
        let rootfs = {
            let _lock = testbed_lock();
            let rootfs = build_or_reuse_rootfs()?;
            sweep_stale();
            rootfs
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "{tag}{}{}",
            base36(std::process::id()),
            base36(COUNTER.fetch_add(1, Ordering::Relaxed))
        );
        let run_dir = testbed_dir().join("run").join(&prefix);
        std::fs::create_dir_all(&run_dir).unwrap();
        // The owner file names this process; the sweep of a later run removes what it finds
        // here once this process is gone.
        std::fs::write(
            run_dir.join("owner"),
            format!("{}\n", process_identity(std::process::id()).unwrap()),
        )
        .unwrap();
        let switch_netns = format!("ctb-{prefix}-sw");
        let mut bed = Testbed {
            prefix: prefix.clone(),
            run_dir: run_dir.clone(),
            switch_netns: switch_netns.clone(),
            hosts: Vec::new(),
            extra_netns: Default::default(),
        };
        record(&run_dir, "netns", &switch_netns);
        ip(&["netns", "add", &switch_netns]);
        ip(&["-n", &switch_netns, "link", "set", "lo", "up"]);
        ip(&["-n", &switch_netns, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &switch_netns,
            "addr",
            "add",
            &format!("{SWITCH_ADDRESS}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &switch_netns, "link", "set", "br0", "up"]);

        let mut binds = vec![binary_dir()];
        binds.extend(options.bind_ro.iter().cloned());
        let hosts_file = hosts_file(&options.hosts);
        for (i, name) in options.hosts.iter().enumerate() {
            assert!(
                !name.is_empty()
                    && name.len() <= 63
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "host name {name:?}"
            );
            let address = host_address(i);
            let netns = format!("ctb-{prefix}-{i}");
            let dir = run_dir.join(name);
            // Pushed before anything is created, so a panic below still tears it down.
            bed.hosts.push(Host {
                name: name.clone(),
                netns: netns.clone(),
                address,
                dir: dir.clone(),
                leader: None,
                nspawn: None,
                binds: binds.clone(),
            });
            let root = dir.join("merged");
            for d in ["upper", "work", "merged"] {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            }
            record(&run_dir, "mounts", &root.display().to_string());
            run_ok(Command::new("mount").args([
                "-t",
                "overlay",
                "overlay",
                "-o",
                &format!(
                    "lowerdir={},upperdir={},workdir={}",
                    rootfs.display(),
                    dir.join("upper").display(),
                    dir.join("work").display()
                ),
                &root.display().to_string(),
            ]));
            std::fs::write(root.join("etc/hostname"), format!("{name}\n")).unwrap();
            std::fs::write(root.join("etc/hosts"), &hosts_file).unwrap();
            // Host keys of its own (the base has none), so sshd starts and each host is a
            // distinct SSH peer.
            if root.join("usr/bin/ssh-keygen").exists() {
                run_ok(Command::new("chroot").arg(&root).args(["ssh-keygen", "-A"]));
            }
            if let Some(key) = &options.authorized_key {
                let ssh = root.join("root/.ssh");
                std::fs::create_dir_all(&ssh).unwrap();
                set_mode(&ssh, 0o700);
                std::fs::write(ssh.join("authorized_keys"), format!("{}\n", key.trim())).unwrap();
                set_mode(&ssh.join("authorized_keys"), 0o600);
            }
            record(&run_dir, "netns", &netns);
            ip(&["netns", "add", &netns]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            let port = format!("v{i}");
            ip(&[
                "-n",
                &switch_netns,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns,
            ]);
            ip(&[
                "-n",
                &switch_netns,
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ]);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);

            bed.hosts.last_mut().unwrap().start_nspawn();
        }
        for host in &mut bed.hosts {
            host.wait_ready();
        }
        Some(bed)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this testbed"))
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this testbed"))
    }

    /// The prefix of every resource of this testbed.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace holding the hosts' bridge (`br0`), for a test that plugs more into it.
    pub fn switch_netns(&self) -> &str {
        &self.switch_netns
    }

    /// Creates a network namespace named after this testbed (`ctb-PREFIX-SUFFIX`, its
    /// loopback up), deleted with the testbed, and by the sweep when the test died.
    pub fn add_netns(&self, suffix: &str) -> String {
        let name = format!("ctb-{}-{suffix}", self.prefix);
        record(&self.run_dir, "netns", &name);
        self.extra_netns.lock().unwrap().push(name.clone());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A command run in the switch namespace, which reaches every host's address (e.g. the
    /// reconciler connecting to the hosts' sshd).
    pub fn network_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.switch_netns]).arg(program);
        cmd
    }
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The container's PID 1, as the machine sees it.
    pub fn leader_pid(&self) -> u32 {
        self.leader.expect("the host is booted")
    }

    /// The container's root filesystem, seen from outside (the overlay mount).
    pub fn root(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// A command run inside the container (all its namespaces: its files, processes, network
    /// and systemd). The environment is the caller's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.leader_pid().to_string(), "-a"])
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` inside and returns what it did.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.command(argv[0])
            .args(&argv[1..])
            .output()
            .expect("cannot run nsenter")
    }

    /// Runs `argv` inside and returns its stdout; panics with its status and stderr when it
    /// fails.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{} on {}: {}\nstdout: {}\nstderr: {}",
            argv.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Re-executes the current test binary inside the container, running only `test` (its
    /// name as libtest prints it, e.g. `inner_systemd_backend`), with [`INSIDE_ENV`] set. Its
    /// output is passed through; returns whether it passed.
    pub fn run_test_inside(&self, test: &str, env: &[(&str, &str)]) -> bool {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = self.command(&exe);
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(INSIDE_ENV, "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("cannot run nsenter");
        eprintln!(
            "--- {test} inside {} ({}) ---\n{}{}--- end of {test} ---",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // libtest exits 0 also when the filter matched nothing: insist the test ran.
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed")
    }

    /// Starts systemd-nspawn on the host's root filesystem and network namespace (booting
    /// it); [`Host::wait_ready`] waits for the boot to finish.
    fn start_nspawn(&mut self) {
        let root = self.root();
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .unwrap();
        let mut cmd = Command::new("setsid");
        // setsid: its own session, so the terminal's signals (Ctrl-C) do not reach the
        // container and a hang-up does not kill it half-way through teardown. A child of
        // ours is not a process group leader, so setsid execs rather than forks and the
        // PID is nspawn's.
        cmd.arg("systemd-nspawn")
            .arg("-D")
            .arg(&root)
            .args([
                "--boot",
                // Both required where the machine's PID 1 is not systemd.
                "--register=no",
                "--keep-unit",
                "--link-journal=no",
                "--console=pipe",
            ])
            .arg(format!("--machine={}", self.name))
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                self.netns
            ));
        for b in &self.binds {
            cmd.arg(format!("--bind-ro={}", b.display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("cannot start systemd-nspawn");
        std::fs::write(self.dir.join("nspawn.pid"), format!("{}\n", child.id())).unwrap();
        self.nspawn = Some(child);
    }

    /// Powers the container off (`systemctl poweroff` inside, as an operator would), waits
    /// for it to be gone, and boots it again from the same root filesystem and network: what
    /// a reboot of a real machine keeps (files, enabled units) it keeps, and nothing else
    /// survives (processes, /run, /tmp).
    pub fn power_cycle(&mut self) {
        self.exec_ok(&["systemctl", "poweroff", "--no-block"]);
        let mut child = self.nspawn.take().expect("the host is booted");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    panic!(
                        "{} did not power off in 60 s; console:\n{}",
                        self.name,
                        self.console_tail()
                    )
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        self.leader = None;
        self.start_nspawn();
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let pid = self.nspawn.as_ref().unwrap().id();
        let leader = loop {
            if let Some(l) = container_leader(pid) {
                break l;
            }
            self.assert_alive(start);
            std::thread::sleep(Duration::from_millis(50));
        };
        std::fs::write(self.dir.join("leader.pid"), format!("{leader}\n")).unwrap();
        self.leader = Some(leader);
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(120) {
            let out = self.exec(&["systemctl", "is-system-running"]);
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match last.as_str() {
                "running" => return,
                "degraded" => {
                    let failed = self.exec(&["systemctl", "--failed", "--no-legend", "--plain"]);
                    eprintln!(
                        "note: {} booted degraded; failed units:\n{}",
                        self.name,
                        String::from_utf8_lossy(&failed.stdout)
                    );
                    return;
                }
                _ => {}
            }
            self.assert_alive(start);
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} did not finish booting in 120 s (last state {last:?}); console:\n{}",
            self.name,
            self.console_tail()
        );
    }

    fn assert_alive(&mut self, start: Instant) {
        let child = self.nspawn.as_mut().unwrap();
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "systemd-nspawn for {} exited ({status}) after {:?}; console:\n{}",
                self.name,
                start.elapsed(),
                self.console_tail()
            );
        }
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Ask every host to power off first, then wait for all: shutdowns run in parallel.
        for host in &self.hosts {
            if let (Some(leader), Some(_)) = (host.leader, &host.nspawn) {
                let _ = Command::new("nsenter")
                    .args([
                        "-t",
                        &leader.to_string(),
                        "-a",
                        "systemctl",
                        "poweroff",
                        "--no-block",
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for host in &mut self.hosts {
            if let Some(mut child) = host.nspawn.take() {
                let deadline = Instant::now() + Duration::from_secs(30);
                let exited = loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break true,
                        Ok(None) if Instant::now() >= deadline => break false,
                        Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    }
                };
                if !exited {
                    eprintln!(
                        "warning: {} did not power off in 30 s; killing it",
                        host.name
                    );
                    // SIGKILL to a PID namespace's init ends every process in it.
                    if let Some(leader) = host.leader {
                        let _ = kill(Pid::from_raw(leader as i32), Signal::SIGKILL);
                    }
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
            if !host.dir.as_os_str().is_empty() {
                unmount(&host.root());
            }
            if !host.netns.is_empty() {
                let _ = quiet_ip(&["netns", "delete", &host.netns]);
            }
        }
        for ns in self.extra_netns.lock().unwrap().iter() {
            let _ = quiet_ip(&["netns", "delete", ns]);
        }
        // The bridge and the veth ends go with the namespace.
        let _ = quiet_ip(&["netns", "delete", &self.switch_netns]);
        remove_run_dir(&self.run_dir);
    }
}

/// `target/testbed`, shared by all test binaries of this checkout.
pub fn testbed_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .join("testbed");
    std::fs::create_dir_all(&dir).unwrap();
    // Canonical, because mount points are compared with /proc/self/mountinfo, which shows
    // paths with every symlink resolved.
    dir.canonicalize().unwrap()
}

/// The base root filesystem, built on first use and reused afterwards (rebuilt when
/// [`INCLUDE`] changes). A build goes to a temporary directory renamed into place when
/// complete, so an interrupted build is never reused. `None` when no mirror is configured on
/// a developer machine.
pub fn rootfs() -> Option<PathBuf> {
    let _lock = testbed_lock();
    build_or_reuse_rootfs()
}

/// One process at a time builds the root filesystem or sweeps: test binaries run one after
/// another, but the tests inside one run in parallel.
fn testbed_lock() -> Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(testbed_dir().join("rootfs.lock"))
        .unwrap();
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("cannot lock the testbed directory")
}

fn build_or_reuse_rootfs() -> Option<PathBuf> {
    let dir = testbed_dir();
    let rootfs = dir.join("rootfs");
    let wanted = marker_text();
    if std::fs::read_to_string(rootfs.join(MARKER)).is_ok_and(|m| m == wanted) {
        return Some(rootfs);
    }
    let mirror = debian_mirror();
    if !require(
        mirror.is_some(),
        "a Debian mirror for bookworm in /etc/apt/sources.list or /etc/apt/sources.list.d",
    ) {
        return None;
    }
    let mirror = mirror.unwrap();
    // Left-overs of interrupted builds (we hold the lock, so nobody is using them).
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("rootfs.partial-") || n.starts_with("rootfs.old-") {
            remove_tree(&entry.path());
        }
    }
    let partial = dir.join(format!("rootfs.partial-{}", std::process::id()));
    let log_path = dir.join("debootstrap.log");
    let log = std::fs::File::create(&log_path).unwrap();
    eprintln!(
        "building the testbed root filesystem with debootstrap from {mirror} (once per machine, about a minute)"
    );
    let started = Instant::now();
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(SUITE)
        .arg(&partial)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("cannot run debootstrap");
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        remove_tree(&partial);
        panic!(
            "debootstrap failed ({status}); last lines of {}:\n{}",
            log_path.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    // Every container generates its own host keys and machine id.
    for entry in std::fs::read_dir(partial.join("etc/ssh"))
        .unwrap()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    std::fs::write(partial.join("etc/machine-id"), "").unwrap();
    if let Ok(debs) = std::fs::read_dir(partial.join("var/cache/apt/archives")) {
        for deb in debs.flatten() {
            if deb.path().extension().is_some_and(|e| e == "deb") {
                let _ = std::fs::remove_file(deb.path());
            }
        }
    }
    std::fs::write(partial.join(MARKER), &wanted).unwrap();
    if rootfs.exists() {
        let old = dir.join(format!("rootfs.old-{}", std::process::id()));
        std::fs::rename(&rootfs, &old).unwrap();
        remove_tree(&old);
    }
    std::fs::rename(&partial, &rootfs).unwrap();
    eprintln!("testbed root filesystem ready in {:?}", started.elapsed());
    Some(rootfs)
}

fn marker_text() -> String {
    format!("{SUITE} {}\n", INCLUDE.join(","))
}

/// The first mirror of [`SUITE`] in the machine's apt sources, one-line (`sources.list`,
/// `*.list`) or deb822 (`*.sources`) format.
pub fn debian_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        if f.extension().is_some_and(|e| e == "sources") {
            mirror_from_deb822(&text)
        } else {
            mirror_from_one_line(&text)
        }
    })
}

pub fn mirror_from_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next()? != "deb" {
            return None;
        }
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            while !uri.ends_with(']') {
                uri = words.next()?;
            }
            uri = words.next()?;
        }
        (words.next()? == SUITE).then(|| uri.to_string())
    })
}

pub fn mirror_from_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let enabled = !get("enabled").eq_ignore_ascii_case("no");
        (enabled
            && get("types").split_whitespace().any(|t| t == "deb")
            && get("suites").split_whitespace().any(|s| s == SUITE))
        .then(|| get("uris").split_whitespace().next().map(str::to_string))
        .flatten()
    })
}

/// The directory to bind into containers so the test binaries (and `clarity-reconcile`, its
/// sibling) run inside: the profile directory above `deps/`.
fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn host_address(i: usize) -> Ipv4Addr {
    let [a, b, c] = SUBNET_PREFIX;
    Ipv4Addr::new(a, b, c, 11 + i as u8)
}

fn hosts_file(names: &[String]) -> String {
    let mut s = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
    for (i, n) in names.iter().enumerate() {
        s.push_str(&format!("{} {n}\n", host_address(i)));
    }
    s
}

/// The container's init among the descendants of nspawn: PID 1 in its own PID namespace.
fn container_leader(nspawn: u32) -> Option<u32> {
    let mut frontier = vec![nspawn];
    for _ in 0..3 {
        let mut next = Vec::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.split_whitespace().collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let ppid: u32 = field("PPid:")
                .first()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if !frontier.contains(&ppid) {
                continue;
            }
            let nspid = field("NSpid:");
            if nspid.len() >= 2 && nspid.last() == Some(&"1") {
                return Some(pid);
            }
            next.push(pid);
        }
        if next.is_empty() {
            return None;
        }
        frontier = next;
    }
    None
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

fn quiet_ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn record(run_dir: &Path, what: &str, value: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(what))
        .unwrap();
    writeln!(f, "{value}").unwrap();
}

pub fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// A process as `PID START_TIME`, which no later process can share.
pub fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Mount points at or below `path`, deepest first.
fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(path))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

fn unmount(path: &Path) {
    for m in mounts_below(path) {
        let ok = (0..20).any(|_| {
            let ok = Command::new("umount")
                .arg(&m)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// Deletes a directory tree, after unmounting whatever is mounted inside it (debootstrap
/// mounts /proc and /sys into its target; deleting through them would be a disaster). Refuses
/// to delete anything still mounted.
fn remove_tree(path: &Path) {
    unmount(path);
    let left = mounts_below(path);
    if !left.is_empty() {
        eprintln!(
            "warning: not deleting {}: still mounted: {left:?}",
            path.display()
        );
        return;
    }
    let _ = std::fs::remove_dir_all(path);
}

fn remove_run_dir(dir: &Path) {
    remove_tree(dir);
}

/// Tears down what testbeds of dead test processes left behind (a test killed by Ctrl-C or a
/// CI timeout never unwinds, so its `Drop` never ran).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(testbed_dir().join("run")) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let owner = owner.trim();
        let alive = owner
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .and_then(process_identity)
            .is_some_and(|id| id == owner);
        if alive || (owner.is_empty() && recently_modified(&dir)) {
            continue;
        }
        eprintln!("sweeping a stale testbed: {}", dir.display());
        if let Ok(hosts) = std::fs::read_dir(&dir) {
            for host in hosts.flatten().filter(|h| h.path().is_dir()) {
                let read_pid = |f: &str| {
                    std::fs::read_to_string(host.path().join(f))
                        .ok()
                        .and_then(|t| t.trim().parse::<i32>().ok())
                };
                for (file, comm) in [("leader.pid", "systemd"), ("nspawn.pid", "systemd-nspawn")] {
                    if let Some(pid) = read_pid(file) {
                        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .unwrap_or_default();
                        if name.trim() == comm {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
            }
        }
        // Give the killed containers a moment to release their mounts.
        std::thread::sleep(Duration::from_millis(500));
        for m in std::fs::read_to_string(dir.join("mounts"))
            .unwrap_or_default()
            .lines()
        {
            unmount(Path::new(m));
        }
        for ns in std::fs::read_to_string(dir.join("netns"))
            .unwrap_or_default()
            .lines()
            .rev()
        {
            let _ = quiet_ip(&["netns", "delete", ns]);
        }
        remove_tree(&dir);
    }
}

fn recently_modified(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e < Duration::from_secs(60)))
}
