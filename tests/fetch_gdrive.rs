//! Fetching from `google-drive` repositories. No Google service can be reached from a test
//! machine, so these tests run against a STAND-IN (tests/fetch_servers/drive_standin.py, python
//! stdlib) that follows the documented Drive v3 and OAuth2 token endpoint behaviour and is
//! stricter than Google where that catches client mistakes (it verifies the service account
//! JWT's RS256 signature, accepts only the `q` forms and parameters Drive documents). Cases:
//! OAuth refresh tokens and a service account; names in version subfolders and file ids;
//! tokens renewed before expiry and once on a 401 for a stale one; `invalid_grant`; 403/429
//! rate limits with backoff; duplicate names found across `files.list` pages; Range answers
//! 206 (resume) and 416 (start over), and a server ignoring Range.

mod fetch_servers;
mod support;

use clarity::fetch::{Artifact, Cache, DriveAuth, FetchError, Fetched, Retry, Source, fetch};
use clarity::secret::SecretString;
use fetch_servers::{DriveItem, DriveStandin, artifact_bytes, service_account_key, sha256_hex};
use serde_json::json;
use std::path::Path;

const CLIENT_ID: &str = "client-1.apps.example";
const CLIENT_SECRET: &str = "client-secret-CANARY-77";
const REFRESH_TOKEN: &str = "refresh-token-CANARY-42";

struct Layout {
    _dir: tempfile::TempDir,
    items: Vec<DriveItem>,
    bytes: Vec<u8>,
    sha: String,
}

/// Folder `root` holds version folders `0.9`, `1.0` (with `app.jar`) and a decoy file named
/// `1.0`; `1.0` also holds three files named `dup.jar`.
fn layout() -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(700_000, 16);
    let sha = sha256_hex(&bytes);
    let content = dir.path().join("app.jar");
    std::fs::write(&content, &bytes).unwrap();
    let decoy = dir.path().join("decoy");
    std::fs::write(&decoy, b"not the artifact").unwrap();
    let item = |id: &str, name: &str, parent: &str, content: Option<&Path>| DriveItem {
        id: id.into(),
        name: name.into(),
        parent: parent.into(),
        content: content.map(Path::to_path_buf),
    };
    let items = vec![
        item("F09", "0.9", "root", None),
        item("F10", "1.0", "root", None),
        item("X10", "1.0", "root", Some(&decoy)),
        item("APP10", "app.jar", "F10", Some(&content)),
        item("OLD09", "app.jar", "F09", Some(&decoy)),
        item("DUP1", "dup.jar", "F10", Some(&decoy)),
        item("DUP2", "dup.jar", "F10", Some(&decoy)),
        item("DUP3", "dup.jar", "F10", Some(&decoy)),
    ];
    Layout {
        _dir: dir,
        items,
        bytes,
        sha,
    }
}

fn client() -> serde_json::Value {
    json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_tokens": [REFRESH_TOKEN]})
}

fn oauth(server: &DriveStandin, refresh_token: &str) -> Source {
    Source::GoogleDrive {
        api_url: server.api_url(),
        token_url: server.token_url(),
        folder_id: Some("root".into()),
        auth: DriveAuth::OAuth {
            client_id: SecretString::new(CLIENT_ID.into()),
            client_secret: SecretString::new(CLIENT_SECRET.into()),
            refresh_token: SecretString::new(refresh_token.into()),
        },
    }
}

fn get(source: &Source, location: &str, l: &Layout, cache: &Cache) -> Result<Fetched, FetchError> {
    let artifact = Artifact {
        repository: "drive",
        location,
        sha256: &l.sha,
        size: Some(l.bytes.len() as u64),
        max_size: None,
    };
    fetch(source, &artifact, cache, &Retry::none(), &mut |_| {})
}

fn statuses(server: &DriveStandin) -> Vec<(String, u64)> {
    server
        .requests()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn oauth_names_in_version_folders_tokens_renewed_and_refused() {
    let l = layout();
    // Tokens that live 20 s, under the client's 30 s margin: every call needs a new one.
    let Some(server) = DriveStandin::start(
        &l.items,
        json!({"client": client(), "expires_in": 20, "page_size": 2}),
    ) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let f = get(&oauth(&server, REFRESH_TOKEN), "1.0/app.jar", &l, &cache).unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), l.bytes);
    assert_eq!(f.downloaded_bytes, l.bytes.len() as u64);
    let log = server.requests();
    let api: Vec<_> = log.iter().filter(|r| r["method"] == "GET").collect();
    // The folder `1.0` (not the file of that name), then the file in it, then its content.
    assert_eq!(api.len(), 3, "{log:?}");
    assert!(
        api[0]["query"]["q"]
            .as_str()
            .unwrap()
            .contains("'root' in parents and name = '1.0'")
    );
    assert!(
        api[1]["query"]["q"]
            .as_str()
            .unwrap()
            .starts_with("'F10' in parents")
    );
    assert_eq!(api[2]["path"], "/drive/v3/files/APP10");
    assert_eq!(api[2]["query"]["alt"], "media");
    // A token about to expire is renewed before each call, never sent stale.
    let tokens: Vec<_> = api.iter().map(|r| r["token"].as_str().unwrap()).collect();
    assert_eq!(
        tokens,
        ["standin-token-1", "standin-token-2", "standin-token-3"]
    );
    assert!(api.iter().all(|r| r["status"] == 200), "{log:?}");

    // Duplicate names: all three, found across two pages, and no guess.
    let empty = tempfile::tempdir().unwrap();
    let cache = Cache::new(empty.path());
    let e = get(&oauth(&server, REFRESH_TOKEN), "1.0/dup.jar", &l, &cache).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("3 files named `dup.jar`"), "{m}");
    assert!(m.contains("DUP1, DUP2, DUP3"), "{m}");
    assert!(m.contains("`id:<file id>`"), "{m}");

    // A missing name is not found.
    let e = get(&oauth(&server, REFRESH_TOKEN), "2.0/app.jar", &l, &cache).unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "repository `drive`: google-drive:root/2.0/app.jar not found"
    );

    // A revoked refresh token: invalid_grant, said plainly, no secret shown, nothing cached,
    // and the API never called.
    let before = server.requests().len();
    let empty = tempfile::tempdir().unwrap();
    let revoked = "revoked-refresh-CANARY-9";
    let e = get(
        &oauth(&server, revoked),
        "1.0/app.jar",
        &l,
        &Cache::new(empty.path()),
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, FetchError::Auth { .. }), "{m}");
    assert!(
        m.contains("invalid_grant") && m.contains("authorize again"),
        "{m}"
    );
    for secret in [revoked, CLIENT_SECRET, REFRESH_TOKEN] {
        assert!(
            !m.contains(secret) && !format!("{e:?}").contains(secret),
            "{m}"
        );
    }
    let after = server.requests();
    assert_eq!(after.len(), before + 1);
    assert_eq!(after[before]["status"], 400);
    assert!(files(empty.path()).is_empty());
}

#[test]
fn stale_tokens_rate_limits_and_ranges() {
    let l = layout();
    // The first three API calls are rate limited (403, 429, 403).
    let Some(server) =
        DriveStandin::start(&l.items, json!({"client": client(), "rate_limit_first": 3}))
    else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    // An interrupted download left the first 300000 bytes.
    let partial = cache_dir.path().join(format!(".partial-{}", l.sha));
    std::fs::write(&partial, &l.bytes[..300_000]).unwrap();
    let f = get(&oauth(&server, REFRESH_TOKEN), "id:APP10", &l, &cache).unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), l.bytes);
    assert_eq!((f.resumed_from, f.downloaded_bytes), (300_000, 400_000));
    let got: Vec<(String, u64)> = statuses(&server);
    let media = "/drive/v3/files/APP10".to_string();
    let token = "/token".to_string();
    assert_eq!(
        got,
        vec![
            (token.clone(), 200),
            (media.clone(), 403),
            (media.clone(), 429),
            (media.clone(), 403),
            (media.clone(), 206),
        ],
        "{:?}",
        server.requests()
    );
    assert_eq!(server.requests().last().unwrap()["range"], "bytes=300000-");
    drop(server);

    // Tokens that go stale after one use, well before their announced expiry: each 401 is
    // answered with one new token and the same call again.

    let Some(server) =
        DriveStandin::start(&l.items, json!({"client": client(), "stale_after_uses": 1}))
    else {
        return;
    };
    let other = tempfile::tempdir().unwrap();
    let f = get(
        &oauth(&server, REFRESH_TOKEN),
        "1.0/app.jar",
        &l,
        &Cache::new(other.path()),
    )
    .unwrap();
    assert_eq!(f.downloaded_bytes, l.bytes.len() as u64);
    let got = statuses(&server);
    let list = "/drive/v3/files".to_string();
    assert_eq!(
        got,
        vec![
            (token.clone(), 200),
            (list.clone(), 200),
            (list.clone(), 401),
            (token.clone(), 200),
            (list.clone(), 200),
            (media.clone(), 401),
            (token.clone(), 200),
            (media.clone(), 200),
        ],
        "{:?}",
        server.requests()
    );

    // A partial file as long as the artifact but not its content: 416, then from the start.
    let third = tempfile::tempdir().unwrap();
    std::fs::write(
        third.path().join(format!(".partial-{}", l.sha)),
        vec![0u8; l.bytes.len()],
    )
    .unwrap();
    let before = server.requests().len();
    let f = get(
        &oauth(&server, REFRESH_TOKEN),
        "id:APP10",
        &l,
        &Cache::new(third.path()),
    )
    .unwrap();
    assert_eq!(
        (f.resumed_from, f.downloaded_bytes),
        (0, l.bytes.len() as u64)
    );
    let media_statuses: Vec<u64> = statuses(&server)[before..]
        .iter()
        .filter(|(p, s)| *p == media && *s != 401)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(media_statuses, [416, 200]);
    assert_eq!(files(third.path()), vec![l.sha.clone()]);
}

#[test]
fn service_account_and_a_server_that_ignores_range() {
    let l = layout();
    let dir = tempfile::tempdir().unwrap();
    let email = "deployer@project.iam.example";
    let Some((key_json, modulus)) = service_account_key(dir.path(), email, "unused") else {
        return;
    };
    let Some(server) = DriveStandin::start(
        &l.items,
        json!({"service_account": {"email": email, "n": modulus, "e": 65537}, "ignore_range": true}),
    ) else {
        return;
    };
    let source = Source::GoogleDrive {
        api_url: server.api_url(),
        token_url: server.token_url(),
        folder_id: Some("root".into()),
        auth: DriveAuth::ServiceAccount {
            key_json: SecretString::new(key_json.clone()),
        },
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    std::fs::write(
        cache_dir.path().join(format!(".partial-{}", l.sha)),
        &l.bytes[..1000],
    )
    .unwrap();
    let f = get(&source, "1.0/app.jar", &l, &cache).unwrap();
    // The stand-in verified the RS256 assertion; it ignored Range, so the download restarted.
    assert_eq!(
        (f.resumed_from, f.downloaded_bytes),
        (0, l.bytes.len() as u64)
    );
    assert_eq!(std::fs::read(&f.path).unwrap(), l.bytes);
    assert_eq!(files(cache_dir.path()), vec![l.sha.clone()]);
    let log = server.requests();
    assert_eq!(
        log[0]["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log.last().unwrap()["range"], "bytes=1000-");

    // Another key (not the service account's): the stand-in refuses the signature.
    let Some((other_key, _)) = service_account_key(dir.path(), email, "unused") else {
        return;
    };
    let source = Source::GoogleDrive {
        api_url: server.api_url(),
        token_url: server.token_url(),
        folder_id: Some("root".into()),
        auth: DriveAuth::ServiceAccount {
            key_json: SecretString::new(other_key.clone()),
        },
    };
    let empty = tempfile::tempdir().unwrap();
    let e = get(&source, "1.0/app.jar", &l, &Cache::new(empty.path())).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("invalid_grant") && m.contains("service account"),
        "{m}"
    );
    assert!(!m.contains("PRIVATE KEY") && !format!("{e:?}").contains("PRIVATE KEY"));
}
