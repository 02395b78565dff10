//! `FetchError`: why an artifact could not be fetched, and whether trying again could help.
//! Every message names the repository and the URL or host path without credentials, and hash
//! errors give the expected and actual sha256 and sizes. No variant may hold a secret, so the
//! derived `Debug` is as safe to print as `Display`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("repository `{repository}`: artifact location `{location}` {problem}")]
    Location {
        repository: String,
        location: String,
        problem: &'static str,
    },
    #[error("repository `{repository}`: `{sha256}` is not a sha256 (64 hexadecimal digits)")]
    Sha256Syntax { repository: String, sha256: String },
    /// The repository's own settings are unusable (a relative directory, a URL with
    /// credentials in it, a malformed pinned host key, ...).
    #[error("repository `{repository}`: {problem}")]
    Source { repository: String, problem: String },
    #[error("repository `{repository}`: {url} not found")]
    NotFound { repository: String, url: String },
    #[error("repository `{repository}`: {url}: authentication failed: {detail}")]
    Auth {
        repository: String,
        url: String,
        detail: String,
    },
    #[error(
        "repository `{repository}`: {url}: server returned an HTML page instead of the artifact: \
         a login or error page?"
    )]
    HtmlPage { repository: String, url: String },
    #[error("repository `{repository}`: {url}: HTTP status {status}")]
    Status {
        repository: String,
        url: String,
        status: u16,
    },
    /// Connecting or transferring failed; `transient` says whether a retry may help.
    #[error("repository `{repository}`: {url}: {detail}")]
    Transfer {
        repository: String,
        url: String,
        detail: String,
        transient: bool,
    },
    #[error(
        "repository `{repository}`: the SSH host key of {host}:{port} does not match: expected \
         {expected}, the server presented {actual}; refusing to connect (if the server's key \
         really changed, update the pinned `host_key` or known_hosts)"
    )]
    HostKeyMismatch {
        repository: String,
        host: String,
        port: u16,
        expected: String,
        actual: String,
    },
    #[error(
        "repository `{repository}`: the SSH host key of {host}:{port} ({actual}) is not known \
         ({known_hosts}); refusing to trust it on first use: pin it as the repository's \
         `host_key` or add it to a known_hosts file"
    )]
    HostKeyUnknown {
        repository: String,
        host: String,
        port: u16,
        actual: String,
        known_hosts: String,
    },
    #[error(
        "repository `{repository}`: {url}: sha256 mismatch: expected {expected} ({}), got \
         {actual} ({actual_size} bytes); the download was discarded",
        size_text(*.expected_size)
    )]
    Checksum {
        repository: String,
        url: String,
        expected: String,
        expected_size: Option<u64>,
        actual: String,
        actual_size: u64,
    },
    #[error(
        "repository `{repository}`: {url}: size mismatch: expected {expected_size} bytes \
         (sha256 {expected}), {}; the download was discarded",
        received_text(.received)
    )]
    Size {
        repository: String,
        url: String,
        expected: String,
        expected_size: u64,
        received: Received,
    },
    #[error(
        "repository `{repository}`: {url}: the artifact declares no size and the server sent \
         (or announced) more than {cap} bytes, the repository's limit; the transfer was stopped \
         and nothing was kept (declare the version's `size`, or raise the repository's \
         `max_download_size`)"
    )]
    OverCap {
        repository: String,
        url: String,
        cap: u64,
    },
    #[error("repository `{repository}`: artifact cache {}: {source}", .path.display())]
    Cache {
        repository: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        last: Box<FetchError>,
    },
}

fn size_text(size: Option<u64>) -> String {
    match size {
        Some(s) => format!("{s} bytes"),
        None => "size not declared".to_string(),
    }
}

fn received_text(received: &Received) -> String {
    match received {
        Received::Complete { sha256, size } => format!("got {size} bytes (sha256 {sha256})"),
        Received::Announced(size) => {
            format!("the server announced {size} bytes, so nothing was downloaded")
        }
        Received::MoreThanDeclared => {
            "the server sent more, so the transfer was stopped".to_string()
        }
    }
}

/// What arrived when the size was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The whole transfer, and what it hashed to.
    Complete { sha256: String, size: u64 },
    /// The server announced this size before sending anything, so nothing was downloaded.
    Announced(u64),
    /// The server sent more than the declared size, so the transfer was stopped there.
    MoreThanDeclared,
}

impl FetchError {
    /// Whether trying again may succeed: connection trouble, timeouts, 5xx (and 408, 429).
    /// Not-found, authentication, host-key and configuration errors never are.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Transfer { transient, .. } => *transient,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// A download that completed but is not the artifact: what a truncated transfer gives.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            FetchError::Checksum { .. }
                | FetchError::Size {
                    received: Received::Complete { .. },
                    ..
                }
        )
    }

    /// The repository the error is about.
    pub fn repository(&self) -> &str {
        match self {
            FetchError::Location { repository, .. }
            | FetchError::Sha256Syntax { repository, .. }
            | FetchError::Source { repository, .. }
            | FetchError::NotFound { repository, .. }
            | FetchError::Auth { repository, .. }
            | FetchError::HtmlPage { repository, .. }
            | FetchError::Status { repository, .. }
            | FetchError::Transfer { repository, .. }
            | FetchError::HostKeyMismatch { repository, .. }
            | FetchError::HostKeyUnknown { repository, .. }
            | FetchError::Checksum { repository, .. }
            | FetchError::Size { repository, .. }
            | FetchError::OverCap { repository, .. }
            | FetchError::Cache { repository, .. } => repository,
            FetchError::GaveUp { last, .. } => last.repository(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_errors_give_both_hashes_and_sizes() {
        let e = FetchError::Checksum {
            repository: "r".into(),
            url: "http://h/a.jar".into(),
            expected: "aa".repeat(32),
            expected_size: Some(10),
            actual: "bb".repeat(32),
            actual_size: 9,
        };
        let m = e.to_string();
        assert!(
            m.contains(&"aa".repeat(32)) && m.contains(&"bb".repeat(32)),
            "{m}"
        );
        assert!(m.contains("10 bytes") && m.contains("9 bytes"), "{m}");
        assert!(m.starts_with("repository `r`: http://h/a.jar: "), "{m}");
        assert!(e.is_mismatch() && !e.is_transient());
    }

    #[test]
    fn what_is_transient() {
        let status = |status| FetchError::Status {
            repository: "r".into(),
            url: "u".into(),
            status,
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        let early = FetchError::Size {
            repository: "r".into(),
            url: "u".into(),
            expected: "e".into(),
            expected_size: 5,
            received: Received::Announced(7),
        };
        assert!(!early.is_mismatch() && !early.is_transient());
        assert!(early.to_string().contains("announced 7 bytes"), "{early}");
    }
}
