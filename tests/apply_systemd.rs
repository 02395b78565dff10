//! The agent converging a host whose PID 1 is a real systemd (a Debian container booted with
//! systemd-nspawn): the plan computed by the library from a config repository and the host's
//! own `agent inspect`, executed by `clarity-reconcile agent apply --root /` inside the
//! container. Checked with systemctl: the unit is enabled and active, systemd restarts it
//! after `kill -9`, and a release whose health check fails is rolled back.

mod support;

use clarity::desired::{self, Context, InventorySecrets, Selection, Templates};
use clarity::model::apply::{AgentEvent, HostOutcome};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use support::nspawn::{Host, Options, Testbed};

const PORT: u16 = 18600;

const SERVICE: &str = r#"import http.server, os
greeting = open("conf/greeting.txt").read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/health" or os.environ.get("BROKEN") != "1"
        body = (greeting + "\n").encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A config repository whose one server runs `web` under systemd.
fn repo(root: &Path, greeting: &str, broken: bool) {
    write(
        root,
        "clients/acme/client.yml",
        "id: acme\ncode: ACME\nname: Acme\n",
    );
    write(
        root,
        "clients/acme/datacenters/lab.yml",
        "code: lab\nname: Lab\ntype: edge\n",
    );
    write(
        root,
        "clients/acme/servers/h1.yml",
        "hostname: h1\ndatacenter: lab\nagent:\n  transport: local\n  root: sandboxes/h1\n  service_manager: systemd\n",
    );
    write(
        root,
        "repositories/local.yml",
        "name: local\ntype: file\npath: files\n",
    );
    write(root, "files/web.py", SERVICE);
    write(
        root,
        "artifacts/web.yml",
        &format!(
            "id: web\ntype: script\nrepository: local\nversions:\n  - version: \"1.0.0\"\n    sha256: \"{}\"\n    location: web.py\n",
            hex::encode(Sha256::digest(SERVICE.as_bytes()))
        ),
    );
    write(
        root,
        "clients/acme/deployments/web/mock.yml",
        &format!(
            "artifact: web\nprofile: mock\nversion: \"1.0.0\"\ntargets:\n  - server: h1\n\
             env_vars:\n  PORT: \"{PORT}\"\n  BROKEN: \"{}\"\n\
             config_files:\n  - destination: conf/greeting.txt\n    content: \"{greeting}\\n\"\n\
             service:\n  command: [\"python3\", \"web.py\"]\n\
             health_checks:\n  - type: http\n    url: http://127.0.0.1:{PORT}/health\n    interval_s: 1\n    retries: 3\n",
            u8::from(broken)
        ),
    );
}

/// Plans the host from its own inspect and runs `agent apply` inside it; returns the outcome.
fn converge(host: &Host, config: &Path) -> HostOutcome {
    let bin = support::clarity_bin();
    let inspect = host.exec_ok(&[bin.to_str().unwrap(), "agent", "inspect", "--root", "/"]);
    let actual = clarity::transport::parse_host_state(inspect.as_bytes()).unwrap();
    let snapshot = clarity::source::read(config, &clarity::source::ReadMode::WorkingTree).unwrap();
    let loaded = clarity::load::load(&snapshot);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics.sorted());
    let (templates, _) = Templates::new(&loaded.inventory);
    let secrets = InventorySecrets::new(&loaded.inventory, None);
    let ctx = Context {
        env: BTreeMap::new(),
        allowed_env: Vec::new(),
        secrets: &secrets,
        lenient_env: false,
        config_root: Some(snapshot.root.clone()),
    };
    let desired = desired::hosts(&loaded.inventory, &templates, &Selection::default(), &ctx)
        .remove(0)
        .unwrap();
    let plan = clarity::plan::host_plan(&desired, &actual, false);
    let req = clarity::apply::request(
        &desired,
        &plan,
        clarity::apply::Part::Deployment("web"),
        None,
    )
    .unwrap();
    let mut child = host
        .command(bin)
        .args(["agent", "apply", "--root", "/"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&req).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let events: Vec<AgentEvent> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    match events.last() {
        Some(AgentEvent::Done { outcome, .. }) => *outcome,
        other => panic!(
            "no outcome: {other:?}\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

fn get(host: &Host, path: &str) -> String {
    host.exec_ok(&["python3", "-c", &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{PORT}{path}').read().decode().strip())")])
        .trim()
        .to_string()
}

fn main_pid(host: &Host) -> String {
    host.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        "clarity-web.service",
    ])
    .trim()
    .to_string()
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    (0..100).any(|_| {
        let ok = f();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ok
    })
}

#[test]
fn agent_converges_restarts_and_rolls_back_under_real_systemd() {
    let config = tempfile::tempdir().unwrap();
    repo(config.path(), "hello", false);
    let Some(bed) = Testbed::boot_with(
        "as",
        Options {
            bind_ro: vec![config.path().to_path_buf()],
            ..Options::hosts(1)
        },
    ) else {
        return;
    };
    let host = bed.host("h1");
    assert_eq!(converge(host, config.path()), HostOutcome::Converged);
    assert_eq!(
        host.exec_ok(&["systemctl", "is-enabled", "clarity-web.service"])
            .trim(),
        "enabled"
    );
    assert_eq!(
        host.exec_ok(&["systemctl", "is-active", "clarity-web.service"])
            .trim(),
        "active"
    );
    assert_eq!(get(host, "/"), "hello");
    let unit = host.exec_ok(&["cat", "/etc/systemd/system/clarity-web.service"]);
    assert!(
        unit.contains("Restart=always") && unit.contains("EnvironmentFile=/opt/clarity/web/env"),
        "{unit}"
    );

    // systemd restarts a killed service (Restart=always).
    let pid = main_pid(host);
    host.exec_ok(&["kill", "-9", &pid]);
    assert!(
        wait_until(|| {
            let p = main_pid(host);
            p != "0" && p != pid
        }),
        "not restarted after kill -9"
    );
    assert!(wait_until(|| host
        .exec(&[
            "python3",
            "-c",
            &format!("import urllib.request;urllib.request.urlopen('http://127.0.0.1:{PORT}/')")
        ])
        .status
        .success()));

    // Nothing changed, nothing to do.
    assert_eq!(converge(host, config.path()), HostOutcome::Converged);

    // A release whose health check fails is rolled back; the previous release serves again.
    let before = host.exec_ok(&["readlink", "/opt/clarity/web/current"]);
    repo(config.path(), "hola", true);
    assert_eq!(converge(host, config.path()), HostOutcome::RolledBack);
    assert_eq!(
        host.exec_ok(&["readlink", "/opt/clarity/web/current"]),
        before
    );
    assert!(wait_until(|| host
        .exec(&["systemctl", "is-active", "clarity-web.service"])
        .status
        .success()));
    assert!(
        wait_until(|| get(host, "/") == "hello"),
        "previous release not serving after rollback"
    );
}
