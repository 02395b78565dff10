//! Converging `local` sandbox hosts with the real binary: a real artifact (a python3 HTTP
//! service) fetched from a `file` repository, verified, installed as a release, configured,
//! started, health-checked; then the failures an operator relies on Clarity to handle: a wrong
//! checksum, a failing health check, a failing migration, a hostile tarball, `kill -9` of the
//! agent at every step boundary, and two applies racing for one host.

mod support;

use support::sandbox::{Fixture, SERVICE, Version, sha256};

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn apply_converges_then_a_second_run_has_nothing_to_do() {
    let Some(f) = Fixture::new() else { return };
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("converged"), "{}", out(&o));
    assert_eq!(f.get("/").map(|r| r.1), Some("hello\n".into()));
    let plan = f.run(&["--dry-run"], &[]);
    assert_eq!(plan.status.code(), Some(0), "{}", out(&plan));
    assert!(out(&plan).contains("up to date"), "{}", out(&plan));
    // The env file is readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(f.sandbox().join("opt/clarity/web/env"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_config_change_switches_to_a_new_release_and_keeps_the_old_one() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    let first = f.current().unwrap();
    f.set_deployment("1.0.0", "bonjour", "");
    f.commit("greet in french");
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_ne!(f.current().unwrap(), first);
    assert_eq!(f.get("/").map(|r| r.1), Some("bonjour\n".into()));
    assert!(
        f.sandbox()
            .join("opt/clarity/web/releases")
            .join(&first)
            .is_dir()
    );
}

#[test]
fn wrong_checksum_fails_before_anything_switches() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    let before = f.current().unwrap();
    f.set_versions(&[
        Version {
            version: "1.0.0",
            file: "web-1.0.0.py",
            content: SERVICE.as_bytes(),
            sha256: None,
        },
        Version {
            version: "1.1.0",
            file: "web-1.1.0.py",
            content: SERVICE.as_bytes(),
            sha256: Some("ab".repeat(32)),
        },
    ]);
    f.set_deployment("1.1.0", "hello", "");
    f.commit("1.1.0 with a wrong checksum");
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains(&"ab".repeat(32)) && text.contains(&sha256(SERVICE.as_bytes())),
        "expected and actual hash named:\n{text}"
    );
    assert_eq!(f.current().unwrap(), before);
    let cache: Vec<String> = std::fs::read_dir(f.sandbox().join("var/lib/clarity/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        cache,
        vec![sha256(SERVICE.as_bytes())],
        "only the good artifact is cached"
    );
    assert_eq!(f.get("/").map(|r| r.0), Some(200));
}

#[test]
fn failing_health_check_rolls_back_to_the_previous_release() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    let before = f.current().unwrap();
    f.set_deployment("1.0.0", "broken", "");
    // The new release answers /health with 503.
    let dep =
        std::fs::read_to_string(f.repo.join("clients/acme/deployments/web/mock.yml")).unwrap();
    f.write(
        "clients/acme/deployments/web/mock.yml",
        &dep.replace("env_vars:\n", "env_vars:\n  BROKEN: \"1\"\n")
            .replace("retries: 10", "retries: 2"),
    );
    f.commit("a broken release");
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("rolled back"), "{}", out(&o));
    assert_eq!(f.current().unwrap(), before);
    assert_eq!(f.get("/"), Some((200, "hello\n".into())));
}

#[test]
fn a_hostile_tarball_is_refused() {
    let Some(f) = Fixture::new() else { return };
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    let bytes = b.into_inner().unwrap().finish().unwrap();
    std::fs::create_dir_all(f.repo.join("files")).unwrap();
    std::fs::write(f.repo.join("files/bad.tar.gz"), &bytes).unwrap();
    f.write(
        "artifacts/web.yml",
        &format!("id: web\ntype: tarball\nrepository: local\nversions:\n  - version: \"1.0.0\"\n    sha256: \"{}\"\n    location: bad.tar.gz\n", sha256(&bytes)),
    );
    f.commit("a tarball escaping its release");
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("`../escape` contains `..`"), "{}", out(&o));
    assert!(!f.sandbox().join("opt/clarity/web/releases/escape").exists());
    assert!(!f.sandbox().join("opt/clarity/web/escape").exists());
    assert!(f.current().is_none());
}

#[test]
fn kill_9_at_every_step_boundary_then_the_next_run_converges() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    // A change that exercises fetch, install, write, switch and restart.
    f.set_versions(&[
        Version {
            version: "1.0.0",
            file: "web-1.0.0.py",
            content: SERVICE.as_bytes(),
            sha256: None,
        },
        Version {
            version: "1.1.0",
            file: "web-1.1.0.py",
            content: format!("{SERVICE}\n# 1.1.0\n").as_bytes(),
            sha256: None,
        },
    ]);
    f.set_deployment("1.1.0", "v11", "");
    f.commit("1.1.0");
    let plan = f.run(&["--dry-run", "--output", "json"], &[]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let steps = plan["hosts"][0]["deployments"][0]["steps"]
        .as_array()
        .unwrap()
        .len();
    assert!(steps >= 6, "{plan}");
    for kill_after in 1..steps {
        // Start every round from the full plan: 1.1.0 neither cached nor installed.
        let releases = f.sandbox().join("opt/clarity/web/releases");
        let current = f.current().unwrap();
        for e in std::fs::read_dir(&releases).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy() != current {
                std::fs::remove_dir_all(e.path()).unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(f.sandbox().join("var/lib/clarity/cache"));
        let round = f.run(&["--dry-run", "--output", "json"], &[]);
        let round: serde_json::Value = serde_json::from_slice(&round.stdout).unwrap();
        assert_eq!(
            round["hosts"][0]["deployments"][0]["steps"]
                .as_array()
                .unwrap()
                .len(),
            steps
        );
        let killed = f.run(
            &[],
            &[("CLARITY_AGENT_KILL_AFTER_STEPS", &kill_after.to_string())],
        );
        assert_ne!(
            killed.status.code(),
            Some(0),
            "kill after {kill_after}: {}",
            out(&killed)
        );
        let current = f.current();
        assert!(
            current.is_some(),
            "after a kill at step {kill_after} there is no current release"
        );
        // Whatever `current` points at is a whole release directory.
        assert!(
            f.sandbox()
                .join("opt/clarity/web/current/web-1.0.0.py")
                .is_file()
                || f.sandbox()
                    .join("opt/clarity/web/current/web-1.1.0.py")
                    .is_file()
        );
        let next = f.run(&[], &[]);
        assert_eq!(
            next.status.code(),
            Some(0),
            "after a kill at step {kill_after} the next run did not converge:\n{}",
            out(&next)
        );
        assert_eq!(
            f.get("/").map(|r| r.1),
            Some("v11\n".into()),
            "kill after {kill_after}"
        );
        // Back to 1.0.0 for the next round.
        f.set_deployment("1.0.0", "hello", "");
        f.commit("back");
        assert_eq!(f.run(&[], &[]).status.code(), Some(0));
        f.set_deployment("1.1.0", "v11", "");
        f.commit("1.1.0 again");
    }
}

/// A tarball release: the service plus `migrations/` with the given (name, sql) files.
fn tarball(migrations: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("web.py", SERVICE.as_bytes(), 0o755);
    for (name, sql) in migrations {
        add(&format!("migrations/{name}"), sql.as_bytes(), 0o644);
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn tables(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn migration_rollback(backup: bool, with_down: bool) {
    let Some(f) = Fixture::new() else { return };
    let v1 = tarball(&[(
        "001_users.up.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY);",
    )]);
    let mut v2_files = vec![
        (
            "001_users.up.sql",
            "CREATE TABLE users (id INTEGER PRIMARY KEY);",
        ),
        (
            "002_orders.up.sql",
            "CREATE TABLE orders (id INTEGER PRIMARY KEY);",
        ),
        (
            "003_broken.up.sql",
            "CREATE TABLE broken (id INTEGER PRIMARY KEY); INSERT INTO no_such_table VALUES (1);",
        ),
    ];
    if with_down {
        v2_files.push(("002_orders.down.sql", "DROP TABLE orders;"));
    }
    let v2 = tarball(&v2_files);
    std::fs::create_dir_all(f.repo.join("files")).unwrap();
    std::fs::write(f.repo.join("files/web-1.tar.gz"), &v1).unwrap();
    std::fs::write(f.repo.join("files/web-2.tar.gz"), &v2).unwrap();
    f.write(
        "artifacts/web.yml",
        &format!(
            "id: web\ntype: tarball\nrepository: local\nversions:\n  - version: \"1\"\n    sha256: \"{}\"\n    location: web-1.tar.gz\n  - version: \"2\"\n    sha256: \"{}\"\n    location: web-2.tar.gz\n",
            sha256(&v1),
            sha256(&v2)
        ),
    );
    let migrations =
        format!("migrations:\n  engine: sqlite\n  database: data/app.db\n  backup: {backup}\n");
    let deployment = |version: &str| {
        f.set_deployment(version, "hello", &migrations);
        let p = f.repo.join("clients/acme/deployments/web/mock.yml");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(&format!("web-{version}.py"), "web.py");
        std::fs::write(p, text).unwrap();
    };
    deployment("1");
    f.commit("v1 with a migration");
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let db = f.sandbox().join("opt/clarity/web/shared/data/app.db");
    assert_eq!(tables(&db), vec!["clarity_migrations", "users"]);
    let before = f.current().unwrap();
    deployment("2");
    f.commit("v2 with a failing migration");
    let o = f.run(&[], &[]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("003_broken"),
        "the failing migration is named:\n{text}"
    );
    assert!(text.contains("rolled back"), "{text}");
    assert_eq!(f.current().unwrap(), before, "release switched back");
    assert_eq!(
        tables(&db),
        vec!["clarity_migrations", "users"],
        "database rolled back"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let applied: i64 = conn
        .query_row("SELECT count(*) FROM clarity_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(applied, 1);
    assert_eq!(
        f.get("/").map(|r| r.0),
        Some(200),
        "the previous release still serves"
    );
}

#[test]
fn failing_migration_rolls_back_database_with_down_migrations_and_the_release() {
    migration_rollback(false, true);
}

#[test]
fn failing_migration_without_down_file_restores_the_backup() {
    migration_rollback(true, false);
}

#[test]
fn a_locked_host_waits_then_names_the_holder() {
    let Some(f) = Fixture::new() else { return };
    let lock_path = f.sandbox().join("var/lib/clarity/lock");
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    // Another agent holds the host: a real flock held by this test process.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap();
    held.lock().unwrap();
    std::fs::write(
        &lock_path,
        "PID 4242 on other-reconciler since 2026-11-24T05:00:00Z",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = f.run(&["--lock-timeout", "1"], &[]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("locked by PID 4242 on other-reconciler since 2026-11-24T05:00:00Z"),
        "{text}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited for the lock"
    );
    assert!(f.current().is_none(), "nothing was applied");
    held.unlock().unwrap();
    assert_eq!(
        f.run(&[], &[]).status.code(),
        Some(0),
        "applies once the lock is free"
    );
}

#[test]
fn removed_deployments_are_reported_and_only_pruned_when_asked() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    std::fs::remove_file(f.repo.join("clients/acme/deployments/web/mock.yml")).unwrap();
    // Keep the server targeted by something so the host is still planned.
    f.write(
        "clients/acme/deployments/other/mock.yml",
        "artifact: other\nprofile: mock\nversion: \"1\"\ntargets:\n  - server: sbx-1\n",
    );
    f.write(
        "artifacts/other.yml",
        &format!("id: other\ntype: script\nrepository: local\nversions:\n  - version: \"1\"\n    sha256: \"{}\"\n    location: web-1.0.0.py\n", sha256(SERVICE.as_bytes())),
    );
    f.commit("web is no longer deployed");
    let plan = f.run(&["--dry-run"], &[]);
    assert!(
        out(&plan).contains("web is no longer desired here (left in place; --prune removes it)"),
        "{}",
        out(&plan)
    );
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    assert!(f.current().is_some(), "not removed without --prune");
    let pruned = f.run(&["--prune"], &[]);
    assert_eq!(pruned.status.code(), Some(0), "{}", out(&pruned));
    assert!(f.current().is_none(), "{}", out(&pruned));
    assert!(
        !f.sandbox().join("opt/clarity/web/releases").exists(),
        "releases removed"
    );
    assert_eq!(f.get("/"), None, "the service was stopped");
}

#[test]
fn two_applies_leave_two_notes_and_history_lists_both() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    let first = support::git(&f.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    f.set_deployment("1.0.0", "second", "");
    f.commit("second greeting");
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    let second = support::git(&f.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    for commit in [&first, &second] {
        let note = support::git(&f.repo, &["notes", "--ref=clarity", "show", commit]);
        assert!(
            note.contains("sbx-1") && note.contains("converged"),
            "{note}"
        );
        assert!(note.contains(&format!("\"commit\":\"{commit}\"")), "{note}");
    }
    let log = support::git(&f.repo, &["log", "--notes=clarity", "-2"]);
    assert_eq!(log.matches("Notes (clarity):").count(), 2, "{log}");
    let mut cmd = Command::new(support::clarity_bin());
    let history = cmd
        .args([
            "history",
            "--ledger",
            f.work.join("ledger.sqlite").to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(history.status.success(), "{}", out(&history));
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let runs = runs
        .as_array()
        .unwrap_or_else(|| runs["runs"].as_array().unwrap());
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["commit"], second, "newest first");
    assert_eq!(runs[1]["commit"], first);
    let text = Command::new(support::clarity_bin())
        .args([
            "history",
            "--ledger",
            f.work.join("ledger.sqlite").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("sbx-1"),
        "{}",
        out(&text)
    );
}

#[test]
fn drift_names_a_hand_edit_and_a_stopped_service_until_the_next_apply() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    let drift = |f: &Fixture| {
        Command::new(support::clarity_bin())
            .args([
                "--repo",
                f.repo.to_str().unwrap(),
                "--profile",
                "mock",
                "drift",
                "--work-dir",
                f.work.to_str().unwrap(),
            ])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let clean = drift(&f);
    assert_eq!(clean.status.code(), Some(0), "{}", out(&clean));
    assert!(out(&clean).contains("no drift"), "{}", out(&clean));
    // A hand edit of a managed file, and the service stopped behind Clarity's back.
    std::fs::write(
        f.sandbox()
            .join("opt/clarity/web/current/conf/greeting.txt"),
        "edited by hand\n",
    )
    .unwrap();
    {
        use clarity::service::ServiceBackend;
        clarity::service::ProcessBackend::new(f.sandbox().join("var/lib/clarity/run"))
            .stop("clarity-web")
            .unwrap();
    }
    let drifted = drift(&f);
    let text = out(&drifted);
    assert_eq!(drifted.status.code(), Some(2), "{text}");
    assert!(
        text.contains("[file-modified] conf/greeting.txt was changed on the host"),
        "{text}"
    );
    assert!(text.contains("[service-stopped]"), "{text}");
    // Recorded in the ledger.
    let conn = rusqlite::Connection::open(f.work.join("ledger.sqlite")).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM drift_findings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    // The next apply heals it, and drift is clean again.
    let healed = f.run(&[], &[]);
    assert_eq!(healed.status.code(), Some(0), "{}", out(&healed));
    assert_eq!(f.get("/").map(|r| r.1), Some("hello\n".into()));
    let again = drift(&f);
    assert_eq!(again.status.code(), Some(0), "{}", out(&again));
}

/// Versions 1.0.0 then 1.1.0 applied (both healthy); both ship `web.py`, so the service command
/// does not name the version (as in a real deployment file, where a rollback changes only
/// `version`).
fn two_healthy_versions(f: &Fixture) {
    let v11 = format!("{SERVICE}\n# 1.1.0\n");
    f.set_versions(&[
        Version {
            version: "1.0.0",
            file: "1.0.0/web.py",
            content: SERVICE.as_bytes(),
            sha256: None,
        },
        Version {
            version: "1.1.0",
            file: "1.1.0/web.py",
            content: v11.as_bytes(),
            sha256: None,
        },
    ]);
    for version in ["1.0.0", "1.1.0"] {
        f.set_deployment(version, "hello", "");
        let p = f.repo.join("clients/acme/deployments/web/mock.yml");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(&format!("web-{version}.py"), "web.py");
        std::fs::write(&p, text).unwrap();
        f.commit(version);
        assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    }
}

#[test]
fn rollback_commits_the_previous_healthy_version_and_the_next_apply_converges_to_it() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    two_healthy_versions(&f);
    let rollback = Command::new(support::clarity_bin())
        .args([
            "--repo",
            f.repo.to_str().unwrap(),
            "--client",
            "acme",
            "--profile",
            "mock",
            "rollback",
            "--deployment",
            "web",
        ])
        .args([
            "--work-dir",
            f.work.to_str().unwrap(),
            "--reason",
            "1.1.0 leaks memory",
        ])
        .output()
        .unwrap();
    assert!(rollback.status.success(), "{}", out(&rollback));
    let show = support::git(&f.repo, &["show", "HEAD"]);
    assert!(
        show.contains("Roll back web for acme in mock: 1.1.0 -> 1.0.0"),
        "{show}"
    );
    assert!(show.contains("Reason: 1.1.0 leaks memory"), "{show}");
    assert!(
        show.contains("-version: \"1.1.0\"\n+version: \"1.0.0\""),
        "{show}"
    );
    assert_eq!(
        show.matches("\n+").count() - show.matches("\n+++").count(),
        1,
        "only the version changes:\n{show}"
    );
    let applied = f.run(&[], &[]);
    assert_eq!(applied.status.code(), Some(0), "{}", out(&applied));
    assert!(
        f.current().unwrap().starts_with("1.0.0-"),
        "{:?}",
        f.current()
    );
}

#[test]
fn promotion_gate_requires_a_healthy_run_in_the_previous_profile() {
    let Some(f) = Fixture::new() else { return };
    let staging_port = support::free_port();
    f.write(
        "clarity.yml",
        "keep_releases: 3\npromotion: [staging, mock]\n",
    );
    f.write(
        "clients/acme/servers/stg-1.yml",
        "hostname: stg-1\ndatacenter: lab\nagent:\n  transport: local\n  root: sandboxes/stg-1\n  service_manager: process\n",
    );
    let mock =
        std::fs::read_to_string(f.repo.join("clients/acme/deployments/web/mock.yml")).unwrap();
    f.write(
        "clients/acme/deployments/web/staging.yml",
        &mock
            .replace("profile: mock", "profile: staging")
            .replace("server: sbx-1", "server: stg-1")
            .replace(&f.port.to_string(), &staging_port.to_string()),
    );
    f.commit("promotion: staging before mock");
    let stop_staging =
        clarity::service::ProcessBackend::new(f.work.join("sandboxes/stg-1/var/lib/clarity/run"));
    let refused = f.run(&[], &[]);
    let text = out(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains("promotion gate: web 1.0.0 has not been applied to staging for acme yet"),
        "{text}"
    );
    assert!(f.current().is_none(), "nothing applied to mock");
    // Staging first (its own run), then mock is allowed.
    let mut staging = Command::new(support::clarity_bin());
    staging
        .args([
            "--repo",
            f.repo.to_str().unwrap(),
            "--work-dir",
            f.work.to_str().unwrap(),
            "--profile",
            "staging",
        ])
        .env("NO_COLOR", "1");
    let staged = staging.output().unwrap();
    assert_eq!(staged.status.code(), Some(0), "{}", out(&staged));
    let promoted = f.run(&[], &[]);
    assert_eq!(promoted.status.code(), Some(0), "{}", out(&promoted));
    assert!(f.current().is_some());
    // A new version skips staging only when told to, and the run says so.
    f.set_deployment("1.0.0", "skipped", "");
    f.write(
        "clarity.yml",
        "keep_releases: 3\npromotion: [staging, mock]\npromotion_soak_minutes: 60\n",
    );
    f.commit("a 60 minute soak");
    let soaking = f.run(&[], &[]);
    assert!(
        out(&soaking).contains("has run healthy in staging for 0 min, 60 min are required"),
        "{}",
        out(&soaking)
    );
    let skipped = f.run(&["--skip-promotion-gate"], &[]);
    assert_eq!(skipped.status.code(), Some(0), "{}", out(&skipped));
    let conn = rusqlite::Connection::open(f.work.join("ledger.sqlite")).unwrap();
    let skipped_runs: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE triggered_by LIKE '%(promotion gate skipped)'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        skipped_runs, 1,
        "exactly the run with --skip-promotion-gate says so"
    );
    {
        use clarity::service::ServiceBackend;
        let _ = stop_staging.stop("clarity-web");
    }
}

#[test]
fn emergency_rollback_switches_now_and_pins_until_the_revert_is_applied() {
    let Some(f) = Fixture::new() else { return };
    two_healthy_versions(&f);
    let bad = support::git(&f.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let emergency = Command::new(support::clarity_bin())
        .args([
            "--repo",
            f.repo.to_str().unwrap(),
            "--client",
            "acme",
            "--profile",
            "mock",
            "rollback",
            "--deployment",
            "web",
        ])
        .args(["--work-dir", f.work.to_str().unwrap(), "--emergency"])
        .output()
        .unwrap();
    assert!(emergency.status.success(), "{}", out(&emergency));
    assert!(f.current().unwrap().starts_with("1.0.0-"), "switched now");
    // The branch still says 1.1.0 (the revert is not merged): the pin holds the hosts.
    let held = f.run(&["--rev", &bad], &[]);
    assert_eq!(held.status.code(), Some(0), "{}", out(&held));
    assert!(
        out(&held).contains("pinned at 1.0.0 by an emergency rollback"),
        "{}",
        out(&held)
    );
    assert!(f.current().unwrap().starts_with("1.0.0-"), "held at 1.0.0");
    // Applying the revert releases the pin; after that the branch moves hosts again.
    let revert = f.run(&[], &[]);
    assert!(
        out(&revert).contains("released the emergency pin of acme/web/mock"),
        "{}",
        out(&revert)
    );
    let forward = f.run(&["--rev", &bad], &[]);
    assert_eq!(forward.status.code(), Some(0), "{}", out(&forward));
    assert!(
        f.current().unwrap().starts_with("1.1.0-"),
        "{}",
        out(&forward)
    );
}

#[test]
fn when_the_previous_release_is_unhealthy_too_it_stops_and_says_restore_failed() {
    let Some(f) = Fixture::new() else { return };
    let flag = f.work.join("healthy-flag");
    std::fs::create_dir_all(&f.work).unwrap();
    std::fs::write(&flag, "").unwrap();
    let check = format!(
        "  - type: command\n    command: [\"test\", \"-e\", \"{}\"]\n    interval_s: 1\n    retries: 2\n",
        flag.display()
    );
    let with_check = |greeting: &str| {
        f.set_deployment("1.0.0", greeting, "");
        let p = f.repo.join("clients/acme/deployments/web/mock.yml");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}{check}")).unwrap();
    };
    with_check("hello");
    f.commit("a command health check");
    assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    let before = f.current().unwrap();
    // Whatever broke now breaks the previous release as well.
    std::fs::remove_file(&flag).unwrap();
    with_check("new");
    f.commit("a new release");
    let o = f.run(&[], &[]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("RESTORE FAILED"), "{text}");
    assert!(
        text.contains("the previous release is unhealthy too"),
        "{text}"
    );
    assert_eq!(
        f.current().unwrap(),
        before,
        "it switched back once and stopped there"
    );
}

#[test]
fn old_releases_beyond_keep_releases_are_removed() {
    let Some(f) = Fixture::new() else { return };
    // clarity.yml of the fixture keeps 3 releases.
    for greeting in ["a", "b", "c", "d", "e"] {
        f.set_deployment("1.0.0", greeting, "");
        f.commit(greeting);
        assert_eq!(f.run(&[], &[]).status.code(), Some(0));
    }
    let releases: Vec<_> = std::fs::read_dir(f.sandbox().join("opt/clarity/web/releases"))
        .unwrap()
        .collect();
    assert_eq!(releases.len(), 3, "{releases:?}");
    assert_eq!(f.get("/").map(|r| r.1), Some("e\n".into()));
}

#[test]
fn apply_uses_the_commit_and_says_it_ignores_uncommitted_changes() {
    let Some(f) = Fixture::new() else { return };
    f.set_deployment("1.0.0", "not committed", "");
    let o = f.run(&[], &[]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning: 1 uncommitted change in the config repository is not applied"),
        "{text}"
    );
    assert_eq!(
        f.get("/").map(|r| r.1),
        Some("hello\n".into()),
        "the committed greeting is served"
    );
}
