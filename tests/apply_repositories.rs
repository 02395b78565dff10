//! `s3` and `google-drive` repositories end to end on the `mock` profile: the real binary
//! applies a sandbox host whose artifact comes from a real S3-compatible server (moto, IAM
//! authentication on) and then from the Google Drive STAND-IN (tests/fetch_servers/
//! drive_standin.py; no Google service can be reached from a test machine), with credentials
//! from age-encrypted secrets. The failure cases (a wrong S3 secret key, a revoked Drive
//! refresh token) fail the apply with a message naming the object, show no secret, and leave
//! the host as it was: checked on the host (the `current` link, the running service, the
//! cache).

mod fetch_servers;
mod support;

use fetch_servers::{DriveItem, DriveStandin, Moto};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use support::sandbox::{Fixture, SERVICE, sha256};

const S3_CANARY: &str = "wrong-s3-secret-CANARY-8";
const CLIENT_SECRET: &str = "drive-client-secret-CANARY-3";
const REFRESH_TOKEN: &str = "drive-refresh-CANARY-5";

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes the client's mock secrets, encrypted to a fresh key; returns the identity file.
fn write_secrets(f: &Fixture, dir: &Path, secrets: &[(&str, &str)]) -> String {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    f.write("secrets/acme/recipients.txt", &format!("{recipient}\n"));
    let recipients = clarity::secret::Recipients::parse(&recipient).unwrap();
    let mut entries = BTreeMap::new();
    for (name, value) in secrets {
        entries.insert(
            name.to_string(),
            clarity::secret::encrypt(value, &recipients).unwrap(),
        );
    }
    f.write(
        "secrets/acme/mock.yml",
        &clarity::secret::file::render("# test secrets\n", &entries),
    );
    let key = dir.join("test.agekey");
    std::fs::write(
        &key,
        format!(
            "{}\n",
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string())
        ),
    )
    .unwrap();
    key.display().to_string()
}

fn artifact(f: &Fixture, repository: &str, version: &str, location: &str, content: &[u8]) {
    f.write(
        "artifacts/web.yml",
        &format!(
            "id: web\ntype: script\nrepository: {repository}\nversions:\n  - version: \"{version}\"\n    \
             sha256: \"{}\"\n    location: {location}\n    size: {}\n",
            sha256(content),
            content.len()
        ),
    );
}

fn cache_files(f: &Fixture) -> Vec<String> {
    let dir = f.sandbox().join("var/lib/clarity/cache");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The repository kind, retries and bytes of the newest apply run's `fetch_artifact` step,
/// from the ledger.
fn newest_fetch(f: &Fixture) -> (Option<String>, Option<u32>, Option<u64>) {
    use clarity::ledger::{Ledger, RunFilter};
    let ledger = Ledger::open(&f.work.join(clarity::ledger::FILE_NAME)).unwrap();
    let newest = ledger
        .runs(&RunFilter {
            limit: Some(1),
            ..RunFilter::default()
        })
        .unwrap();
    let run = ledger.run(&newest[0].id).unwrap().unwrap();
    let step = run.hosts[0]
        .steps
        .iter()
        .find(|s| s.action == clarity::model::apply::Action::FetchArtifact)
        .expect("a fetch_artifact step")
        .clone();
    (step.repository_kind, step.retries, step.bytes)
}

#[test]
fn s3_then_google_drive_artifacts_deploy_and_their_failures_leave_the_host_as_it_was() {
    let Some(f) = Fixture::new() else { return };
    let keydir = tempfile::tempdir().unwrap();
    // The version the S3 test deploys first, and the one a wrong key must not deploy.
    let v1 = SERVICE.replace("greeting + ", "\"s3:\" + greeting + ");
    let v2 = SERVICE.replace("greeting + ", "\"s3-v2:\" + greeting + ");
    let (p1, p2) = (keydir.path().join("v1.py"), keydir.path().join("v2.py"));
    std::fs::write(&p1, &v1).unwrap();
    std::fs::write(&p2, &v2).unwrap();
    let objects = [
        format!("releases/web-1.0.0.py={}", p1.display()),
        format!("releases/web-2.0.0.py={}", p2.display()),
    ];
    let Some((moto, _)) = Moto::start("artifacts", &objects) else {
        return;
    };
    let identity = write_secrets(
        &f,
        keydir.path(),
        &[
            ("s3_key_id", &moto.access_key_id),
            ("s3_secret", &moto.secret_access_key),
            ("s3_wrong_secret", S3_CANARY),
            ("drive_client_id", "client-7.apps.example"),
            ("drive_client_secret", CLIENT_SECRET),
            ("drive_refresh", REFRESH_TOKEN),
            ("drive_revoked", "revoked-refresh-token"),
        ],
    );
    let env = [("CLARITY_AGE_IDENTITY", identity.as_str())];
    let s3_repo = |secret: &str| {
        format!(
            "name: store\ntype: s3\nbucket: artifacts\nregion: us-east-1\nendpoint: {}\n\
             path_style: true\nprefix: releases\naccess_key_id:\n  secret: s3_key_id\n\
             secret_access_key:\n  secret: {secret}\n",
            moto.url()
        )
    };
    f.write("repositories/store.yml", &s3_repo("s3_secret"));
    artifact(&f, "store", "1.0.0", "web-1.0.0.py", v1.as_bytes());
    f.set_deployment("1.0.0", "hello", "");
    f.commit("web 1.0.0 from s3");

    let validate = f.run(&["validate"], &env);
    assert_eq!(validate.status.code(), Some(0), "{}", out(&validate));
    let plan = f.run(&["--dry-run"], &env);
    let shown = out(&plan);
    assert!(
        shown.contains("s3://artifacts/releases/web-1.0.0.py"),
        "{shown}"
    );
    assert!(!shown.contains(&moto.secret_access_key), "{shown}");
    let o = f.run(&[], &env);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(f.get("/").map(|r| r.1), Some("s3:hello\n".into()));
    let release_1 = f.current().unwrap();
    assert_eq!(cache_files(&f), vec![sha256(v1.as_bytes())]);
    // The run record keeps the download's repository kind and retries (what the per-kind
    // metrics count) and the bytes it transferred.
    assert_eq!(
        newest_fetch(&f),
        (Some("s3".to_string()), Some(0), Some(v1.len() as u64))
    );

    // A wrong secret key: the apply fails naming bucket and key, the host keeps 1.0.0.
    f.write("repositories/store.yml", &s3_repo("s3_wrong_secret"));
    artifact(&f, "store", "2.0.0", "web-2.0.0.py", v2.as_bytes());
    f.set_deployment("2.0.0", "hello", "");
    f.commit("web 2.0.0 with a wrong key");
    let o = f.run(&[], &env);
    let shown = out(&o);
    assert_ne!(o.status.code(), Some(0), "{shown}");
    assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
    assert!(
        shown.contains("bucket `artifacts`, key `releases/web-2.0.0.py`"),
        "{shown}"
    );
    assert!(!shown.contains(S3_CANARY) && !shown.contains(&moto.secret_access_key));
    assert_eq!(f.current().as_deref(), Some(release_1.as_str()));
    assert_eq!(f.get("/").map(|r| r.1), Some("s3:hello\n".into()));
    assert_eq!(cache_files(&f), vec![sha256(v1.as_bytes())]);

    // Google Drive (the stand-in): version 3.0.0 in a version folder, OAuth refresh token.
    let v3 = SERVICE.replace("greeting + ", "\"drive:\" + greeting + ");
    let p3 = keydir.path().join("v3.py");
    std::fs::write(&p3, &v3).unwrap();
    let items = [
        DriveItem {
            id: "FOLDER300".into(),
            name: "3.0.0".into(),
            parent: "releases-folder".into(),
            content: None,
        },
        DriveItem {
            id: "FILE300".into(),
            name: "web-3.0.0.py".into(),
            parent: "FOLDER300".into(),
            content: Some(p3.clone()),
        },
    ];
    let client = serde_json::json!({
        "client_id": "client-7.apps.example",
        "client_secret": CLIENT_SECRET,
        "refresh_tokens": [REFRESH_TOKEN],
    });
    let Some(drive) = DriveStandin::start(&items, serde_json::json!({"client": client})) else {
        return;
    };
    let drive_repo = |refresh: &str| {
        format!(
            "name: drive\ntype: google-drive\nfolder_id: releases-folder\ntoken_url: {}\napi_url: {}\n\
             auth:\n  type: oauth\n  client_id:\n    secret: drive_client_id\n  client_secret:\n    \
             secret: drive_client_secret\n  refresh_token:\n    secret: {refresh}\n",
            drive.token_url(),
            drive.api_url()
        )
    };
    f.write("repositories/store.yml", &s3_repo("s3_secret"));
    f.write("repositories/drive.yml", &drive_repo("drive_revoked"));
    artifact(&f, "drive", "3.0.0", "3.0.0/web-3.0.0.py", v3.as_bytes());
    f.set_deployment("3.0.0", "hello", "");
    f.commit("web 3.0.0 from drive, revoked token");
    let o = f.run(&[], &env);
    let shown = out(&o);
    assert_ne!(o.status.code(), Some(0), "{shown}");
    assert!(shown.contains("invalid_grant"), "{shown}");
    assert!(
        shown.contains("google-drive:releases-folder/3.0.0/web-3.0.0.py"),
        "{shown}"
    );
    assert!(!shown.contains(CLIENT_SECRET) && !shown.contains("revoked-refresh-token"));
    assert_eq!(f.current().as_deref(), Some(release_1.as_str()));
    assert_eq!(cache_files(&f), vec![sha256(v1.as_bytes())]);

    f.write("repositories/drive.yml", &drive_repo("drive_refresh"));
    f.commit("drive token renewed");
    let o = f.run(&[], &env);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(f.get("/").map(|r| r.1), Some("drive:hello\n".into()));
    assert_eq!(
        newest_fetch(&f),
        (
            Some("google-drive".to_string()),
            Some(0),
            Some(v3.len() as u64)
        )
    );
    assert_ne!(f.current().as_deref(), Some(release_1.as_str()));
    let mut expected = vec![sha256(v1.as_bytes()), sha256(v3.as_bytes())];
    expected.sort();
    assert_eq!(cache_files(&f), expected);
}
