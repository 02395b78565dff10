//! Reaching servers the way operators do: real Debian hosts (systemd-nspawn, their own sshd
//! and systemd) on a network the reconciler has no route to, reachable only through a bastion
//! sshd in a namespace of its own, which has one leg on the hosts' bridge and one on the
//! reconciler's link. The reconciler reads an OpenSSH client config (`--ssh-config`): a `Host
//! bastion` alias (HostName, User, IdentityFile) and `Host h*` blocks giving the hosts their
//! `User deploy` and `ProxyJump bastion`. `deploy` is not root: the agent runs with `sudo -n`.
//!
//! What is checked: without the config the hosts are unreachable (no route but the bastion);
//! through the bastion the host with the documented sudoers rule converges, and the record
//! (ledger) matches the release the host runs (`readlink current`); the host without the rule
//! fails with an error naming it and the exact line to add, and nothing was applied there;
//! once the line is added it converges too; a host certificate (`ssh-keygen -s`, served with
//! sshd's `HostCertificate`) from the CA of an `@cert-authority` line is accepted, and one
//! from another CA, an expired one and one for another host are refused; the bastion's host
//! key is verified like any host's (a different one is refused, naming the jump host). Two
//! quick tests without hosts: a bad `proxy_jump` is a validation error where it is written,
//! and an unreadable ssh config names its file and line.

mod support;

use support::text;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;
use support::nspawn::{Host, Options, Testbed};

const PORT: u16 = 18710;
const USER: &str = "deploy";
const SUDOERS_LINE: &str = "deploy ALL=(root) NOPASSWD: /var/lib/clarity/agent/clarity-reconcile-*";

const SERVICE: &str = r#"import http.server, os
greeting = open("conf/greeting.txt").read().strip()
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

/// The hosts, the bastion between them and the reconciler, and a config repository.
struct Bed {
    bed: Testbed,
    dir: tempfile::TempDir,
    reconciler: PathBuf,
    /// The reconciler's namespace: its only link goes to the bastion.
    netns: String,
    bastion_address: String,
    _bastion: support::Server,
}

impl Bed {
    fn boot() -> Option<Bed> {
        support::require_program("ssh-keygen")?;
        support::require_program("git")?;
        let sshd = support::require_program("sshd")?;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        keygen(&key);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let bed = Testbed::boot_with(
            "bj",
            Options {
                // Root has no key on the hosts: only `deploy` can log in.
                authorized_key: None,
                bind_ro: vec![config.clone()],
                ..Options::hosts(2)
            },
        )?;
        for h in bed.hosts() {
            h.exec_ok(&["useradd", "--create-home", "--shell", "/bin/sh", USER]);
            // A new user is locked until it has a password field other than `!`.
            h.exec_ok(&["usermod", "-p", "*", USER]);
            h.exec_ok(&[
                "install",
                "-d",
                "-o",
                USER,
                "-m",
                "0700",
                "/home/deploy/.ssh",
            ]);
            std::fs::write(h.root().join("home/deploy/.ssh/authorized_keys"), &public).unwrap();
            h.exec_ok(&["chown", "deploy:", "/home/deploy/.ssh/authorized_keys"]);
            // The documented provisioning: the agent directory belongs to the SSH user.
            h.exec_ok(&[
                "install",
                "-d",
                "-o",
                USER,
                "-m",
                "0755",
                "/var/lib/clarity/agent",
            ]);
        }
        grant_sudo(bed.host("h1"));

        // The bastion: one leg on the hosts' bridge, one on the reconciler's link.
        let [a, b, c, _] = support::net::BASTION_LINK.base.octets();
        let bastion_address = format!("{a}.{b}.{c}.1");
        let reconciler_address = format!("{a}.{b}.{c}.2");
        let [ta, tb, tc, _] = support::net::TESTBED.base.octets();
        let bastion_on_bridge = format!("{ta}.{tb}.{tc}.250");
        let bn = bed.add_netns("bn");
        let rc = bed.add_netns("rc");
        let sw = bed.switch_netns().to_string();
        ip(&[
            "-n", &sw, "link", "add", "vbn", "type", "veth", "peer", "name", "eth0", "netns", &bn,
        ]);
        ip(&["-n", &sw, "link", "set", "vbn", "master", "br0", "up"]);
        ip(&[
            "-n",
            &bn,
            "addr",
            "add",
            &format!("{bastion_on_bridge}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &bn, "link", "set", "eth0", "up"]);
        ip(&[
            "-n", &bn, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &rc,
        ]);
        ip(&[
            "-n",
            &bn,
            "addr",
            "add",
            &format!("{bastion_address}/24"),
            "dev",
            "eth1",
        ]);
        ip(&["-n", &bn, "link", "set", "eth1", "up"]);
        ip(&[
            "-n",
            &rc,
            "addr",
            "add",
            &format!("{reconciler_address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &rc, "link", "set", "eth0", "up"]);
        // The bastion must not route (and the reconciler has no route to the bridge anyway):
        // a host is reached only through an SSH channel.
        let off = Command::new("ip")
            .args([
                "netns",
                "exec",
                &bn,
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv4/ip_forward",
            ])
            .status()
            .unwrap();
        assert!(off.success());
        let forwarding = Command::new("ip")
            .args(["netns", "exec", &bn, "cat", "/proc/sys/net/ipv4/ip_forward"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "0");

        let bastion_dir = dir.path().join("bastion");
        std::fs::create_dir_all(&bastion_dir).unwrap();
        let host_key = bastion_dir.join("host_key");
        keygen(&host_key);
        std::fs::write(bastion_dir.join("authorized_keys"), &public).unwrap();
        let sshd_config = bastion_dir.join("sshd_config");
        std::fs::write(
            &sshd_config,
            format!(
                "ListenAddress {bastion_address}\nPort 22\nHostKey {}\nPidFile {}\n\
                 AuthorizedKeysFile {}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowTcpForwarding yes\nPermitTTY no\nX11Forwarding no\n",
                host_key.display(),
                bastion_dir.join("sshd.pid").display(),
                bastion_dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let bastion = support::Server::start(
            "bastion sshd",
            Command::new("ip")
                .args(["netns", "exec", &bn])
                .arg(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&sshd_config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(bastion_dir.join("sshd.log")).unwrap()),
        );
        let listening = (0..100).any(|_| {
            let up = Command::new("ip")
                .args(["netns", "exec", &rc, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{bastion_address}/22"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !up {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            up
        });
        assert!(listening, "the bastion's sshd did not start");

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
        let f = Bed {
            bed,
            dir,
            reconciler,
            netns: rc,
            bastion_address: bastion_address.clone(),
            _bastion: bastion,
        };
        std::fs::write(
            f.ssh_config(),
            format!(
                "# The operator's ~/.ssh/config\nHost bastion\n  HostName {bastion_address}\n  \
                 User root\n  IdentityFile {}\nHost h*\n  User {USER}\n  ProxyJump bastion\n",
                key.display()
            ),
        )
        .unwrap();
        f.write(
            "clients/acme/client.yml",
            "id: acme\ncode: ACME\nname: Acme\n",
        );
        f.write(
            "clients/acme/datacenters/lab.yml",
            "code: lab\nname: Lab\ntype: edge\n",
        );
        for h in f.bed.hosts() {
            // No user here: the ssh config's `User deploy` applies.
            f.write(
                &format!("clients/acme/servers/{}.yml", h.name()),
                &format!(
                    "hostname: {}\ndatacenter: lab\nip_addresses:\n  - address: {}\n\
                     agent:\n  transport: ssh\n  service_manager: systemd\n  ssh:\n    sudo: true\n",
                    h.name(),
                    h.address()
                ),
            );
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
        let targets: String = f
            .bed
            .hosts()
            .iter()
            .map(|h| format!("  - server: {}\n", h.name()))
            .collect();
        f.write(
            "clients/acme/deployments/web/prod.yml",
            &format!(
                "artifact: web\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n{targets}\
                 env_vars:\n  PORT: \"{PORT}\"\n\
                 config_files:\n  - destination: conf/greeting.txt\n    content: \"through the bastion\\n\"\n\
                 service:\n  command: [\"python3\", \"web.py\"]\n\
                 health_checks:\n  - type: http\n    url: http://127.0.0.1:{PORT}/\n    interval_s: 1\n    retries: 20\n"
            ),
        );
        support::git(&f.config(), &["init", "-q"]);
        support::git(&f.config(), &["add", "-A"]);
        support::git(&f.config(), &["commit", "-qm", "initial"]);
        Some(f)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    fn ledger(&self) -> PathBuf {
        self.dir.path().join("work/ledger.sqlite")
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.config().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The reconciler in its own namespace, with the operator's ssh config (or `ssh_config`).
    fn run(&self, ssh_config: Option<&Path>, extra: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(&self.reconciler)
            .arg("--repo")
            .arg(self.config())
            .arg("--work-dir")
            .arg(self.dir.path().join("work"))
            .arg("--known-hosts")
            .arg(self.known_hosts())
            .arg("--ssh-config")
            .arg(ssh_config.unwrap_or(&self.ssh_config()))
            // The bastion's key comes from its ssh config alias (IdentityFile); the hosts'
            // from here.
            .arg("--identity")
            .arg(self.dir.path().join("id_ed25519"))
            .args(["--connect-timeout", "5", "--reconnect-timeout", "5"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("CLARITY_AGE_IDENTITY")
            .env_remove("CLARITY_STATE_DIR")
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }

    /// The newest run in the ledger.
    fn last_run(&self) -> serde_json::Value {
        let o = Command::new(support::clarity_bin())
            .arg("history")
            .arg("--ledger")
            .arg(self.ledger())
            .args(["--output", "json", "--limit", "1"])
            .env_remove("CLARITY_STATE_DIR")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let runs = v
            .as_array()
            .cloned()
            .unwrap_or_else(|| v["runs"].as_array().unwrap().clone());
        runs[0].clone()
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "clarity-bastion-test",
            "-f",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs the host's ed25519 key with `ca` (a host certificate for `principals`, valid
/// `validity`) and restarts its sshd, which then presents it.
fn sign_host_key(h: &Host, ca: &Path, principals: &str, validity: &str) {
    let public = h.root().join("etc/ssh/ssh_host_ed25519_key.pub");
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-s")
        .arg(ca)
        .args([
            "-I",
            &format!("{}-{principals}", h.name()),
            "-h",
            "-n",
            principals,
            "-V",
            validity,
        ])
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    h.exec_ok(&["systemctl", "restart", "ssh.service"]);
}

/// The documented sudoers rule, checked by visudo as an operator would.
fn grant_sudo(h: &Host) {
    std::fs::write(
        h.root().join("etc/sudoers.d/clarity"),
        format!("{SUDOERS_LINE}\n"),
    )
    .unwrap();
    h.exec_ok(&["chmod", "0440", "/etc/sudoers.d/clarity"]);
    h.exec_ok(&["visudo", "-cf", "/etc/sudoers.d/clarity"]);
}

fn result_of(o: &Output, host: &str) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .unwrap_or_else(|| panic!("no result row for {host}:\n{}", text(o)))
        .to_string()
}

fn ledger_host<'a>(run: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    run["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["server"] == host)
        .unwrap_or_else(|| panic!("no {host} in {run}"))
}

/// The release the host runs, as its `current` symlink says.
fn current_release(h: &Host) -> String {
    let link = h.exec_ok(&["readlink", "/opt/clarity/web/current"]);
    link.trim().rsplit('/').next().unwrap().to_string()
}

fn assert_serving(h: &Host) {
    assert_eq!(
        h.exec_ok(&["systemctl", "is-active", "clarity-web.service"])
            .trim(),
        "active",
        "{}",
        h.name()
    );
    let out = h.exec_ok(&[
        "python3",
        "-c",
        &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{PORT}/').read().decode().strip())"),
    ]);
    assert_eq!(out.trim(), "through the bastion", "{}", h.name());
}

#[test]
fn an_apply_through_a_proxyjump_bastion_as_a_sudo_user_converges_real_hosts() {
    let started = Instant::now();
    let Some(f) = Bed::boot() else {
        return;
    };
    eprintln!("booted in {:?}", started.elapsed());
    let (h1, h2) = (f.bed.host("h1"), f.bed.host("h2"));

    // Without the ssh config there is no way to the hosts: the bastion is the only route.
    let o = f.run(
        Some(Path::new("/dev/null")),
        &["--dry-run", "--accept-new-host-keys"],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for h in [h1, h2] {
        assert!(
            out.contains(&format!("host {} (acme): UNREACHABLE", h.name())),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "host {}: cannot connect to {}:22",
                h.name(),
                h.address()
            )),
            "{out}"
        );
    }

    // Through the bastion, as `deploy` with sudo: h1 has the rule and converges, h2 lacks it
    // and is refused with the line to add; nothing is applied there.
    let t = Instant::now();
    let o = f.run(None, &["--accept-new-host-keys"]);
    let out = text(&o);
    eprintln!(
        "first apply through the bastion in {:?}:\n{out}",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(result_of(&o, "h1").contains("converged"), "{out}");
    assert!(result_of(&o, "h2").contains("failed"), "{out}");
    assert!(
        out.contains("host h2: sudo refused to run the agent as root for deploy")
            && out.contains(&format!(
                "add this line to the host's sudoers (`visudo -f /etc/sudoers.d/clarity`): {SUDOERS_LINE}"
            )),
        "{out}"
    );
    assert_serving(h1);
    let known = std::fs::read_to_string(f.known_hosts()).unwrap();
    assert!(
        known.contains(&format!("{} ssh-ed25519 ", f.bastion_address)),
        "the bastion's key is recorded like any host's: {known}"
    );
    for h in [h1, h2] {
        assert!(
            known.contains(&format!("{} ssh-ed25519 ", h.address())),
            "{known}"
        );
    }
    // The agent ran as root (it manages systemd units), its files there are deploy's upload.
    let owner = h1.exec_ok(&["stat", "-c", "%U", "/opt/clarity/web/current"]);
    assert_eq!(owner.trim(), "root");
    assert!(
        !h2.exec(&["test", "-e", "/opt/clarity/web"])
            .status
            .success(),
        "nothing was applied on h2"
    );
    let run = f.last_run();
    assert_eq!(run["outcome"], "failed", "{run}");
    let r1 = ledger_host(&run, "h1");
    assert_eq!(r1["outcome"], "converged", "{run}");
    assert_eq!(
        r1["deployments"][0]["release"],
        current_release(h1),
        "{run}"
    );
    let r2 = ledger_host(&run, "h2");
    assert_eq!(r2["outcome"], "failed", "{run}");
    assert!(
        r2.to_string().contains(SUDOERS_LINE),
        "the record names the line to add: {r2}"
    );

    // With the line added, h2 converges too; h1 has nothing to do.
    grant_sudo(h2);
    let t = Instant::now();
    let o = f.run(None, &[]);
    let out = text(&o);
    eprintln!("second apply in {:?}:\n{out}", t.elapsed());
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(result_of(&o, "h2").contains("converged"), "{out}");
    assert_serving(h2);
    let run = f.last_run();
    let r2 = ledger_host(&run, "h2");
    assert_eq!(r2["outcome"], "converged", "{run}");
    assert_eq!(
        r2["deployments"][0]["release"],
        current_release(h2),
        "{run}"
    );

    // Host certificates: h1's sshd presents its key signed by a CA (`ssh-keygen -s`), and
    // known_hosts knows no key of h1, only the CA, in an `@cert-authority` line for the
    // hosts' network. A certificate from that CA naming h1 is accepted; one from another CA,
    // an expired one and one for another host are refused, and nothing is recorded.
    let ca = f.dir.path().join("host_ca");
    let other_ca = f.dir.path().join("other_ca");
    keygen(&ca);
    keygen(&other_ca);
    let ca_public = std::fs::read_to_string(ca.with_extension("pub")).unwrap();
    let [ta, tb, tc, _] = support::net::TESTBED.base.octets();
    let bastion_line = known
        .lines()
        .find(|l| l.starts_with(&format!("{} ", f.bastion_address)))
        .unwrap()
        .to_string();
    let with_ca = format!(
        "{bastion_line}\n@cert-authority {ta}.{tb}.{tc}.* {}\n",
        ca_public.trim()
    );
    std::fs::write(
        h1.root().join("etc/ssh/sshd_config.d/clarity-cert.conf"),
        "HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\n",
    )
    .unwrap();
    let h1_address = h1.address().to_string();
    let cases: [(&Path, &str, &str, Option<&str>); 4] = [
        (&ca, "h1,web-1.example", "-1h:+1h", None),
        (
            &other_ca,
            "h1",
            "-1h:+1h",
            Some("not by a CA known_hosts trusts"),
        ),
        (&ca, "h1", "20200101:20200102", Some("is valid from")),
        (&ca, "h2", "-1h:+1h", Some("is for h2, not for")),
    ];
    for (signer, principals, validity, refused) in cases {
        sign_host_key(h1, signer, principals, validity);
        std::fs::write(f.known_hosts(), &with_ca).unwrap();
        let o = f.run(
            None,
            &["--dry-run", "--server", "h1", "--accept-new-host-keys"],
        );
        let out = text(&o);
        eprintln!(
            "certificate from {} for {principals} ({validity}):
{out}",
            signer.display()
        );
        match refused {
            None => {
                assert_eq!(o.status.code(), Some(0), "{out}");
                assert!(out.contains("host h1 (acme): no changes"), "{out}");
            }
            Some(why) => {
                assert_eq!(o.status.code(), Some(1), "{out}");
                assert!(
                    out.contains(&format!(
                        "host h1: the SSH host key of {h1_address}:22 does not match: expected a \
                         valid host certificate from a CA known_hosts trusts, but certificate"
                    )) && out.contains(why),
                    "{out}"
                );
            }
        }
        assert_eq!(
            std::fs::read_to_string(f.known_hosts()).unwrap(),
            with_ca,
            "a certificate is never recorded as a key"
        );
    }
    std::fs::write(f.known_hosts(), &known).unwrap();

    // The bastion proves who it is before it is trusted with anything: another key for its
    // address is refused, naming the jump host.
    let other = f.dir.path().join("other_key");
    keygen(&other);
    let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    let rewritten: String = known
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{} ", f.bastion_address)) {
                format!("{} {}\n", f.bastion_address, other_key.join(" "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(f.known_hosts(), rewritten).unwrap();
    let o = f.run(None, &["--dry-run"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "host h1: jump host root@{}:22: the SSH host key of {}:22 does not match",
            f.bastion_address, f.bastion_address
        )),
        "{out}"
    );
    eprintln!("whole test in {:?}", started.elapsed());
}

/// A jump host that is not `[user@]host[:port]`, or more than one, is a validation error at
/// its place in the server file; sudo for root is a warning.
#[test]
fn a_bad_proxy_jump_is_reported_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "clients/acme/client.yml",
            "id: acme\ncode: ACME\nname: Acme\n",
        ),
        (
            "clients/acme/datacenters/lab.yml",
            "code: lab\nname: Lab\ntype: edge\n",
        ),
        (
            "clients/acme/servers/web-1.yml",
            "hostname: web-1\ndatacenter: lab\nip_addresses:\n  - address: 10.231.0.11\nagent:\n  \
             transport: ssh\n  ssh:\n    user: root\n    sudo: true\n    proxy_jump: \"a,b\"\n",
        ),
    ];
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let o = Command::new(support::clarity_bin())
        .args(["validate", "--repo"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("clients/acme/servers/web-1.yml:10:17")
            && out.contains("agent.ssh.proxy_jump: more than one jump host"),
        "{out}"
    );
    assert!(
        out.contains("clients/acme/servers/web-1.yml:9:11")
            && out.contains("sudo changes nothing for root"),
        "{out}"
    );
}

/// An ssh config with a value Clarity cannot read stops every SSH host before any connection,
/// naming the file, line and column.
#[test]
fn an_unreadable_ssh_config_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config");
    let artifact = format!(
        "id: web\ntype: script\nrepository: local\nversions:\n  - version: \"1.0.0\"\n    sha256: \"{}\"\n    location: web.py\n",
        hex::encode(Sha256::digest(SERVICE.as_bytes()))
    );
    let files = [
        (
            "clients/acme/client.yml",
            "id: acme\ncode: ACME\nname: Acme\n",
        ),
        (
            "clients/acme/datacenters/lab.yml",
            "code: lab\nname: Lab\ntype: edge\n",
        ),
        (
            "clients/acme/servers/web-1.yml",
            "hostname: web-1\ndatacenter: lab\nip_addresses:\n  - address: 10.231.0.11\nagent:\n  \
             transport: ssh\n  service_manager: systemd\n",
        ),
        (
            "repositories/local.yml",
            "name: local\ntype: file\npath: files\n",
        ),
        ("files/web.py", SERVICE),
        ("artifacts/web.yml", &artifact),
        (
            "clients/acme/deployments/web/prod.yml",
            "artifact: web\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n  - server: web-1\n\
             service:\n  command: [\"python3\", \"web.py\"]\n",
        ),
    ];
    for (path, text) in files {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let ssh_config = dir.path().join("ssh_config");
    std::fs::write(&ssh_config, "Host web-*\n  User deploy\n  Port ssh\n").unwrap();
    let o = Command::new(support::clarity_bin())
        .arg("--repo")
        .arg(&repo)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--ssh-config")
        .arg(&ssh_config)
        .arg("--dry-run")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "host web-1 (acme): FAILED\n  error: the ssh config cannot be used: {}:3:3: `Port ssh` is not a port number",
            ssh_config.display()
        )),
        "{out}"
    );
}
