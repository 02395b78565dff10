//! The two routes that wake the loop, and the checks in front of them: a bearer token for
//! `POST /api/v1/reconcile`, a push webhook signed GitHub's way (HMAC-SHA256 of the body) or
//! carrying GitLab's token for `POST /hooks/git`. Every comparison with a secret runs in
//! constant time; neither the token nor the secret appears in an answer or a log line.

use super::{ApiError, ServeState};
use crate::watch::Trigger;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::Arc;

type HmacSha256 = Hmac<Sha256>;

/// Whether `given` equals `expected`, in time that depends on neither (nor on their lengths):
/// both are reduced to an HMAC under a fixed key, and the crate's constant-time verification
/// compares the two.
pub(super) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mac = |data: &[u8]| {
        let mut m = HmacSha256::new_from_slice(b"clarity secret comparison")
            .expect("HMAC takes keys of any length");
        m.update(data);
        m
    };
    let expected = mac(expected).finalize().into_bytes();
    mac(given).verify_slice(&expected).is_ok()
}

/// Whether `signature` (`sha256=<hex>`, GitHub's `X-Hub-Signature-256`) is the HMAC-SHA256 of
/// `body` under `secret`.
fn github_signature_ok(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

fn accepted(trigger: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "accepted", "trigger": trigger })),
    )
        .into_response()
}

fn send(state: &ServeState, trigger: Trigger) -> Result<(), ApiError> {
    state.triggers.send(trigger).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the watch loop is not running (it is stopping)",
        )
    })
}

fn unauthorized(message: &str, invalid_token: bool) -> Response {
    let challenge = if invalid_token {
        "Bearer realm=\"clarity\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"clarity\""
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    response
}

/// `POST /api/v1/reconcile`: asks the loop to reconcile the followed branches' heads now.
pub(super) async fn reconcile(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
) -> Response {
    let Some(expected) = state.api_token.as_deref() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "POST /api/v1/reconcile is disabled: the reconciler was started without an API token",
        )
        .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(given) = given else {
        return unauthorized(
            "this endpoint needs an `Authorization: Bearer <token>` header",
            false,
        );
    };
    if !same_secret(given.as_bytes(), expected.as_bytes()) {
        return unauthorized("the bearer token is not the reconciler's API token", true);
    }
    match send(
        &state,
        Trigger::Reconcile {
            reason: "api".into(),
        },
    ) {
        Ok(()) => accepted("reconcile"),
        Err(e) => e.into_response(),
    }
}

/// `POST /hooks/git`: a push webhook; asks the loop to fetch and reconcile new commits.
pub(super) async fn git_hook(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(secret) = state.webhook_secret.as_deref() else {
        // Without a secret there is no hook: say nothing more than any unknown route would.
        return ApiError::new(StatusCode::NOT_FOUND, "no such route").into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return ApiError::new(e.status(), e.body_text()).into_response(),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verified = if let Some(signature) = header("x-hub-signature-256") {
        github_signature_ok(secret, &body, signature)
    } else if let Some(token) = header("x-gitlab-token") {
        same_secret(token.as_bytes(), secret.as_bytes())
    } else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the webhook needs an X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab) header",
        )
        .into_response();
    };
    if !verified {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the webhook's signature does not match the configured secret",
        )
        .into_response();
    }
    // GitHub pings a hook when it is created: a sign the secret works, not a push.
    if header("x-github-event") == Some("ping") {
        return (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "pong" })),
        )
            .into_response();
    }
    match send(
        &state,
        Trigger::Fetch {
            reason: "webhook".into(),
        },
    ) {
        Ok(()) => accepted("fetch"),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cret "));
        assert!(!same_secret(b"", b"s3cret"));
    }

    #[test]
    fn github_signatures() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_ok(
            "It's a Secret to Everybody",
            b"Hello, World!",
            sig
        ));
        assert!(!github_signature_ok(
            "another secret",
            b"Hello, World!",
            sig
        ));
        assert!(!github_signature_ok(
            "It's a Secret to Everybody",
            b"Hello, World?",
            sig
        ));
        assert!(!github_signature_ok(
            "It's a Secret to Everybody",
            b"Hello, World!",
            "sha256=zz"
        ));
        assert!(!github_signature_ok(
            "It's a Secret to Everybody",
            b"Hello, World!",
            &sig.replace("sha256=", "sha1=")
        ));
    }
}
