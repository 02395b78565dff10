//! `http` repositories, with `ureq` (rustls): no authentication, basic, bearer, or a named
//! header carrying a secret (Artifactory's `X-JFrog-Art-Api`, say). Redirects are
//! followed here rather than by `ureq`, so the credential rule is ours and visible: the
//! credential header goes only to the base URL's own scheme, host and port (or the same
//! host upgraded to https), never to another host a redirect points at. Artifacts are asked
//! for with `Accept-Encoding: identity` and hashed exactly as they arrive: a body the server
//! compresses anyway is never decoded (a small gzip must not become a huge file). An
//! interrupted download goes on with `Range`; a server that ignores it (200) or finds it
//! unsatisfiable (416) makes the download start over from the first byte. A `text/html` answer
//! for an artifact that is not an HTML file is refused as the login or error page it nearly
//! always is. URLs in messages never show user information or query strings, and credentials
//! written into the base URL are refused rather than used.

use super::{FetchError, HttpAuth, Job, cache::Incoming};
use crate::secret::SecretString;
use crate::transport::base64;
use std::time::Duration;
use ureq::http::Uri;

/// Redirects followed before giving up; real repositories use one or two (a CDN, a mirror).
const MAX_REDIRECTS: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for the response head, and for each read of the body: a stalled server fails the
/// attempt (and the retry policy decides), while a slow but moving one may take as long as
/// the artifact needs.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `base_url` joined with the location, each path segment percent-encoded.
pub(super) fn join(base_url: &str, location: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + location.len() + 1);
    url.push_str(base);
    for segment in location.split('/') {
        url.push('/');
        for b in segment.bytes() {
            // Unreserved characters and the sub-delimiters a path may carry stay as they are;
            // everything else (spaces, `%`, `?`, `#`, non-ASCII) is encoded so a file name
            // cannot turn into a query or a fragment.
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
    url
}

/// `url` for messages: without `user:password@` and with any query replaced by `?…`, since
/// a query string (a pre-signed redirect target) may be a credential too. Text without a
/// scheme (refused as a URL) is read as an authority and a path, so its `user:password@`
/// stays out as well.
pub(super) fn display_url(url: &str) -> String {
    let shown = if url.contains("://") {
        crate::url_credentials::hide(url, "")
    } else {
        crate::url_credentials::hide(&format!("://{url}"), "")[3..].to_string()
    };
    let shown = shown.split('#').next().unwrap_or_default();
    match shown.split_once('?') {
        Some((p, _)) => format!("{p}?…"),
        None => shown.to_string(),
    }
}

/// Scheme, lowercase host and effective port: what decides where credentials may go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn of(uri: &Uri) -> Option<Origin> {
        let https = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("https") => true,
            s if s.eq_ignore_ascii_case("http") => false,
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Origin { https, host, port })
    }

    /// Whether credentials meant for `self` may be sent to `target`: the same origin, or the
    /// same host moved from http to https (where the port changes with the scheme).
    fn trusts(&self, target: &Origin) -> bool {
        self == target || (!self.https && target.https && self.host == target.host)
    }
}

/// Resolves a `Location` header against the URL that answered with it.
fn resolve(current: &Uri, location: &str) -> Option<String> {
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(location.to_string());
    }
    let scheme = current.scheme_str()?;
    let authority = current.authority()?.as_str();
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.contains("://") {
        // Another protocol (ftp://, file://): not something an HTTP repository may send us to.
        return None;
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = current.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// The credential header's name and value.
fn authorization(auth: &HttpAuth) -> Option<(String, SecretString)> {
    let authorization = |v: String| Some(("Authorization".to_string(), SecretString::new(v)));
    match auth {
        HttpAuth::None => None,
        HttpAuth::Basic { username, password } => {
            let pair = SecretString::new(format!("{username}:{}", password.expose()));
            authorization(format!(
                "Basic {}",
                base64::encode(pair.expose().as_bytes(), true)
            ))
        }
        HttpAuth::Bearer { token } => authorization(format!("Bearer {}", token.expose())),
        HttpAuth::Header { name, value } => Some((name.clone(), value.clone())),
    }
}

/// The first byte a `Content-Range: bytes FIRST-LAST/TOTAL` answer starts at, and the total
/// when the server knows it.
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        // The sha256 is of the file as stored: ask for it unencoded. (`ureq` is built without
        // its decoders, so a server that encodes anyway is hashed as it sent the bytes.)
        .accept_encoding("identity")
        .user_agent(concat!("clarity/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Whether an error from `ureq` is worth another attempt, and what to say about it. Its own
/// `Display` is not used for `BadUri`, which would repeat the URL with its query.
pub(super) fn describe(e: &ureq::Error) -> (String, bool) {
    match e {
        ureq::Error::Io(io) => (io.to_string(), super::is_transient_io(io)),
        ureq::Error::Timeout(t) => (format!("timed out ({t})"), true),
        ureq::Error::ConnectionFailed => ("connection failed".into(), true),
        ureq::Error::HostNotFound => ("host not found".into(), false),
        // A server that closes the connection mid-response shows up as a protocol error.
        ureq::Error::Protocol(p) => (format!("HTTP protocol error: {p}"), true),
        ureq::Error::BadUri(_) => ("invalid URL".into(), false),
        other => (other.to_string(), false),
    }
}

pub(super) fn download(
    base_url: &str,
    auth: &HttpAuth,
    job: &Job,
    incoming: &mut Incoming,
) -> Result<(), FetchError> {
    let base: Uri = base_url
        .parse()
        .map_err(|_| job.source_problem(format!("`{}` is not a URL", display_url(base_url))))?;
    let Some(origin) = Origin::of(&base) else {
        return Err(job.source_problem(format!(
            "`{}` is not an http:// or https:// URL",
            display_url(base_url)
        )));
    };
    if base.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(job.source_problem(format!(
            "the URL `{}` carries credentials; give them as the repository's `auth` (a secret) \
             instead",
            display_url(base_url)
        )));
    }
    if base.query().is_some() {
        return Err(job.source_problem(format!(
            "the URL `{}` has a query string; locations are appended to the base URL's path",
            display_url(base_url)
        )));
    }
    let authorization = authorization(auth);
    let agent = agent();
    let original = join(base_url, job.location);
    let mut url = original.clone();
    let mut redirects = 0;
    loop {
        let shown = if redirects == 0 {
            display_url(&original)
        } else {
            format!(
                "{} (redirected to {})",
                display_url(&original),
                display_url(&url)
            )
        };
        let job = Job {
            url: &shown,
            ..*job
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| job.transfer("the redirect target is not a valid URL", false))?;
        let target = Origin::of(&uri)
            .ok_or_else(|| job.transfer("redirected to something that is not http(s)", false))?;
        let mut request = agent.get(&uri);
        if let Some((name, value)) = &authorization
            && origin.trusts(&target)
        {
            request = request.header(name.as_str(), value.expose());
        }
        let offset = incoming.resume_at();
        if offset > 0 {
            request = request.header("Range", format!("bytes={offset}-"));
        }
        let response = request.call().map_err(|e| {
            let (detail, transient) = describe(&e);
            job.transfer(detail, transient)
        })?;
        let status = response.status().as_u16();
        match status {
            301 | 302 | 303 | 307 | 308 => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(job.transfer(format!("more than {MAX_REDIRECTS} redirects"), false));
                }
                let next = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| resolve(&uri, l))
                    .ok_or_else(|| {
                        job.transfer(
                            format!("HTTP {status} without a usable http(s) Location"),
                            false,
                        )
                    })?;
                url = next;
                continue;
            }
            200 => {}
            206 if offset > 0 => {}
            416 if offset > 0 => {
                // What is on disk is not a prefix the server can continue: start over.
                job.restart(incoming)?;
                continue;
            }
            404 | 410 => return Err(job.not_found()),
            401 | 403 => {
                return Err(job.auth(match (&authorization, origin.trusts(&target)) {
                    (None, _) => format!(
                        "HTTP {status}: the server wants credentials and the repository has none"
                    ),
                    (Some(_), true) => {
                        format!("HTTP {status}: the server refused the repository's credentials")
                    }
                    (Some(_), false) => format!(
                        "HTTP {status} from a host the redirect pointed at; credentials are never \
                         sent to another host"
                    ),
                }));
            }
            _ => {
                return Err(FetchError::Status {
                    repository: job.repository.to_string(),
                    url: shown.clone(),
                    status,
                });
            }
        }
        let headers = response.headers();
        let html = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/html"));
        let wants_html = {
            let l = job.location.to_ascii_lowercase();
            l.ends_with(".html") || l.ends_with(".htm")
        };
        if html && !wants_html {
            return Err(FetchError::HtmlPage {
                repository: job.repository.to_string(),
                url: shown.clone(),
            });
        }
        if receive(response, offset, &job, incoming)? {
            return Ok(());
        }
    }
}

/// Takes a 200 or 206 answer's body into the download, hashing it on the way. A 200 is the
/// whole artifact, so a resumed download starts over; a 206 must continue exactly at
/// `offset`, or it cannot continue this file: the download then starts over and `false` says
/// the request must be made again (without `Range`). Shared by the HTTP-based repositories.
pub(super) fn receive(
    response: ureq::http::Response<ureq::Body>,
    offset: u64,
    job: &Job,
    incoming: &mut Incoming,
) -> Result<bool, FetchError> {
    let headers = response.headers();
    let mut announced = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if response.status().as_u16() == 206 {
        let range = headers
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(content_range);
        match range {
            Some((first, total)) if first == offset && offset > 0 => {
                announced = total.or(announced.map(|rest| rest + offset));
            }
            // Another part than the one asked for cannot continue this file.
            _ => {
                job.restart(incoming)?;
                return Ok(false);
            }
        }
    } else {
        // A server that ignores Range sends everything again.
        job.restart(incoming)?;
    }
    job.check_announced_size(announced)?;
    incoming.announce(announced);
    let mut body = response.into_body().into_reader();
    incoming
        .copy_from(&mut body)
        .map_err(|e| job.copy_error(e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_encoded_per_segment() {
        assert_eq!(
            join("http://h/repo/", "app/my app#1?.jar"),
            "http://h/repo/app/my%20app%231%3F.jar"
        );
        assert_eq!(join("http://h", "a/b+c@1.jar"), "http://h/a/b+c@1.jar");
        assert_eq!(join("http://h/", "100%.jar"), "http://h/100%25.jar");
    }

    #[test]
    fn displayed_urls_hide_userinfo_and_queries() {
        assert_eq!(
            display_url("https://bob:pw@h:8443/a/b.jar?sig=xyz#f"),
            "https://h:8443/a/b.jar?…"
        );
        assert_eq!(display_url("http://h"), "http://h");
        assert_eq!(display_url("http://a@b@h/x"), "http://h/x");
        assert_eq!(display_url("bob:pw@h/x?q"), "h/x?…");
    }

    #[test]
    fn credentials_follow_only_the_same_origin() {
        let o = |u: &str| Origin::of(&u.parse::<Uri>().unwrap()).unwrap();
        let base = o("http://Repo.example:8080/x");
        assert!(base.trusts(&o("http://repo.example:8080/y")));
        assert!(base.trusts(&o("https://repo.example/y")));
        assert!(!base.trusts(&o("http://repo.example:8081/y")));
        assert!(!base.trusts(&o("http://cdn.example:8080/y")));
        let tls = o("https://repo.example/x");
        assert!(!tls.trusts(&o("http://repo.example/x")));
        assert!(!tls.trusts(&o("http://repo.example:443/x")));
    }

    #[test]
    fn redirect_targets_resolve_like_a_browser() {
        let cur: Uri = "http://h:81/a/b/c.jar".parse().unwrap();
        assert_eq!(resolve(&cur, "/x").unwrap(), "http://h:81/x");
        assert_eq!(resolve(&cur, "d.jar").unwrap(), "http://h:81/a/b/d.jar");
        assert_eq!(resolve(&cur, "//cdn/x").unwrap(), "http://cdn/x");
        assert_eq!(resolve(&cur, "HTTPS://o/x").unwrap(), "HTTPS://o/x");
        assert_eq!(resolve(&cur, "ftp://o/x"), None);
        assert_eq!(resolve(&cur, "file:///etc/passwd"), None);
    }

    #[test]
    fn basic_credentials_are_encoded() {
        let a = authorization(&HttpAuth::Basic {
            username: "Aladdin".into(),
            password: SecretString::new("open sesame".into()),
        })
        .unwrap();
        assert_eq!(a.0, "Authorization");
        assert_eq!(a.1.expose(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn content_ranges_are_parsed() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("bytes */200"), None);
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
