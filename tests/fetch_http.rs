//! Fetching over HTTP from real servers: python's http.server without authentication, nginx
//! with basic and bearer authentication, redirects (credentials kept on the same host, never
//! sent to another) and an HTML login page; a canary password that must never show; and the
//! `agent fetch` / `agent hash` commands.

mod fetch_servers;
mod support;

use clarity::fetch::{
    Artifact, Cache, FetchError, Fetched, HttpAuth, Progress, Retry, Source, fetch,
};
use clarity::secret::SecretString;
use fetch_servers::{Fault, Flaky, Nginx, artifact_bytes, put, python_http, sha256_hex};
use std::time::Duration;

const USER: &str = "deployer";
const PASSWORD: &str = "s3cret-basic-pw";
const TOKEN: &str = "tok-9f8e7d";

fn quick() -> Retry {
    Retry {
        attempts: 2,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    }
}

fn http(base_url: String, auth: HttpAuth) -> Source {
    Source::Http { base_url, auth }
}

fn basic(password: &str) -> HttpAuth {
    HttpAuth::Basic {
        username: USER.into(),
        password: SecretString::new(password.into()),
    }
}

/// An empty cache in a temporary directory (kept alive by the first value).
fn new_cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    (dir, cache)
}

fn get(
    source: &Source,
    location: &str,
    sha256: &str,
    cache: &Cache,
) -> Result<Fetched, FetchError> {
    let artifact = Artifact {
        repository: "releases",
        location,
        sha256,
        size: None,
        max_size: None,
    };
    fetch(source, &artifact, cache, &quick(), &mut |_| {})
}

#[test]
fn python_http_server_without_auth() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(3 << 20, 1);
    let sha = put(root.path(), "app/app 1.0.jar", &bytes);
    let Some(server) = python_http(root.path()) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let source = http(format!("http://127.0.0.1:{}/", server.port), HttpAuth::None);
    let artifact = Artifact {
        repository: "releases",
        location: "app/app 1.0.jar",
        sha256: &sha.to_uppercase(),
        size: Some(bytes.len() as u64),
        max_size: None,
    };
    let mut seen: Vec<Progress> = Vec::new();
    let f = fetch(&source, &artifact, &cache, &Retry::default(), &mut |p| {
        seen.push(p)
    })
    .unwrap();
    assert_eq!(f.path, cache_dir.path().join(&sha));
    assert_eq!(std::fs::read(&f.path).unwrap(), bytes);
    assert_eq!(
        (f.downloaded_bytes, f.from_cache, f.attempts),
        (bytes.len() as u64, false, 1)
    );
    let last = seen.last().unwrap();
    assert_eq!(last.downloaded, bytes.len() as u64);
    assert_eq!(last.total, Some(bytes.len() as u64));
    assert!(seen.windows(2).all(|w| w[0].downloaded < w[1].downloaded));
    // Only the artifact is left in the cache: no temporary files.
    let names: Vec<_> = std::fs::read_dir(cache_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(&sha)]);

    let again = fetch(&source, &artifact, &cache, &Retry::default(), &mut |_| {
        panic!("downloaded again")
    })
    .unwrap();
    assert_eq!(
        (again.from_cache, again.downloaded_bytes, again.attempts),
        (true, 0, 0)
    );
}

#[test]
fn basic_auth() {
    let Some(nginx) = Nginx::start(USER, PASSWORD, TOKEN, 9) else {
        return;
    };
    let bytes = artifact_bytes(1 << 20, 2);
    let sha = put(&nginx.www, "basic/app.jar", &bytes);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());

    let f = get(
        &http(format!("{}/basic", nginx.url()), basic(PASSWORD)),
        "app.jar",
        &sha,
        &cache,
    )
    .unwrap();
    assert_eq!(std::fs::read(f.path).unwrap(), bytes);

    let (_other_dir, other) = new_cache();
    let e = get(
        &http(format!("{}/basic", nginx.url()), basic("wrong")),
        "app.jar",
        &sha,
        &other,
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::Auth { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("refused the repository's credentials"),
        "{e}"
    );
    let e = get(
        &http(format!("{}/basic", nginx.url()), HttpAuth::None),
        "app.jar",
        &sha,
        &other,
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::Auth { .. }), "{e}");
    assert!(e.to_string().contains("has none"), "{e}");
}

#[test]
fn bearer_token() {
    let Some(nginx) = Nginx::start(USER, PASSWORD, TOKEN, 9) else {
        return;
    };
    let bytes = artifact_bytes(100_000, 3);
    let sha = put(&nginx.www, "bearer/tool.bin", &bytes);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let bearer = |t: &str| HttpAuth::Bearer {
        token: SecretString::new(t.into()),
    };
    let base = format!("{}/bearer/", nginx.url());
    let e = get(
        &http(base.clone(), bearer("nope")),
        "tool.bin",
        &sha,
        &cache,
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::Auth { .. }), "{e}");
    assert!(!e.to_string().contains("nope"), "{e}");
    let f = get(&http(base, bearer(TOKEN)), "tool.bin", &sha, &cache).unwrap();
    assert_eq!(std::fs::read(f.path).unwrap(), bytes);
}

#[test]
fn redirects_keep_credentials_on_the_same_host_only() {
    let away_root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(200_000, 4);
    let sha = put(away_root.path(), "lib.jar", &bytes);
    // The host a redirect points at logs whether it received an Authorization header.
    let Some(away) = Flaky::start(away_root.path(), Fault::Unavailable, 0) else {
        return;
    };
    let Some(nginx) = Nginx::start(USER, PASSWORD, TOKEN, away.daemon.port) else {
        return;
    };
    put(&nginx.www, "basic/lib.jar", &bytes);

    // Same host: /moved/ sends us to /basic/, which needs the credentials.
    let (_dir, cache) = new_cache();
    let f = get(
        &http(format!("{}/moved", nginx.url()), basic(PASSWORD)),
        "lib.jar",
        &sha,
        &cache,
    )
    .unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), bytes);

    // Another host (another port is another origin): the download works, without credentials.
    let (_dir, cache) = new_cache();
    let f = get(
        &http(format!("{}/away", nginx.url()), basic(PASSWORD)),
        "lib.jar",
        &sha,
        &cache,
    )
    .unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), bytes);
    assert_eq!(
        away.requests(),
        vec!["1 /lib.jar auth=no accept-encoding=identity".to_string()]
    );

    // A redirect to a missing file names both URLs.
    let (_dir, cache) = new_cache();
    let e = get(
        &http(format!("{}/away", nginx.url()), basic(PASSWORD)),
        "missing.jar",
        &sha,
        &cache,
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.contains(&format!(
            "{}/away/missing.jar (redirected to {}/missing.jar)",
            nginx.url(),
            away.url()
        )),
        "{m}"
    );
}

#[test]
fn html_page_instead_of_the_artifact_is_refused() {
    let Some(nginx) = Nginx::start(USER, PASSWORD, TOKEN, 9) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let sha = "0".repeat(64);
    let e = get(
        &http(format!("{}/login", nginx.url()), HttpAuth::None),
        "app.war",
        &sha,
        &cache,
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::HtmlPage { .. }), "{e}");
    assert!(
        e.to_string().contains(
            "server returned an HTML page instead of the artifact: a login or error page?"
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("{}/login/app.war", nginx.url())),
        "{e}"
    );
    // An artifact that is an HTML file is fine.
    let page = b"<html><body>docs</body></html>";
    let sha = put(&nginx.www, "public/index.html", page);
    let f = get(
        &http(format!("{}/public", nginx.url()), HttpAuth::None),
        "index.html",
        &sha,
        &cache,
    )
    .unwrap();
    assert_eq!(std::fs::read(f.path).unwrap(), page);
    // 404 is "not found", at once.
    let e = get(
        &http(format!("{}/public", nginx.url()), HttpAuth::None),
        "nope.jar",
        &"1".repeat(64),
        &cache,
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
}

#[test]
fn canary_password_never_shows() {
    const CANARY: &str = "CANARY-fetch-5d1e";
    let Some(nginx) = Nginx::start(USER, PASSWORD, TOKEN, 9) else {
        return;
    };
    let bytes = artifact_bytes(10_000, 5);
    let sha = put(&nginx.www, "basic/a.jar", &bytes);
    put(&nginx.www, "public/a.jar", &bytes);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let canary = http(format!("{}/basic", nginx.url()), basic(CANARY));
    let debug = format!("{canary:?} {canary:#?}");
    assert!(!debug.contains(CANARY), "{debug}");
    assert!(debug.contains("(sensitive)"), "{debug}");

    let closed = support::free_port();
    let wrong_sha = "ab".repeat(32);
    let mut errors = vec![
        // Refused credentials.
        get(&canary, "a.jar", &sha, &cache).unwrap_err(),
        // Not found.
        get(&canary, "missing.jar", &sha, &cache).unwrap_err(),
        // Checksum mismatch, with credentials on the request.
        get(
            &http(format!("{}/public", nginx.url()), basic(CANARY)),
            "a.jar",
            &wrong_sha,
            &cache,
        )
        .unwrap_err(),
        // HTML.
        get(
            &http(format!("{}/login", nginx.url()), basic(CANARY)),
            "a.jar",
            &sha,
            &cache,
        )
        .unwrap_err(),
        // Connection refused, retried, given up.
        get(
            &http(format!("http://127.0.0.1:{closed}/"), basic(CANARY)),
            "a.jar",
            &sha,
            &cache,
        )
        .unwrap_err(),
        // Bearer token.
        get(
            &http(
                format!("{}/bearer", nginx.url()),
                HttpAuth::Bearer {
                    token: SecretString::new(CANARY.into()),
                },
            ),
            "a.jar",
            &sha,
            &cache,
        )
        .unwrap_err(),
    ];
    // Credentials written into the URL are refused, and not repeated.
    let in_url = http(
        format!(
            "http://{USER}:{CANARY}@127.0.0.1:{}/basic",
            nginx.daemon.port
        ),
        HttpAuth::None,
    );
    assert!(!format!("{in_url:?}").contains(CANARY));
    errors.push(get(&in_url, "a.jar", &sha, &cache).unwrap_err());
    for e in &errors {
        let shown = format!("{e} | {e:?}");
        assert!(!shown.contains(CANARY), "{shown}");
        assert!(
            shown.contains("releases"),
            "the repository is named: {shown}"
        );
    }
    assert!(
        matches!(errors[0], FetchError::Auth { .. }),
        "{}",
        errors[0]
    );
    assert!(
        matches!(errors[4], FetchError::GaveUp { attempts: 2, .. }),
        "{}",
        errors[4]
    );
    assert!(
        errors[4]
            .to_string()
            .contains(&format!("127.0.0.1:{closed}")),
        "{}",
        errors[4]
    );
    assert!(
        errors[6].to_string().contains("carries credentials"),
        "{}",
        errors[6]
    );
    assert_eq!(std::fs::read_dir(cache_dir.path()).unwrap().count(), 0);
}

#[test]
fn agent_fetch_and_hash_commands() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(500_000, 6);
    let sha = put(root.path(), "dist/agent.tgz", &bytes);
    let Some(server) = python_http(root.path()) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/dist/agent.tgz", server.port);
    let run = |args: &[&str]| {
        std::process::Command::new(support::clarity_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let cache_arg = cache.path().to_str().unwrap();
    let size = bytes.len().to_string();
    let out = run(&[
        "agent", "fetch", "--url", &url, "--sha256", &sha, "--size", &size, "--cache", cache_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        printed.trim(),
        cache.path().join(&sha).display().to_string()
    );

    let out = run(&["agent", "hash", printed.trim()]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), sha);

    let wrong = sha256_hex(b"something else");
    let out = run(&[
        "agent", "fetch", "--url", &url, "--sha256", &wrong, "--cache", cache_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sha256 mismatch") && stderr.contains(&wrong) && stderr.contains(&sha),
        "{stderr}"
    );
    assert!(!cache.path().join(&wrong).exists());
}
