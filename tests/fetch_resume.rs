//! Downloads that are interrupted, encoded or endless, against real HTTP servers (the
//! fault-injecting python server and python's http.server): a `clarity-reconcile agent fetch`
//! killed halfway leaves its partial file, and the next download transfers only the rest and
//! verifies; a server that ignores Range makes it start over cleanly; a gzip-encoded body is
//! hashed as received and never inflated (a small transfer never becomes a huge file); a
//! download without a declared size stops at the repository's cap; `header` auth sends the
//! named header.

mod fetch_servers;
mod support;

use clarity::digest::sha256_file;
use clarity::fetch::{Cache, FetchError, Fetched, HttpAuth, Retry, Source};
use clarity::secret::SecretString;
use fetch_servers::{
    Fault, Flaky, artifact_bytes, fetch_into, http_source, put, python_http, sha256_hex,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn get(
    source: &Source,
    location: &str,
    sha256: &str,
    size: Option<u64>,
    max_size: Option<u64>,
    cache: &Cache,
) -> Result<Fetched, FetchError> {
    fetch_into(
        source,
        location,
        sha256,
        size,
        max_size,
        cache,
        &Retry::none(),
    )
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
fn an_http_download_killed_halfway_resumes_with_only_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(4 << 20, 21);
    let sha = put(root.path(), "app-3.0.jar", &bytes);
    let size = bytes.len() as u64;
    let Some(server) = Flaky::start(root.path(), Fault::Slow, 0) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let partial = cache_dir.path().join(format!(".partial-{sha}"));
    let mut child = std::process::Command::new(support::clarity_bin())
        .args(["agent", "fetch", "--url"])
        .arg(format!("{}/app-3.0.jar", server.url()))
        .args(["--sha256", &sha, "--size", &size.to_string(), "--cache"])
        .arg(cache_dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < size / 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the download did not get halfway"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the download ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept >= size / 2 && kept < size, "{kept} of {size}");
    assert_eq!(std::fs::read(&partial).unwrap(), &bytes[..kept as usize]);
    assert_eq!(files(cache_dir.path()), vec![format!(".partial-{sha}")]);

    // The next attempt asks for the rest, transfers only that, and the artifact verifies.
    let cache = Cache::new(cache_dir.path());
    let f = get(
        &http_source(server.url()),
        "app-3.0.jar",
        &sha,
        Some(size),
        None,
        &cache,
    )
    .unwrap();
    assert_eq!(f.resumed_from, kept);
    assert_eq!(f.downloaded_bytes, size - kept);
    assert_eq!(sha256_file(&f.path).unwrap(), (sha.clone(), size));
    assert_eq!(files(cache_dir.path()), vec![sha.clone()]);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(!requests[0].contains("range="), "{requests:?}");
    assert!(
        requests[1].ends_with(&format!("range=bytes={kept}- accept-encoding=identity")),
        "{requests:?}"
    );
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(1 << 20, 22);
    let sha = put(root.path(), "tool.bin", &bytes);
    // python's http.server answers every GET with the whole file.
    let Some(server) = python_http(root.path()) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        cache_dir.path().join(format!(".partial-{sha}")),
        &bytes[..1000],
    )
    .unwrap();
    let f = get(
        &http_source(format!("http://127.0.0.1:{}", server.port)),
        "tool.bin",
        &sha,
        Some(bytes.len() as u64),
        None,
        &Cache::new(cache_dir.path()),
    )
    .unwrap();
    assert_eq!(
        (f.resumed_from, f.downloaded_bytes),
        (0, bytes.len() as u64)
    );
    assert_eq!(std::fs::read(&f.path).unwrap(), bytes);
    assert_eq!(files(cache_dir.path()), vec![sha]);
}

#[test]
fn a_gzip_encoded_body_is_hashed_as_received_never_inflated() {
    let root = tempfile::tempdir().unwrap();
    // 32 MiB of zeros travel as about 32 KiB of gzip.
    let inflated = vec![0u8; 32 << 20];
    let inflated_sha = put(root.path(), "bomb.bin", &inflated);
    let Some(server) = Flaky::start(root.path(), Fault::Gzip, 0) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let e = get(
        &http_source(server.url()),
        "bomb.bin",
        &inflated_sha,
        None,
        None,
        &cache,
    )
    .unwrap_err();
    match &e {
        FetchError::Checksum { actual_size, .. } => {
            assert!(*actual_size < 1 << 20, "{e}");
        }
        other => panic!("{other}"),
    }
    assert!(files(cache_dir.path()).is_empty());
    assert!(server.requests()[0].ends_with("accept-encoding=identity"));

    // What was on the wire is what is hashed and kept.
    let served = server_body(&server, "bomb.bin");
    let f = get(
        &http_source(server.url()),
        "bomb.bin",
        &sha256_hex(&served),
        None,
        None,
        &cache,
    )
    .unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), served);
    assert!(served.len() < 1 << 20, "{}", served.len());
}

/// The raw body the server sends for `location`, read without any decoding.
fn server_body(server: &Flaky, location: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let port: u16 = server.url().rsplit(':').next().unwrap().parse().unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /{location} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    all[split..].to_vec()
}

#[test]
fn a_download_without_a_declared_size_stops_at_the_cap() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "stream", b"x");
    let Some(server) = Flaky::start(root.path(), Fault::Endless, 0) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let e = get(
        &http_source(server.url()),
        "stream",
        &sha256_hex(b"anything"),
        None,
        Some(3 << 20),
        &Cache::new(cache_dir.path()),
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, FetchError::OverCap { cap: 3145728, .. }), "{m}");
    assert!(m.contains("max_download_size"), "{m}");
    assert!(files(cache_dir.path()).is_empty());
}

#[test]
fn header_auth_sends_the_named_header_with_the_secret() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(10_000, 23);
    let sha = put(root.path(), "lib.jar", &bytes);
    let Some(server) = Flaky::start(root.path(), Fault::Unavailable, 0) else {
        return;
    };
    let source = Source::Http {
        base_url: server.url(),
        auth: HttpAuth::Header {
            name: "X-Api-Key".into(),
            value: SecretString::new("api-key-CANARY-31".into()),
        },
    };
    assert!(!format!("{source:?}").contains("CANARY"));
    let cache_dir = tempfile::tempdir().unwrap();
    get(
        &source,
        "lib.jar",
        &sha,
        None,
        None,
        &Cache::new(cache_dir.path()),
    )
    .unwrap();
    assert_eq!(
        server.requests(),
        vec!["1 /lib.jar auth=no x-api-key=api-key-CANARY-31 accept-encoding=identity".to_string()]
    );
}
