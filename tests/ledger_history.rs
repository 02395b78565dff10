//! The ledger, git notes and `clarity-reconcile history`, end to end: real SQLite files, real
//! git repositories made with the `git` program, the real binary. Notes written by Clarity are
//! read back with `git notes` and `git log --notes`, pushed to a real bare repository, and a
//! corrupt ledger is moved aside and rebuilt from them.

mod support;

use clarity::ledger::{self, AppliedFilter, Ledger, LedgerError, RunFilter, notes};
use clarity::model::apply::{Action, StepStatus};
use clarity::model::run::{
    DeploymentRecord, DriftFinding, HostOutcome, HostRecord, RUN_FORMAT, RunMode, RunOutcome,
    RunRecord, StepRecord,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn has_git() -> bool {
    support::require_program("git").is_some()
}

/// A config repository with `n` commits; returns their ids, oldest first.
fn repo_with_commits(dir: &Path, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    support::git(dir, &["init", "-q", "-b", "main"]);
    (0..n)
        .map(|i| {
            std::fs::write(dir.join("clarity.yml"), format!("# change {i}\n")).unwrap();
            support::git(dir, &["add", "clarity.yml"]);
            support::git(dir, &["commit", "-q", "-m", &format!("change {i}")]);
            support::git(dir, &["rev-parse", "HEAD"]).trim().to_string()
        })
        .collect()
}

fn step(deployment: &str, action: Action, target: &str, message: Option<&str>) -> StepRecord {
    StepRecord {
        deployment: deployment.into(),
        action,
        target: target.into(),
        status: StepStatus::Ok,
        duration_ms: 420,
        message: message.map(str::to_string),
        bytes: (action == Action::FetchArtifact).then_some(12_345_678),
        repository_kind: None,
        retries: None,
    }
}

fn host(server: &str, client: &str, outcome: &str, deps: &[(&str, &str, bool)]) -> HostRecord {
    HostRecord {
        server: server.into(),
        client: client.into(),
        outcome: HostOutcome::parse(outcome),
        duration_ms: 12_300,
        message: (outcome == "rolled_back").then(|| "health check failed: HTTP 503".to_string()),
        deployments: deps
            .iter()
            .map(|(name, version, healthy)| DeploymentRecord {
                name: name.to_string(),
                profile: "prod".into(),
                version: version.to_string(),
                release: format!("{version}-r1"),
                healthy: *healthy,
                health: None,
            })
            .collect(),
        steps: deps
            .iter()
            .flat_map(|(name, version, _)| {
                [
                    step(
                        name,
                        Action::FetchArtifact,
                        &format!("{name}-{version}.jar"),
                        None,
                    ),
                    step(
                        name,
                        Action::WriteFile,
                        &format!("/etc/{name}/app.properties"),
                        Some("2 lines changed; 1 secret value redacted"),
                    ),
                    step(name, Action::SwitchRelease, &format!("{version}-r1"), None),
                    step(
                        name,
                        Action::HealthCheck,
                        "http://127.0.0.1:8080/health",
                        None,
                    ),
                ]
            })
            .collect(),
    }
}

fn record(id: &str, commit: &str, at: &str, hosts: Vec<HostRecord>) -> RunRecord {
    let failed = hosts
        .iter()
        .any(|h| !matches!(h.outcome.as_str(), "converged" | "unchanged"));
    RunRecord {
        format: RUN_FORMAT.into(),
        message: None,
        id: id.into(),
        commit: commit.into(),
        branch: Some("main".into()),
        started_at: at.into(),
        finished_at: at.replace(":00Z", ":42Z"),
        trigger: "cli:ops@bastion".into(),
        mode: RunMode::Apply,
        outcome: if failed {
            RunOutcome::Failed
        } else {
            RunOutcome::Success
        },
        hosts,
        rollout: Default::default(),
        kind: Default::default(),
    }
}

/// Two apply runs: the first converges billing 1.4.2 on two hosts; the second rolls web-02
/// back from 1.4.3 and converges sms on sms-01 (another client).
fn two_runs(commits: &[String]) -> (RunRecord, RunRecord) {
    let first = record(
        "20261120T090000Z-aaaa0001",
        &commits[0],
        "2026-11-20T09:00:00Z",
        vec![
            host("web-01", "acme", "converged", &[("billing", "1.4.2", true)]),
            host("web-02", "acme", "converged", &[("billing", "1.4.2", true)]),
        ],
    );
    let second = record(
        "20261122T140000Z-bbbb0002",
        &commits[1],
        "2026-11-22T14:00:00Z",
        vec![
            host("web-01", "acme", "converged", &[("billing", "1.4.3", true)]),
            host(
                "web-02",
                "acme",
                "rolled_back",
                &[("billing", "1.4.2", true)],
            ),
            host("sms-01", "globex", "converged", &[("sms", "2.0.1", true)]),
        ],
    );
    (first, second)
}

fn history(ledger: &Path, args: &[&str]) -> Output {
    Command::new(support::clarity_bin())
        .arg("history")
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .env_remove("CLARITY_STATE_DIR")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ids(o: &Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_runs_on_two_commits_make_two_notes_and_history_lists_both() {
    if !has_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let commits = repo_with_commits(&repo, 3);
    let (first, second) = two_runs(&commits);
    let ledger_path = ledger::default_path(&tmp.path().join(".clarity"));
    let mut ledger = Ledger::open(&ledger_path).unwrap();
    for run in [&first, &second] {
        ledger.record_run(run).unwrap();
        notes::write(&repo, &run.commit, run).unwrap();
    }
    drop(ledger);

    // The real git reads each note: the summary, then the machine line.
    let note = support::git(&repo, &["notes", "--ref=clarity", "show", &commits[1]]);
    assert!(
        note.starts_with("Clarity apply 20261122T140000Z-bbbb0002: FAILED\n"),
        "{note}"
    );
    assert!(note.contains("  web-02 (acme): rolled_back in 12.3 s; billing 1.4.2 (release 1.4.2-r1); health check failed: HTTP 503\n"), "{note}");
    let line = note
        .lines()
        .find_map(|l| l.strip_prefix("clarity-run: "))
        .unwrap();
    assert_eq!(serde_json::from_str::<RunRecord>(line).unwrap(), second);
    let note0 = support::git(&repo, &["notes", "--ref=clarity", "show", &commits[0]]);
    assert!(note0.contains("20261120T090000Z-aaaa0001"), "{note0}");
    // No note on the commit nobody applied.
    let o = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["notes", "--ref=clarity", "show", &commits[2]])
        .output()
        .unwrap();
    assert!(!o.status.success());

    // `git log --notes=clarity` shows them under each commit.
    let log = support::git(&repo, &["log", "--notes=clarity", "--format=%H%n%N"]);
    assert_eq!(log.matches("clarity-run: ").count(), 2, "{log}");
    assert!(log.contains(&format!(
        "{}\nClarity apply 20261120T090000Z-aaaa0001",
        commits[0]
    )));

    // Fan-out layout: ab/cdef...
    let paths = support::git(
        &repo,
        &["ls-tree", "-r", "--name-only", "refs/notes/clarity"],
    );
    let mut paths: Vec<&str> = paths.lines().collect();
    paths.sort();
    let mut expected: Vec<String> = commits[..2]
        .iter()
        .map(|c| format!("{}/{}", &c[..2], &c[2..]))
        .collect();
    expected.sort();
    assert_eq!(paths, expected);

    // Reading them back gives the records, oldest first.
    assert_eq!(
        notes::read_all(&repo).unwrap(),
        vec![first.clone(), second.clone()]
    );

    // The real binary lists both, newest first, with per-host outcomes.
    let o = history(&ledger_path, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let newest = text.find("20261122T140000Z-bbbb0002").unwrap();
    let oldest = text.find("20261120T090000Z-aaaa0001").unwrap();
    assert!(newest < oldest, "{text}");
    assert!(text.contains(&format!(
        "20261122T140000Z-bbbb0002  2026-11-22T14:00:00Z  apply  failed  commit {} (main)  by cli:ops@bastion\n",
        &commits[1][..12]
    )), "{text}");
    assert!(
        text.contains(
            "    web-02  acme    rolled_back  12.3 s  billing 1.4.2  health check failed: HTTP 503\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("    sms-01  globex  converged    12.3 s  sms 2.0.1\n"),
        "{text}"
    );

    let o = history(&ledger_path, &["--output", "json"]);
    assert_eq!(
        ids(&o),
        ["20261122T140000Z-bbbb0002", "20261120T090000Z-aaaa0001"]
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["hosts"][1]["outcome"], "rolled_back");
    assert_eq!(v[0]["hosts"][1]["deployments"][0]["version"], "1.4.2");

    // `history show` prints every step; a unique prefix is enough.
    let o = history(&ledger_path, &["show", "20261122T14"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("run       20261122T140000Z-bbbb0002\n"),
        "{text}"
    );
    assert_eq!(text.matches("fetch artifact").count(), 3, "{text}");
    assert!(
        text.contains("web-02 (acme): rolled_back in 12.3 s: health check failed: HTTP 503\n"),
        "{text}"
    );
    assert!(text.contains("11.8 MiB"), "{text}");
    assert!(
        text.contains("2 lines changed; 1 secret value redacted"),
        "{text}"
    );
    let o = history(
        &ledger_path,
        &["show", "20261122T140000Z-bbbb0002", "--output", "json"],
    );
    assert_eq!(
        serde_json::from_slice::<RunRecord>(&o.stdout).unwrap(),
        second
    );
    let o = history(&ledger_path, &["show", "2026"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("matches 2 runs"), "{}", stderr(&o));
    let o = history(&ledger_path, &["show", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("hint: `clarity-reconcile history` lists"));
}

#[test]
fn history_filters_select_runs_and_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let commits: Vec<String> = ["a", "b"].iter().map(|c| c.repeat(40)).collect();
    let (first, second) = two_runs(&commits);
    let path = tmp.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path).unwrap();
    ledger.record_runs(&[first, second]).unwrap();
    drop(ledger);

    let o = history(&path, &["--client", "globex", "--output", "json"]);
    assert_eq!(ids(&o), ["20261122T140000Z-bbbb0002"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(v[0]["host_count"], 3);

    let o = history(&path, &["--server", "web-02"]);
    let text = stdout(&o);
    assert!(text.contains("(1 of 3 hosts match the filter)"), "{text}");
    assert!(!text.contains("web-01"), "{text}");

    let o = history(&path, &["--deployment", "sms", "--output", "json"]);
    assert_eq!(ids(&o), ["20261122T140000Z-bbbb0002"]);
    let o = history(&path, &["--deployment", "billing", "--output", "json"]);
    assert_eq!(ids(&o).len(), 2);
    // Host-level filters apply to one host together.
    let o = history(
        &path,
        &[
            "--client", "globex", "--server", "web-01", "--output", "json",
        ],
    );
    assert!(ids(&o).is_empty());

    let o = history(&path, &["--since", "2026-11-21", "--output", "json"]);
    assert_eq!(ids(&o), ["20261122T140000Z-bbbb0002"]);
    let o = history(
        &path,
        &["--since", "2026-11-20T09:00:00Z", "--output", "json"],
    );
    assert_eq!(ids(&o).len(), 2);
    let o = history(&path, &["--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("hint: give a date"), "{}", stderr(&o));

    let o = history(&path, &["--limit", "1"]);
    let text = stdout(&o);
    assert!(text.contains("20261122T140000Z-bbbb0002"), "{text}");
    assert!(!text.contains("20261120T090000Z-aaaa0001"), "{text}");
    assert!(
        text.contains("(the newest 1 runs; --limit 0 lists all)"),
        "{text}"
    );

    let o = history(&path, &["--output", "markdown"]);
    assert!(
        stdout(&o).starts_with("| run | started | mode | outcome | commit | hosts |\n"),
        "{}",
        stdout(&o)
    );

    let o = history(&path, &["--server", "nowhere"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "no runs match\n");

    // CLARITY_STATE_DIR names the directory when --ledger is not given.
    let o = Command::new(support::clarity_bin())
        .args(["history", "--output", "json"])
        .env("CLARITY_STATE_DIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(ids(&o).len(), 2, "{}", stderr(&o));
    // And a missing ledger is an error with a hint, not an empty one created on the spot.
    let missing = tmp.path().join("elsewhere/ledger.sqlite");
    let o = history(&missing, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("there is no ledger at"),
        "{}",
        stderr(&o)
    );
    assert!(!missing.exists());
}

#[test]
fn apply_runs_keep_current_state_deployment_history_and_last_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let commits: Vec<String> = ["a", "b"].iter().map(|c| c.repeat(40)).collect();
    let (first, second) = two_runs(&commits);
    let mut ledger = Ledger::open(&tmp.path().join("ledger.sqlite")).unwrap();
    ledger.record_run(&first).unwrap();
    ledger.record_run(&second).unwrap();
    // Recording a run again changes nothing.
    ledger.record_run(&second).unwrap();
    assert_eq!(ledger.runs(&RunFilter::default()).unwrap().len(), 2);

    let state = ledger.current_deployments(Some("acme"), None).unwrap();
    let summary: Vec<_> = state
        .iter()
        .map(|s| (s.server.as_str(), s.version.as_str(), s.since.as_str()))
        .collect();
    // web-02 rolled back to 1.4.2: it has run 1.4.2 since the first run.
    assert_eq!(
        summary,
        [
            ("web-01", "1.4.3", "2026-11-22T14:00:42Z"),
            ("web-02", "1.4.2", "2026-11-20T09:00:42Z"),
        ]
    );

    let hist = ledger
        .deployment_history("acme", "billing", "prod")
        .unwrap();
    let hist: Vec<_> = hist
        .iter()
        .map(|e| {
            (
                e.version.as_str(),
                e.run_id.as_str(),
                e.hosts,
                e.healthy_everywhere,
            )
        })
        .collect();
    assert_eq!(
        hist,
        [
            ("1.4.2", "20261122T140000Z-bbbb0002", 1, true),
            ("1.4.3", "20261122T140000Z-bbbb0002", 1, true),
            ("1.4.2", "20261120T090000Z-aaaa0001", 2, true),
        ]
    );

    let last = ledger
        .last_applied_commit(&AppliedFilter {
            branch: Some("main".into()),
            ..AppliedFilter::default()
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        (last.commit.as_str(), last.outcome),
        (commits[1].as_str(), RunOutcome::Failed)
    );
    let ok = ledger
        .last_applied_commit(&AppliedFilter {
            successful_only: true,
            ..AppliedFilter::default()
        })
        .unwrap()
        .unwrap();
    assert_eq!(ok.commit, commits[0]);
    let globex = ledger
        .last_applied_commit(&AppliedFilter {
            client: Some("globex".into()),
            profiles: vec!["prod".into()],
            ..AppliedFilter::default()
        })
        .unwrap()
        .unwrap();
    assert_eq!(globex.run_id, "20261122T140000Z-bbbb0002");
    assert!(
        ledger
            .last_applied_commit(&AppliedFilter {
                profiles: vec!["staging".into()],
                ..AppliedFilter::default()
            })
            .unwrap()
            .is_none()
    );

    // A drift run keeps its findings; it does not touch the deployment state.
    let mut drift = record(
        "20261123T060000Z-cccc0003",
        &commits[1],
        "2026-11-23T06:00:00Z",
        vec![host("web-01", "acme", "unchanged", &[])],
    );
    drift.mode = RunMode::Drift;
    let finding = DriftFinding {
        server: "web-01".into(),
        client: "acme".into(),
        deployment: "billing".into(),
        kind: "file_modified".into(),
        detail: "/etc/billing/app.properties differs (3 lines)".into(),
    };
    ledger
        .record_drift(&drift, std::slice::from_ref(&finding))
        .unwrap();
    assert_eq!(ledger.drift_findings(&drift.id).unwrap(), [finding]);
    assert_eq!(
        ledger.runs(&RunFilter::default()).unwrap()[0].drift_findings,
        1
    );
    assert_eq!(ledger.current_deployments(None, None).unwrap().len(), 3);
}

#[test]
fn several_runs_on_one_commit_append_and_git_edits_are_kept() {
    if !has_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let commits = repo_with_commits(&repo, 2);
    let (mut a, mut b) = two_runs(&commits);
    a.commit = commits[1].clone();
    b.commit = commits[1].clone();
    notes::write(&repo, "HEAD", &a).unwrap();
    // A person adds a line with git itself (git may rewrite the notes tree in its own layout).
    support::git(
        &repo,
        &[
            "notes",
            "--ref=clarity",
            "append",
            "-m",
            "checked by hand: ok",
            "HEAD",
        ],
    );
    notes::write(&repo, &commits[1], &b).unwrap();
    // Writing a run again (a retry) does not duplicate it.
    notes::write(&repo, &commits[1], &b).unwrap();

    let note = support::git(&repo, &["notes", "--ref=clarity", "show", &commits[1]]);
    assert_eq!(note.matches("clarity-run: ").count(), 2, "{note}");
    assert!(note.contains("checked by hand: ok"), "{note}");
    let a_at = note.find(&a.id).unwrap();
    let b_at = note.find(&b.id).unwrap();
    assert!(a_at < b_at);
    assert_eq!(notes::read(&repo, &commits[1]).unwrap(), vec![a, b]);
    assert!(notes::read(&repo, &commits[0]).unwrap().is_empty());
    let paths = support::git(
        &repo,
        &["ls-tree", "-r", "--name-only", "refs/notes/clarity"],
    );
    assert_eq!(
        paths.trim(),
        format!("{}/{}", &commits[1][..2], &commits[1][2..])
    );
}

#[test]
fn concurrent_note_writers_lose_nothing() {
    if !has_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let commits = repo_with_commits(&repo, 8);
    std::thread::scope(|s| {
        for (i, c) in commits.iter().enumerate() {
            let repo = repo.clone();
            s.spawn(move || {
                let run = record(
                    &format!("20261123T10000{i}Z-0000000{i}"),
                    c,
                    &format!("2026-11-23T10:00:0{i}Z"),
                    vec![host(
                        "web-01",
                        "acme",
                        "converged",
                        &[("billing", "1.0", true)],
                    )],
                );
                notes::write(&repo, c, &run).unwrap();
            });
        }
    });
    assert_eq!(notes::read_all(&repo).unwrap().len(), 8);
    let listed = support::git(&repo, &["notes", "--ref=clarity", "list"]);
    assert_eq!(listed.lines().count(), 8);
}

/// The version-1 schema exactly as released; never edit it (it stands for ledgers in the
/// field).
const V1_DDL: &str = "
CREATE TABLE runs (id TEXT PRIMARY KEY, format TEXT NOT NULL, commit_id TEXT NOT NULL,
    branch TEXT, started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('apply', 'dry_run', 'drift')), outcome TEXT NOT NULL);
CREATE INDEX runs_by_start ON runs (started_at, id);
CREATE TABLE run_hosts (run_id TEXT NOT NULL REFERENCES runs (id), ordinal INTEGER NOT NULL,
    server TEXT NOT NULL, client TEXT NOT NULL, outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL, message TEXT, PRIMARY KEY (run_id, ordinal)) WITHOUT ROWID;
CREATE TABLE run_deployments (run_id TEXT NOT NULL, host_ordinal INTEGER NOT NULL,
    ordinal INTEGER NOT NULL, name TEXT NOT NULL, profile TEXT NOT NULL,
    version TEXT NOT NULL, release_name TEXT NOT NULL,
    healthy INTEGER NOT NULL CHECK (healthy IN (0, 1)),
    PRIMARY KEY (run_id, host_ordinal, ordinal),
    FOREIGN KEY (run_id, host_ordinal) REFERENCES run_hosts (run_id, ordinal)) WITHOUT ROWID;
CREATE TABLE run_steps (run_id TEXT NOT NULL, host_ordinal INTEGER NOT NULL,
    ordinal INTEGER NOT NULL, deployment TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, status TEXT NOT NULL, duration_ms INTEGER NOT NULL, message TEXT,
    bytes INTEGER, PRIMARY KEY (run_id, host_ordinal, ordinal),
    FOREIGN KEY (run_id, host_ordinal) REFERENCES run_hosts (run_id, ordinal)) WITHOUT ROWID;
PRAGMA application_id = 1131176306;
PRAGMA user_version = 1;
";

#[test]
fn a_version_1_ledger_is_upgraded_in_place_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    let commits: Vec<String> = ["a", "b"].iter().map(|c| c.repeat(40)).collect();
    let (first, second) = two_runs(&commits);
    {
        // Written the way a version-1 Clarity wrote it: plain SQL against the v1 tables.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(V1_DDL).unwrap();
        for run in [&first, &second] {
            conn.execute(
                "INSERT INTO runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'apply', ?8)",
                rusqlite::params![
                    run.id,
                    run.format,
                    run.commit,
                    run.branch,
                    run.started_at,
                    run.finished_at,
                    run.trigger,
                    if run.outcome == RunOutcome::Failed {
                        "failed"
                    } else {
                        "success"
                    }
                ],
            )
            .unwrap();
            for (h, host) in run.hosts.iter().enumerate() {
                conn.execute(
                    "INSERT INTO run_hosts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        run.id,
                        h as i64,
                        host.server,
                        host.client,
                        host.outcome.as_str(),
                        host.duration_ms as i64,
                        host.message
                    ],
                )
                .unwrap();
                for (d, dep) in host.deployments.iter().enumerate() {
                    conn.execute(
                        "INSERT INTO run_deployments VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        rusqlite::params![
                            run.id,
                            h as i64,
                            d as i64,
                            dep.name,
                            dep.profile,
                            dep.version,
                            dep.release,
                            dep.healthy
                        ],
                    )
                    .unwrap();
                }
                for (s, st) in host.steps.iter().enumerate() {
                    let action = serde_json::to_value(st.action).unwrap();
                    conn.execute(
                        "INSERT INTO run_steps VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'ok', ?7, ?8, ?9)",
                        rusqlite::params![
                            run.id,
                            h as i64,
                            s as i64,
                            st.deployment,
                            action.as_str().unwrap(),
                            st.target,
                            st.duration_ms as i64,
                            st.message,
                            st.bytes.map(|b| b as i64)
                        ],
                    )
                    .unwrap();
                }
            }
        }
    }

    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), ledger::SCHEMA_VERSION);
    const { assert!(ledger::SCHEMA_VERSION >= 2) };
    // Every run reads back exactly as recorded.
    assert_eq!(ledger.run(&first.id).unwrap().unwrap(), first);
    assert_eq!(ledger.run(&second.id).unwrap().unwrap(), second);
    // The tables version 2 added are filled from the old runs.
    let state = ledger
        .current_deployments(Some("acme"), Some("web-02"))
        .unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(
        (state[0].version.as_str(), state[0].since.as_str()),
        ("1.4.2", "2026-11-20T09:00:42Z")
    );
    assert_eq!(
        ledger
            .deployment_history("globex", "sms", "prod")
            .unwrap()
            .len(),
        1
    );
    drop(ledger);
    // Opening again is a no-op, and the binary reads the upgraded file.
    Ledger::open(&path).unwrap();
    let o = history(&path, &["--output", "json"]);
    assert_eq!(ids(&o).len(), 2, "{}", stderr(&o));
}

#[test]
fn a_ledger_is_durable_by_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    drop(Ledger::open(&path).unwrap());
    // WAL is a property of the file, so plain SQLite sees it (synchronous=FULL belongs to a
    // connection: the unit tests check the ledger's own).
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app, ledger::schema::APPLICATION_ID);
    // Some other application's database is refused, and left alone.
    let other = tmp.path().join("other.sqlite");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER)")
        .unwrap();
    let err = Ledger::open(&other).err().unwrap();
    assert!(matches!(err, LedgerError::NotALedger { .. }), "{err}");
    assert!(other.exists());
}

/// Records runs in a ledger and as notes, and returns (repo, ledger path, runs).
fn ledger_and_notes(tmp: &Path, runs: usize) -> (PathBuf, PathBuf, Vec<RunRecord>) {
    let repo = tmp.join("config");
    let commits = repo_with_commits(&repo, runs);
    let path = tmp.join("state/ledger.sqlite");
    let mut ledger = Ledger::open(&path).unwrap();
    let records: Vec<RunRecord> = commits
        .iter()
        .enumerate()
        .map(|(i, c)| {
            record(
                &format!("202611{:02}T100000Z-{i:08x}", 10 + i),
                c,
                &format!("2026-11-{:02}T10:00:00Z", 10 + i),
                vec![
                    host(
                        "web-01",
                        "acme",
                        "converged",
                        &[("billing", &format!("1.{i}"), true)],
                    ),
                    host(
                        "web-02",
                        "acme",
                        "converged",
                        &[("billing", &format!("1.{i}"), true)],
                    ),
                ],
            )
        })
        .collect();
    for r in &records {
        ledger.record_run(r).unwrap();
        notes::write(&repo, &r.commit, r).unwrap();
    }
    drop(ledger);
    (repo, path, records)
}

#[test]
fn a_corrupt_ledger_is_moved_aside_and_rebuilt_from_the_notes() {
    if !has_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, path, records) = ledger_and_notes(tmp.path(), 12);

    // Garbage over the pages after the first: the schema still names them, their content is
    // gone.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * 4096, "{}", bytes.len());
    for (i, b) in bytes[4096..3 * 4096].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();

    // The binary reports it, moves it aside and says how to rebuild.
    let o = history(&path, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("error: the ledger {} is corrupt", path.display())),
        "{err}"
    );
    assert!(err.contains("it was moved aside to"), "{err}");
    assert!(
        err.contains("hint: rebuild it from the git notes: `clarity-reconcile history rebuild"),
        "{err}"
    );
    assert!(!path.exists());
    let moved: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("ledger.sqlite.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    // Moved, byte for byte: never rewritten or deleted.
    assert_eq!(std::fs::read(&moved[0]).unwrap(), bytes);

    let o = Command::new(support::clarity_bin())
        .args(["history", "rebuild", "--repo"])
        .arg(&repo)
        .arg("--ledger")
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("rebuilt {} from 12 notes: 12 runs\n", path.display())
    );
    let ledger = Ledger::open(&path).unwrap();
    for r in &records {
        assert_eq!(ledger.run(&r.id).unwrap().as_ref(), Some(r));
    }
    assert_eq!(
        ledger.current_deployments(None, None).unwrap()[0].version,
        "1.11"
    );
    drop(ledger);
    let o = history(&path, &["--limit", "0", "--output", "json"]);
    assert_eq!(ids(&o).len(), 12);
    // A rebuild never replaces a ledger.
    let err = Ledger::rebuild_from_notes(&path, &repo).err().unwrap();
    assert!(matches!(err, LedgerError::Exists { .. }), "{err}");
}

#[test]
fn a_file_that_is_not_sqlite_is_moved_aside_too() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    let junk = "this is a shopping list, not a database\n".repeat(200);
    std::fs::write(&path, &junk).unwrap();
    let err = Ledger::open(&path).err().unwrap();
    let LedgerError::Corrupt { moved_to, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        moved_to
            .to_string_lossy()
            .contains("ledger.sqlite.corrupt-")
    );
    assert_eq!(std::fs::read_to_string(moved_to).unwrap(), junk);
    assert!(err.hint().unwrap().contains("history rebuild"));
    // The path is free again: the next open starts a new ledger.
    Ledger::open(&path).unwrap();
}

#[test]
fn notes_push_to_a_bare_remote_and_merge_when_it_moved_on() {
    if !has_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote.git");
    support::git(
        tmp.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    let a = tmp.path().join("a");
    let commits = repo_with_commits(&a, 2);
    support::git(&a, &["remote", "add", "origin", remote.to_str().unwrap()]);
    support::git(&a, &["push", "-q", "origin", "main"]);
    let b = tmp.path().join("b");
    support::git(
        tmp.path(),
        &["clone", "-q", remote.to_str().unwrap(), b.to_str().unwrap()],
    );

    assert!(matches!(
        notes::push(&a, "origin"),
        Err(notes::NotesError::NothingToPush { .. })
    ));
    let (mut r1, mut r2) = two_runs(&commits);
    r2.commit = commits[0].clone();
    notes::write(&a, &commits[0], &r1).unwrap();
    notes::write(&a, &commits[1], &{
        r1.id = "20261121T000000Z-aaaa0003".into();
        r1.commit = commits[1].clone();
        r1.clone()
    })
    .unwrap();
    notes::push(&a, "origin").unwrap();
    let note = support::git(&remote, &["notes", "--ref=clarity", "show", &commits[1]]);
    assert!(note.contains("20261121T000000Z-aaaa0003"), "{note}");

    // Clone b has not fetched a's notes and records another run on the same commit: its push
    // is rejected, the notes are merged, the push goes through, nothing is lost.
    notes::write(&b, &commits[0], &r2).unwrap();
    notes::push(&b, "origin").unwrap();
    let note = support::git(&remote, &["notes", "--ref=clarity", "show", &commits[0]]);
    assert!(note.contains("20261120T090000Z-aaaa0001"), "{note}");
    assert!(note.contains("20261122T140000Z-bbbb0002"), "{note}");
    assert_eq!(note.matches("clarity-run: ").count(), 2, "{note}");
    assert!(
        support::git(&remote, &["log", "--notes=clarity", "main"])
            .contains("20261121T000000Z-aaaa0003")
    );
    // The merged notes tree keeps the fan-out layout.
    for p in support::git(
        &remote,
        &["ls-tree", "-r", "--name-only", "refs/notes/clarity"],
    )
    .lines()
    {
        assert_eq!((p.len(), &p[2..3]), (41, "/"), "{p}");
    }

    // Clone a fetches and sees all three runs; fetching again changes nothing.
    notes::fetch(&a, "origin").unwrap();
    assert_eq!(notes::read_all(&a).unwrap().len(), 3);
    let tip = support::git(&a, &["rev-parse", "refs/notes/clarity"]);
    notes::fetch(&a, "origin").unwrap();
    assert_eq!(support::git(&a, &["rev-parse", "refs/notes/clarity"]), tip);
    assert!(
        support::git(&a, &["for-each-ref", "refs/notes/"])
            .lines()
            .count()
            == 1
    );
}

#[test]
fn canary_a_redacted_record_is_stored_exactly_as_given() {
    if !has_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let commits = repo_with_commits(&repo, 1);
    let mut run = record(
        "20261123T120000Z-cafe0001",
        &commits[0],
        "2026-11-23T12:00:00Z",
        vec![host(
            "db-01",
            "acme",
            "converged",
            &[("ledgerdb", "3.1", true)],
        )],
    );
    run.hosts[0].steps[1].message = Some("DB_PASSWORD changed (value redacted)".into());
    let path = tmp.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path).unwrap();
    ledger.record_run(&run).unwrap();
    drop(ledger);
    notes::write(&repo, &commits[0], &run).unwrap();

    // Every text the ledger holds is a text of the record (or an enum's name, or the date the
    // deployment state derives from it): the writer adds nothing.
    let record_json = serde_json::to_value(&run).unwrap();
    let mut given = std::collections::BTreeSet::new();
    fn strings(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::String(s) => {
                out.insert(s.clone());
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    strings(&record_json, &mut given);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut stored = 0;
    for t in &tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {t}")).unwrap();
        let cols = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for c in 0..cols {
                if let rusqlite::types::ValueRef::Text(s) = row.get_ref(c).unwrap() {
                    let s = String::from_utf8_lossy(s).into_owned();
                    assert!(
                        given.contains(&s),
                        "{t} holds `{s}`, which the record does not"
                    );
                    stored += 1;
                }
            }
        }
    }
    assert!(stored > 20);
    let raw = std::fs::read(&path).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains("(sensitive)"));
    assert!(raw.contains("DB_PASSWORD changed (value redacted)"));

    // The note: its machine line is exactly the record; its summary is built from it.
    let note = support::git(&repo, &["notes", "--ref=clarity", "show", &commits[0]]);
    let line = note
        .lines()
        .find_map(|l| l.strip_prefix("clarity-run: "))
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(line).unwrap(),
        record_json
    );
    assert!(!note.contains("(sensitive)"), "{note}");
    assert_eq!(
        note.lines().count(),
        4,
        "title, who/when, one host, the record: {note}"
    );
}
