//! Fetching from `s3` repositories against a real S3-compatible server, `moto_server` (from
//! PyPI, in the venv scripts/test.sh makes), with IAM authentication on so signatures are
//! checked: an object under a prefix, signed with AWS Signature V4; a wrong secret key (a 403
//! naming the bucket and key, the secret nowhere, nothing cached); a missing object (404) and
//! a missing bucket; an interrupted download resumed with Range; and a large object streamed
//! with bounded memory.

mod fetch_servers;
mod support;

use clarity::fetch::{Artifact, Cache, FetchError, Fetched, Retry, S3Credentials, Source, fetch};
use clarity::secret::SecretString;
use fetch_servers::Moto;

fn source(moto: &Moto, prefix: &str, secret_key: &str) -> Source {
    Source::S3 {
        endpoint: Some(moto.url()),
        bucket: "artifacts".into(),
        region: "us-east-1".into(),
        prefix: prefix.into(),
        path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: SecretString::new(moto.access_key_id.clone()),
            secret_access_key: SecretString::new(secret_key.into()),
            session_token: None,
        }),
    }
}

fn get(
    source: &Source,
    location: &str,
    sha256: &str,
    size: Option<u64>,
    cache: &Cache,
) -> Result<Fetched, FetchError> {
    let artifact = Artifact {
        repository: "store",
        location,
        sha256,
        size,
        max_size: None,
    };
    fetch(source, &artifact, cache, &Retry::none(), &mut |_| {})
}

fn files(dir: &std::path::Path) -> Vec<String> {
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

#[test]
fn s3_objects_under_a_prefix_and_what_goes_wrong() {
    let objects = [
        "releases/app/app-1.0.jar=@300000:1".to_string(),
        "releases/app/app-2.0.jar=@2000000:2".to_string(),
    ];
    let Some((moto, put)) = Moto::start("artifacts", &objects) else {
        return;
    };
    let good = source(&moto, "releases/", &moto.secret_access_key);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());

    // A signed GET of `<prefix>/<location>`.
    let one = &put["releases/app/app-1.0.jar"];
    let f = get(
        &good,
        "app/app-1.0.jar",
        &one.sha256,
        Some(one.size),
        &cache,
    )
    .unwrap();
    assert!(!f.from_cache);
    assert_eq!(f.downloaded_bytes, one.size);
    assert_eq!(
        clarity::digest::sha256_file(&f.path).unwrap(),
        (one.sha256.clone(), one.size)
    );
    assert_eq!(files(cache_dir.path()), vec![one.sha256.clone()]);

    // A wrong secret key: S3's 403, naming bucket and key, never the secret, nothing cached.
    let wrong_secret = "wrong-secret-key-CANARY-5150";
    let two = &put["releases/app/app-2.0.jar"];
    let e = get(
        &source(&moto, "releases", wrong_secret),
        "app/app-2.0.jar",
        &two.sha256,
        Some(two.size),
        &cache,
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, FetchError::Auth { .. }), "{m}");
    assert!(m.contains("HTTP 403 SignatureDoesNotMatch"), "{m}");
    assert!(
        m.contains("bucket `artifacts`, key `releases/app/app-2.0.jar`"),
        "{m}"
    );
    assert!(
        m.starts_with("repository `store`: s3://artifacts/releases/app/app-2.0.jar: "),
        "{m}"
    );
    assert!(!m.contains(wrong_secret) && !format!("{e:?}").contains(wrong_secret));
    assert!(!m.contains(&moto.secret_access_key));
    assert_eq!(files(cache_dir.path()), vec![one.sha256.clone()]);

    // A missing object is S3's 404, and a missing bucket says so.
    let e = get(&good, "app/app-9.9.jar", &two.sha256, None, &cache).unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "repository `store`: s3://artifacts/releases/app/app-9.9.jar not found"
    );
    let no_bucket = match source(&moto, "releases", &moto.secret_access_key) {
        Source::S3 {
            endpoint,
            region,
            prefix,
            path_style,
            credentials,
            ..
        } => Source::S3 {
            endpoint,
            bucket: "no-such-bucket".into(),
            region,
            prefix,
            path_style,
            credentials,
        },
        _ => unreachable!(),
    };
    let e = get(&no_bucket, "app/app-2.0.jar", &two.sha256, None, &cache).unwrap_err();
    assert!(e.to_string().contains("NoSuchBucket"), "{e}");
    assert_eq!(files(cache_dir.path()), vec![one.sha256.clone()]);

    // An interrupted download left the first half: the next one asks S3 for the rest only.
    let half = (two.size / 2) as usize;
    // A full copy elsewhere gives the bytes to plant as the partial file.
    let other = tempfile::tempdir().unwrap();
    let first = get(
        &good,
        "app/app-2.0.jar",
        &two.sha256,
        Some(two.size),
        &Cache::new(other.path()),
    )
    .unwrap();
    let bytes = std::fs::read(&first.path).unwrap();
    std::fs::write(
        cache_dir.path().join(format!(".partial-{}", two.sha256)),
        &bytes[..half],
    )
    .unwrap();
    let f = get(
        &good,
        "app/app-2.0.jar",
        &two.sha256,
        Some(two.size),
        &cache,
    )
    .unwrap();
    assert_eq!(f.resumed_from, half as u64);
    assert_eq!(f.downloaded_bytes, two.size - half as u64);
    assert_eq!(std::fs::read(&f.path).unwrap(), bytes);
    assert_eq!(files(cache_dir.path()), {
        let mut v = vec![one.sha256.clone(), two.sha256.clone()];
        v.sort();
        v
    });
}

/// Peak resident memory of this process since the last reset, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_large_s3_object_streams_with_bounded_memory() {
    const SIZE: u64 = 96 << 20;
    let objects = [format!("big.bin=@{SIZE}:7")];
    let Some((moto, put)) = Moto::start("artifacts", &objects) else {
        return;
    };
    let big = &put["big.bin"];
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    // "5" resets the peak to the current resident size (Linux 4.0 and later).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = peak_rss();
    let f = get(
        &source(&moto, "", &moto.secret_access_key),
        "big.bin",
        &big.sha256,
        None,
        &cache,
    )
    .unwrap();
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(f.downloaded_bytes, SIZE);
    assert_eq!(std::fs::metadata(&f.path).unwrap().len(), SIZE);
    // The download holds five 256 KiB buffers; the allowance covers the TLS-less client, the
    // other test's small objects and the allocator, and is far below the object's size.
    if reset {
        assert!(
            grown < 40 << 20,
            "peak memory grew by {grown} bytes for a {SIZE}-byte object"
        );
    } else {
        assert!(before < SIZE, "{before}");
    }
}
