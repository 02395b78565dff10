//! Container runtimes for tests: a private dockerd (own data root, exec root and socket,
//! `--iptables=false`, stopped by PID, its bridge and mounts removed afterwards), a private
//! podman (own `--root`/`--runroot` and containers.conf with runc), a private LXC directory,
//! and images built at test time from busybox-static (no registry is reachable), plus a config
//! repository with one container deployment on a `local` sandbox host.

use super::{free_port, git, require, require_program};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DOCKER: &str = "/usr/bin/docker";
pub const PODMAN: &str = "/usr/bin/podman";
pub const BUSYBOX: &str = "/bin/busybox";

/// Output of a command that must succeed.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A root filesystem holding busybox with the applets the tests use, `/www/index.html` saying
/// `body`, and `/www/health` only when `healthy`.
pub fn busybox_rootfs(dir: &Path, body: &str, healthy: bool) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    for applet in ["sh", "httpd", "cat", "sleep", "echo", "ls", "env"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["www", "proc", "sys", "dev", "etc", "tmp", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("www/index.html"), format!("{body}\n")).unwrap();
    if healthy {
        std::fs::write(dir.join("www/health"), "OK\n").unwrap();
    }
}

/// A private dockerd. Dropping it removes its containers, stops it by PID and cleans up
/// what it leaves behind.
pub struct Dockerd {
    pub dir: PathBuf,
    pub sock: String,
    child: Option<Child>,
}

impl Dockerd {
    pub fn start(dir: &Path) -> Option<Dockerd> {
        if !super::require_root() {
            return None;
        }
        let dockerd = require_program("dockerd")?;
        if !require(
            Path::new(DOCKER).is_file(),
            "Debian's docker client /usr/bin/docker (docker.io)",
        ) || !require(
            Path::new(BUSYBOX).is_file(),
            "busybox-static at /bin/busybox",
        ) {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let sock = format!("unix://{}/sock", dir.display());
        let mut cmd = Command::new(dockerd);
        cmd.args([
            "--data-root",
            dir.join("root").to_str().unwrap(),
            "--exec-root",
            dir.join("exec").to_str().unwrap(),
            "--pidfile",
            dir.join("pid").to_str().unwrap(),
            "-H",
            &sock,
            "--iptables=false",
            "--ip6tables=false",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("dockerd.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("dockerd.err")).unwrap());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("dockerd starts");
        let d = Dockerd {
            dir: dir.to_path_buf(),
            sock,
            child: Some(child),
        };
        let started = Instant::now();
        while d.docker(&["version"]).status().is_ok_and(|s| !s.success()) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "dockerd did not come up: {}",
                std::fs::read_to_string(dir.join("dockerd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(d)
    }

    /// The client, talking to this daemon only.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.args(["-H", &self.sock]).args(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    pub fn out(&self, args: &[&str]) -> String {
        run(&mut self.docker(args))
    }

    /// `docker inspect --format F NAME`, or `None` when there is no such object.
    pub fn inspect(&self, format: &str, name: &str) -> Option<String> {
        let o = self
            .docker(&["inspect", "--format", format, name])
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// A busybox web image archive (`docker save` format) serving `body`; the image is removed
    /// from the daemon again so that the agent's load is real. Returns (archive, image id).
    pub fn web_image(&self, dir: &Path, tag: &str, body: &str, healthy: bool) -> (PathBuf, String) {
        let root = dir.join(format!("rootfs-{tag}"));
        busybox_rootfs(&root, body, healthy);
        let tar = dir.join(format!("rootfs-{tag}.tar"));
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        let name = format!("clarity-test/web:{tag}");
        let id = self.out(&[
            "import",
            "--change",
            r#"CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#,
            tar.to_str().unwrap(),
            &name,
        ]);
        let archive = dir.join(format!("web-{tag}.tar"));
        self.out(&["save", "-o", archive.to_str().unwrap(), &name]);
        self.out(&["image", "rm", &name]);
        (archive, id)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(ids) = self.docker(&["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]).output();
            }
        }
        if let Some(mut child) = self.child.take() {
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
            let _ = child.wait();
        }
        unmount_below(&self.dir);
        let _ = Command::new("ip")
            .args(["link", "delete", "docker0"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Unmounts everything mounted below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

/// A config repository with one `local` sandbox host `h1` and one container deployment of
/// the artifact `web`, committed to git.
pub struct ContainerRepo {
    pub dir: PathBuf,
    pub repo: PathBuf,
    pub work: PathBuf,
    pub port: u16,
    pub kind: &'static str,
}

impl ContainerRepo {
    /// `agent_containers` is the YAML of the server's `agent.containers` block (indented by
    /// four spaces).
    pub fn new(dir: &Path, kind: &'static str, agent_containers: &str) -> ContainerRepo {
        let r = ContainerRepo {
            dir: dir.to_path_buf(),
            repo: dir.join("config"),
            work: dir.join("work"),
            port: free_port(),
            kind,
        };
        r.write(
            "clarity.yml",
            "keep_releases: 2\nallowed_absolute_roots:\n  - /srv\n",
        );
        r.write(
            "clients/acme/client.yml",
            "id: acme\ncode: ACME\nname: Acme\n",
        );
        r.write(
            "clients/acme/datacenters/lab.yml",
            "code: lab\nname: Lab\ntype: edge\n",
        );
        r.write(
            "clients/acme/servers/h1.yml",
            &format!(
                "hostname: h1\ndatacenter: lab\nagent:\n  transport: local\n  root: sandboxes/h1\n  service_manager: process\n  containers:\n{agent_containers}"
            ),
        );
        r.write(
            "repositories/local.yml",
            "name: local\ntype: file\npath: files\n",
        );
        git(&r.repo, &["init", "-q"]);
        r
    }

    pub fn write(&self, path: &str, text: &str) {
        let p = self.repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The artifact's versions: (version, archive file).
    pub fn set_versions(&self, versions: &[(&str, &Path)]) {
        let mut yml = format!(
            "id: web\ntype: {}\nrepository: local\nversions:\n",
            self.kind
        );
        for (v, archive) in versions {
            let name = archive.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(archive).unwrap();
            let target = self.repo.join("files").join(&name);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, &bytes).unwrap();
            yml.push_str(&format!(
                "  - version: \"{v}\"\n    sha256: \"{}\"\n    location: {name}\n    size: {}\n",
                super::sandbox::sha256(&bytes),
                bytes.len()
            ));
        }
        // Image archives are big for git; the file repository reads the work tree's files.
        self.write("artifacts/web.yml", &yml);
    }

    /// The deployment at `version` with the `container:` block `container` (indented by two
    /// spaces) and extra top-level YAML.
    pub fn set_deployment(&self, version: &str, container: &str, extra: &str) {
        self.write(
            "clients/acme/deployments/web/mock.yml",
            &format!(
                "artifact: web\nprofile: mock\nversion: \"{version}\"\ntargets:\n  - server: h1\n\
                 restart_policy: on-failure\n\
                 env_vars:\n  GREETING: \"hello from {version}\"\n\
                 config_files:\n  - destination: conf/app.conf\n    content: \"release {version}\\n\"\n\
                 container:\n{container}\
                 health_checks:\n  - name: web-health\n    type: http\n    url: http://127.0.0.1:{port}/health\n    interval_s: 1\n    retries: 4\n\
                 \x20 - name: config-inside\n    type: command\n    command: [\"/bin/cat\", \"/etc/clarity/conf/app.conf\"]\n    retries: 2\n{extra}",
                port = self.port
            ),
        );
    }

    pub fn commit(&self, msg: &str) {
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-qm", msg]);
    }

    pub fn clarity(&self, extra: &[&str]) -> std::process::Output {
        Command::new(super::clarity_bin())
            .args(["--repo", self.repo.to_str().unwrap()])
            .args([
                "--work-dir",
                self.work.to_str().unwrap(),
                "--profile",
                "mock",
            ])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("CLARITY_AGE_IDENTITY")
            .output()
            .unwrap()
    }

    pub fn drift(&self) -> std::process::Output {
        Command::new(super::clarity_bin())
            .args([
                "--repo",
                self.repo.to_str().unwrap(),
                "--profile",
                "mock",
                "drift",
            ])
            .args(["--work-dir", self.work.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    pub fn sandbox(&self) -> PathBuf {
        self.work.join("sandboxes/h1")
    }

    pub fn current(&self) -> Option<String> {
        super::current_release(&self.sandbox(), "web")
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        super::http_get(self.port, path)
    }

    /// Waits until `GET /` answers `body`.
    pub fn wait_serving(&self, body: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self
                .get("/")
                .is_some_and(|(s, b)| s == 200 && b.trim() == body)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// What the ledger records for the host: (last run's host outcome, deployment_state
    /// release, healthy).
    pub fn recorded(&self) -> (String, String, bool) {
        let conn = rusqlite::Connection::open(self.work.join("ledger.sqlite")).unwrap();
        let outcome: String = conn
            .query_row(
                "SELECT h.outcome FROM run_hosts h JOIN runs r ON r.id = h.run_id \
                 WHERE r.mode = 'apply' ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let (release, healthy): (String, i64) = conn
            .query_row(
                "SELECT release_name, healthy FROM deployment_state WHERE server = 'h1' AND deployment = 'web'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (outcome, release, healthy == 1)
    }
}

/// Text of a command's stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An `lxc` artifact: one tar holding `meta.tar.xz` (an LXC `config` that runs busybox httpd
/// on the host network on `port`) and `rootfs.tar.xz` (the busybox root filesystem).
pub fn lxc_artifact(dir: &Path, tag: &str, body: &str, healthy: bool, port: u16) -> PathBuf {
    let work = dir.join(format!("lxc-{tag}"));
    let root = work.join("rootfs");
    busybox_rootfs(&root, body, healthy);
    let meta = work.join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("config"),
        format!(
            "lxc.arch = x86_64\nlxc.init.cmd = /bin/httpd -f -p {port} -h /www\n\
             lxc.mount.auto = proc:mixed sys:ro cgroup:mixed\nlxc.autodev = 1\n"
        ),
    )
    .unwrap();
    let pack = work.join("pack");
    std::fs::create_dir_all(&pack).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&meta)
        .arg("-cJf")
        .arg(pack.join("meta.tar.xz"))
        .arg("config"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cJf")
        .arg(pack.join("rootfs.tar.xz"))
        .arg("."));
    let archive = dir.join(format!("web-{tag}.tar"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&pack)
        .arg("-cf")
        .arg(&archive)
        .arg("meta.tar.xz")
        .arg("rootfs.tar.xz"));
    archive
}

/// An LXC container directory (`-P`) whose containers are stopped and destroyed on drop.
pub struct LxcPath {
    pub path: PathBuf,
}

impl LxcPath {
    pub fn new(path: PathBuf) -> Option<LxcPath> {
        if !super::require_root() {
            return None;
        }
        require_program("lxc-create")?;
        if !require(
            Path::new(BUSYBOX).is_file(),
            "busybox-static at /bin/busybox",
        ) {
            return None;
        }
        Some(LxcPath { path })
    }

    pub fn cmd(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(tool);
        c.arg("-P").arg(&self.path).args(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    pub fn state(&self, name: &str) -> Option<String> {
        let o = self
            .cmd("lxc-info", &["-n", name, "-s", "-H"])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("config").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for LxcPath {
    fn drop(&mut self) {
        for name in self.names() {
            let _ = self.cmd("lxc-stop", &["-n", &name, "-k"]).output();
            let _ = self.cmd("lxc-destroy", &["-n", &name]).output();
        }
        unmount_below(&self.path);
    }
}

/// A private podman: its own storage (`--root`, `--runroot`) and a containers.conf selecting
/// runc (crun fails on these hosts). Dropping it removes its containers and storage.
pub struct Podman {
    pub dir: PathBuf,
    pub conf: PathBuf,
}

impl Podman {
    pub fn new(dir: &Path) -> Option<Podman> {
        if !super::require_root()
            || !require(Path::new(PODMAN).is_file(), "podman at /usr/bin/podman")
            || !require(
                Path::new("/usr/bin/runc").is_file() || Path::new("/usr/sbin/runc").is_file(),
                "runc",
            )
            || !require(
                Path::new(BUSYBOX).is_file(),
                "busybox-static at /bin/busybox",
            )
        {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[engine]\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )
        .unwrap();
        Some(Podman {
            dir: dir.to_path_buf(),
            conf,
        })
    }

    /// The global options the agent passes too.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--root".into(),
            self.dir.join("root").display().to_string(),
            "--runroot".into(),
            self.dir.join("run").display().to_string(),
        ]
    }

    pub fn podman(&self, args: &[&str]) -> Command {
        let mut c = Command::new(PODMAN);
        c.env("CONTAINERS_CONF", &self.conf)
            .args(self.args())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn out(&self, args: &[&str]) -> String {
        run(&mut self.podman(args))
    }

    pub fn inspect(&self, format: &str, name: &str) -> Option<String> {
        let o = self
            .podman(&["container", "inspect", "--format", format, name])
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// A busybox web image archive (docker-archive format), removed from storage again.
    pub fn web_image(&self, dir: &Path, tag: &str, body: &str, healthy: bool) -> PathBuf {
        let root = dir.join(format!("rootfs-{tag}"));
        busybox_rootfs(&root, body, healthy);
        let tar = dir.join(format!("rootfs-{tag}.tar"));
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        let name = format!("localhost/clarity-test/web:{tag}");
        self.out(&[
            "import",
            "--change",
            r#"CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#,
            tar.to_str().unwrap(),
            &name,
        ]);
        let archive = dir.join(format!("web-{tag}.tar"));
        self.out(&[
            "save",
            "--format",
            "docker-archive",
            "-o",
            archive.to_str().unwrap(),
            &name,
        ]);
        self.out(&["image", "rm", &name]);
        archive
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "1"]).output();
        let _ = self.podman(&["system", "reset", "-f"]).output();
        unmount_below(&self.dir);
    }
}
