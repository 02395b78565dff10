//! The Debian package on a booted systemd host, installed and run the way the docs say: a
//! Debian container (`ops`) gets the `.deb` that `scripts/package.sh` builds, its reconciler
//! follows a config repository served over SSH by a git server on another namespaced host
//! (`gitsrv`), survives a power-off, applies pushed commits to its `mock` sandbox, pushes its
//! notes back, runs the drift timer's service, stops and upgrades gracefully in the middle of an
//! apply, logs to the journal, and is purged with or without its state.
//!
//! Everything is checked on the host itself: systemctl, the sandbox's files and running
//! service, the ledger (through `clarity-reconcile history`), the git server's notes and the
//! journal.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::nspawn::{Host, Options, Testbed};
use support::sandbox::{Fixture, SERVICE, Version};

const BARE: &str = "/srv/git/config.git";
const WORK: &str = "/var/lib/clarity";
const TOKEN: &str = "token-from-a-credential";

/// Builds the package from this checkout around the test's own binary.
fn build_package(out: &Path, version: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.sh");
    let built = Command::new(&script)
        .arg("--binary")
        .arg(support::clarity_bin())
        .args(["--fast", "--version", version, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "scripts/package.sh: {}\n{}",
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(
        String::from_utf8_lossy(&built.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    );
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

fn sh(host: &Host, script: &str) -> String {
    host.exec_ok(&["sh", "-c", script])
}

/// `systemctl <verb> <unit>`'s answer (is-active, is-enabled), whatever its exit status.
fn systemctl_says(host: &Host, verb: &str, unit: &str) -> String {
    let out = host.exec(&["systemctl", verb, unit]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn journal(host: &Host) -> String {
    host.exec_ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "clarity-reconcile.service",
    ])
}

fn wait(host: &Host, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; journal:\n{}",
            journal(host)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the sandbox's service answers on `/`, from inside the host.
fn greeting(host: &Host, port: u16) -> Option<String> {
    let out = host.exec(&[
        "python3",
        "-c",
        &format!(
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2).read().decode().strip())"
        ),
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The release the sandbox's `current` link names.
fn current(host: &Host) -> Option<String> {
    std::fs::read_link(
        host.root()
            .join("var/lib/clarity/sandboxes/sbx-1/opt/clarity/web/current"),
    )
    .ok()
    .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
}

/// The ledger's runs, newest first, as the reconciler's user reads them.
fn history(host: &Host) -> serde_json::Value {
    let out = host.exec_ok(&[
        "runuser",
        "-u",
        "clarity",
        "--",
        "clarity-reconcile",
        "history",
        "--work-dir",
        WORK,
        "--output",
        "json",
        "--limit",
        "0",
    ]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The newest apply run of `commit` in the ledger.
fn apply_run(host: &Host, commit: &str) -> Option<serde_json::Value> {
    history(host)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["commit"] == commit && r["mode"] == "apply")
        .cloned()
}

/// The git server's note for `commit`, if one was pushed.
fn note(gitsrv: &Host, commit: &str) -> Option<String> {
    let out = gitsrv.exec(&[
        "runuser",
        "-u",
        "git",
        "--",
        "git",
        "--git-dir",
        BARE,
        "notes",
        "--ref",
        "clarity",
        "show",
        commit,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pushes the fixture's `main` to the git server over SSH, from the test's network side.
fn push(bed: &Testbed, f: &Fixture, key: &Path) -> String {
    let url = format!("ssh://git@{}{BARE}", bed.host("gitsrv").address());
    let out = bed
        .network_command("git")
        .arg("-C")
        .arg(&f.repo)
        .args(["push", "-q", &url, "main"])
        .env(
            "GIT_SSH_COMMAND",
            format!(
                "ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
                key.display()
            ),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::git(&f.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string()
}

/// Version `version` of the `web` artifact, which sleeps `delay` seconds before serving, so an
/// apply of it is still in flight when the test stops or upgrades the reconciler.
fn slow_versions(f: &Fixture, version: &str, delay: u32) {
    let slow = format!("import time\ntime.sleep({delay})\n{SERVICE}");
    let file = format!("web-{version}.py");
    f.set_versions(&[
        Version {
            version: "1.0.0",
            file: "web-1.0.0.py",
            content: SERVICE.as_bytes(),
            sha256: None,
        },
        Version {
            version,
            file: &file,
            content: slow.as_bytes(),
            sha256: None,
        },
    ]);
}

/// After a graceful stop during the apply of `commit` (to `version`, greeting `greeting`), the
/// host is on that whole release and the ledger says exactly that.
fn assert_whole_release(ops: &Host, commit: &str, version: &str, greeting: &str) {
    let release = current(ops).unwrap_or_else(|| panic!("no current release:\n{}", journal(ops)));
    assert!(
        release.starts_with(&format!("{version}-")),
        "{release}:\n{}",
        journal(ops)
    );
    let dir = ops
        .root()
        .join("var/lib/clarity/sandboxes/sbx-1/opt/clarity/web/releases")
        .join(&release);
    assert!(dir.join(format!("web-{version}.py")).is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("conf/greeting.txt")).unwrap(),
        format!("{greeting}\n")
    );
    // No apply was left half-done for the agent's journal to undo.
    assert!(
        !ops.root()
            .join("var/lib/clarity/sandboxes/sbx-1/var/lib/clarity/journal.json")
            .exists()
    );
    let run = apply_run(ops, commit)
        .unwrap_or_else(|| panic!("the run of {commit} was not recorded:\n{}", journal(ops)));
    assert_eq!(run["outcome"], "success", "{run:#}");
    let host = &run["hosts"][0];
    assert_eq!(host["server"], "sbx-1", "{run:#}");
    assert_eq!(host["deployments"][0]["version"], version, "{run:#}");
    assert_eq!(
        host["deployments"][0]["release"],
        release.as_str(),
        "{run:#}"
    );
    assert_eq!(host["deployments"][0]["healthy"], true, "{run:#}");
}

#[test]
fn the_package_installs_a_reconciler_that_boots_applies_drifts_stops_and_upgrades() {
    if support::require_program("git").is_none()
        || support::require_program("ssh-keygen").is_none()
        || support::require_program("dpkg-deb").is_none()
        || support::require_program("dpkg-shlibdeps").is_none()
    {
        return;
    }
    let Some(f) = Fixture::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let first = build_package(dir.path(), "0.1.0");
    let upgrade = build_package(dir.path(), "0.1.0+upgrade1");
    let key = dir.path().join("pusher");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "pusher", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let pusher = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    let Some(mut bed) = Testbed::boot_with(
        "pkg",
        Options {
            hosts: vec!["ops".into(), "gitsrv".into()],
            ..Options::hosts(0)
        },
    ) else {
        return;
    };

    // The git server: a `git` account with the pusher's key and a bare repository.
    {
        let gitsrv = bed.host("gitsrv");
        sh(
            gitsrv,
            "useradd --create-home --shell /usr/bin/git-shell git && usermod -p '*' git \
             && install -d -o git -g git -m 0700 /home/git/.ssh /srv/git",
        );
        std::fs::write(gitsrv.root().join("home/git/.ssh/authorized_keys"), &pusher).unwrap();
        sh(
            gitsrv,
            "chown git:git /home/git/.ssh/authorized_keys && chmod 600 /home/git/.ssh/authorized_keys",
        );
        gitsrv.exec_ok(&[
            "runuser", "-u", "git", "--", "git", "init", "-q", "--bare", "-b", "main", BARE,
        ]);
        assert_eq!(systemctl_says(gitsrv, "is-active", "ssh.service"), "active");
    }
    let first_commit = push(&bed, &f, &key);

    // Install the package as documented: nothing runs or is enabled before it is configured.
    {
        let ops = bed.host("ops");
        for deb in [&first, &upgrade] {
            std::fs::copy(deb, ops.root().join("root").join(deb.file_name().unwrap())).unwrap();
        }
        let name = |deb: &Path| format!("/root/{}", deb.file_name().unwrap().to_string_lossy());
        ops.exec_ok(&["dpkg", "-i", &name(&first)]);
        assert_eq!(
            systemctl_says(ops, "is-enabled", "clarity-reconcile.service"),
            "disabled"
        );
        assert_eq!(
            systemctl_says(ops, "is-enabled", "clarity-drift.timer"),
            "disabled"
        );
        assert_eq!(
            systemctl_says(ops, "is-active", "clarity-reconcile.service"),
            "inactive"
        );
        let passwd = ops.exec_ok(&["getent", "passwd", "clarity"]);
        assert!(
            passwd.contains(":/var/lib/clarity:/usr/sbin/nologin"),
            "{passwd}"
        );
        // The man pages (one per command) and the completions come with the package.
        let files = ops.exec_ok(&["dpkg", "-L", "clarity"]);
        for path in [
            "/usr/share/man/man1/clarity-reconcile.1.gz",
            "/usr/share/man/man1/clarity-reconcile-drift.1.gz",
            "/usr/share/bash-completion/completions/clarity-reconcile",
            "/usr/share/zsh/vendor-completions/_clarity-reconcile",
            "/usr/share/fish/vendor_completions.d/clarity-reconcile.fish",
        ] {
            assert!(
                files.lines().any(|l| l == path),
                "{path} not installed:\n{files}"
            );
        }
        let page = ops.exec_ok(&["zcat", "/usr/share/man/man1/clarity-reconcile-drift.1.gz"]);
        assert!(page.contains(".TH clarity-reconcile-drift"), "{page}");
        let conffiles = ops.exec_ok(&["dpkg-query", "--showformat=${Conffiles}", "-W", "clarity"]);
        assert!(
            conffiles.contains("/etc/clarity/reconciler.env"),
            "{conffiles}"
        );
        let env = std::fs::read_to_string(ops.root().join("etc/clarity/reconciler.env")).unwrap();
        assert!(
            env.lines().filter(|l| l.starts_with('#')).count() > 5,
            "{env}"
        );
        assert!(env.contains("\nCLARITY_REPO=\n"), "{env}");
        assert!(
            ops.root()
                .join("usr/share/doc/clarity/operations.md")
                .is_file()
        );

        // Configure it: an SSH key for the service user, the git server's host key, the
        // repository and a credential.
        sh(
            ops,
            "runuser -u clarity -- install -d -m 0700 /var/lib/clarity/.ssh \
             && runuser -u clarity -- ssh-keygen -q -t ed25519 -N '' -f /var/lib/clarity/.ssh/id_ed25519 \
             && ssh-keyscan -t ed25519 gitsrv > /var/lib/clarity/.ssh/known_hosts 2>/dev/null \
             && chown clarity:clarity /var/lib/clarity/.ssh/known_hosts",
        );
        let service_key =
            std::fs::read_to_string(ops.root().join("var/lib/clarity/.ssh/id_ed25519.pub"))
                .unwrap();
        let authorized = bed
            .host("gitsrv")
            .root()
            .join("home/git/.ssh/authorized_keys");
        std::fs::write(&authorized, format!("{pusher}{service_key}")).unwrap();
        let env = env
            .replace(
                "\nCLARITY_REPO=\n",
                &format!("\nCLARITY_REPO=ssh://git@gitsrv{BARE}\n"),
            )
            .replace(
                "\nCLARITY_WATCH_ARGS=\n",
                "\nCLARITY_WATCH_ARGS=--poll-interval 2 --drift-interval 0\n",
            );
        std::fs::write(ops.root().join("etc/clarity/reconciler.env"), env).unwrap();
        std::fs::write(
            ops.root().join("etc/clarity/credentials/api-token"),
            format!("{TOKEN}\n"),
        )
        .unwrap();
        sh(ops, "chmod 600 /etc/clarity/credentials/api-token");

        ops.exec_ok(&["systemctl", "enable", "--now", "clarity-reconcile.service"]);
        assert_eq!(
            systemctl_says(ops, "is-enabled", "clarity-reconcile.service"),
            "enabled"
        );
        wait(
            ops,
            "the first commit on the sandbox",
            Duration::from_secs(90),
            || greeting(ops, f.port).as_deref() == Some("hello"),
        );
        wait(
            ops,
            "the first run in the ledger",
            Duration::from_secs(30),
            || apply_run(ops, &first_commit).is_some(),
        );
        // The token reached the service as a credential: the API takes it, and it is in no
        // unit property or environment systemd shows.
        let show = ops.exec_ok(&["systemctl", "show", "clarity-reconcile.service"]);
        assert!(!show.contains(TOKEN));
        let pid = ops.exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "clarity-reconcile.service",
        ]);
        let environ = ops.exec_ok(&["cat", &format!("/proc/{}/environ", pid.trim())]);
        assert!(!environ.contains(TOKEN));
        let status = ops.exec_ok(&[
            "python3",
            "-c",
            &format!(
                "import urllib.request\n\
                 r = urllib.request.Request('http://127.0.0.1:8420/api/v1/reconcile', method='POST', headers={{'Authorization': 'Bearer {TOKEN}'}})\n\
                 print(urllib.request.urlopen(r, timeout=5).status)"
            ),
        ]);
        assert!(status.trim().starts_with('2'), "{status}");
    }

    // Power off and boot again: the enabled reconciler is back.
    bed.host_mut("ops").power_cycle();
    let ops = bed.host("ops");
    let gitsrv = bed.host("gitsrv");
    wait(
        ops,
        "the reconciler after the boot",
        Duration::from_secs(30),
        || systemctl_says(ops, "is-active", "clarity-reconcile.service") == "active",
    );
    let boot = ops.exec_ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-b",
        "-u",
        "clarity-reconcile.service",
    ]);
    assert!(boot.contains("watching ssh://"), "{boot}");

    // A pushed commit is applied to the sandbox and its note reaches the git server.
    f.set_deployment("1.0.0", "hello again", "");
    f.commit("a new greeting");
    let second = push(&bed, &f, &key);
    wait(
        ops,
        "the pushed commit on the sandbox",
        Duration::from_secs(60),
        || greeting(ops, f.port).as_deref() == Some("hello again"),
    );
    wait(
        ops,
        "the note on the git server",
        Duration::from_secs(30),
        || note(gitsrv, &second).is_some(),
    );
    let run = apply_run(ops, &second).unwrap();
    let id = run["id"].as_str().unwrap();
    assert!(note(gitsrv, &second).unwrap().contains(id));

    // The drift timer's service, on the same environment file and the loop's mirror, finds a
    // file edited by hand and records it in the ledger.
    let release = current(ops).unwrap();
    std::fs::write(
        ops.root()
            .join("var/lib/clarity/sandboxes/sbx-1/opt/clarity/web/releases")
            .join(&release)
            .join("conf/greeting.txt"),
        "edited by hand\n",
    )
    .unwrap();
    let started = ops.exec(&["systemctl", "start", "clarity-drift.service"]);
    assert!(
        started.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&started.stderr),
        ops.exec_ok(&["journalctl", "--no-pager", "-u", "clarity-drift.service"])
    );
    assert_eq!(
        ops.exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "Result",
            "--value",
            "clarity-drift.service"
        ])
        .trim(),
        "success"
    );
    let drift = history(ops)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == "drift")
        .cloned()
        .unwrap_or_else(|| panic!("no drift run in the ledger: {:#}", history(ops)));
    assert_eq!(drift["commit"], second.as_str(), "{drift:#}");
    assert!(drift["drift_findings"].as_u64() >= Some(1), "{drift:#}");
    let shown = ops.exec_ok(&[
        "runuser",
        "-u",
        "clarity",
        "--",
        "clarity-reconcile",
        "history",
        "--work-dir",
        WORK,
        "--output",
        "json",
        "show",
        drift["id"].as_str().unwrap(),
    ]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let findings = shown["drift_findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|x| x["server"] == "sbx-1"
            && x["deployment"] == "web"
            && x["kind"] == "file-modified"),
        "{shown:#}"
    );

    // `systemctl stop` in the middle of an apply: the host in flight finishes its release,
    // the run is recorded, nothing is left half-done.
    slow_versions(&f, "2.0.0", 5);
    f.set_deployment("2.0.0", "hello v2", "");
    f.commit("version 2");
    let v2 = push(&bed, &f, &key);
    let applying = format!("applying main@{}", &v2[..8]);
    wait(
        ops,
        "the apply of version 2 to start",
        Duration::from_secs(60),
        || journal(ops).contains(&applying),
    );
    std::thread::sleep(Duration::from_millis(500));
    ops.exec_ok(&["systemctl", "stop", "clarity-reconcile.service"]);
    assert_eq!(
        systemctl_says(ops, "is-active", "clarity-reconcile.service"),
        "inactive"
    );
    let log = journal(ops);
    let at = log.rfind(&applying).unwrap();
    let stopping = log[at..].find("stopping").map(|i| i + at);
    let recorded = log[at..].find("recorded run").map(|i| i + at);
    assert!(
        matches!((stopping, recorded), (Some(s), Some(r)) if s < r),
        "the stop did not land during the run:\n{log}"
    );
    assert_whole_release(ops, &v2, "2.0.0", "hello v2");

    // An upgrade in the middle of an apply: prerm stops the reconciler gracefully (the host
    // in flight finishes), postinst starts the new one.
    ops.exec_ok(&["systemctl", "start", "clarity-reconcile.service"]);
    slow_versions(&f, "3.0.0", 5);
    f.set_deployment("3.0.0", "hello v3", "");
    f.commit("version 3");
    let v3 = push(&bed, &f, &key);
    let applying = format!("applying main@{}", &v3[..8]);
    wait(
        ops,
        "the apply of version 3 to start",
        Duration::from_secs(60),
        || journal(ops).contains(&applying),
    );
    std::thread::sleep(Duration::from_millis(500));
    let old_pid = ops.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        "clarity-reconcile.service",
    ]);
    let dpkg = ops.exec_ok(&[
        "dpkg",
        "-i",
        &format!("/root/{}", upgrade.file_name().unwrap().to_string_lossy()),
    ]);
    assert!(dpkg.contains("hosts in flight finish first"), "{dpkg}");
    assert_eq!(
        ops.exec_ok(&["dpkg-query", "--showformat=${Version}", "-W", "clarity"]),
        "0.1.0+upgrade1"
    );
    assert_eq!(
        systemctl_says(ops, "is-active", "clarity-reconcile.service"),
        "active"
    );
    let new_pid = ops.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        "clarity-reconcile.service",
    ]);
    assert_ne!(old_pid.trim(), new_pid.trim());
    let log = journal(ops);
    let at = log.rfind(&applying).unwrap();
    let stopping = log[at..].find("stopping");
    let recorded = log[at..].find("recorded run");
    assert!(
        matches!((stopping, recorded), (Some(s), Some(r)) if s < r),
        "the upgrade's stop did not land during the run:\n{log}"
    );
    assert_whole_release(ops, &v3, "3.0.0", "hello v3");

    // The journal has the runs' lines.
    let log = journal(ops);
    for line in [
        format!("watching ssh://***@gitsrv{BARE}"),
        format!("applying main@{} to ", &first_commit[..8]),
        format!("recorded run {id}"),
        "stopping: the run in flight finishes its hosts".to_string(),
    ] {
        assert!(log.contains(&line), "no {line:?} in the journal:\n{log}");
    }

    // A local repository of another user (alice), shared with the service through the group
    // clarity (core.sharedRepository=group), as operations.md describes it: refused with the
    // owner and both fixes until the service user trusts it (safe.directory in its git
    // configuration); a drop-in lets the service write the notes into it (ReadWritePaths=,
    // and RestrictSUIDSGID=no: git sets the setgid bit on directories it creates in a
    // group-shared repository).
    let local = ops.root().join("srv/config");
    support::git(
        Path::new("/"),
        &[
            "clone",
            "-q",
            f.repo.to_str().unwrap(),
            local.to_str().unwrap(),
        ],
    );
    sh(
        ops,
        "useradd --create-home --groups clarity alice \
         && git -C /srv/config config core.sharedRepository group \
         && chown -R alice:clarity /srv/config && chmod -R g+rwX /srv/config \
         && find /srv/config/.git -type d -exec chmod g+s {} +",
    );
    ops.exec_ok(&["systemctl", "stop", "clarity-reconcile.service"]);
    let env = std::fs::read_to_string(ops.root().join("etc/clarity/reconciler.env")).unwrap();
    let env = env.replace(
        &format!("\nCLARITY_REPO=ssh://git@gitsrv{BARE}\n"),
        "\nCLARITY_REPO=/srv/config\n",
    );
    std::fs::write(ops.root().join("etc/clarity/reconciler.env"), env).unwrap();
    // The mirror follows one repository; a new one gets a new mirror.
    sh(ops, "rm -rf /var/lib/clarity/mirror");
    ops.exec_ok(&["systemctl", "start", "clarity-reconcile.service"]);
    // The unit logs JSON: the error is an event's message, without the text format's prefix.
    let refusal = "the git repository /srv/config belongs to alice, not to clarity";
    wait(
        ops,
        "the ownership refusal",
        Duration::from_secs(30),
        || journal(ops).contains(refusal),
    );
    let log = journal(ops);
    assert!(log.contains("chown -R clarity: /srv/config"), "{log}");
    assert!(
        log.contains("--add safe.directory /srv/config/.git`"),
        "{log}"
    );
    sh(
        ops,
        "runuser -u clarity -- git config --file /var/lib/clarity/.gitconfig --add safe.directory /srv/config \
         && runuser -u clarity -- git config --file /var/lib/clarity/.gitconfig --add safe.directory /srv/config/.git \
         && mkdir -p /etc/systemd/system/clarity-reconcile.service.d \
         && printf '[Service]\\nReadWritePaths=/srv/config\\nRestrictSUIDSGID=no\\n' > /etc/systemd/system/clarity-reconcile.service.d/local-repo.conf \
         && systemctl daemon-reload && systemctl restart clarity-reconcile.service",
    );
    f.set_deployment("3.0.0", "hello from a local repository", "");
    std::fs::copy(
        f.repo.join("clients/acme/deployments/web/mock.yml"),
        local.join("clients/acme/deployments/web/mock.yml"),
    )
    .unwrap();
    sh(
        ops,
        "chown alice:clarity /srv/config/clients/acme/deployments/web/mock.yml \
         && runuser -u alice -- git -C /srv/config -c user.name=alice -c user.email=alice@example.invalid commit -qam 'greeting from a local repository'",
    );
    let local_head = ops
        .exec_ok(&[
            "runuser",
            "-u",
            "alice",
            "--",
            "git",
            "-C",
            "/srv/config",
            "rev-parse",
            "HEAD",
        ])
        .trim()
        .to_string();
    let local_note = || {
        let out = ops.exec(&[
            "runuser",
            "-u",
            "alice",
            "--",
            "git",
            "-C",
            "/srv/config",
            "notes",
            "--ref",
            "clarity",
            "show",
            &local_head,
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    wait(
        ops,
        "the local repository's commit on the sandbox",
        Duration::from_secs(60),
        || apply_run(ops, &local_head).is_some_and(|r| r["outcome"] == "success"),
    );
    wait(
        ops,
        "the note in the local repository",
        Duration::from_secs(30),
        || local_note().is_some(),
    );
    let run = apply_run(ops, &local_head).unwrap();
    assert!(local_note().unwrap().contains(run["id"].as_str().unwrap()));
    assert!(
        !journal(ops).contains("pushing notes to the config repository"),
        "{}",
        journal(ops)
    );

    // Purge keeps the state unless asked; asked, it removes it and the user.
    ops.exec_ok(&["dpkg", "--purge", "clarity"]);
    assert!(!ops.root().join("etc/clarity/reconciler.env").exists());
    assert!(
        !ops.root()
            .join("lib/systemd/system/clarity-reconcile.service")
            .exists()
    );
    assert!(ops.root().join("var/lib/clarity/ledger.sqlite").is_file());
    assert!(ops.exec(&["getent", "passwd", "clarity"]).status.success());
    ops.exec_ok(&[
        "dpkg",
        "-i",
        &format!("/root/{}", first.file_name().unwrap().to_string_lossy()),
    ]);
    assert!(ops.root().join("var/lib/clarity/ledger.sqlite").is_file());
    ops.exec_ok(&[
        "env",
        "CLARITY_PURGE_STATE=yes",
        "dpkg",
        "--purge",
        "clarity",
    ]);
    assert!(!ops.root().join("var/lib/clarity").exists());
    assert!(!ops.exec(&["getent", "passwd", "clarity"]).status.success());
}
