//! What stands in front of every route: a `Host` allow-list (loopback names by default, so a
//! web page that rebinds its DNS name to 127.0.0.1 cannot read the API from a browser), an
//! optional bearer token for reads, a time limit per request, and, when a token is configured,
//! answers with URLs and filesystem paths hidden from callers that do not send it. It only inspects and filters requests
//! and answers; it never changes the ledger or triggers the loop.

use super::{ApiError, ServeState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// How long a request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may take to send a request's headers (and how long an idle
/// keep-alive connection stays open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer hidden-location filtering reads back (the run list is capped far below).
const FILTER_LIMIT: usize = 32 << 20;
/// What a hidden URL or path reads as.
pub const HIDDEN: &str = "(hidden: send the API token to see it)";

/// Who may reach the API and what they see.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Host names (without port) accepted in the `Host` header besides the loopback names.
    pub allowed_hosts: Vec<String>,
    /// Reads (everything but `/healthz`) need the bearer token too.
    pub token_for_reads: bool,
}

/// Always accepted: what a client on the reconciler's own machine writes.
const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

pub(super) struct Guard {
    pub access: Access,
    pub state: Arc<ServeState>,
}

/// The host name of a `Host` header value, lowercased, without the port.
fn host_name(value: &str) -> String {
    let v = value.trim().to_ascii_lowercase();
    if v.starts_with('[') {
        return v.split_once(']').map(|(h, _)| format!("{h}]")).unwrap_or(v);
    }
    match v.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => v,
    }
}

fn host_allowed(access: &Access, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let name = host_name(value);
    LOOPBACK.contains(&name.as_str()) || access.allowed_hosts.iter().any(|h| host_name(h) == name)
}

fn bearer_ok(state: &ServeState, req: &Request) -> bool {
    let Some(expected) = state.api_token.as_deref() else {
        return false;
    };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, t)| super::auth::same_secret(t.trim().as_bytes(), expected.as_bytes()))
}

pub(super) async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !host_allowed(&g.access, host.as_deref()) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not served here: the status API answers loopback names and the names given with --api-allowed-host",
        )
        .into_response();
    }
    let authenticated = bearer_ok(&g.state, &req);
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    if read && g.access.token_for_reads && !authenticated && req.uri().path() != "/healthz" {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "reads need an `Authorization: Bearer <token>` header (--api-token-for-reads)",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"clarity\""),
        );
        return response;
    }
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request took too long")
                .into_response();
        }
    };
    // Without a configured token every caller is anonymous and the API is reachable from this
    // machine only (the Host check): there is no one to hide from and no way to see more.
    if authenticated || !read || g.state.api_token.is_none() {
        return response;
    }
    hide_locations_in(response).await
}

/// A JSON answer with every URL and absolute path in its strings replaced by [`HIDDEN`].
async fn hide_locations_in(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FILTER_LIMIT).await else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the answer is too large")
            .into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    hide_value(&mut value);
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}

fn hide_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            let hidden = hide_locations(s);
            if hidden != *s {
                *s = hidden;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(hide_value),
        serde_json::Value::Object(map) => map.values_mut().for_each(hide_value),
        _ => {}
    }
}

/// `text` with every word that is a URL (`scheme://...`) or an absolute path replaced.
pub fn hide_locations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(char::is_whitespace) {
        let body = word.trim_end_matches(char::is_whitespace);
        let tail = &word[body.len()..];
        let core = body.trim_start_matches(['(', '`', '\'', '"', '[', '<']);
        let lead = &body[..body.len() - core.len()];
        let location = core.contains("://") || (core.starts_with('/') && core.len() > 1);
        if location {
            let end = core.trim_end_matches([')', '`', '\'', '"', ']', '>', ',', ';', ':', '.']);
            out.push_str(lead);
            out.push_str(HIDDEN);
            out.push_str(&core[end.len()..]);
        } else {
            out.push_str(body);
        }
        out.push_str(tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_allowed_hosts_pass() {
        let access = Access {
            allowed_hosts: vec!["clarity.internal.example".into()],
            token_for_reads: false,
        };
        for ok in [
            "127.0.0.1:8420",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8420",
            "clarity.internal.example:443",
        ] {
            assert!(host_allowed(&access, Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "127.0.0.1.evil.example:8420",
            "localhost.evil",
            "[::2]:1",
            "",
        ] {
            assert!(!host_allowed(&access, Some(bad)), "{bad}");
        }
        assert!(!host_allowed(&access, None));
    }

    #[test]
    fn urls_and_paths_are_hidden() {
        assert_eq!(
            hide_locations("cannot fetch https://user@artifacts.internal/x.jar: 404"),
            format!("cannot fetch {HIDDEN}: 404")
        );
        assert_eq!(
            hide_locations("cannot write `/srv/clarity/web/current`, denied"),
            format!("cannot write `{HIDDEN}`, denied")
        );
        assert_eq!(
            hide_locations("web 1.0 is healthy / ok"),
            "web 1.0 is healthy / ok"
        );
        assert_eq!(
            hide_locations("conf/app.conf changed"),
            "conf/app.conf changed"
        );
    }
}
