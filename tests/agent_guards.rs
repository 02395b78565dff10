//! The agent's own guards, driven with hand-written apply requests on stdin of the real
//! `agent apply`, so `validate` is bypassed as a tampered plan would bypass it: ids that are not
//! one normal name are refused before anything on the host is touched, and a deployment
//! directory recorded for one client refuses another client's apply and removal. Every outcome
//! is checked on disk.

mod support;

use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use support::sandbox::sha256;

const SCRIPT: &[u8] = b"#!/bin/sh\necho hello\n";

/// A request deploying `web` at `version` for `client`: fetch, install, env file, switch.
fn request(client: &str, files: &Path, version: &str, env: &str) -> Value {
    let release = format!("{version}-0123456789ab");
    json!({
        "format": "clarity.apply/v1",
        "host": "sbx-1",
        "client": client,
        "service_manager": "process",
        "deployments": [{
            "name": "web",
            "version": version,
            "release": release,
            "steps": [
                {"action": "fetch_artifact", "target": format!("web {version}")},
                {"action": "install_release", "target": release},
                {"action": "write_env", "target": "env"},
                {"action": "switch_release", "target": release},
            ],
            "artifact": {
                "id": "web",
                "kind": "script",
                "sha256": sha256(SCRIPT),
                "size": SCRIPT.len(),
                "location": "run.sh",
                "repository": "local",
                "source": {"type": "file", "dir": files.to_str().unwrap()},
            },
            "release_files": [],
            "host_files": [],
            "env_file": env,
            "service": null,
            "migrations": null,
            "keep_releases": 3,
        }],
    })
}

/// Runs `agent apply --root ROOT` with `req` on stdin; returns (exit code, stdout + stderr).
fn agent_apply(root: &Path, req: &Value) -> (Option<i32>, String) {
    let mut child = Command::new(support::clarity_bin())
        .args([
            "agent",
            "apply",
            "--root",
            root.to_str().unwrap(),
            "--lock-timeout",
            "5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("run.sh"), SCRIPT).unwrap();
    let root = dir.path().join("host");
    (dir, files, root)
}

#[test]
fn another_clients_apply_and_removal_are_refused_in_a_deployment_directory() {
    let (_dir, files, root) = setup();
    let (code, text) = agent_apply(&root, &request("acme", &files, "1.0.0", "OWNER=\"acme\"\n"));
    assert_eq!(code, Some(0), "{text}");
    let web = root.join("opt/clarity/web");
    assert_eq!(
        std::fs::read_to_string(web.join("client")).unwrap(),
        "acme\n"
    );
    let current = std::fs::read_link(web.join("current")).unwrap();
    assert!(
        current.ends_with("releases/1.0.0-0123456789ab"),
        "{}",
        current.display()
    );

    // globex's server declared with acme's root: same host, same deployment name.
    let (code, text) = agent_apply(
        &root,
        &request("globex", &files, "2.0.0", "OWNER=\"globex\"\n"),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("deployment `web` on host `sbx-1` belongs to client `acme`")
            && text.contains("this apply is for client `globex`: refused, nothing was changed"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(web.join("env")).unwrap(),
        "OWNER=\"acme\"\n"
    );
    assert_eq!(std::fs::read_link(web.join("current")).unwrap(), current);
    assert!(!web.join("releases/2.0.0-0123456789ab").exists());
    assert_eq!(
        std::fs::read_to_string(web.join("client")).unwrap(),
        "acme\n"
    );

    let mut removal = request("globex", &files, "2.0.0", "");
    removal["deployments"] = json!([]);
    removal["remove"] = json!(["web"]);
    let (code, text) = agent_apply(&root, &removal);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("belongs to client `acme`"), "{text}");
    assert_eq!(std::fs::read_link(web.join("current")).unwrap(), current);
    assert!(web.join("env").exists());

    // The owner itself goes on as before.
    let (code, text) = agent_apply(&root, &request("acme", &files, "1.1.0", "OWNER=\"acme\"\n"));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        std::fs::read_link(web.join("current"))
            .unwrap()
            .ends_with("releases/1.1.0-0123456789ab")
    );
}

type Edit = fn(&mut Value);

#[test]
fn ids_that_are_not_one_name_are_refused_before_anything_is_touched() {
    let (_dir, files, root) = setup();
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "version",
            |r| r["deployments"][0]["version"] = json!("../../../evil"),
            "version `../../../evil` contains `/`",
        ),
        (
            "deployment",
            |r| r["deployments"][0]["name"] = json!(".."),
            "deployment name `..` does not start with a letter, digit or `_`",
        ),
        (
            "host",
            |r| r["host"] = json!("a/b"),
            "host `a/b` contains `/`",
        ),
        (
            "client",
            |r| r["client"] = json!("../globex"),
            "client `../globex` contains `/`",
        ),
        (
            "release",
            |r| r["deployments"][0]["release"] = json!(".staging"),
            "release id `.staging` does not start",
        ),
        (
            "artifact",
            |r| r["deployments"][0]["artifact"]["id"] = json!("we b"),
            "artifact id `we b` contains a character",
        ),
        (
            "volume",
            |r| r["deployments"][0]["volumes"] = json!([{"name": "..", "mount": "data"}]),
            "volume name `..` does not start",
        ),
        (
            "volume mount",
            |r| r["deployments"][0]["volumes"] = json!([{"name": "data", "mount": "../../data"}]),
            "volume mount `../../data` contains `..`",
        ),
        (
            "release file",
            |r| {
                r["deployments"][0]["release_files"] = json!([{
                    "destination": "conf/../../../../../evil",
                    "mode": "0644",
                    "owner": null,
                    "content": "x",
                    "sha256": "",
                    "redacted": "x",
                }])
            },
            "release file destination `conf/../../../../../evil` contains `..`",
        ),
        (
            "removal",
            |r| r["remove"] = json!(["../../etc"]),
            "name of a deployment to remove `../../etc` contains `/`",
        ),
    ];
    for (what, edit, expected) in cases {
        let mut req = request("acme", &files, "1.0.0", "");
        edit(&mut req);
        let (code, text) = agent_apply(&root, &req);
        assert_eq!(code, Some(1), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
        assert!(
            !root.exists(),
            "{what}: the agent created something below its root"
        );
        assert!(!root.parent().unwrap().join("evil").exists());
    }
}
