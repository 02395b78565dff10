//! `clarity-reconcile decommission` on a real `local` sandbox host running a real Python HTTP
//! service, checked on the host: the plan is shown first and `--dry-run` changes nothing; the
//! removal stops the service, removes the releases and keeps the data volume; `--purge-data`
//! removes that too; the run is recorded in the ledger and the commit's note as kind
//! `decommission`.

mod support;

use support::text;

use serde_json::Value;
use std::process::Output;
use std::time::Duration;
use support::sandbox::Fixture;

/// The deployment's directory on the host.
fn app_dir(f: &Fixture) -> std::path::PathBuf {
    f.sandbox().join("opt/clarity/web")
}

fn serving(f: &Fixture) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f.get("/health").is_some_and(|(s, _)| s == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `clarity-reconcile decommission ARGS` on the fixture's repository and work directory.
fn decommission(f: &Fixture, args: &[&str]) -> Output {
    std::process::Command::new(support::clarity_bin())
        .arg("decommission")
        .args(args)
        .args(["--repo", f.repo.to_str().unwrap()])
        .arg("--work-dir")
        .arg(&f.work)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn newest_run(f: &Fixture) -> Value {
    let o = f.run(&["history", "--output", "json", "--limit", "1"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let o = f.run(&["history", "show", &id, "--output", "json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn decommission_is_planned_first_keeps_data_unless_told_and_is_recorded() {
    let Some(f) = Fixture::new() else {
        return;
    };
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(serving(&f));
    let release = f.current().expect("a release runs");
    // What the service wrote: data in its volume directory.
    let shared = app_dir(&f).join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("orders.db"), "precious").unwrap();

    // Nothing is taken off without a selection.
    let o = decommission(&f, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("decommission needs --server, --client or --profile"),
        "{}",
        text(&o)
    );

    // The plan first; a dry run changes nothing on the host.
    let o = decommission(&f, &["--server", "sbx-1", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("host sbx-1 (acme): changes")
            && out.contains("- remove deployment web (stop the service, remove its definition and releases; volumes are kept)"),
        "{out}"
    );
    assert_eq!(f.current().as_deref(), Some(release.as_str()));
    assert!(serving(&f));

    let o = decommission(&f, &["--server", "sbx-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // On the host: the service is stopped, the releases are gone, the data stays.
    assert_eq!(f.current(), None);
    assert!(!app_dir(&f).join("releases").exists());
    assert!(
        f.get("/health").is_none(),
        "the service still answers after decommission"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("orders.db")).unwrap(),
        "precious"
    );
    // The record says the same.
    let run = newest_run(&f);
    assert_eq!(run["kind"], "decommission", "{run}");
    assert_eq!(run["mode"], "apply");
    assert_eq!(run["outcome"], "success");
    let host = &run["hosts"][0];
    assert_eq!(host["server"], "sbx-1");
    assert_eq!(host["outcome"], "converged");
    assert_eq!(host["steps"][0]["action"], "remove_deployment");
    assert_eq!(host["steps"][0]["status"], "ok");
    let commit = support::git(&f.repo, &["rev-parse", "HEAD"]);
    let note = support::git(&f.repo, &["notes", "--ref=clarity", "show", commit.trim()]);
    assert!(
        note.contains(&format!(
            "Clarity decommission {}: success",
            run["id"].as_str().unwrap()
        )),
        "{note}"
    );
    // The ledger no longer says the host runs it.
    let l = clarity::ledger::Ledger::open(&f.work.join("ledger.sqlite")).unwrap();
    assert!(
        l.current_deployments(None, Some("sbx-1"))
            .unwrap()
            .iter()
            .all(|d| d.deployment != "web"),
        "deployment_state still lists web on sbx-1"
    );
    drop(l);
    // Nothing left to take off.
    let o = decommission(&f, &["--server", "sbx-1", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Applied again, then decommissioned with its data.
    let o = f.run(&[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(serving(&f));
    let o = decommission(&f, &["--server", "sbx-1", "--purge-data"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !app_dir(&f).exists(),
        "--purge-data left {}",
        app_dir(&f).display()
    );
    assert!(f.get("/health").is_none());
    let run = newest_run(&f);
    assert_eq!(run["kind"], "decommission");
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .contains("data volumes purged"),
        "{run}"
    );
}
