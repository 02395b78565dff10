//! Artifact fetching on a host: one entry point, [`fetch`], that gets a release artifact from
//! any repository kind (a host directory, HTTP, SFTP, FTP, S3, Google Drive) into the host's
//! content-addressed cache, resuming a transfer that an earlier attempt left unfinished. A download streams into a temporary file while it is hashed, and only a file whose
//! sha256 (and declared size) matched is renamed to its final `<sha256>` name, so nothing
//! unverified ever carries an artifact's name. This module must not write outside the cache
//! directory, must not trust an artifact location that is absolute or climbs with `..` (whatever
//! validation said before), and must never put a credential into an error, a log line or a
//! `Debug` rendering: secrets stay `SecretString`s until the moment a protocol needs them, and
//! URLs are shown without user information or query strings.

mod cache;
mod error;
mod file;
mod ftp;
mod gdrive;
mod http;
mod retry;
mod s3;
mod sftp;
mod sigv4;

pub use cache::{Cache, DEFAULT_MAX_UNDECLARED, PruneReport};
// The digest's old home, still named by `src/cli/agent.rs` (restructured apart from this change).
pub use error::{FetchError, Received};
pub use gdrive::{DEFAULT_API_URL, DEFAULT_TOKEN_URL, DriveAuth, describe as drive_location};
pub use retry::Retry;
pub use s3::S3Credentials;

use crate::secret::SecretString;
use cache::Incoming;
use std::fmt;
use std::path::PathBuf;

/// Where a repository's artifacts come from, with its credentials already decrypted.
#[derive(Clone)]
pub enum Source {
    /// A directory on the host (absolute path).
    File { dir: PathBuf },
    /// An HTTP(S) server; artifact locations are appended to `base_url`.
    Http { base_url: String, auth: HttpAuth },
    /// An SSH server's SFTP subsystem.
    Sftp {
        host: String,
        port: u16,
        /// Base directory; relative to the login directory unless absolute.
        dir: String,
        username: String,
        auth: SshAuth,
        /// Pinned server key, known_hosts-style (`ssh-ed25519 AAAA...`, a leading host field is
        /// allowed). When given, it is the only key accepted and `known_hosts` is not read.
        host_key: Option<String>,
        /// The known_hosts file that must know the server when no key is pinned; `None` means
        /// `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`, as OpenSSH reads them.
        known_hosts: Option<PathBuf>,
    },
    /// An FTP server.
    Ftp {
        host: String,
        port: u16,
        /// Base directory; relative to the login directory unless absolute.
        dir: String,
        /// User name and password; `None` logs in anonymously.
        login: Option<(String, SecretString)>,
        /// Passive mode (the client connects for data); `false` is active mode.
        passive: bool,
    },
    /// An S3 bucket (Amazon S3 or an S3-compatible store).
    S3 {
        /// Base URL of the store; `None` is AWS's endpoint for the region.
        endpoint: Option<String>,
        bucket: String,
        region: String,
        /// Key prefix that locations are under ("" for none).
        prefix: String,
        /// `<endpoint>/<bucket>/<key>` rather than `<bucket>.<endpoint host>/<key>`.
        path_style: bool,
        /// `None` sends unsigned requests (a public bucket).
        credentials: Option<S3Credentials>,
    },
    /// Google Drive (API v3).
    GoogleDrive {
        /// Drive API base URL ([`DEFAULT_API_URL`] for Google's).
        api_url: String,
        /// OAuth2 token endpoint ([`DEFAULT_TOKEN_URL`] for Google's).
        token_url: String,
        /// The folder that locations by name are below.
        folder_id: Option<String>,
        auth: DriveAuth,
    },
}

/// HTTP authentication.
#[derive(Debug, Clone)]
pub enum HttpAuth {
    None,
    Basic {
        username: String,
        password: SecretString,
    },
    Bearer {
        token: SecretString,
    },
    /// A named header whose whole value is a secret (`X-JFrog-Art-Api: <key>`).
    Header {
        name: String,
        value: SecretString,
    },
}

/// SSH authentication.
#[derive(Debug, Clone)]
pub enum SshAuth {
    Password(SecretString),
    /// An OpenSSH (or PEM) private key, unencrypted.
    Key(SecretString),
}

/// The artifact to fetch, as the plan names it.
#[derive(Debug, Clone, Copy)]
pub struct Artifact<'a> {
    /// The repository's name, for messages.
    pub repository: &'a str,
    /// Path relative to the repository's base.
    pub location: &'a str,
    /// Expected sha256, hexadecimal, either case.
    pub sha256: &'a str,
    /// Expected size in bytes, when the artifact declares one.
    pub size: Option<u64>,
    /// The most bytes accepted when no size is declared (the repository's
    /// `max_download_size`); `None` means [`DEFAULT_MAX_UNDECLARED`].
    pub max_size: Option<u64>,
}

/// How far a download has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub downloaded: u64,
    /// The declared size, or what the server announced.
    pub total: Option<u64>,
}

/// A verified artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The cache file, named by its sha256.
    pub path: PathBuf,
    /// Bytes transferred by the attempt that succeeded (0 from the cache); a resumed download
    /// counts only the rest it fetched.
    pub downloaded_bytes: u64,
    /// Bytes an earlier, interrupted download had left that this one went on from (0 when it
    /// started from the first byte).
    pub resumed_from: u64,
    pub from_cache: bool,
    /// Download attempts made (0 when the cache had it).
    pub attempts: u32,
}

impl fmt::Debug for Source {
    // Written by hand because a base URL may carry `user:password@`: it is shown without it.
    // Secrets render as `(sensitive)` through `SecretString`'s own Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { dir } => f.debug_struct("File").field("dir", dir).finish(),
            Source::Http { base_url, auth } => f
                .debug_struct("Http")
                .field("base_url", &http::display_url(base_url))
                .field("auth", auth)
                .finish(),
            Source::Sftp {
                host,
                port,
                dir,
                username,
                auth,
                host_key,
                known_hosts,
            } => f
                .debug_struct("Sftp")
                .field("host", host)
                .field("port", port)
                .field("dir", dir)
                .field("username", username)
                .field("auth", auth)
                .field("host_key", host_key)
                .field("known_hosts", known_hosts)
                .finish(),
            Source::Ftp {
                host,
                port,
                dir,
                login,
                passive,
            } => f
                .debug_struct("Ftp")
                .field("host", host)
                .field("port", port)
                .field("dir", dir)
                .field("login", login)
                .field("passive", passive)
                .finish(),
            Source::S3 {
                endpoint,
                bucket,
                region,
                prefix,
                path_style,
                credentials,
            } => f
                .debug_struct("S3")
                .field("endpoint", endpoint)
                .field("bucket", bucket)
                .field("region", region)
                .field("prefix", prefix)
                .field("path_style", path_style)
                .field("credentials", &credentials.as_ref().map(|_| "(sensitive)"))
                .finish(),
            Source::GoogleDrive {
                api_url,
                token_url,
                folder_id,
                auth,
            } => f
                .debug_struct("GoogleDrive")
                .field("api_url", api_url)
                .field("token_url", token_url)
                .field("folder_id", folder_id)
                .field("auth", auth)
                .finish(),
        }
    }
}

impl Source {
    /// Where `location` lives, for messages: a URL or path without credentials.
    pub fn describe(&self, location: &str) -> String {
        match self {
            Source::File { dir } => dir.join(location).display().to_string(),
            Source::Http { base_url, .. } => http::display_url(&http::join(base_url, location)),
            Source::Sftp {
                host, port, dir, ..
            } => format!(
                "sftp://{}{}",
                authority(host, *port),
                remote_path(dir, location, true)
            ),
            Source::Ftp {
                host, port, dir, ..
            } => format!(
                "ftp://{}{}",
                authority(host, *port),
                remote_path(dir, location, true)
            ),
            Source::S3 { bucket, prefix, .. } => {
                format!("s3://{bucket}/{}", s3::key(prefix, location))
            }
            Source::GoogleDrive { folder_id, .. } => {
                gdrive::describe(folder_id.as_deref(), location)
            }
        }
    }
}

/// A URL as messages and plans show it: without `user:password@` and with any query string
/// replaced by `?…`.
pub fn display_url(url: &str) -> String {
    http::display_url(url)
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `dir/location` on a remote server. For a URL the path always starts with `/` (a relative
/// `dir` is shown under the login directory `~`).
fn remote_path(dir: &str, location: &str, for_url: bool) -> String {
    let trimmed = dir.trim_end_matches('/');
    let path = if dir.is_empty() {
        location.to_string()
    } else {
        // `trimmed` is empty for `/`, which gives `/location`.
        format!("{trimmed}/{location}")
    };
    match (for_url, path.starts_with('/')) {
        (true, false) => format!("/~/{path}"),
        _ => path,
    }
}

/// Gets `artifact` from `source` into `cache` and returns the verified cache file. An artifact
/// already in the cache is never downloaded again. Transient failures (connection refused or
/// reset, timeouts, 5xx, and one checksum or size mismatch, which is what a truncated download
/// looks like) are retried as `retry` says; nothing else is. `progress` is called as bytes
/// arrive.
pub fn fetch(
    source: &Source,
    artifact: &Artifact,
    cache: &Cache,
    retry: &Retry,
    progress: &mut dyn FnMut(Progress),
) -> Result<Fetched, FetchError> {
    let sha256 = expected_sha256(artifact)?;
    if let Some(problem) = location_problem(artifact.location) {
        return Err(FetchError::Location {
            repository: artifact.repository.to_string(),
            location: artifact.location.to_string(),
            problem,
        });
    }
    if let Some(path) = cache.get(&sha256) {
        return Ok(Fetched {
            path,
            downloaded_bytes: 0,
            resumed_from: 0,
            from_cache: true,
            attempts: 0,
        });
    }
    let url = source.describe(artifact.location);
    let attempts = retry.attempts.max(1);
    let mut mismatches = 0;
    for attempt in 1..=attempts {
        let error = match attempt_once(source, artifact, &sha256, &url, cache, progress) {
            Ok((path, downloaded_bytes, resumed_from)) => {
                return Ok(Fetched {
                    path,
                    downloaded_bytes,
                    resumed_from,
                    from_cache: false,
                    attempts: attempt,
                });
            }
            Err(e) => e,
        };
        let retryable = if error.is_mismatch() {
            // A truncated or garbled transfer deserves one more try; a second mismatch means the
            // repository really holds another file, and downloading it again changes nothing.
            mismatches += 1;
            mismatches == 1
        } else {
            error.is_transient()
        };
        if !retryable {
            return Err(error);
        }
        if attempt == attempts {
            if attempts == 1 {
                return Err(error);
            }
            return Err(FetchError::GaveUp {
                attempts,
                last: Box::new(error),
            });
        }
        // The error as the step reports it: fetch errors name repositories and redacted URLs.
        tracing::debug!(
            attempt,
            attempts,
            retry_in_ms = retry.delay(attempt).as_millis() as u64,
            "fetch: trying again after: {error}"
        );
        std::thread::sleep(retry.delay(attempt));
        // Another fetch of the same artifact (another process, another thread) may have
        // finished meanwhile.
        if let Some(path) = cache.get(&sha256) {
            return Ok(Fetched {
                path,
                downloaded_bytes: 0,
                resumed_from: 0,
                from_cache: true,
                attempts: attempt,
            });
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// One download into a fresh temporary file, verified and renamed into the cache.
fn attempt_once(
    source: &Source,
    artifact: &Artifact,
    sha256: &str,
    url: &str,
    cache: &Cache,
    progress: &mut dyn FnMut(Progress),
) -> Result<(PathBuf, u64, u64), FetchError> {
    let repository = artifact.repository;
    let mut incoming = cache
        .incoming(
            sha256,
            artifact.size,
            artifact.max_size.unwrap_or(DEFAULT_MAX_UNDECLARED),
            progress,
        )
        .map_err(|(path, source)| FetchError::Cache {
            repository: repository.to_string(),
            path,
            source,
        })?;
    let job = Job {
        repository,
        location: artifact.location,
        url,
        size: artifact.size,
        max_size: artifact.max_size.unwrap_or(DEFAULT_MAX_UNDECLARED),
        sha256,
    };
    match source {
        Source::File { dir } => file::download(dir, &job, &mut incoming)?,
        Source::Http { base_url, auth } => http::download(base_url, auth, &job, &mut incoming)?,
        Source::Sftp {
            host,
            port,
            dir,
            username,
            auth,
            host_key,
            known_hosts,
        } => sftp::download(
            &sftp::Server {
                host,
                port: *port,
                dir,
                username,
                auth,
                host_key: host_key.as_deref(),
                known_hosts: known_hosts.as_deref(),
            },
            &job,
            &mut incoming,
        )?,
        Source::Ftp {
            host,
            port,
            dir,
            login,
            passive,
        } => ftp::download(
            host,
            *port,
            dir,
            login.as_ref(),
            *passive,
            &job,
            &mut incoming,
        )?,
        Source::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            path_style,
            credentials,
        } => {
            let default_endpoint;
            let endpoint = match endpoint {
                Some(e) => e.as_str(),
                None => {
                    default_endpoint = s3::default_endpoint(region);
                    &default_endpoint
                }
            };
            s3::download(
                &s3::Bucket {
                    endpoint,
                    bucket,
                    region,
                    prefix,
                    path_style: *path_style,
                    credentials: credentials.as_ref(),
                },
                &job,
                &mut incoming,
            )?
        }
        Source::GoogleDrive {
            api_url,
            token_url,
            folder_id,
            auth,
        } => gdrive::download(
            &gdrive::Drive {
                api_url,
                token_url,
                folder_id: folder_id.as_deref(),
                auth,
            },
            &job,
            &mut incoming,
        )?,
    }
    let resumed_from = incoming.resumed_from();
    let finished = incoming.finish(sha256, artifact.size);
    finished
        .map(|(path, n)| (path, n, resumed_from))
        .map_err(|e| match e {
            cache::FinishError::Mismatch {
                sha256: actual,
                size,
            } => {
                if artifact.size.is_some_and(|s| s != size) {
                    FetchError::Size {
                        repository: repository.to_string(),
                        url: url.to_string(),
                        expected: sha256.to_string(),
                        expected_size: artifact.size.unwrap_or_default(),
                        received: Received::Complete {
                            sha256: actual,
                            size,
                        },
                    }
                } else {
                    FetchError::Checksum {
                        repository: repository.to_string(),
                        url: url.to_string(),
                        expected: sha256.to_string(),
                        expected_size: artifact.size,
                        actual,
                        actual_size: size,
                    }
                }
            }
            cache::FinishError::Io(path, source) => FetchError::Cache {
                repository: repository.to_string(),
                path,
                source,
            },
        })
}

/// What every protocol needs to know about the download at hand.
struct Job<'a> {
    repository: &'a str,
    location: &'a str,
    /// The credential-free URL or path, for messages.
    url: &'a str,
    size: Option<u64>,
    /// The cap on a download without a declared size.
    max_size: u64,
    sha256: &'a str,
}

impl Job<'_> {
    fn transfer(&self, detail: impl Into<String>, transient: bool) -> FetchError {
        FetchError::Transfer {
            repository: self.repository.to_string(),
            url: self.url.to_string(),
            detail: detail.into(),
            transient,
        }
    }

    fn not_found(&self) -> FetchError {
        FetchError::NotFound {
            repository: self.repository.to_string(),
            url: self.url.to_string(),
        }
    }

    fn auth(&self, detail: impl Into<String>) -> FetchError {
        FetchError::Auth {
            repository: self.repository.to_string(),
            url: self.url.to_string(),
            detail: detail.into(),
        }
    }

    fn source_problem(&self, problem: impl Into<String>) -> FetchError {
        FetchError::Source {
            repository: self.repository.to_string(),
            problem: problem.into(),
        }
    }

    /// The error for a copy into the cache file that stopped.
    fn copy_error(&self, e: cache::CopyError) -> FetchError {
        match e {
            cache::CopyError::Read { after, error } => self.transfer(
                format!("transfer interrupted after {after} bytes: {error}"),
                is_transient_io(&error),
            ),
            cache::CopyError::Write(path, source) => FetchError::Cache {
                repository: self.repository.to_string(),
                path,
                source,
            },
            cache::CopyError::TooLarge { limit } => FetchError::Size {
                repository: self.repository.to_string(),
                url: self.url.to_string(),
                expected: self.sha256.to_string(),
                expected_size: limit,
                received: Received::MoreThanDeclared,
            },
            cache::CopyError::OverCap { cap } => FetchError::OverCap {
                repository: self.repository.to_string(),
                url: self.url.to_string(),
                cap,
            },
        }
    }

    /// The error for a temporary file that could not be restarted or positioned.
    fn cache_error(&self, incoming: &Incoming, e: std::io::Error) -> FetchError {
        FetchError::Cache {
            repository: self.repository.to_string(),
            path: incoming.path().to_path_buf(),
            source: e,
        }
    }

    /// Starts the download over from the first byte, for a source that cannot resume.
    fn restart(&self, incoming: &mut Incoming) -> Result<(), FetchError> {
        if incoming.resume_at() == 0 {
            return Ok(());
        }
        incoming
            .restart()
            .map_err(|e| self.cache_error(incoming, e))
    }

    /// A size the server announced before sending anything that differs from the declared
    /// one: no point downloading it.
    fn check_announced_size(&self, announced: Option<u64>) -> Result<(), FetchError> {
        match (self.size, announced) {
            (Some(expected), Some(actual)) if expected != actual => Err(FetchError::Size {
                repository: self.repository.to_string(),
                url: self.url.to_string(),
                expected: self.sha256.to_string(),
                expected_size: expected,
                received: Received::Announced(actual),
            }),
            (None, Some(actual)) if actual > self.max_size => Err(FetchError::OverCap {
                repository: self.repository.to_string(),
                url: self.url.to_string(),
                cap: self.max_size,
            }),
            _ => Ok(()),
        }
    }
}

/// Whether an I/O error is the network's passing trouble rather than a lasting refusal.
fn is_transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | WouldBlock
            | UnexpectedEof
            | Interrupted
            | NetworkUnreachable
            | HostUnreachable
            | NetworkDown
    )
}

/// The expected sha256 in lowercase, or an error when it is not 64 hex digits.
fn expected_sha256(artifact: &Artifact) -> Result<String, FetchError> {
    if cache::is_sha256(artifact.sha256) {
        Ok(artifact.sha256.to_ascii_lowercase())
    } else {
        Err(FetchError::Sha256Syntax {
            repository: artifact.repository.to_string(),
            sha256: artifact.sha256.to_string(),
        })
    }
}

/// Why a location may not be used, if it may not. Validation refused these already; checking
/// again here keeps a bug elsewhere from turning into a read outside the repository's base.
fn location_problem(location: &str) -> Option<&'static str> {
    if location.is_empty() {
        Some("is empty")
    } else if location.chars().any(char::is_control) {
        Some("contains a control character")
    } else if location.starts_with('/') || location.starts_with('\\') {
        Some("is absolute")
    } else if location.split(['/', '\\']).any(|c| c == "..") {
        Some("contains `..`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_that_leave_the_base_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "\\x",
            "a\\..\\b",
            "a\nb",
        ] {
            assert!(location_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["a.jar", "app/1.0/app.jar", "a..b/c", "..a", "./a"] {
            assert_eq!(location_problem(good), None, "{good:?}");
        }
    }

    #[test]
    fn descriptions_carry_no_credentials() {
        let s = Source::Http {
            base_url: "https://bob:hunter2@example.test/repo/?token=abc".into(),
            auth: HttpAuth::None,
        };
        let d = s.describe("a.jar");
        assert!(
            !d.contains("hunter2") && !d.contains("bob") && !d.contains("abc"),
            "{d}"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        let s = Source::Sftp {
            host: "h".into(),
            port: 2222,
            dir: "repo/".into(),
            username: "u".into(),
            auth: SshAuth::Password(SecretString::new("pw-secret".into())),
            host_key: None,
            known_hosts: None,
        };
        assert_eq!(s.describe("a/b.jar"), "sftp://h:2222/~/repo/a/b.jar");
        assert!(!format!("{s:?}").contains("pw-secret"));
        let s = Source::Ftp {
            host: "::1".into(),
            port: 21,
            dir: "/pub".into(),
            login: None,
            passive: true,
        };
        assert_eq!(s.describe("x.tgz"), "ftp://[::1]:21/pub/x.tgz");
    }

    #[test]
    fn bad_sha256_is_refused_before_anything_happens() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let a = Artifact {
            repository: "r",
            location: "a",
            sha256: "../../etc/passwd",
            size: None,
            max_size: None,
        };
        let e = fetch(
            &Source::File {
                dir: dir.path().into(),
            },
            &a,
            &cache,
            &Retry::default(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, FetchError::Sha256Syntax { .. }), "{e}");
        assert!(!dir.path().join("cache").exists());
    }
}
