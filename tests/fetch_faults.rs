//! What the fetcher does when things go wrong, against real servers: a wrong checksum or size
//! never reaches the cache; 503s, dropped connections and truncated transfers are retried and
//! then succeed, or are given up after the configured attempts; not-found is never retried; a
//! cached artifact is served with the server gone; concurrent fetches of one artifact agree;
//! `prune` evicts the least recently used entries; locations that leave the base are refused.

mod fetch_servers;
mod support;

use clarity::fetch::{Cache, FetchError, Fetched, Received, Retry, Source};
use fetch_servers::{
    Fault, Flaky, artifact_bytes, fetch_into, http_source, put, python_http, sha256_hex,
};
use std::path::Path;
use std::time::{Duration, SystemTime};

fn fast(attempts: u32) -> Retry {
    Retry {
        attempts,
        initial: Duration::from_millis(20),
        max: Duration::from_millis(50),
    }
}

fn get(
    source: &Source,
    location: &str,
    sha256: &str,
    size: Option<u64>,
    cache: &Cache,
    retry: &Retry,
) -> Result<Fetched, FetchError> {
    fetch_into(source, location, sha256, size, None, cache, retry)
}

/// Every file in `dir`, sorted, with its content.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn wrong_checksum_is_reported_and_the_cache_is_untouched() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(300_000, 10);
    let actual = put(root.path(), "app.jar", &bytes);
    let Some(server) = Flaky::start(root.path(), Fault::Unavailable, 0) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    // An entry that was there before must stay exactly as it was.
    let old = b"an older artifact";
    std::fs::write(cache_dir.path().join(sha256_hex(old)), old).unwrap();
    let before = snapshot(cache_dir.path());

    let expected = sha256_hex(b"what the config repository says");
    let e = get(
        &http_source(server.url()),
        "app.jar",
        &expected,
        None,
        &cache,
        &fast(4),
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, FetchError::Checksum { .. }), "{m}");
    assert!(m.contains(&expected) && m.contains(&actual), "{m}");
    assert!(m.contains(&format!("({} bytes)", bytes.len())), "{m}");
    assert!(m.contains("size not declared"), "{m}");
    assert!(
        m.contains(&format!("repository `mirror`: {}/app.jar", server.url())),
        "{m}"
    );
    assert!(!cache_dir.path().join(&expected).exists());
    assert!(!cache_dir.path().join(&actual).exists());
    assert_eq!(snapshot(cache_dir.path()), before);
    // One retry (a truncated transfer looks like this), then the mismatch is believed.
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
}

#[test]
fn size_mismatch_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(50_000, 11);
    let sha = put(root.path(), "tool.bin", &bytes);
    let Some(server) = Flaky::start(root.path(), Fault::TruncateUnannounced, 100) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());

    // The server announces its length: no point downloading what cannot be the artifact.
    let Some(plain) = python_http(root.path()) else {
        return;
    };
    let source = http_source(format!("http://127.0.0.1:{}", plain.port));
    let e = get(&source, "tool.bin", &sha, Some(40_000), &cache, &fast(4)).unwrap_err();
    let m = e.to_string();
    assert!(
        matches!(
            e,
            FetchError::Size {
                received: Received::Announced(50_000),
                ..
            }
        ),
        "{m}"
    );
    assert!(
        m.contains("expected 40000 bytes") && m.contains(&sha),
        "{m}"
    );

    // Without a length, the whole (truncated) transfer is hashed, and both sizes and hashes
    // are reported after the one retry.
    let e = get(
        &http_source(server.url()),
        "tool.bin",
        &sha,
        Some(50_000),
        &cache,
        &fast(4),
    )
    .unwrap_err();
    let m = e.to_string();
    let half = &bytes[..25_000];
    assert!(
        matches!(
            &e,
            FetchError::Size {
                received: Received::Complete { size: 25_000, .. },
                ..
            }
        ),
        "{m}"
    );
    assert!(m.contains(&sha) && m.contains(&sha256_hex(half)), "{m}");
    assert!(
        m.contains("expected 50000 bytes") && m.contains("got 25000 bytes"),
        "{m}"
    );
    assert_eq!(server.requests().len(), 2);

    // More than the declared size, unannounced: the transfer is stopped there, not retried.
    let e = get(
        &http_source(server.url()),
        "tool.bin",
        &sha,
        Some(10_000),
        &cache,
        &fast(4),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Size {
                received: Received::MoreThanDeclared,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("sent more"), "{e}");
    assert_eq!(server.requests().len(), 3);
    assert_eq!(std::fs::read_dir(cache_dir.path()).unwrap().count(), 0);
}

#[test]
fn html_instead_of_the_binary_is_refused_without_retrying() {
    let root = tempfile::tempdir().unwrap();
    let sha = put(root.path(), "app.jar", &artifact_bytes(1000, 12));
    let Some(server) = Flaky::start(root.path(), Fault::Html, 100) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let e = get(
        &http_source(server.url()),
        "app.jar",
        &sha,
        None,
        &Cache::new(cache_dir.path()),
        &fast(4),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::HtmlPage { .. }), "{e}");
    assert!(e.to_string().contains("a login or error page?"), "{e}");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(std::fs::read_dir(cache_dir.path()).unwrap().count(), 0);
}

/// Starts a server failing its first `failures` requests with `fault`, fetches with `attempts`.
fn flaky_fetch(fault: Fault, failures: u32, attempts: u32) -> (Result<Fetched, FetchError>, usize) {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(400_000, 13);
    let sha = put(root.path(), "svc.tar.gz", &bytes);
    let server = Flaky::start(root.path(), fault, failures).expect("python3");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let r = get(
        &http_source(server.url()),
        "svc.tar.gz",
        &sha,
        Some(bytes.len() as u64),
        &cache,
        &fast(attempts),
    );
    if let Ok(f) = &r {
        assert_eq!(std::fs::read(&f.path).unwrap(), bytes);
    }
    let leftovers = std::fs::read_dir(cache_dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(leftovers, 0, "temporary files left behind");
    (r, server.requests().len())
}

#[test]
fn transient_failures_are_retried_until_success() {
    if support::require_program("python3").is_none() {
        return;
    }
    for fault in [Fault::Unavailable, Fault::Drop, Fault::Truncate] {
        let (r, requests) = flaky_fetch(fault, 2, 4);
        let f = r.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!((f.attempts, requests), (3, 3), "{fault:?}");
        assert!(!f.from_cache);
    }
    // A truncated transfer without a length shows as a checksum mismatch: retried once.
    let (r, requests) = flaky_fetch(Fault::TruncateUnannounced, 1, 4);
    assert_eq!((r.unwrap().attempts, requests), (2, 2));
}

#[test]
fn gives_up_after_the_configured_attempts() {
    if support::require_program("python3").is_none() {
        return;
    }
    let (r, requests) = flaky_fetch(Fault::Unavailable, 100, 3);
    let e = r.unwrap_err();
    assert!(matches!(e, FetchError::GaveUp { attempts: 3, .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("HTTP status 503") && m.contains("gave up after 3 attempts"),
        "{m}"
    );
    assert!(m.contains("repository `mirror`: http://127.0.0.1:"), "{m}");
    assert_eq!(requests, 3);

    let (r, requests) = flaky_fetch(Fault::Drop, 100, 2);
    assert!(matches!(
        r.unwrap_err(),
        FetchError::GaveUp { attempts: 2, .. }
    ));
    assert_eq!(requests, 2);

    // Nobody listening: refused every time, reported with the address.
    let port = support::free_port();
    let cache_dir = tempfile::tempdir().unwrap();
    let e = get(
        &http_source(format!("http://127.0.0.1:{port}")),
        "a.jar",
        &"a".repeat(64),
        None,
        &Cache::new(cache_dir.path()),
        &fast(3),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::GaveUp { attempts: 3, .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{port}/a.jar")),
        "{e}"
    );
}

#[test]
fn not_found_is_not_retried() {
    let root = tempfile::tempdir().unwrap();
    let Some(server) = Flaky::start(root.path(), Fault::Unavailable, 0) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let e = get(
        &http_source(server.url()),
        "gone.jar",
        &"c".repeat(64),
        None,
        &Cache::new(cache_dir.path()),
        &fast(4),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("repository `mirror`: {}/gone.jar not found", server.url())
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_cached_artifact_is_not_downloaded_again() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(100_000, 14);
    let sha = put(root.path(), "app.jar", &bytes);
    let Some(mut server) = python_http(root.path()) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let source = http_source(format!("http://127.0.0.1:{}", server.port));
    let first = get(
        &source,
        "app.jar",
        &sha,
        None,
        &Cache::new(cache_dir.path()),
        &fast(1),
    )
    .unwrap();
    assert!(!first.from_cache);
    server.stop();
    let second = get(
        &source,
        "app.jar",
        &sha,
        None,
        &Cache::new(cache_dir.path()),
        &fast(1),
    )
    .unwrap();
    assert!(second.from_cache);
    assert_eq!((second.path, second.downloaded_bytes), (first.path, 0));
}

#[test]
fn concurrent_fetches_of_one_artifact_agree() {
    let root = tempfile::tempdir().unwrap();
    let bytes = artifact_bytes(2 << 20, 15);
    let sha = put(root.path(), "big.bin", &bytes);
    let Some(server) = python_http(root.path()) else {
        return;
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let source = http_source(format!("http://127.0.0.1:{}", server.port));
    let results: Vec<Fetched> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                // Separate `Cache` values, as separate agent processes would have.
                s.spawn(|| {
                    get(
                        &source,
                        "big.bin",
                        &sha,
                        None,
                        &Cache::new(cache_dir.path()),
                        &fast(2),
                    )
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for f in &results {
        assert_eq!(f.path, cache_dir.path().join(&sha));
    }
    assert_eq!(snapshot(cache_dir.path()), vec![(sha.clone(), bytes)]);
}

#[test]
fn file_repository_and_locations_that_leave_the_base() {
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("repo");
    let bytes = artifact_bytes(70_000, 16);
    let sha = put(&repo, "app/1.0/app.jar", &bytes);
    let secret_sha = put(base.path(), "outside.txt", b"not in the repository");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let source = Source::File { dir: repo.clone() };

    let f = get(
        &source,
        "app/1.0/app.jar",
        &sha,
        Some(70_000),
        &cache,
        &fast(1),
    )
    .unwrap();
    assert_eq!(std::fs::read(f.path).unwrap(), bytes);

    for bad in ["../outside.txt", "app/../../outside.txt", "/etc/hostname"] {
        let e = get(&source, bad, &secret_sha, None, &cache, &fast(1)).unwrap_err();
        assert!(matches!(e, FetchError::Location { .. }), "{bad}: {e}");
    }
    let e = get(
        &source,
        "app/2.0/app.jar",
        &secret_sha,
        None,
        &cache,
        &fast(3),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    let e = get(
        &Source::File { dir: "repo".into() },
        "a.jar",
        &secret_sha,
        None,
        &cache,
        &fast(1),
    )
    .unwrap_err();
    assert!(matches!(e, FetchError::Source { .. }), "{e}");
    assert!(!cache_dir.path().join(&secret_sha).exists());
}

#[test]
fn prune_removes_the_least_recently_used() {
    let repo = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let source = Source::File {
        dir: repo.path().into(),
    };
    let mut shas = Vec::new();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let sha = put(repo.path(), name, &artifact_bytes(1000, 20 + i as u64));
        get(
            &source,
            name,
            &sha,
            None,
            &Cache::new(cache_dir.path()),
            &fast(1),
        )
        .unwrap();
        // Fetched one after another, a minute apart.
        let age = Duration::from_secs(600 - 60 * i as u64);
        std::fs::File::open(cache_dir.path().join(&sha))
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        shas.push(sha);
    }
    // Using `a` again makes `b` the least recently used.
    let f = get(
        &source,
        "a",
        &shas[0],
        None,
        &Cache::new(cache_dir.path()),
        &fast(1),
    )
    .unwrap();
    assert!(f.from_cache);
    let report = Cache::new(cache_dir.path()).prune(2500).unwrap();
    assert_eq!(report.removed, vec![shas[1].clone(), shas[2].clone()]);
    assert_eq!((report.freed_bytes, report.kept_bytes), (2000, 2000));
    let left: Vec<String> = snapshot(cache_dir.path())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut expected = vec![shas[0].clone(), shas[3].clone()];
    expected.sort();
    assert_eq!(left, expected);

    // The entry just fetched survives even a limit of zero.
    let cache = Cache::new(cache_dir.path());
    let sha = put(repo.path(), "e", &artifact_bytes(1000, 30));
    get(&source, "e", &sha, None, &cache, &fast(1)).unwrap();
    let report = cache.prune(0).unwrap();
    assert_eq!(report.kept_bytes, 1000);
    assert_eq!(
        snapshot(cache_dir.path())
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        vec![sha]
    );
}
