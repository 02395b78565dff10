//! The ledger benchmark's writer (run by `benches/ledger.sh`): makes a git repository with N
//! commits, then records N apply runs (3 hosts, 2 deployments, 12 steps per host) in a ledger
//! one run per transaction, in a second ledger in one batch, as N git notes one notes commit
//! each, and reads them back. Prints one timing per line.
//!
//! Usage: `ledger_bench DIR [N]`; DIR must not exist yet.

use clarity::ledger::{Ledger, RunFilter, notes};
use clarity::model::apply::{Action, StepStatus};
use clarity::model::run::{
    DeploymentRecord, HostRecord, RUN_FORMAT, RunMode, RunOutcome, RunRecord, StepRecord,
};
use std::path::Path;
use std::time::Instant;

fn run_record(i: usize, commit: &str) -> RunRecord {
    let at = clarity::clock::rfc3339(1_790_000_000 + i as u64 * 600);
    let hosts = (0..3)
        .map(|h| {
            let deps = ["billing", "sms-gateway"];
            HostRecord {
                server: format!("app-{:02}", (i + h) % 40),
                client: format!("client-{}", i % 25),
                outcome: if i.is_multiple_of(50) && h == 2 {
                    clarity::model::run::HostOutcome::RolledBack
                } else {
                    clarity::model::run::HostOutcome::Converged
                },
                duration_ms: 9_000 + (i % 700) as u64,
                message: None,
                deployments: deps
                    .iter()
                    .map(|d| DeploymentRecord {
                        name: d.to_string(),
                        profile: "prod".into(),
                        version: format!("1.{}.{}", i / 100, i % 100),
                        release: format!("1.{}.{}-{:08x}", i / 100, i % 100, i),
                        healthy: true,
                        health: None,
                    })
                    .collect(),
                steps: deps
                    .iter()
                    .flat_map(|d| {
                        [
                            Action::FetchArtifact,
                            Action::InstallRelease,
                            Action::WriteFile,
                            Action::WriteEnv,
                            Action::SwitchRelease,
                            Action::HealthCheck,
                        ]
                        .map(|action| StepRecord {
                            deployment: d.to_string(),
                            action,
                            target: format!("{d}/{}", action.verb()),
                            status: StepStatus::Ok,
                            duration_ms: 300,
                            message: (action == Action::WriteFile)
                                .then(|| "3 lines changed; 1 secret value redacted".to_string()),
                            bytes: (action == Action::FetchArtifact).then_some(48_000_000),
                            repository_kind: (action == Action::FetchArtifact)
                                .then(|| "http".to_string()),
                            retries: (action == Action::FetchArtifact).then_some(0),
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    RunRecord {
        format: RUN_FORMAT.into(),
        message: None,
        id: format!("{}-{i:08x}", at.replace(['-', ':'], "")),
        commit: commit.to_string(),
        branch: Some("main".into()),
        started_at: at.clone(),
        finished_at: at,
        trigger: "watch".into(),
        mode: RunMode::Apply,
        outcome: if i.is_multiple_of(50) {
            RunOutcome::Failed
        } else {
            RunOutcome::Success
        },
        hosts,
        rollout: Default::default(),
        kind: Default::default(),
    }
}

fn timed<T>(label: &str, n: usize, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label:<52} {secs:8.3} s  ({:.3} ms each)",
        secs * 1000.0 / n.max(1) as f64
    );
    out
}

/// N commits on `main`, each with the same (empty) tree: enough for notes to point at.
fn make_commits(repo_dir: &Path, n: usize) -> Vec<String> {
    let repo = git2::Repository::init(repo_dir).unwrap();
    let sig = git2::Signature::now("bench", "bench@clarity.invalid").unwrap();
    let tree_id = repo.treebuilder(None).unwrap().write().unwrap();
    let tree = repo.find_tree(tree_id).unwrap();
    let mut parent: Option<git2::Commit> = None;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                &format!("change {i}"),
                &tree,
                &parents,
            )
            .unwrap();
        ids.push(id.to_string());
        parent = Some(repo.find_commit(id).unwrap());
    }
    repo.set_head("refs/heads/main").unwrap();
    ids
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: ledger_bench DIR [N]"));
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(10_000);
    assert!(!dir.exists(), "{} exists", dir.display());
    std::fs::create_dir_all(&dir).unwrap();
    let repo = dir.join("repo");
    let commits = timed(&format!("make {n} commits (setup)"), n, || {
        make_commits(&repo, n)
    });
    let runs: Vec<RunRecord> = commits
        .iter()
        .enumerate()
        .map(|(i, c)| run_record(i, c))
        .collect();
    let steps: usize = runs
        .iter()
        .flat_map(|r| &r.hosts)
        .map(|h| h.steps.len())
        .sum();
    println!("{n} runs, {steps} steps in all");

    let one_by_one = dir.join("ledger.sqlite");
    timed(
        &format!("ledger: record {n} runs, one transaction each"),
        n,
        || {
            let mut ledger = Ledger::open(&one_by_one).unwrap();
            for r in &runs {
                ledger.record_run(r).unwrap();
            }
        },
    );
    let batched = dir.join("ledger-batched.sqlite");
    timed(
        &format!("ledger: record {n} runs in one transaction"),
        n,
        || {
            let mut ledger = Ledger::open(&batched).unwrap();
            ledger.record_runs(&runs).unwrap();
        },
    );
    let size = std::fs::metadata(&one_by_one).unwrap().len();
    println!("ledger file: {:.1} MB", size as f64 / 1e6);
    let ledger = timed("ledger: open (quick_check) a full ledger", 1, || {
        Ledger::open(&one_by_one).unwrap()
    });
    timed("ledger: list the newest 20 runs", 1, || {
        ledger
            .runs(&RunFilter {
                limit: Some(20),
                ..RunFilter::default()
            })
            .unwrap()
    });
    timed(&format!("ledger: list all {n} runs"), n, || {
        ledger.runs(&RunFilter::default()).unwrap()
    });
    timed("ledger: read one run with every step", 1, || {
        ledger.run(&runs[n / 2].id).unwrap().unwrap()
    });
    drop(ledger);

    timed(
        &format!("notes: write {n} notes, one notes commit each"),
        n,
        || {
            for r in &runs {
                notes::write(&repo, &r.commit, r).unwrap();
            }
        },
    );
    let batch_repo = dir.join("repo-batched");
    let batch_commits = make_commits(&batch_repo, n);
    timed(
        &format!("notes: write {n} notes in one notes commit"),
        n,
        || {
            let pairs: Vec<(&str, &RunRecord)> = batch_commits
                .iter()
                .zip(&runs)
                .map(|(c, r)| (c.as_str(), r))
                .collect();
            notes::write_batch(&batch_repo, &pairs).unwrap();
        },
    );
    let read = timed(&format!("notes: read all {n} notes"), n, || {
        notes::read_all(&repo).unwrap()
    });
    assert_eq!(read.len(), n);
    let rebuilt = dir.join("rebuilt.sqlite");
    timed(&format!("ledger: rebuild from {n} notes"), n, || {
        Ledger::rebuild_from_notes(&rebuilt, &repo).unwrap()
    });
    println!("RUN_ID {}", runs[n / 2].id);
    println!("COMMIT {}", runs[n / 2].commit);
}
