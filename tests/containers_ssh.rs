//! A `docker` deployment and an `lxc` deployment over SSH to a namespaced host: an sshd in its
//! own network namespace (reached from a second namespace the reconciler runs in, over a veth
//! pair the test creates) and its own mount namespace, where the agent's `/opt`,
//! `/var/lib/clarity` and `/srv` are the test's directories. The host's dockerd runs in the
//! same namespaces, so published ports and the agent's health checks meet there. Both
//! deployments serve; a docker upgrade whose health check fails is rolled back over SSH.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::containers::{DOCKER, busybox_rootfs, lxc_artifact, run, text};

struct Host {
    dir: PathBuf,
    ns_host: String,
    ns_reconciler: String,
    address: String,
    sshd: Option<Child>,
    dockerd: Option<Child>,
    sock: String,
    host_key: String,
}

impl Host {
    fn start(dir: &Path) -> Option<Host> {
        if !support::require_root() {
            return None;
        }
        for p in [
            "ip",
            "sshd",
            "ssh-keygen",
            "unshare",
            "nsenter",
            "dockerd",
            "lxc-create",
        ] {
            support::require_program(p)?;
        }
        let tag = format!("{:x}", std::process::id() % 0xffff);
        let octet = std::process::id() % 200 + 20;
        let h = Host {
            dir: dir.to_path_buf(),
            ns_host: format!("cct{tag}h"),
            ns_reconciler: format!("cct{tag}r"),
            address: format!("10.250.{octet}.2"),
            sshd: None,
            dockerd: None,
            sock: format!("unix://{}/docker/sock", dir.display()),
            host_key: String::new(),
        };
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", &h.ns_host]);
        ip(&["netns", "add", &h.ns_reconciler]);
        let (vh, vr) = (format!("cct{tag}a"), format!("cct{tag}b"));
        ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vr]);
        ip(&["link", "set", &vh, "netns", &h.ns_host]);
        ip(&["link", "set", &vr, "netns", &h.ns_reconciler]);
        for (ns, dev, addr) in [
            (&h.ns_host, &vh, h.address.clone()),
            (&h.ns_reconciler, &vr, format!("10.250.{octet}.1")),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Some(h)
    }

    /// sshd (and then dockerd) in the host's namespaces.
    fn boot(&mut self, authorized_key: &str) {
        let d = &self.dir;
        for sub in ["opt", "varlib", "srv", "docker"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // The mount point for the agent's state directory; empty on this machine.
        std::fs::create_dir_all("/var/lib/clarity").unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let key = d.join("host_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        self.host_key = std::fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(d.join("authorized_keys"), authorized_key).unwrap();
        let conf = format!(
            "Port 22\nListenAddress {}\nHostKey {}\nPidFile {}/sshd.pid\nUsePAM no\nStrictModes no\n\
             AuthorizedKeysFile {}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nSubsystem sftp /usr/lib/openssh/sftp-server\nLogLevel ERROR\n",
            self.address,
            key.display(),
            d.display(),
            d.display()
        );
        std::fs::write(d.join("sshd_config"), conf).unwrap();
        // unshare and nsenter exec in turn, so the child is sshd itself.
        // Not `ip netns exec`: it mounts a fresh /sys, hiding the cgroup hierarchies dockerd
        // and LXC need.
        let sshd = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "nsenter"])
            .arg(format!("--net=/run/netns/{}", self.ns_host))
            .arg("--")
            .arg(support::find_program("sshd").unwrap())
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let pid = sshd.id().to_string();
        self.sshd = Some(sshd);
        // Wait for unshare to have exec'd sshd in its new mount namespace.
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let started = Instant::now();
        while std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .as_ref()
            == Some(&own)
            || !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("sshd")
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "sshd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for (from, to) in [
            ("opt", "/opt"),
            ("varlib", "/var/lib/clarity"),
            ("srv", "/srv"),
        ] {
            run(Command::new("nsenter")
                .args(["-t", &pid, "-m", "--", "mount", "--bind"])
                .arg(d.join(from))
                .arg(to));
        }
        let docker = d.join("docker");
        let dockerd = Command::new("nsenter")
            .args(["-t", &pid, "-m", "-n", "--"])
            .arg(support::find_program("dockerd").unwrap())
            .arg("--data-root")
            .arg(docker.join("root"))
            .arg("--exec-root")
            .arg(docker.join("exec"))
            .arg("--pidfile")
            .arg(docker.join("pid"))
            .args(["-H", &self.sock, "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(docker.join("dockerd.err")).unwrap())
            .spawn()
            .unwrap();
        self.dockerd = Some(dockerd);
        let started = Instant::now();
        while !self.docker(&["version"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "dockerd did not come up: {}",
                std::fs::read_to_string(docker.join("dockerd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(["-H", &self.sock])
            .args(args)
            .output()
            .unwrap()
    }

    fn pid(&self) -> String {
        self.sshd.as_ref().unwrap().id().to_string()
    }

    /// A command inside the host's namespaces.
    fn inside(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid(), "-m", "-n", "--"])
            .args(argv)
            .output()
            .unwrap()
    }

    fn get(&self, port: u16) -> String {
        let url = format!("http://127.0.0.1:{port}/");
        let o = self.inside(&["/bin/busybox", "wget", "-q", "-O", "-", &url]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn wait_serving(&self, port: u16, body: &str) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.get(port) == body {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.sshd.is_some() {
            // LXC's command sockets live in the host's network namespace: stop it there.
            let lxc = self.dir.join("srv/lxc");
            for e in std::fs::read_dir(&lxc).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // The path as the host sees it: LXC names its command socket after it.
                let _ = self.inside(&["lxc-stop", "-P", "/srv/lxc", "-n", &name, "-k"]);
                let _ = self.inside(&["lxc-destroy", "-P", "/srv/lxc", "-n", &name]);
            }
            if let Ok(o) = Command::new(DOCKER)
                .args(["-H", &self.sock, "ps", "-aq"])
                .output()
            {
                for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = self.docker(&["rm", "-f", id]);
                }
            }
        }
        for child in [self.dockerd.take(), self.sshd.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let started = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        support::containers::unmount_below(&self.dir);
        for ns in [&self.ns_host, &self.ns_reconciler] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

fn write(repo: &Path, path: &str, text: &str) {
    let p = repo.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn artifact(repo: &Path, id: &str, kind: &str, versions: &[(&str, &Path)]) {
    let mut yml = format!("id: {id}\ntype: {kind}\nrepository: local\nversions:\n");
    for (v, file) in versions {
        let bytes = std::fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(file, repo.join("files").join(&name)).unwrap();
        yml.push_str(&format!(
            "  - version: \"{v}\"\n    sha256: \"{}\"\n    location: {name}\n",
            support::sandbox::sha256(&bytes)
        ));
    }
    write(repo, &format!("artifacts/{id}.yml"), &yml);
}

fn deployment(repo: &Path, id: &str, version: &str, container: &str, port: u16) {
    write(
        repo,
        &format!("clients/acme/deployments/{id}/prod.yml"),
        &format!(
            "artifact: {id}\nprofile: prod\nversion: \"{version}\"\ntargets:\n  - server: h1\n\
             env_vars:\n  GREETING: \"{id} {version}\"\n\
             container:\n{container}\
             health_checks:\n  - type: http\n    url: http://127.0.0.1:{port}/health\n    interval_s: 1\n    retries: 3\n"
        ),
    );
}

#[test]
fn docker_and_lxc_deployments_over_ssh_to_a_namespaced_host() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut host) = Host::start(&tmp.path().join("host")) else {
        return;
    };
    let key = tmp.path().join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    host.boot(&std::fs::read_to_string(key.with_extension("pub")).unwrap());

    // Images built here, with the host's daemon (the test's client reaches its socket).
    let images = tmp.path().join("images");
    let image = |tag: &str, healthy: bool| {
        let root = images.join(format!("rootfs-{tag}"));
        busybox_rootfs(&root, tag, healthy);
        let tar = images.join(format!("rootfs-{tag}.tar"));
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        let name = format!("clarity-test/web:{tag}");
        assert!(
            host.docker(&[
                "import",
                "--change",
                r#"CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#,
                tar.to_str().unwrap(),
                &name
            ])
            .status
            .success()
        );
        let archive = images.join(format!("web-{tag}.tar"));
        assert!(
            host.docker(&["save", "-o", archive.to_str().unwrap(), &name])
                .status
                .success()
        );
        assert!(host.docker(&["image", "rm", &name]).status.success());
        archive
    };
    let d1 = image("d1", true);
    let d2 = image("d2", false);
    let (web_port, box_port) = (18_080, 18_081);
    let l1 = lxc_artifact(&images, "l1", "l1", true, box_port);

    let repo = tmp.path().join("config");
    std::fs::create_dir_all(repo.join("files")).unwrap();
    write(&repo, "clarity.yml", "allowed_absolute_roots: [/srv]\n");
    write(
        &repo,
        "clients/acme/client.yml",
        "id: acme\ncode: ACME\nname: Acme\n",
    );
    write(
        &repo,
        "clients/acme/datacenters/lab.yml",
        "code: lab\nname: Lab\ntype: edge\n",
    );
    write(
        &repo,
        "repositories/local.yml",
        // Relative to the config repository: an absolute path needs the operator's
        // --allow-file-root (issue 12, finding 8).
        "name: local\ntype: file\npath: files\n",
    );
    write(
        &repo,
        "clients/acme/servers/h1.yml",
        &format!(
            "hostname: h1\ndatacenter: lab\nip_addresses:\n  - address: {}\n\
             agent:\n  transport: ssh\n  service_manager: supervisor\n  ssh:\n    host_key: \"{}\"\n\
             \x20 containers:\n    program: {DOCKER}\n    args: [\"-H\", \"{}\"]\n    lxc_path: /srv/lxc\n",
            host.address, host.host_key, host.sock
        ),
    );
    artifact(&repo, "web", "docker", &[("1", &d1), ("2", &d2)]);
    artifact(&repo, "box", "lxc", &[("1", &l1)]);
    let web = format!(
        "  ports:\n    - external: {web_port}\n      internal: 8080\n      host_ip: 127.0.0.1\n\
         \x20 volumes:\n    - host_path: /srv/web\n      container_path: /data\n"
    );
    let bx = format!("  network:\n    mode: host\n  ports:\n    - external: {box_port}\n");
    deployment(&repo, "web", "1", &web, web_port);
    deployment(&repo, "box", "1", &bx, box_port);
    support::git(&repo, &["init", "-q"]);
    support::git(&repo, &["add", "-A"]);
    support::git(&repo, &["commit", "-qm", "web and box"]);

    let reconciler = tmp.path().join("clarity-reconcile");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&reconciler)
        .arg(support::clarity_bin())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(support::clarity_bin(), &reconciler).unwrap();
    }
    let apply = || {
        Command::new("ip")
            .args(["netns", "exec", &host.ns_reconciler])
            .arg(&reconciler)
            .arg("--repo")
            .arg(&repo)
            .arg("--work-dir")
            .arg(tmp.path().join("work"))
            .arg("--identity")
            .arg(&key)
            .args(["--known-hosts", "/dev/null", "--connect-timeout", "5"])
            .env("NO_COLOR", "1")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("CLARITY_AGE_IDENTITY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let o = apply();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        host.wait_serving(web_port, "d1"),
        "docker container not serving: {:?}",
        host.inside(&[
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1:{web_port}/")
        ])
    );
    assert!(
        host.wait_serving(box_port, "l1"),
        "lxc container not serving"
    );
    // The agent's state is the test's directory, seen as /var/lib/clarity on the host.
    assert!(host.dir.join("varlib/state.json").is_file());
    assert!(host.dir.join("srv/lxc").read_dir().unwrap().count() == 1);

    deployment(&repo, "web", "2", &web, web_port);
    support::git(&repo, &["commit", "-qam", "web 2, broken"]);
    let o = apply();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("rolled back"), "{t}");
    assert!(
        host.wait_serving(web_port, "d1"),
        "not back on the previous container"
    );
    assert!(host.wait_serving(box_port, "l1"));
    drop(host);
    assert!(
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("cmdline"))
                .is_ok_and(|c| c.contains(&format!("-p\0{box_port}\0-h\0/www")))
        }),
        "the lxc container outlived the test"
    );
}
