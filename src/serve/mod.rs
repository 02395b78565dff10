//! The watch loop's HTTP side: the read-only status API over the ledger, `/metrics`, and two
//! ways to wake the loop (`POST /api/v1/reconcile` with a bearer token, `POST /hooks/git` with
//! a signed push webhook). It never changes the ledger or a host: the writes it can cause are
//! a [`Trigger`] sent to the loop, which decides what to do with it.
//!
//! The ledger is opened per request, read-only, on a blocking thread; a missing ledger (no run
//! recorded yet) reads as empty. The token and the webhook secret are compared in constant
//! time and never logged or echoed. `docs/api.openapi.yaml` documents every route in
//! [`ROUTES`]; a test keeps the two in step.

mod auth;
pub mod dashboard;
pub mod guard;
mod handlers;
pub mod metrics;

pub use auth::github_signature_ok;
pub use guard::Access;

use crate::ledger::{Ledger, LedgerError};
use crate::watch::{Trigger, WatchStatus};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use metrics::Metrics;

/// What the handlers share.
pub struct ServeState {
    /// The SQLite ledger. Opened per request; a missing file reads as an empty ledger.
    pub ledger_path: PathBuf,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Mutex<WatchStatus>>,
    /// Where `POST /api/v1/reconcile` and `POST /hooks/git` send their requests.
    pub triggers: tokio::sync::mpsc::UnboundedSender<Trigger>,
    /// The bearer token `POST /api/v1/reconcile` requires; without one the endpoint is off.
    pub api_token: Option<String>,
    /// The push webhook's shared secret (GitHub HMAC key, GitLab token); without one the hook
    /// does not exist.
    pub webhook_secret: Option<String>,
    /// The dashboard's settings (its pages are merged into [`router`]).
    pub dashboard: dashboard::Options,
}

/// Every route as (method, path), in the path syntax of both axum and OpenAPI. [`router`]
/// mounts exactly these, and `docs/api.openapi.yaml` documents exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v1/runs/{id}"),
    ("GET", "/api/v1/hosts"),
    ("GET", "/api/v1/hosts/{server}"),
    ("GET", "/api/v1/deployments"),
    ("GET", "/api/v1/drift"),
    ("POST", "/api/v1/reconcile"),
    ("POST", "/hooks/git"),
];

/// The largest webhook body accepted (GitHub caps push payloads at 25 MB, but a push that
/// large says nothing the loop needs: it fetches the repository itself).
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

fn endpoint(method: &str, path: &str) -> MethodRouter<Arc<ServeState>> {
    match (method, path) {
        ("GET", "/healthz") => get(handlers::healthz),
        ("GET", "/metrics") => get(handlers::metrics),
        ("GET", "/api/v1/runs") => get(handlers::runs),
        ("GET", "/api/v1/runs/{id}") => get(handlers::run),
        ("GET", "/api/v1/hosts") => get(handlers::hosts),
        ("GET", "/api/v1/hosts/{server}") => get(handlers::host),
        ("GET", "/api/v1/deployments") => get(handlers::deployments),
        ("GET", "/api/v1/drift") => get(handlers::drift),
        ("POST", "/api/v1/reconcile") => post(auth::reconcile),
        ("POST", "/hooks/git") => {
            post(auth::git_hook).layer(axum::extract::DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
        }
        _ => unreachable!("ROUTES lists {method} {path} without a handler"),
    }
}

/// The status API's router, with `state` applied and the default [`Access`] (loopback
/// `Host` names, reads without a token).
pub fn router(state: Arc<ServeState>) -> axum::Router {
    router_with(state, Access::default())
}

/// The status API's router behind the [`guard`] for `access`.
pub fn router_with(state: Arc<ServeState>, access: Access) -> axum::Router {
    let guard = Arc::new(guard::Guard {
        access,
        state: state.clone(),
    });
    ROUTES
        .iter()
        .fold(axum::Router::new(), |r, &(method, path)| {
            r.route(path, endpoint(method, path))
        })
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

/// Serves [`router`] on `listener` until `shutdown` completes, then lets requests in flight
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServeState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, Access::default(), shutdown).await
}

/// Serves [`router_with`] on `listener`, HTTP/1.1 with a time limit on reading each request's
/// headers (a client that opens connections and sends nothing cannot hold them), until
/// `shutdown` completes; then idle connections close and requests in flight get
/// [`guard::REQUEST_TIMEOUT`] to finish.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<ServeState>,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router_with(state, access);
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("status API: accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(guard::HEADER_READ_TIMEOUT);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { closing.wait_for(|c| *c).await.map(drop) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(guard::REQUEST_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn internal(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}; the reconciler's log says why"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Runs `read` on a blocking thread with the ledger open, or with `None` when there is no
/// ledger yet. Failures are logged in full and answered with a 500 that names no path.
pub(crate) async fn with_ledger<T, F>(state: &ServeState, read: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Option<&Ledger>) -> Result<T, LedgerError> + Send + 'static,
{
    let path = state.ledger_path.clone();
    let joined = tokio::task::spawn_blocking(move || match Ledger::open_reader(&path) {
        Ok(ledger) => read(Some(&ledger)),
        Err(LedgerError::Missing { .. }) => read(None),
        Err(e) => Err(e),
    })
    .await;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::warn!("status API: {}", error_chain(&e));
            Err(ApiError::internal("cannot read the ledger"))
        }
        Err(e) => {
            tracing::warn!("status API: a ledger read failed: {e}");
            Err(ApiError::internal("cannot read the ledger"))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
