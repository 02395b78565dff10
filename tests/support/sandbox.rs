//! A generated config repository with one `local` sandbox host running a real Python HTTP
//! service, for tests that converge hosts with the real binary.

use super::{free_port, git, require_program};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::{Command, Output};

pub const SERVICE: &str = r#"import http.server, os, sys
port = int(os.environ["PORT"])
greeting = open("conf/greeting.txt").read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (greeting + "\n").encode()
        status = 200 if self.path == "/health" and os.environ.get("BROKEN") != "1" else (503 if self.path == "/health" else 200)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// A generated config repository with one client, one sandbox server and one deployment of
/// the `web` artifact, committed to git.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub work: PathBuf,
    pub port: u16,
}

/// The frame of a config repository of `local` sandbox hosts: `clarity.yml`, client `acme`
/// with datacenter `lab`, one server per name (`local` transport, root `sandboxes/<name>`,
/// `process` service manager) and the `local` file repository (`files/`).
pub fn write_local_hosts(write: &dyn Fn(&str, &str), hosts: &[&str]) {
    write("clarity.yml", "keep_releases: 3\n");
    write(
        "clients/acme/client.yml",
        "id: acme\ncode: ACME\nname: Acme\n",
    );
    write(
        "clients/acme/datacenters/lab.yml",
        "code: lab\nname: Lab\ntype: edge\n",
    );
    for h in hosts {
        write(
            &format!("clients/acme/servers/{h}.yml"),
            &format!(
                "hostname: {h}\ndatacenter: lab\nagent:\n  transport: local\n  root: sandboxes/{h}\n  service_manager: process\n"
            ),
        );
    }
    write(
        "repositories/local.yml",
        "name: local\ntype: file\npath: files\n",
    );
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub struct Version<'a> {
    pub version: &'a str,
    pub file: &'a str,
    pub content: &'a [u8],
    /// Overrides the real sha256 (for the wrong-checksum test).
    pub sha256: Option<String>,
}

impl Fixture {
    pub fn new() -> Option<Fixture> {
        require_program("python3")?;
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("config");
        let work = dir.path().join("work");
        let f = Fixture {
            port: free_port(),
            repo,
            work,
            _dir: dir,
        };
        write_local_hosts(&|path, text| f.write(path, text), &["sbx-1"]);
        f.set_versions(&[Version {
            version: "1.0.0",
            file: "web-1.0.0.py",
            content: SERVICE.as_bytes(),
            sha256: None,
        }]);
        f.set_deployment("1.0.0", "hello", "");
        git(&f.repo, &["init", "-q"]);
        f.commit("initial");
        Some(f)
    }

    pub fn write(&self, path: &str, text: &str) {
        let p = self.repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn set_versions(&self, versions: &[Version]) {
        let mut yml = String::from("id: web\ntype: script\nrepository: local\nversions:\n");
        for v in versions {
            let path = self.repo.join("files").join(v.file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, v.content).unwrap();
            let sha = v.sha256.clone().unwrap_or_else(|| sha256(v.content));
            yml.push_str(&format!(
                "  - version: \"{}\"\n    sha256: \"{sha}\"\n    location: {}\n    size: {}\n",
                v.version,
                v.file,
                v.content.len()
            ));
        }
        self.write("artifacts/web.yml", &yml);
    }

    /// The deployment at `version`, serving `greeting`, with extra YAML appended.
    pub fn set_deployment(&self, version: &str, greeting: &str, extra: &str) {
        self.write(
            "clients/acme/deployments/web/mock.yml",
            &format!(
                "artifact: web\nprofile: mock\nversion: \"{version}\"\ntargets:\n  - server: sbx-1\n\
                 env_vars:\n  PORT: \"{port}\"\n\
                 config_files:\n  - destination: conf/greeting.txt\n    content: \"{greeting}\\n\"\n\
                 service:\n  command: [\"python3\", \"web-{version}.py\"]\n\
                 health_checks:\n  - type: http\n    url: http://127.0.0.1:{port}/health\n    interval_s: 1\n    retries: 10\n{extra}",
                port = self.port
            ),
        );
    }

    pub fn commit(&self, msg: &str) {
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-qm", msg]);
    }

    pub fn run(&self, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(super::clarity_bin());
        cmd.args([
            "--repo",
            self.repo.to_str().unwrap(),
            "--work-dir",
            self.work.to_str().unwrap(),
            "--profile",
            "mock",
        ])
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("CLARITY_AGE_IDENTITY");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    pub fn sandbox(&self) -> PathBuf {
        self.work.join("sandboxes/sbx-1")
    }

    pub fn current(&self) -> Option<String> {
        super::current_release(&self.sandbox(), "web")
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        super::http_get(self.port, path)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Stop the sandbox service the test started, as the agent's own backend would.
        use clarity::service::ServiceBackend;
        let backend =
            clarity::service::ProcessBackend::new(self.sandbox().join("var/lib/clarity/run"));
        let _ = backend.stop("clarity-web");
    }
}
