//! `docker` artifacts against a real dockerd started by the test (own data root, socket,
//! `--iptables=false`), with busybox web images built at test time: deploy, upgrade with the
//! old container stopped first (same host port), a failed health check rolled back to the
//! kept container, a crash restored by the restart policy, drift (stopped container, replaced
//! image) healed, pruning of containers and images, and a host without the runtime. One test
//! function walks the whole story so that one daemon serves it (and CI pays for one).

mod support;

use std::time::Duration;
use support::containers::{ContainerRepo, Dockerd, text};

fn container_block(port: u16) -> String {
    format!(
        "  ports:\n    - external: {port}\n      internal: 8080\n      host_ip: 127.0.0.1\n\
         \x20 volumes:\n    - host_path: /srv/web/data\n      container_path: /data\n\
         \x20 dns: [192.0.2.53]\n\
         \x20 limits:\n    memory_mb: 64\n    cpu_percent: 50\n"
    )
}

#[test]
fn docker_deploy_upgrade_rollback_crash_drift_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(d) = Dockerd::start(&tmp.path().join("docker")) else {
        return;
    };
    let images = tmp.path().join("images");
    let (v1, v1_id) = d.web_image(&images, "v1", "v1", true);
    let (v2, v2_id) = d.web_image(&images, "v2", "v2", true);
    let (v3, _) = d.web_image(&images, "v3", "v3", false);
    let (v4, _) = d.web_image(&images, "v4", "v4", true);
    let (v5, _) = d.web_image(&images, "v5", "v5", true);
    let r = ContainerRepo::new(
        tmp.path(),
        "docker",
        &format!(
            "    runtime: docker\n    program: {}\n    args: [\"-H\", \"{}\"]\n",
            support::containers::DOCKER,
            d.sock
        ),
    );
    let block = container_block(r.port);
    r.set_versions(&[
        ("1.0", &v1),
        ("2.0", &v2),
        ("3.0", &v3),
        ("4.0", &v4),
        ("5.0", &v5),
    ]);
    r.set_deployment("1.0", &block, "");
    r.commit("web 1.0");

    // The plan shows the container steps, the image id only known after the load.
    let plan = r.clarity(&["--dry-run"]);
    let p = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{p}");
    for s in [
        "load image web 1.0",
        "known after apply: the image id is known once the archive is loaded",
        "create container clarity-web-1.0-",
        "start container clarity-web-1.0-",
        "health check web-health",
        "prune containers web",
    ] {
        assert!(p.contains(s), "plan lacks `{s}`:\n{p}");
    }

    // Deploy: serving on its published port, from the loaded image, as recorded.
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v1", Duration::from_secs(5)));
    let rel1 = r.current().unwrap();
    let c1 = format!("clarity-web-{rel1}");
    assert_eq!(
        d.inspect("{{.State.Status}}", &c1).as_deref(),
        Some("running")
    );
    assert_eq!(
        d.inspect("{{.Image}}", &c1).as_deref(),
        Some(v1_id.as_str())
    );
    assert_eq!(
        d.inspect("{{index .Config.Labels \"clarity.release\"}}", &c1)
            .as_deref(),
        Some(rel1.as_str())
    );
    assert_eq!(
        d.inspect("{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.Init}} {{.HostConfig.Dns}}", &c1)
            .as_deref(),
        Some("on-failure 67108864 500000000 true [192.0.2.53]")
    );
    // The volume is the sandbox's /srv/web/data; config files are mounted read-only.
    std::fs::write(r.sandbox().join("srv/web/data/note"), "kept\n").unwrap();
    assert_eq!(d.out(&["exec", &c1, "/bin/cat", "/data/note"]), "kept");
    assert_eq!(
        d.out(&["exec", &c1, "/bin/cat", "/etc/clarity/conf/app.conf"]),
        "release 1.0"
    );
    // Env values reach the container through a file, which the agent removed again.
    assert!(
        d.out(&["exec", &c1, "/bin/env"])
            .contains("GREETING=hello from 1.0"),
        "env missing in the container"
    );
    let leftovers: Vec<_> = std::fs::read_dir(r.sandbox().join("var/lib/clarity/run"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !leftovers
            .iter()
            .any(|n| n.to_string_lossy().ends_with(".env")),
        "{leftovers:?}"
    );
    assert_eq!(r.recorded(), ("converged".into(), rel1.clone(), true));

    // Upgrade: both bind the same host port, so the old one stops first (the plan says so).
    r.set_deployment("2.0", &block, "");
    r.commit("web 2.0");
    let p = text(&r.clarity(&["--dry-run"]));
    assert!(
        p.contains(&format!("stop container {c1}")) && p.contains("both bind host port"),
        "{p}"
    );
    assert!(
        p.find(&format!("stop container {c1}")) < p.find("start container clarity-web-2.0"),
        "{p}"
    );
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v2", Duration::from_secs(5)));
    let rel2 = r.current().unwrap();
    let c2 = format!("clarity-web-{rel2}");
    assert_eq!(
        d.inspect("{{.State.Status}}", &c1).as_deref(),
        Some("exited")
    );
    assert_eq!(r.recorded(), ("converged".into(), rel2.clone(), true));

    // A version whose health check fails: back on the previous container, serving, recorded
    // as rolled back on the release it rolled back to.
    r.set_deployment("3.0", &block, "");
    r.commit("web 3.0, broken");
    let o = r.clarity(&[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("rolled back"), "{t}");
    assert_eq!(r.current().as_deref(), Some(rel2.as_str()));
    assert!(r.wait_serving("v2", Duration::from_secs(5)));
    assert_eq!(
        d.inspect("{{.State.Status}}", &c2).as_deref(),
        Some("running")
    );
    let c3s = d.out(&[
        "ps",
        "-a",
        "--filter",
        "label=clarity.deployment=web",
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        !c3s.contains("clarity-web-3.0"),
        "the failed container stays: {c3s}"
    );
    // Recorded as rolled back, on the release the host really runs again, healthy.
    assert_eq!(r.recorded(), ("rolled_back".into(), rel2.clone(), true));

    // Back on 2.0 in the repository: nothing to do.
    r.set_deployment("2.0", &block, "");
    r.commit("back to 2.0");
    let o = r.clarity(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A crash: the restart policy brings the container back without Clarity.
    let pid = d.inspect("{{.State.Pid}}", &c2).unwrap();
    support::containers::run(std::process::Command::new("kill").args(["-9", &pid]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        r.wait_serving("v2", Duration::from_secs(10)),
        "not restarted"
    );
    assert_ne!(d.inspect("{{.RestartCount}}", &c2).as_deref(), Some("0"));

    // Drift: a stopped container, named, then healed by the next apply.
    d.out(&["stop", &c2]);
    let o = r.drift();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("[container-stopped]"), "{t}");
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v2", Duration::from_secs(5)));

    // Drift: the container replaced by hand with another image.
    d.out(&["rm", "-f", &c2]);
    d.out(&["load", "-i", v1.to_str().unwrap()]);
    d.out(&[
        "create",
        "--name",
        &c2,
        "-p",
        &format!("127.0.0.1:{}:8080", r.port),
        "--init",
        &v1_id,
    ]);
    d.out(&["start", &c2]);
    assert!(r.wait_serving("v1", Duration::from_secs(5)));
    let o = r.drift();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("[container-image]"), "{t}");
    // Re-created by hand, it lacks the configuration label the agent gave it.
    assert!(t.contains("[container-config]"), "{t}");
    let p = text(&r.clarity(&["--dry-run"]));
    assert!(p.contains("runs image"), "{p}");
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v2", Duration::from_secs(5)));
    assert_eq!(
        d.inspect("{{.Image}}", &c2).as_deref(),
        Some(v2_id.as_str())
    );
    assert_eq!(r.drift().status.code(), Some(0));

    // Prune: with keep_releases 2, deploying 4.0 removes 1.0's container and its image; 2.0's
    // stays stopped for rollback.
    r.set_deployment("4.0", &block, "");
    r.commit("web 4.0");
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v4", Duration::from_secs(5)));
    assert_eq!(
        d.inspect("{{.State.Status}}", &c1),
        None,
        "1.0's container stays"
    );
    assert_eq!(d.inspect("{{.Id}}", &v1_id), None, "1.0's image stays");
    assert_eq!(
        d.inspect("{{.State.Status}}", &c2).as_deref(),
        Some("exited")
    );
    assert!(d.inspect("{{.Id}}", &v2_id).is_some());

    // The agent killed (-9) right after it started 5.0's container: the next run finds the
    // journal, removes that container, starts 4.0's again, and then converges to 5.0.
    r.set_deployment("5.0", &block, "");
    r.commit("web 5.0");
    let plan = r.clarity(&["--dry-run", "--output", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let steps = plan["hosts"][0]["deployments"][0]["steps"]
        .as_array()
        .unwrap();
    let start = steps
        .iter()
        .position(|s| s["action"] == "start_container")
        .unwrap();
    let killed = std::process::Command::new(support::clarity_bin())
        .args(["--repo", r.repo.to_str().unwrap()])
        .args(["--work-dir", r.work.to_str().unwrap(), "--profile", "mock"])
        .env("CLARITY_AGENT_KILL_AFTER_STEPS", (start + 1).to_string())
        .output()
        .unwrap();
    assert_ne!(killed.status.code(), Some(0), "{}", text(&killed));
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("interrupted"), "{}", text(&o));
    assert!(r.wait_serving("v5", Duration::from_secs(5)));
    let running = d.out(&[
        "ps",
        "--filter",
        "label=clarity.deployment=web",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(running, format!("clarity-web-{}", r.current().unwrap()));

    // Rolling back by commit to the kept 4.0 restarts its container: nothing is loaded or
    // created again.
    r.set_deployment("4.0", &block, "");
    r.commit("back to 4.0");
    let p = text(&r.clarity(&["--dry-run"]));
    assert!(
        p.contains("start container clarity-web-4.0-") && p.contains("the kept container"),
        "{p}"
    );
    for s in ["load image", "create container", "fetch artifact"] {
        assert!(
            !p.contains(s),
            "`{s}` in a rollback to a kept release:\n{p}"
        );
    }
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v4", Duration::from_secs(5)));
}

#[test]
fn a_host_without_the_runtime_is_told_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    // A valid image archive is not needed: the runtime is checked before it is used.
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let archive = images.join("web-v1.tar");
    std::fs::write(&archive, b"not really an image").unwrap();
    let r = ContainerRepo::new(
        tmp.path(),
        "docker",
        "    runtime: docker\n    program: /nonexistent/bin/docker\n",
    );
    r.set_versions(&[("1.0", &archive)]);
    r.set_deployment("1.0", &container_block(r.port), "");
    r.commit("web 1.0");
    let o = r.clarity(&[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("host h1 has no docker runtime: /nonexistent/bin/docker is not installed; install the `docker.io` package"),
        "{t}"
    );
    assert_eq!(r.current(), None, "nothing may be switched: {t}");
}

/// The same artifacts on Podman (private storage, runc): deploy, then a failing upgrade rolled
/// back to the kept container.
#[test]
fn podman_deploy_and_rollback_after_a_failed_health_check() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(p) = support::containers::Podman::new(&tmp.path().join("podman")) else {
        return;
    };
    let images = tmp.path().join("images");
    let v1 = p.web_image(&images, "v1", "v1", true);
    let v2 = p.web_image(&images, "v2", "v2", false);
    let args: Vec<String> = p.args().iter().map(|a| format!("\"{a}\"")).collect();
    let r = ContainerRepo::new(
        tmp.path(),
        "docker",
        &format!(
            "    runtime: podman\n    args: [{}]\n    env:\n      CONTAINERS_CONF: {}\n",
            args.join(", "),
            p.conf.display()
        ),
    );
    let block = container_block(r.port);
    r.set_versions(&[("1.0", &v1), ("2.0", &v2)]);
    r.set_deployment("1.0", &block, "");
    r.commit("web 1.0");
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v1", Duration::from_secs(5)));
    let rel1 = r.current().unwrap();
    let c1 = format!("clarity-web-{rel1}");
    assert_eq!(
        p.inspect("{{.State.Status}}", &c1).as_deref(),
        Some("running")
    );
    assert_eq!(
        p.inspect("{{index .Config.Labels \"clarity.release\"}}", &c1)
            .as_deref(),
        Some(rel1.as_str())
    );
    assert_eq!(r.recorded(), ("converged".into(), rel1.clone(), true));

    r.set_deployment("2.0", &block, "");
    r.commit("web 2.0, broken");
    let o = r.clarity(&[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("rolled back"), "{t}");
    assert_eq!(r.current().as_deref(), Some(rel1.as_str()));
    assert!(r.wait_serving("v1", Duration::from_secs(5)));
    assert_eq!(
        p.inspect("{{.State.Status}}", &c1).as_deref(),
        Some("running")
    );
    assert_eq!(r.recorded(), ("rolled_back".into(), rel1.clone(), true));
}
