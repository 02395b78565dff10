//! `lxc` artifacts against real LXC (a private container directory, busybox rootfs tarballs
//! built at test time, host networking): deploy serving HTTP, upgrade with the old container
//! stopped first (same port), a failed health check rolled back to the kept container, drift
//! (stopped container) healed, pruning, and the container config the agent generated.

mod support;

use std::time::Duration;
use support::containers::{ContainerRepo, LxcPath, lxc_artifact, text};

#[test]
fn lxc_deploy_upgrade_rollback_drift_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let r = ContainerRepo::new(tmp.path(), "lxc", "    lxc_path: /var/lib/lxc\n");
    let Some(lxc) = LxcPath::new(r.sandbox().join("var/lib/lxc")) else {
        return;
    };
    let images = tmp.path().join("images");
    let port = r.port;
    let v1 = lxc_artifact(&images, "v1", "v1", true, port);
    let v2 = lxc_artifact(&images, "v2", "v2", true, port);
    let v3 = lxc_artifact(&images, "v3", "v3", false, port);
    let v4 = lxc_artifact(&images, "v4", "v4", true, port);
    r.set_versions(&[("1.0", &v1), ("2.0", &v2), ("3.0", &v3), ("4.0", &v4)]);
    let block = format!(
        "  network:\n    mode: host\n  ports:\n    - external: {port}\n\
         \x20 volumes:\n    - host_path: /srv/web/data\n      container_path: /data\n\
         \x20 limits:\n    memory_mb: 64\n"
    );
    r.set_deployment("1.0", &block, "");
    r.commit("web 1.0");

    let p = text(&r.clarity(&["--dry-run"]));
    assert!(p.contains("create container clarity-web-1.0-"), "{p}");
    assert!(!p.contains("load image"), "lxc has no image to load: {p}");

    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v1", Duration::from_secs(5)));
    let rel1 = r.current().unwrap();
    let c1 = format!("clarity-web-{rel1}");
    assert_eq!(lxc.state(&c1).as_deref(), Some("RUNNING"));
    // The generated config: host network, the volume and the release's files mounted, env.
    let config = std::fs::read_to_string(lxc.path.join(&c1).join("config")).unwrap();
    for line in [
        "lxc.net.0.type = none",
        "/srv/web/data data none bind,create=dir 0 0",
        "etc/clarity none bind,ro,create=dir 0 0",
        "lxc.environment = GREETING=hello from 1.0",
        "lxc.start.auto = 1",
    ] {
        assert!(config.contains(line), "config lacks `{line}`:\n{config}");
    }
    let attach = |name: &str, args: &[&str]| {
        let mut a = vec!["-n", name, "--"];
        a.extend_from_slice(args);
        support::containers::run(&mut lxc.cmd("lxc-attach", &a))
    };
    std::fs::write(r.sandbox().join("srv/web/data/note"), "kept\n").unwrap();
    assert_eq!(attach(&c1, &["/bin/cat", "/data/note"]), "kept");
    assert_eq!(
        attach(&c1, &["/bin/cat", "/etc/clarity/conf/app.conf"]),
        "release 1.0"
    );
    assert_eq!(r.recorded(), ("converged".into(), rel1.clone(), true));

    // Upgrade: the old container holds the port, so it stops first; it stays for rollback.
    r.set_deployment("2.0", &block, "");
    r.commit("web 2.0");
    let p = text(&r.clarity(&["--dry-run"]));
    assert!(p.contains("both bind host port"), "{p}");
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v2", Duration::from_secs(5)));
    let rel2 = r.current().unwrap();
    let c2 = format!("clarity-web-{rel2}");
    assert_eq!(lxc.state(&c1).as_deref(), Some("STOPPED"));
    assert_eq!(r.recorded(), ("converged".into(), rel2.clone(), true));

    // A failing health check: back on 2.0's container, serving, recorded as rolled back.
    r.set_deployment("3.0", &block, "");
    r.commit("web 3.0, broken");
    let o = r.clarity(&[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("rolled back"), "{t}");
    assert_eq!(r.current().as_deref(), Some(rel2.as_str()));
    assert!(r.wait_serving("v2", Duration::from_secs(5)));
    assert_eq!(lxc.state(&c2).as_deref(), Some("RUNNING"));
    assert!(
        !lxc.names().iter().any(|n| n.starts_with("clarity-web-3.0")),
        "{:?}",
        lxc.names()
    );
    assert_eq!(r.recorded(), ("rolled_back".into(), rel2.clone(), true));

    // Drift: the container stopped by hand; the next apply starts it again.
    r.set_deployment("2.0", &block, "");
    r.commit("back to 2.0");
    support::containers::run(&mut lxc.cmd("lxc-stop", &["-n", &c2, "-k"]));
    let o = r.drift();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("[container-stopped]"), "{t}");
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v2", Duration::from_secs(5)));
    assert_eq!(r.drift().status.code(), Some(0));

    // Prune: 4.0 with keep_releases 2 destroys 1.0's container and keeps 2.0's stopped.
    r.set_deployment("4.0", &block, "");
    r.commit("web 4.0");
    let o = r.clarity(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(r.wait_serving("v4", Duration::from_secs(5)));
    let names = lxc.names();
    assert!(!names.contains(&c1), "{names:?}");
    assert!(names.contains(&c2), "{names:?}");
    assert_eq!(lxc.state(&c2).as_deref(), Some("STOPPED"));
}
