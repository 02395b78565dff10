//! Plans from paired fixtures: a config repository (`tests/plans/repo`) and the actual state of
//! each host as its agent reports it (`tests/plans/actual/<host>.json`, the converged state).
//! The snapshots show exactly what a reviewer would read.

mod support;

use clarity::desired::{self, Context, InventorySecrets, Selection, Templates};
use clarity::model::host::{
    ActualDeployment, ActualFile, ActualHost, ActualService, RecordedFile, ServiceState,
};
use clarity::plan::{self, Action, Change, HostStatus, Plan};
use clarity::source::{self, ReadMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans")
}

/// A copy of the fixture repository, optionally edited, in a temp dir.
fn repo_copy(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&fixtures().join("repo"), dir.path());
    edit(dir.path());
    dir
}

fn desired_hosts(repo: &Path) -> Vec<desired::DesiredHost> {
    let snapshot = source::read(repo, &ReadMode::WorkingTree).unwrap();
    let loaded = clarity::load::load(&snapshot);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics.sorted());
    let (templates, diags) = Templates::new(&loaded.inventory);
    assert!(diags.is_empty(), "{diags:?}");
    let secrets = InventorySecrets::new(&loaded.inventory, None);
    let ctx = Context {
        env: BTreeMap::new(),
        allowed_env: Vec::new(),
        secrets: &secrets,
        lenient_env: false,
        config_root: None,
    };
    desired::hosts(&loaded.inventory, &templates, &Selection::default(), &ctx)
        .into_iter()
        .map(|h| h.unwrap())
        .collect()
}

/// What a host looks like once the agent converged it to `d`.
fn converged(d: &desired::DesiredHost) -> ActualHost {
    let mut host = ActualHost::empty(clarity::agent::AGENT_VERSION);
    for dep in &d.deployments {
        let files = dep
            .release_files
            .iter()
            .chain(&dep.host_files)
            .map(|f| ActualFile {
                destination: f.destination.clone(),
                exists: true,
                sha256: Some(f.content.sha256.clone()),
                mode: Some(f.mode.clone()),
                owner: Some("root:root".into()),
                recorded: Some(RecordedFile {
                    sha256: f.content.sha256.clone(),
                    redacted: f.content.redacted.clone(),
                }),
            })
            .collect();
        host.cached_artifacts.push(dep.artifact.sha256.clone());
        host.deployments.insert(
            dep.name.clone(),
            ActualDeployment {
                current_release: Some(dep.release.clone()),
                current_version: Some(dep.artifact.version.clone()),
                releases: vec![dep.release.clone()],
                files,
                env_sha256: (!dep.env.is_empty()).then(|| {
                    clarity::digest::sha256_hex(plan::env_file_text(dep, true).as_bytes())
                }),
                service: dep.service.as_ref().map(|_| ActualService {
                    manager: d.service_manager,
                    definition_sha256: plan::service_definition_sha256(dep),
                    state: ServiceState::Running,
                    enabled: true,
                }),
                migrations_applied: Vec::new(),
                migrations_pending: Vec::new(),
                known_releases: vec![dep.release.clone()],
                health_checks_sha256: Some(plan::health_checks_sha256(&dep.health_checks)),
                container: None,
            },
        );
    }
    host
}

/// The checked-in actual states (regenerated from the fixture repo with
/// CLARITY_UPDATE_GENERATED=1).
fn actual_states() -> BTreeMap<String, ActualHost> {
    let dir = fixtures().join("actual");
    if std::env::var_os("CLARITY_UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for d in desired_hosts(&fixtures().join("repo")) {
            let json = serde_json::to_string_pretty(&converged(&d)).unwrap() + "\n";
            std::fs::write(dir.join(format!("{}.json", d.server)), json).unwrap();
        }
    }
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let text = std::fs::read(&path).unwrap();
            let host = clarity::transport::parse_host_state(&text).unwrap();
            (
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                host,
            )
        })
        .collect()
}

fn plan_for(repo: &Path, actual: &BTreeMap<String, ActualHost>) -> Plan {
    let hosts = desired_hosts(repo)
        .iter()
        .map(|d| {
            let empty = ActualHost::empty("test");
            plan::host_plan(d, actual.get(&d.server).unwrap_or(&empty), false)
        })
        .collect();
    Plan::new("fixture".into(), None, hosts)
}

#[test]
fn converged_hosts_have_nothing_to_do() {
    let plan = plan_for(&fixtures().join("repo"), &actual_states());
    assert_eq!(plan.hosts.len(), 3);
    for h in &plan.hosts {
        assert_eq!(
            h.status,
            HostStatus::Unchanged,
            "{}",
            plan::render_text(&plan, false)
        );
    }
    assert_eq!(plan.summary.steps, 0);
}

#[test]
fn empty_hosts_get_every_step() {
    let plan = plan_for(&fixtures().join("repo"), &BTreeMap::new());
    insta::assert_snapshot!("empty_hosts_text", plan::render_text(&plan, false));
    insta::assert_snapshot!("empty_hosts_json", plan::render_json(&plan));
}

#[test]
fn one_template_line_changes_one_file_on_the_hosts_that_use_it() {
    let repo = repo_copy(|dir| {
        let path = dir.join("templates/web/web.conf.j2");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("log_level = info", "log_level = debug")).unwrap();
    });
    let plan = plan_for(repo.path(), &actual_states());
    let mut diffs = Vec::new();
    for h in &plan.hosts {
        for d in &h.deployments {
            for s in d.steps.iter().filter(|s| s.diff.is_some()) {
                diffs.push((h.server.as_str(), d.name.as_str(), s.target.as_str()));
            }
        }
    }
    assert_eq!(
        diffs,
        vec![
            ("web-1", "web", "conf/web.conf"),
            ("web-2", "web", "conf/web.conf")
        ]
    );
    let worker = plan.hosts.iter().find(|h| h.server == "worker-1").unwrap();
    assert_eq!(worker.status, HostStatus::Unchanged);
    let web1 = &plan
        .hosts
        .iter()
        .find(|h| h.server == "web-1")
        .unwrap()
        .deployments[0];
    let diff = web1.steps.iter().find_map(|s| s.diff.as_deref()).unwrap();
    assert!(
        diff.contains("-log_level = info\n+log_level = debug\n"),
        "{diff}"
    );
    insta::assert_snapshot!(
        "template_line_changed_text",
        plan::render_text(&plan, false)
    );
    insta::assert_snapshot!("template_line_changed_json", plan::render_json(&plan));
}

#[test]
fn a_hand_edited_file_is_rewritten_without_showing_its_content() {
    let mut actual = actual_states();
    let web1 = actual.get_mut("web-1").unwrap();
    let f = &mut web1.deployments.get_mut("web").unwrap().files[0];
    f.sha256 = Some("0".repeat(64));
    let plan = plan_for(&fixtures().join("repo"), &actual);
    let h = plan.hosts.iter().find(|h| h.server == "web-1").unwrap();
    assert_eq!(h.status, HostStatus::Changes);
    let steps = &h.deployments[0].steps;
    let write = steps
        .iter()
        .find(|s| s.action == Action::WriteFile)
        .unwrap();
    assert_eq!(write.change, Change::Update);
    assert!(
        write
            .detail
            .as_deref()
            .unwrap()
            .contains("changed on the host outside Clarity")
    );
    assert!(steps.iter().any(|s| s.action == Action::RestartService));
    assert!(
        plan.hosts
            .iter()
            .filter(|h| h.status == HostStatus::Changes)
            .count()
            == 1
    );
}

#[test]
fn a_stopped_service_is_started() {
    let mut actual = actual_states();
    let svc = actual
        .get_mut("worker-1")
        .unwrap()
        .deployments
        .get_mut("worker")
        .unwrap();
    svc.service.as_mut().unwrap().state = ServiceState::Stopped;
    let plan = plan_for(&fixtures().join("repo"), &actual);
    let h = plan.hosts.iter().find(|h| h.server == "worker-1").unwrap();
    let actions: Vec<Action> = h.deployments[0].steps.iter().map(|s| s.action).collect();
    assert_eq!(actions, vec![Action::StartService]);
}

#[test]
fn a_version_bump_switches_release_and_fetches() {
    let repo = repo_copy(|dir| {
        let path = dir.join("clients/acme/deployments/web/mock.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("version: \"1.0.0\"", "version: \"1.1.0\""),
        )
        .unwrap();
    });
    let plan = plan_for(repo.path(), &actual_states());
    let h = plan.hosts.iter().find(|h| h.server == "web-2").unwrap();
    let d = &h.deployments[0];
    assert_eq!(d.from_version.as_deref(), Some("1.0.0"));
    assert_eq!(d.version, "1.1.0");
    let actions: Vec<Action> = d.steps.iter().map(|s| s.action).collect();
    assert_eq!(
        actions,
        vec![
            Action::FetchArtifact,
            Action::InstallRelease,
            Action::WriteFile,
            Action::WriteFile,
            Action::SwitchRelease,
            Action::RestartService,
            Action::HealthCheck
        ]
    );
    // Files whose content did not change are written into the new release without a diff.
    assert!(d.steps.iter().all(|s| s.diff.is_none()));
}

#[test]
fn plan_json_validates_against_the_published_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for actual in [BTreeMap::new(), actual_states()] {
        let plan = plan_for(&fixtures().join("repo"), &actual);
        let json: serde_json::Value = serde_json::from_str(&plan::render_json(&plan)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

fn findings(actual: &BTreeMap<String, ActualHost>) -> Vec<(String, String, &'static str)> {
    desired_hosts(&fixtures().join("repo"))
        .iter()
        .flat_map(|d| {
            plan::drift::drift(d, actual.get(&d.server).unwrap_or(&ActualHost::empty("t")))
        })
        .map(|f| (f.server, f.deployment, f.kind.as_str()))
        .collect()
}

#[test]
fn converged_hosts_have_no_drift() {
    assert_eq!(findings(&actual_states()), vec![]);
}

#[test]
fn drift_names_each_kind_of_difference() {
    let mut actual = actual_states();
    let web1 = actual
        .get_mut("web-1")
        .unwrap()
        .deployments
        .get_mut("web")
        .unwrap();
    web1.files[0].sha256 = Some("0".repeat(64));
    web1.files[1].exists = false;
    web1.service.as_mut().unwrap().state = ServiceState::Stopped;
    web1.releases.push("0.9.0-handmade".into());
    let web2 = actual
        .get_mut("web-2")
        .unwrap()
        .deployments
        .get_mut("web")
        .unwrap();
    web2.current_release = Some("1.0.0-000000000000".into());
    web2.migrations_pending = vec!["002_add_index".into()];
    let worker = actual.get_mut("worker-1").unwrap();
    worker
        .deployments
        .insert("legacy".into(), ActualDeployment::default());
    worker
        .deployments
        .get_mut("worker")
        .unwrap()
        .service
        .as_mut()
        .unwrap()
        .enabled = false;
    let mut got = findings(&actual);
    got.sort();
    let s = |a: &str, b: &str, c: &'static str| (a.to_string(), b.to_string(), c);
    let mut want = vec![
        s("web-1", "web", "file-modified"),
        s("web-1", "web", "file-missing"),
        s("web-1", "web", "service-stopped"),
        s("web-1", "web", "unknown-release"),
        s("web-2", "web", "wrong-release"),
        s("web-2", "web", "migration-pending"),
        s("worker-1", "legacy", "unknown-deployment"),
        s("worker-1", "worker", "service-disabled"),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn values_are_inserted_once_and_never_rendered_again() {
    let repo = repo_copy(|dir| {
        let path = dir.join("clients/acme/deployments/web/mock.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("greeting: hello", "greeting: \"{{ 7 * 7 }} ${CLIENT_ID}\""),
        )
        .unwrap();
    });
    let hosts = desired_hosts(repo.path());
    let web = &hosts[0].deployments[0];
    let conf = web
        .release_files
        .iter()
        .find(|f| f.destination == "conf/web.conf")
        .unwrap();
    // The template inserted the value; the value's own `{{ }}` stayed literal, and the
    // reference inside configuration was resolved once.
    assert!(
        conf.content
            .redacted
            .contains("greeting = {{ 7 * 7 }} acme\n"),
        "{}",
        conf.content.redacted
    );
}

#[test]
fn an_undefined_template_variable_names_the_template_and_line() {
    let repo = repo_copy(|dir| {
        let path = dir.join("templates/web/web.conf.j2");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace(
                "workers = {{ config.workers }}",
                "workers = {{ config.wrokers }}",
            ),
        )
        .unwrap();
    });
    let snapshot = source::read(repo.path(), &ReadMode::WorkingTree).unwrap();
    let loaded = clarity::load::load(&snapshot);
    let diags = clarity::desired::check(&loaded.inventory, &[]);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].file, "templates/web/web.conf.j2");
    assert_eq!(diags[0].line, 4);
    assert_eq!(diags[0].code, "template-render");
}

// Security review, finding 8: a drift finding on a file that holds a secret says only that it
// changed; hash prefixes would let a reader of the finding test guesses of the secret offline.
#[test]
fn drift_of_a_file_holding_a_secret_shows_no_hashes() {
    let mut hosts = desired_hosts(&fixtures().join("repo"));
    let host = &mut hosts[0];
    let dep = &mut host.deployments[0];
    let mut file = dep
        .release_files
        .first()
        .or(dep.host_files.first())
        .cloned()
        .expect("a file");
    file.content =
        desired::FileContent::new(true, "password=s3cret-value\n".into(), &["s3cret-value"]);
    assert!(file.content.sensitive);
    dep.release_files = vec![file.clone()];
    dep.host_files.clear();
    let name = dep.name.clone();
    let mut actual = converged(host);
    let ad = actual.deployments.get_mut(&name).unwrap();
    let af = ad
        .files
        .iter_mut()
        .find(|f| f.destination == file.destination)
        .unwrap();
    af.sha256 = Some("ab".repeat(32));
    let found = plan::drift::drift(host, &actual);
    let modified = found
        .iter()
        .find(|f| f.kind.as_str() == "file-modified")
        .unwrap_or_else(|| panic!("{found:?}"));
    assert!(
        modified.detail.contains("(sensitive file changed)"),
        "{}",
        modified.detail
    );
    assert!(!modified.detail.contains("abab"), "{}", modified.detail);
    assert!(
        !modified.detail.contains(&file.content.sha256[..12]),
        "{}",
        modified.detail
    );
}
