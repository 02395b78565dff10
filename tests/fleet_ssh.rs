//! The SSH transport against real hosts: Debian containers booted with systemd-nspawn, each
//! with its own sshd, systemd and address on a private network. The real `clarity-reconcile`
//! runs in the network namespace that reaches them, with a test key and its own known_hosts
//! file, and applies a config repository (a git repository whose servers are transport `ssh`)
//! with a python HTTP service under systemd and a health check.
//!
//! What is checked: an unknown host is refused until `--accept-new-host-keys` records it;
//! every host converges and the agent is installed on first contact only; a second run and a
//! dry-run have nothing to do; a host whose pinned key is wrong is refused with both
//! fingerprints while the others converge; a host stopped during its apply is reported
//! unreachable while the others converge; and an apply whose SSH connection is killed goes on
//! on the host, and the reconciler reconnects and learns its outcome.

mod support;

use support::text;

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;
use support::nspawn::{Host, Options, Testbed};

const PORT: u16 = 18700;

/// Serves its greeting; waits `START_DELAY` seconds before listening, so an apply takes long
/// enough for a test to interfere with it.
const SERVICE: &str = r#"import http.server, os, sys, time
time.sleep(float(os.environ.get("START_DELAY", "0")))
greeting = open("conf/greeting.txt").read().strip()
# A host marked broken for this greeting fails to start it (and only it).
if os.path.exists("/etc/clarity-test-broken-" + greeting):
    sys.exit(1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (greeting + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A booted fleet, a key it trusts, and a config repository for it.
struct Fleet {
    bed: Testbed,
    dir: tempfile::TempDir,
    /// A copy of the reconciler without debug information: it is what gets uploaded.
    reconciler: PathBuf,
}

impl Fleet {
    fn boot(tag: &str, hosts: usize) -> Option<Fleet> {
        support::require_program("ssh-keygen")?;
        support::require_program("git")?;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "clarity-fleet-test",
                "-f",
            ])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let bed = Testbed::boot_with(
            tag,
            Options {
                authorized_key: Some(public),
                // The `file` repository is read by the agents at the same path.
                bind_ro: vec![config.clone()],
                ..Options::hosts(hosts)
            },
        )?;
        let reconciler = dir.path().join("clarity-reconcile");
        let stripped = support::find_program("strip").is_some_and(|strip| {
            Command::new(strip)
                .arg("-o")
                .arg(&reconciler)
                .arg(support::clarity_bin())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !stripped {
            std::fs::copy(support::clarity_bin(), &reconciler).unwrap();
        }
        let f = Fleet {
            bed,
            dir,
            reconciler,
        };
        f.write(
            "clients/acme/client.yml",
            "id: acme\ncode: ACME\nname: Acme\n",
        );
        f.write(
            "clients/acme/datacenters/lab.yml",
            "code: lab\nname: Lab\ntype: edge\n",
        );
        for h in f.bed.hosts() {
            f.set_server(h.name(), None);
        }
        f.write(
            "repositories/local.yml",
            "name: local\ntype: file\npath: files\n",
        );
        f.write("files/web.py", SERVICE);
        f.write(
            "artifacts/web.yml",
            &format!(
                "id: web\ntype: script\nrepository: local\nversions:\n  - version: \"1.0.0\"\n    sha256: \"{}\"\n    location: web.py\n",
                hex::encode(Sha256::digest(SERVICE.as_bytes()))
            ),
        );
        f.set_deployment("hello", 0);
        support::git(&f.config(), &["init", "-q"]);
        f.commit("initial");
        Some(f)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.config().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn commit(&self, message: &str) {
        support::git(&self.config(), &["add", "-A"]);
        support::git(&self.config(), &["commit", "-qm", message]);
    }

    /// The server file of `name`, with a pinned host key or none.
    fn set_server(&self, name: &str, host_key: Option<&str>) {
        let address = self.bed.host(name).address();
        let pin = host_key
            .map(|k| format!("  ssh:\n    host_key: \"{}\"\n", k.trim()))
            .unwrap_or_default();
        self.write(
            &format!("clients/acme/servers/{name}.yml"),
            &format!(
                "hostname: {name}\ndatacenter: lab\nip_addresses:\n  - address: {address}\n\
                 agent:\n  transport: ssh\n  service_manager: systemd\n{pin}"
            ),
        );
    }

    fn set_deployment(&self, greeting: &str, start_delay_s: u32) {
        let targets: String = self
            .bed
            .hosts()
            .iter()
            .map(|h| format!("  - server: {}\n", h.name()))
            .collect();
        self.write(
            "clients/acme/deployments/web/prod.yml",
            &format!(
                "artifact: web\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n{targets}\
                 env_vars:\n  PORT: \"{PORT}\"\n  START_DELAY: \"{start_delay_s}\"\n\
                 config_files:\n  - destination: conf/greeting.txt\n    content: \"{greeting}\\n\"\n\
                 service:\n  command: [\"python3\", \"web.py\"]\n\
                 health_checks:\n  - type: http\n    url: http://127.0.0.1:{PORT}/\n    interval_s: 1\n    retries: 20\n"
            ),
        );
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The reconciler, run where it reaches the hosts, logging in with the test key.
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = self.command_without_key(extra);
        cmd.arg("--identity")
            .arg(self.key())
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    fn command_without_key(&self, extra: &[&str]) -> Command {
        let mut cmd = self.bed.network_command(&self.reconciler);
        cmd.arg("--repo")
            .arg(self.config())
            .arg("--work-dir")
            .arg(self.dir.path().join("work"))
            .arg("--known-hosts")
            .arg(self.known_hosts())
            .args(["--connect-timeout", "5", "--reconnect-timeout", "5"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("CLARITY_AGE_IDENTITY")
            .stdin(Stdio::null());
        cmd
    }

    /// `drift` over SSH, against the last applied commit.
    fn drift(&self) -> Output {
        self.bed
            .network_command(&self.reconciler)
            .arg("drift")
            .arg("--repo")
            .arg(self.config())
            .arg("--work-dir")
            .arg(self.dir.path().join("work"))
            .arg("--identity")
            .arg(self.key())
            .arg("--known-hosts")
            .arg(self.known_hosts())
            .env("NO_COLOR", "1")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }

    /// Runs the reconciler and calls `when` with the first output line containing `trigger`
    /// (as it is printed), then lets it finish.
    fn run_and_interfere(&self, extra: &[&str], trigger: &str, when: impl FnOnce()) -> Output {
        let mut child = self
            .command(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let readers: Vec<_> = [
            (
                true,
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            ),
            (false, Box::new(child.stderr.take().unwrap())),
        ]
        .into_iter()
        .map(|(is_stdout, stream)| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send((is_stdout, line));
                }
            })
        })
        .collect();
        drop(tx);
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut when = Some(when);
        for (is_stdout, line) in rx {
            if line.contains(trigger)
                && let Some(f) = when.take()
            {
                f();
            }
            let buf = if is_stdout { &mut stdout } else { &mut stderr };
            buf.push_str(&line);
            buf.push('\n');
        }
        for r in readers {
            r.join().unwrap();
        }
        let status = child.wait().unwrap();
        assert!(
            when.is_none(),
            "`{trigger}` never appeared:\n{stdout}{stderr}"
        );
        Output {
            status,
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
        }
    }
}

/// The result row of `host` in the reconciler's summary table.
fn result_of(o: &Output, host: &str) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .unwrap_or_else(|| panic!("no result row for {host}:\n{}", text(o)))
        .to_string()
}

/// What a dry-run's plan says about `host` (`no changes`, `FAILED`, ...).
fn planned(o: &Output, host: &str) -> String {
    let head = format!("host {host} (");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no plan for {host}:\n{}", text(o)))
        .to_string()
}

fn greeting(host: &Host) -> String {
    let out = host.exec(&[
        "python3",
        "-c",
        &format!(
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{PORT}/').read().decode().strip())"
        ),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_serving(host: &Host, expected: &str) {
    assert_eq!(
        host.exec_ok(&["systemctl", "is-active", "clarity-web.service"])
            .trim(),
        "active",
        "{}",
        host.name()
    );
    assert_eq!(greeting(host), expected, "{}", host.name());
}

/// The agent builds installed on a host (versioned files, not the symlink).
fn agent_builds(host: &Host) -> Vec<String> {
    let listing = host.exec_ok(&["ls", "-A", "/var/lib/clarity/agent"]);
    listing
        .lines()
        .filter(|l| l.starts_with("clarity-reconcile-"))
        .map(str::to_string)
        .collect()
}

/// `SHA256:...` of a public key file inside the host, as ssh-keygen prints it.
fn fingerprint(public_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn host_public_key(host: &Host) -> PathBuf {
    host.root().join("etc/ssh/ssh_host_ed25519_key.pub")
}

#[test]
fn a_fleet_of_five_converges_over_ssh_and_a_refused_or_stopped_host_spares_the_others() {
    let started = Instant::now();
    let Some(f) = Fleet::boot("fs", 5) else {
        return;
    };
    eprintln!("booted in {:?}", started.elapsed());
    let names: Vec<String> = f.bed.hosts().iter().map(|h| h.name().to_string()).collect();

    // Unknown hosts are refused, never trusted on first use, and nothing is recorded.
    let o = f.run(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is not known") && text(&o).contains("refusing to trust it on first use"),
        "{}",
        text(&o)
    );
    assert!(
        !f.known_hosts().exists() || std::fs::read_to_string(f.known_hosts()).unwrap().is_empty()
    );

    // First contact: keys recorded, the agent installed, every host converges.
    let t = Instant::now();
    let o = f.run(&["--accept-new-host-keys"]);
    let out = text(&o);
    eprintln!("first apply in {:?}:\n{out}", t.elapsed());
    assert_eq!(o.status.code(), Some(0), "{out}");
    let known = std::fs::read_to_string(f.known_hosts()).unwrap();
    for h in f.bed.hosts() {
        assert!(
            out.contains(&format!("{}: installed agent", h.name())),
            "{}: {out}",
            h.name()
        );
        assert!(result_of(&o, h.name()).contains("converged"), "{out}");
        assert!(
            known.contains(&format!("{} ssh-ed25519 ", h.address())),
            "{known}"
        );
        assert_serving(h, "hello");
        assert_eq!(agent_builds(h).len(), 1, "{}", h.name());
        let link = h.exec_ok(&["readlink", "/var/lib/clarity/agent/clarity-reconcile"]);
        assert_eq!(link.trim(), agent_builds(h)[0]);
    }
    let applies = f.bed.hosts()[0].exec_ok(&["ls", "/var/lib/clarity/applies"]);
    assert_eq!(applies.lines().count(), 1, "one detached apply: {applies}");
    let leftover =
        f.bed.hosts()[0].exec(&["sh", "-c", "ls /var/lib/clarity/applies/*/request.json"]);
    assert!(
        !leftover.status.success(),
        "the request with its secrets is gone"
    );

    // Second run: known hosts, the same agent build, nothing to do. At the most verbose log
    // level, in JSON: every SSH connection and command is a line naming its host.
    let t = Instant::now();
    let o = f.run(&["-vv", "--log-format", "json"]);
    let out = text(&o);
    eprintln!("second apply in {:?}", t.elapsed());
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("installed agent"), "{out}");
    for n in &names {
        assert!(result_of(&o, n).contains("unchanged"), "{out}");
    }
    let logs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    for n in &names {
        let of_host = |message: &str| {
            logs.iter()
                .any(|l| l["host"] == n.as_str() && l["message"] == message)
        };
        assert!(of_host("ssh: connecting"), "{n}: {out}");
        assert!(
            logs.iter().any(|l| l["host"] == n.as_str()
                && l["level"] == "TRACE"
                && l["command"]
                    .as_str()
                    .is_some_and(|c| c.contains("agent inspect"))),
            "{n}: {out}"
        );
    }
    let o = f.run(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The binary's sha256 (its build's name on the hosts) is remembered in the work directory.
    let cache = f.dir.path().join("work/.agent-sha256.json");
    assert!(cache.is_file(), "no hash cache at {}", cache.display());
    let build = agent_builds(f.bed.host("h1")).remove(0);
    assert!(
        std::fs::read_to_string(&cache)
            .unwrap()
            .contains(&build["clarity-reconcile-0.1.0-".len()..]),
        "{build}"
    );

    // The version check is the inspect itself, run by the build's versioned path: h1 without
    // its build gets it installed again, h3 whose build lost its mode gets it back (and nothing
    // else changes); on h2 a file that is not our build sits at that path and answers in
    // another format: refused, named, not guessed around.
    let (h1, h2, h3) = (f.bed.host("h1"), f.bed.host("h2"), f.bed.host("h3"));
    h1.exec_ok(&["rm", &format!("/var/lib/clarity/agent/{build}")]);
    h3.exec_ok(&["chmod", "0644", &format!("/var/lib/clarity/agent/{build}")]);
    let impostor = format!("/var/lib/clarity/agent/{build}");
    {
        use std::os::unix::fs::PermissionsExt;
        let file = h2.root().join(impostor.trim_start_matches('/'));
        std::fs::remove_file(&file).unwrap();
        std::fs::write(
            &file,
            "#!/bin/sh\necho '{\"format\":\"clarity.host-state/v0\",\"agent_version\":\"0.0.1\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = f.run(&["--dry-run"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("h1: installed agent"), "{out}");
    assert!(planned(&o, "h1").ends_with("no changes"), "{out}");
    assert_eq!(agent_builds(h1), std::slice::from_ref(&build));
    assert!(
        out.contains("h3: installed agent") && out.contains("its file could not be run"),
        "{out}"
    );
    assert!(planned(&o, "h3").ends_with("no changes"), "{out}");
    let mode = h3.exec_ok(&[
        "stat",
        "-c",
        "%a",
        &format!("/var/lib/clarity/agent/{build}"),
    ]);
    assert_eq!(mode.trim(), "755");
    assert!(planned(&o, "h2").ends_with("FAILED"), "{out}");
    assert!(
        out.contains(&impostor) && out.contains("`clarity.host-state/v0`"),
        "{out}"
    );
    // One note per host that got the agent, and the run's one summary line.
    assert_eq!(out.matches(": installed agent").count(), 2 + 1, "{out}");
    assert!(out.contains("installed agent 0.1.0 ("), "{out}");
    assert!(out.contains(") on 2 hosts"), "{out}");
    for n in ["h4", "h5"] {
        assert!(planned(&o, n).ends_with("no changes"), "{out}");
    }

    // A rebuilt reconciler at the same path (here: the same file with bytes appended, so only
    // its size, times and sha256 differ) is a new build: uploaded to every host, including h2,
    // and the hosts' symlink switched to it.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&f.reconciler)
            .unwrap();
        file.write_all(b"\0rebuilt\0").unwrap();
    }
    let o = f.run(&["--dry-run"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for h in f.bed.hosts() {
        assert!(
            out.contains(&format!("{}: installed agent", h.name())),
            "{out}"
        );
        assert!(planned(&o, h.name()).ends_with("no changes"), "{out}");
        let builds = agent_builds(h);
        let link = h.exec_ok(&["readlink", "/var/lib/clarity/agent/clarity-reconcile"]);
        assert_ne!(link.trim(), build, "{}: {builds:?}", h.name());
        assert!(builds.contains(&link.trim().to_string()), "{builds:?}");
    }
    let o = f.run(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("installed agent"), "{}", text(&o));

    // Drift over SSH: nothing, then a file edited by hand on h2.
    let o = f.drift();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    f.bed.host("h2").exec_ok(&[
        "sh",
        "-c",
        "echo edited > /opt/clarity/web/current/conf/greeting.txt",
    ]);
    let o = f.drift();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("h2") && out.contains("conf/greeting.txt"),
        "{out}"
    );

    // h5 pinned to h1's key: refused with both fingerprints; the others converge.
    let h1 = f.bed.host("h1");
    let h5 = f.bed.host("h5");
    f.set_server(
        "h5",
        Some(&std::fs::read_to_string(host_public_key(h1)).unwrap()),
    );
    f.set_deployment("bonjour", 0);
    f.commit("bonjour, and a wrong pin for h5");
    let o = f.run(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let refused = result_of(&o, "h5");
    assert!(refused.contains("failed"), "{out}");
    assert!(
        out.contains("host h5: the SSH host key of")
            && out.contains("does not match")
            && out.contains(&fingerprint(&host_public_key(h1)))
            && out.contains(&fingerprint(&host_public_key(h5))),
        "{out}"
    );
    for n in ["h1", "h2", "h3", "h4"] {
        assert!(result_of(&o, n).contains("converged"), "{out}");
        assert_serving(f.bed.host(n), "bonjour");
    }
    assert_serving(h5, "hello");

    // h4 stops (its container is killed) while it applies: it is reported unreachable, the
    // others converge.
    f.set_deployment("hola", 2);
    f.commit("hola");
    let h4 = f.bed.host("h4");
    let t = Instant::now();
    let o = f.run_and_interfere(&[], "h4: web: ", || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(h4.leader_pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });
    let out = text(&o);
    eprintln!("apply with a host stopped in {:?}:\n{out}", t.elapsed());
    assert_eq!(o.status.code(), Some(1), "{out}");
    let h4_result = result_of(&o, "h4");
    assert!(
        h4_result.contains("unreachable")
            && h4_result.contains("the connection dropped during apply"),
        "{out}"
    );
    assert!(result_of(&o, "h5").contains("failed"), "{out}");
    for n in ["h1", "h2", "h3"] {
        assert!(result_of(&o, n).contains("converged"), "{out}");
        assert_serving(f.bed.host(n), "hola");
    }
    eprintln!("whole test in {:?}", started.elapsed());
}

#[test]
fn an_apply_whose_connection_is_killed_finishes_and_the_reconciler_learns_its_outcome() {
    let started = Instant::now();
    let Some(f) = Fleet::boot("fd", 1) else {
        return;
    };
    let o = f.run(&["--accept-new-host-keys"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let host = f.bed.host("h1");
    let before = host.exec_ok(&["readlink", "/opt/clarity/web/current"]);

    // The new release starts slowly; while the agent works, every sshd process serving the
    // reconciler is killed.
    f.set_deployment("goodbye", 3);
    f.commit("goodbye");
    let o = f.run_and_interfere(&[], "h1: web: write", || {
        let ps = host.exec_ok(&["ps", "-eo", "pid=,args="]);
        let sessions: Vec<&str> = ps
            .lines()
            .filter(|l| l.contains("sshd: root"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(
            !sessions.is_empty(),
            "no sshd session for the reconciler:\n{ps}"
        );
        let mut argv = vec!["kill", "-9"];
        argv.extend(&sessions);
        host.exec_ok(&argv);
    });
    let out = text(&o);
    eprintln!("apply with a killed connection:\n{out}");
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("reconnected; reading apply"), "{out}");
    assert!(result_of(&o, "h1").contains("converged"), "{out}");
    // Every event was seen once: the steps after the reconnect are not missing or doubled.
    let health = out.matches("h1: web: health check").count();
    assert_eq!(health, 1, "{out}");
    assert_serving(host, "goodbye");
    let after = host.exec_ok(&["readlink", "/opt/clarity/web/current"]);
    assert_ne!(before, after, "a whole new release is active");

    // Another reconciler holds the host lock: this one waits, then names the holder.
    host.exec_ok(&[
        "sh",
        "-c",
        "echo 'PID 4242 on other-reconciler since 2026-11-24T05:00:00Z' > /var/lib/clarity/lock",
    ]);
    let mut holder = host
        .command("flock")
        .args(["/var/lib/clarity/lock", "sleep", "6"])
        .spawn()
        .unwrap();
    let held = (0..50).any(|_| {
        let free = host
            .exec(&["flock", "-n", "/var/lib/clarity/lock", "true"])
            .status
            .success();
        if free {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        !free
    });
    assert!(held, "the test could not take the host lock");
    f.set_deployment("locked out", 0);
    f.commit("locked out");
    let o = f.run(&["--lock-timeout", "1"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("h1: agent: host h1 is locked by PID 4242 on other-reconciler since 2026-11-24T05:00:00Z; waiting"),
        "{out}"
    );
    assert!(
        result_of(&o, "h1")
            .contains("locked by PID 4242 on other-reconciler since 2026-11-24T05:00:00Z"),
        "{out}"
    );
    assert_serving(host, "goodbye");
    assert!(holder.wait().unwrap().success());

    // Logging in with ssh-agent's key: once the lock is free, the change goes through.
    if let Some(ssh_agent) = support::require_program("ssh-agent") {
        let sock = f.dir.path().join("agent.sock");
        let _agent = support::Server::start(
            "ssh-agent",
            Command::new(ssh_agent)
                .arg("-D")
                .arg("-a")
                .arg(&sock)
                .stdout(Stdio::null()),
        );
        let added = (0..50).any(|_| {
            let ok = sock.exists()
                && Command::new("ssh-add")
                    .arg(f.key())
                    .env("SSH_AUTH_SOCK", &sock)
                    .output()
                    .is_ok_and(|o| o.status.success());
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            ok
        });
        assert!(added, "ssh-add failed");
        let o = f
            .command_without_key(&[])
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_serving(host, "locked out");
    }
    eprintln!("whole test in {:?}", started.elapsed());
}

/// Kills every sshd process serving the reconciler on `host` (its connection drops at once).
fn drop_connections(host: &Host) {
    let ps = host.exec_ok(&["ps", "-eo", "pid=,args="]);
    let sessions: Vec<&str> = ps
        .lines()
        .filter(|l| l.contains("sshd: root"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !sessions.is_empty(),
        "no sshd session for the reconciler:\n{ps}"
    );
    let mut argv = vec!["kill", "-9"];
    argv.extend(&sessions);
    host.exec_ok(&argv);
}

#[test]
fn a_connection_dropped_after_install_before_or_after_the_switch_ends_on_a_whole_recorded_release()
{
    let Some(f) = Fleet::boot("fz", 1) else {
        return;
    };
    let o = f.run(&["--accept-new-host-keys"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let host = f.bed.host("h1");
    // After the release is installed (the download done), just before the switch, and after
    // the switch before the health check: each time the agent goes on alone, the reconciler
    // reconnects, reads the outcome and the agent's report, and records what runs.
    for (i, (trigger, delay)) in [
        ("h1: web: install release", 2),
        ("h1: web: install service definition", 3),
        ("h1: web: switch release", 2),
    ]
    .into_iter()
    .enumerate()
    {
        let greeting = format!("dropped-{i}");
        f.set_deployment(&greeting, delay);
        f.commit(&greeting);
        let o = f.run_and_interfere(&[], trigger, || drop_connections(host));
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{trigger}: {out}");
        assert!(
            out.contains("reconnected; reading apply"),
            "{trigger}: {out}"
        );
        assert!(
            result_of(&o, "h1").contains("converged"),
            "{trigger}: {out}"
        );
        assert_serving(host, &greeting);
        let current = host.exec_ok(&["readlink", "/opt/clarity/web/current"]);
        let current = current.trim().rsplit('/').next().unwrap().to_string();
        let ledger =
            clarity::ledger::Ledger::open(&f.dir.path().join("work/ledger.sqlite")).unwrap();
        let state = ledger.current_deployments(None, Some("h1")).unwrap();
        assert_eq!(
            (state[0].release.as_str(), state[0].healthy),
            (current.as_str(), true),
            "{trigger}: the ledger names what the host runs"
        );
    }
}

/// The deployment at `greeting` with a rollout section and a quick health check.
fn set_rollout_deployment(f: &Fleet, greeting: &str, rollout: &str) {
    let targets: String = f
        .bed
        .hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| format!("  - server: {}\n    priority: {i}\n", h.name()))
        .collect();
    f.write(
        "clients/acme/deployments/web/prod.yml",
        &format!(
            "artifact: web\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n{targets}\
             env_vars:\n  PORT: \"{PORT}\"\n\
             config_files:\n  - destination: conf/greeting.txt\n    content: \"{greeting}\\n\"\n\
             service:\n  command: [\"python3\", \"web.py\"]\n\
             health_checks:\n  - type: http\n    url: http://127.0.0.1:{PORT}/\n    interval_s: 1\n    retries: 3\n\
             rollout:\n{rollout}"
        ),
    );
}

#[test]
fn a_failing_canary_spares_the_fleet_and_the_failure_budget_halts_a_rollout() {
    let Some(f) = Fleet::boot("rb", 4) else {
        return;
    };
    let hosts = f.bed.hosts();
    let names: Vec<&str> = hosts.iter().map(|h| h.name()).collect();
    let o = f.run(&["--accept-new-host-keys"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A canary batch of one that fails its health check: nothing else is touched.
    hosts[0].exec_ok(&["touch", "/etc/clarity-test-broken-canary"]);
    set_rollout_deployment(
        &f,
        "canary",
        "  canary: 1\n  batch_size: 1\n  max_failures: 0\n",
    );
    f.commit("v-canary with a canary batch");
    let o = f.run(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("canary batch of `acme/web/prod` failed"),
        "{out}"
    );
    assert!(result_of(&o, names[0]).contains("rolled back"), "{out}");
    for h in &hosts[1..] {
        assert!(result_of(&o, h.name()).contains("not attempted"), "{out}");
        assert_serving(h, "hello");
    }
    assert_serving(&hosts[0], "hello");

    // No canary, batches of one, one failure allowed across the whole rollout: the first
    // failure is tolerated, the second halts it, and the remaining hosts stay as they were.
    hosts[0].exec_ok(&["touch", "/etc/clarity-test-broken-budget"]);
    hosts[1].exec_ok(&["touch", "/etc/clarity-test-broken-budget"]);
    set_rollout_deployment(&f, "budget", "  batch_size: 1\n  max_failures: 1\n");
    f.commit("v-budget with a failure budget of one");
    let o = f.run(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("exceeded its failure budget (2 failed, max_failures 1)"),
        "{out}"
    );
    assert!(result_of(&o, names[0]).contains("rolled back"), "{out}");
    assert!(result_of(&o, names[1]).contains("rolled back"), "{out}");
    for h in &hosts[2..] {
        assert!(result_of(&o, h.name()).contains("not attempted"), "{out}");
        assert_serving(h, "hello");
    }
}

/// The environment variable that makes [`ssh_pool_inner`] run (from
/// [`kept_connections_are_reused_replaced_when_dead_and_bounded`], in the hosts' network):
/// `NAME=ADDRESS=LEADER_PID` per host, separated by spaces.
const POOL_INNER_ENV: &str = "CLARITY_TEST_POOL_HOSTS";

/// First contact by a dry-run: the agent travels stripped and compressed (these hosts have
/// gzip, not xz or zstd), the host's file is the stripped build, and the run says it installed
/// it. Then the connection pool, driven through the library where the reconciler runs (as the
/// passes of `--watch` drive it): see [`ssh_pool_inner`].
#[test]
fn kept_connections_are_reused_replaced_when_dead_and_bounded() {
    let Some(f) = Fleet::boot("fp", 3) else {
        return;
    };
    let o = f.run(&["--dry-run", "--accept-new-host-keys", "--max-uploads", "2"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "changes pending: {out}");
    let summary = format!("note: installed agent {} (", env!("CARGO_PKG_VERSION"));
    let line = out
        .lines()
        .find(|l| l.starts_with(&summary))
        .unwrap_or_else(|| panic!("no summary line: {out}"));
    assert!(line.ends_with(") on 3 hosts"), "{line}");
    let upload_dir = f.dir.path().join("work/.agent-upload");
    let builds: Vec<_> = std::fs::read_dir(&upload_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let stripped = std::fs::read(builds[0].join("clarity-reconcile")).unwrap();
    let sent = std::fs::metadata(builds[0].join("clarity-reconcile.gz"))
        .unwrap()
        .len();
    let whole = std::fs::metadata(&f.reconciler).unwrap().len();
    assert!(sent < whole / 2, "sent {sent} bytes of {whole}");
    let stripped_sha = hex::encode(Sha256::digest(&stripped));
    for h in f.bed.hosts() {
        assert!(
            out.contains(&format!("{}: installed agent", h.name())) && out.contains("as gzip"),
            "{out}"
        );
        let build = agent_builds(h).remove(0);
        let on_host = h.exec_ok(&["sha256sum", &format!("/var/lib/clarity/agent/{build}")]);
        assert!(
            on_host.starts_with(&stripped_sha),
            "{on_host} vs {stripped_sha}"
        );
        let leftovers = h.exec_ok(&["ls", "-A", "/var/lib/clarity/agent"]);
        assert!(!leftovers.contains(".upload-"), "{leftovers}");
    }

    let hosts: Vec<String> = f
        .bed
        .hosts()
        .iter()
        .map(|h| format!("{}={}={}", h.name(), h.address(), h.leader_pid()))
        .collect();
    let exe = std::env::current_exe().unwrap();
    let inner = f
        .bed
        .network_command(&exe)
        .args([
            "--exact",
            "ssh_pool_inner",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(POOL_INNER_ENV, hosts.join(" "))
        .env("CLARITY_TEST_POOL_DIR", f.dir.path())
        .env("CLARITY_TEST_POOL_AGENT", &f.reconciler)
        .output()
        .unwrap();
    let inner_out = text(&inner);
    eprintln!("--- ssh_pool_inner ---\n{inner_out}--- end ---");
    assert!(inner.status.success(), "{inner_out}");
    assert!(
        inner_out.contains("1 passed"),
        "the inner test ran: {inner_out}"
    );
}

/// A host as [`ssh_pool_inner`] sees it: its address, and its sshd seen through `nsenter`.
struct PoolHost {
    name: String,
    address: String,
    leader: String,
}

impl PoolHost {
    fn exec(&self, argv: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.leader, "-a"])
            .args(argv)
            .output()
            .unwrap();
        assert!(out.status.success(), "{argv:?} on {}: {out:?}", self.name);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Logins sshd has accepted so far (its journal).
    fn accepted(&self) -> usize {
        self.exec(&["journalctl", "--no-pager", "-o", "cat"])
            .matches("Accepted publickey")
            .count()
    }

    /// Connections open now: sshd's per-connection processes for root.
    fn sessions(&self) -> Vec<String> {
        self.exec(&["ps", "-eo", "pid=,args="])
            .lines()
            .filter(|l| l.contains("sshd: root"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Waits (up to 10 s) until `f` holds of the host, then asserts it.
    fn settles<T: std::fmt::Debug>(
        &self,
        what: &str,
        get: impl Fn(&Self) -> T,
        f: impl Fn(&T) -> bool,
    ) {
        let until = Instant::now() + std::time::Duration::from_secs(10);
        let mut v = get(self);
        while !f(&v) && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(100));
            v = get(self);
        }
        assert!(f(&v), "{}: {what}: {v:?}", self.name);
    }
}

/// Runs only from [`kept_connections_are_reused_replaced_when_dead_and_bounded`], in the
/// network that reaches the hosts; checks every claim on the hosts themselves:
/// - three passes over three hosts through one pool open three connections in all, not nine;
/// - a kept connection whose sshd is killed is replaced at the next pass, which succeeds;
/// - with `max_connections` 2, three hosts never hold more than two connections: opening the
///   third closes the least recently used one, and three hosts at once all get served.
#[test]
fn ssh_pool_inner() {
    use clarity::transport::ssh::{AgentBinary, Fleet as SshFleet, SshOptions, SshTarget};
    use std::sync::{Arc, Mutex};
    let Ok(spec) = std::env::var(POOL_INNER_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("CLARITY_TEST_POOL_DIR").unwrap());
    let agent = PathBuf::from(std::env::var("CLARITY_TEST_POOL_AGENT").unwrap());
    let hosts: Vec<PoolHost> = spec
        .split_whitespace()
        .map(|h| {
            let mut parts = h.split('=');
            PoolHost {
                name: parts.next().unwrap().into(),
                address: parts.next().unwrap().into(),
                leader: parts.next().unwrap().into(),
            }
        })
        .collect();
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let fleet = |max_connections: usize| {
        let notes = notes.clone();
        SshFleet::new(
            SshOptions {
                identity: Some(dir.join("id_ed25519")),
                known_hosts: Some(dir.join("known_hosts")),
                connect_timeout: std::time::Duration::from_secs(5),
                reconnect_timeout: std::time::Duration::from_secs(5),
                max_connections,
                ..SshOptions::default()
            },
            AgentBinary::cached(agent.clone(), dir.join("work/.agent-sha256.json")),
            Arc::new(move |line: &str| notes.lock().unwrap().push(line.to_string())),
        )
    };
    let target = |h: &PoolHost| SshTarget {
        host: h.name.clone(),
        address: h.address.clone(),
        port: 22,
        user: "root".into(),
        host_key: None,
        identity_file: None,
        sudo: false,
        jump: None,
    };
    let inspect = |fleet: &SshFleet, h: &PoolHost| {
        let host = fleet.host(target(h));
        let mut host = host.lock().unwrap();
        host.inspect()
            .unwrap_or_else(|e| panic!("{}: {}", h.name, e.message));
    };
    let before: Vec<usize> = hosts.iter().map(PoolHost::accepted).collect();

    let kept = fleet(256);
    for _pass in 0..3 {
        for h in &hosts {
            inspect(&kept, h);
        }
    }
    for (h, n) in hosts.iter().zip(&before) {
        h.settles("one login for three passes", PoolHost::accepted, |a| {
            *a == n + 1
        });
        h.settles("one open connection", |h| h.sessions().len(), |s| *s == 1);
    }
    assert_eq!(kept.pool().open(), 3);

    // The sshd serving h1's kept connection dies: the next pass notices, reconnects once, and
    // every host answers.
    let h1 = &hosts[0];
    h1.exec(&["kill", "-9", &h1.sessions()[0]]);
    h1.settles(
        "the connection is gone",
        |h| h.sessions().len(),
        |s| *s == 0,
    );
    for h in &hosts {
        inspect(&kept, h);
    }
    let said = notes.lock().unwrap().join("\n");
    assert!(
        said.contains(&format!("{}: ", h1.name)) && said.contains("reconnecting"),
        "{said}"
    );
    h1.settles("a second login", PoolHost::accepted, |a| {
        *a == before[0] + 2
    });
    for (h, n) in hosts.iter().zip(&before).skip(1) {
        h.settles("still one login", PoolHost::accepted, |a| *a == n + 1);
    }
    kept.close_all();
    for h in &hosts {
        h.settles("closed politely", |h| h.sessions().len(), |s| *s == 0);
    }

    // At most two connections: h1, h2, then h3 closes h1's (the least recently used); h1
    // again closes h2's.
    let bounded = fleet(2);
    let open = |hosts: &[PoolHost]| hosts.iter().map(|h| h.sessions().len()).collect::<Vec<_>>();
    for h in &hosts {
        inspect(&bounded, h);
    }
    assert_eq!(bounded.pool().open(), 2);
    hosts[0].settles("h1's closed first", |h| h.sessions().len(), |s| *s == 0);
    assert_eq!(open(&hosts), [0, 1, 1]);
    inspect(&bounded, &hosts[0]);
    hosts[1].settles("then h2's", |h| h.sessions().len(), |s| *s == 0);
    assert_eq!(open(&hosts), [1, 0, 1]);
    // Three hosts at once with two slots: each waits its turn, none fails.
    std::thread::scope(|s| {
        for h in &hosts {
            let bounded = &bounded;
            s.spawn(move || inspect(bounded, h));
        }
    });
    assert_eq!(bounded.pool().open(), 2);
    let total: usize = open(&hosts).iter().sum();
    assert!(total <= 2, "{:?}", open(&hosts));
    bounded.close_all();
}
