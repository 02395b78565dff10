//! The dashboard: server-rendered HTML pages over the ledger (fleet, host, run, a deployment's
//! history with the diff between two applied commits), served by the `--listen` server beside
//! the API, plus `GET /events` (Server-Sent Events) and the one script and style sheet the
//! pages use. Pages work without JavaScript; the script only makes an open page update itself.
//!
//! Safe by default: templates are embedded in the binary with HTML auto-escaping on, every
//! answer carries a Content-Security-Policy that allows no inline script and nothing from
//! another origin, and with `--dashboard-require-token` every page and the event stream need
//! the API token. It reads the ledger and the config repository's recorded commits; it never
//! writes and never contacts a host.

mod config;
mod live;
mod status;
mod view;

pub use status::HostState;

use super::{ApiError, ServeState, with_ledger};
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The dashboard's settings, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The config repository (the watch loop's mirror), read at recorded commits for what the
    /// ledger does not hold: datacenters, ports, rollout settings, rendered configuration.
    pub repo: Option<PathBuf>,
    /// The drift interval: a host no run listed for twice this long is stale.
    pub drift_interval: Option<Duration>,
    /// Every page and `/events` need the API token (Bearer, or as the password of Basic
    /// authentication so that a browser can ask for it).
    pub require_token: bool,
}

/// Every dashboard route as (method, path); `docs/api.openapi.yaml` documents them too.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/hosts/{server}"),
    ("GET", "/runs/{id}"),
    ("GET", "/deployments/{client}/{deployment}/{profile}"),
    ("GET", "/events"),
    ("GET", "/static/dashboard.js"),
    ("GET", "/static/dashboard.css"),
];

/// No inline script or style, nothing from another origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes, to merge into the server's router: exactly [`ROUTES`].
pub fn routes() -> Router<Arc<ServeState>> {
    ROUTES.iter().fold(Router::new(), |r, &(method, path)| {
        let handler = match (method, path) {
            ("GET", "/") => get(fleet_page),
            ("GET", "/hosts/{server}") => get(host_page),
            ("GET", "/runs/{id}") => get(run_page),
            ("GET", "/deployments/{client}/{deployment}/{profile}") => get(deployment_page),
            ("GET", "/events") => get(events),
            ("GET", "/static/dashboard.js") => get(script),
            ("GET", "/static/dashboard.css") => get(style),
            _ => unreachable!("dashboard::ROUTES lists {method} {path} without a handler"),
        };
        r.route(path, handler)
    })
}

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        // Escape every value, whatever the template's name says.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        // Lenient: records omit empty optional fields (`message`), which then read as absent.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.add_filter("urlencode", urlencode);
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("macros.html", include_str!("templates/macros.html")),
            ("fleet.html", include_str!("templates/fleet.html")),
            ("host.html", include_str!("templates/host.html")),
            ("run.html", include_str!("templates/run.html")),
            ("deployment.html", include_str!("templates/deployment.html")),
        ] {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("dashboard template {name}: {e}"));
        }
        env
    })
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters stay).
fn urlencode(value: String) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Headers every dashboard answer carries.
fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show the ledger now: a refresh must ask again.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `None` when the request may see the pages; else the 401 answer.
fn refused(state: &ServeState, headers: &HeaderMap) -> Option<Response> {
    if !state.dashboard.require_token {
        return None;
    }
    // Without a token nothing can match: closed, not open (the CLI refuses that combination).
    let expected = state.api_token.as_deref().unwrap_or_default();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(scheme, value)| {
            if scheme.eq_ignore_ascii_case("bearer") {
                Some(value.trim().to_string())
            } else if scheme.eq_ignore_ascii_case("basic") {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                // Any user name: the token is the password.
                text.split_once(':')
                    .map(|(_, password)| password.to_string())
            } else {
                None
            }
        });
    if !expected.is_empty()
        && given.is_some_and(|g| super::auth::same_secret(g.as_bytes(), expected.as_bytes()))
    {
        return None;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "The dashboard needs the reconciler's API token: as a bearer token, or as the password \
         when the browser asks (any user name).\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"clarity dashboard\", charset=\"UTF-8\""),
    );
    Some(secured(response))
}

#[derive(Serialize)]
struct StateName {
    name: &'static str,
    label: &'static str,
}

fn state_names() -> Vec<StateName> {
    HostState::ALL
        .iter()
        .map(|s| StateName {
            name: s.name(),
            label: s.label(),
        })
        .collect()
}

/// Renders `template` with `page` plus what every page shows (time, newest run, busy).
fn render<T: Serialize>(
    state: &ServeState,
    template: &str,
    title: &str,
    newest_run: Option<String>,
    page: T,
) -> Response {
    let busy = state
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .busy
        .clone();
    let ctx = minijinja::context! {
        title => title,
        now => crate::clock::now_rfc3339(),
        busy => busy,
        newest_run => newest_run,
        states => state_names(),
        ..minijinja::Value::from_serialize(&page)
    };
    let rendered = templates()
        .get_template(template)
        .and_then(|t| t.render(ctx));
    match rendered {
        Ok(html) => {
            secured(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
        }
        Err(e) => {
            tracing::warn!("dashboard: rendering {template}: {e:#}");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render this page; the reconciler's log says why",
            )
        }
    }
}

fn error_page(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct Page<'a> {
        message: &'a str,
    }
    let env = templates();
    let html = env
        .render_str(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Clarity</title><link rel=\"stylesheet\" href=\"/static/dashboard.css\"></head><body><main id=\"main\"><h1>{{ message }}</h1><p><a href=\"/\">Fleet</a></p></main></body></html>",
            Page { message },
        )
        .unwrap_or_else(|_| "error".into());
    secured(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
    )
}

fn api_error(e: ApiError) -> Response {
    error_page(e.status, &e.message)
}

/// What a view needs from the loop besides the ledger, taken before the ledger is read on a
/// blocking thread.
struct ViewInputs {
    repo: Option<PathBuf>,
    busy: Option<String>,
    stale_after: Option<u64>,
    now: u64,
}

impl ViewInputs {
    fn of(state: &ServeState) -> ViewInputs {
        let busy = state
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .busy
            .clone();
        let stale_after = state
            .dashboard
            .drift_interval
            .map(|d| d.as_secs().saturating_mul(2));
        ViewInputs {
            repo: state.dashboard.repo.clone(),
            busy,
            stale_after,
            now: crate::clock::now_secs(),
        }
    }

    fn context(&self) -> view::Context<'_> {
        view::Context {
            repo: self.repo.as_deref(),
            busy: self.busy.clone(),
            stale_after: self.stale_after,
            now: self.now,
        }
    }
}

/// A page that one view of the ledger fills, titled `title`, or a 404 saying `missing` when the
/// view finds nothing (or there is no ledger yet).
async fn view_page<V, F>(
    state: &ServeState,
    template: &str,
    title: &str,
    missing: &str,
    build: F,
) -> Response
where
    V: Serialize + Send + 'static,
    F: FnOnce(
            &crate::ledger::Ledger,
            &view::Context,
        ) -> Result<Option<V>, crate::ledger::LedgerError>
        + Send
        + 'static,
{
    let inputs = ViewInputs::of(state);
    let found = with_ledger(state, move |l| {
        let Some(l) = l else { return Ok(None) };
        let newest = l.newest_run(None)?.map(|r| r.id);
        Ok(build(l, &inputs.context())?.map(|v| (v, newest)))
    })
    .await;
    match found {
        Ok(Some((view, newest))) => render(
            state,
            template,
            title,
            newest,
            minijinja::context! { view => view },
        ),
        Ok(None) => error_page(StatusCode::NOT_FOUND, missing),
        Err(e) => api_error(e),
    }
}

async fn fleet_page(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    filter: Result<Query<view::FleetFilter>, QueryRejection>,
) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let filter = match filter {
        Ok(Query(f)) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let inputs = ViewInputs::of(&state);
    let f = filter.clone();
    let fleet = with_ledger(&state, move |l| match l {
        Some(l) => view::fleet(l, &inputs.context(), &f).map(Some),
        None => Ok(None),
    })
    .await;
    match fleet {
        Ok(fleet) => {
            let fleet = fleet.unwrap_or_else(|| view::Fleet {
                hosts: Vec::new(),
                attention: Vec::new(),
                by_client: Vec::new(),
                by_datacenter: Vec::new(),
                clients: Vec::new(),
                datacenters: Vec::new(),
                profiles: Vec::new(),
                refusals: Vec::new(),
                paused: Vec::new(),
                newest_run: None,
                config_note: None,
            });
            let newest = fleet.newest_run.clone();
            render(
                &state,
                "fleet.html",
                "Fleet",
                newest,
                minijinja::context! { fleet => fleet, filter => filter },
            )
        }
        Err(e) => api_error(e),
    }
}

async fn host_page(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path(server): Path<String>,
) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let missing = format!("No run has listed a server `{server}`");
    let name = server.clone();
    view_page(&state, "host.html", &server, &missing, move |l, ctx| {
        view::host(l, ctx, &name)
    })
    .await
}

async fn run_page(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let missing = format!("No run with id `{id}`");
    let lookup = id.clone();
    view_page(
        &state,
        "run.html",
        &format!("Run {id}"),
        &missing,
        move |l, _| view::run(l, &lookup),
    )
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
    server: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Diff {
    from: Option<String>,
    to: Option<String>,
    server: Option<String>,
    /// (class, line) of the unified diff; empty when the two are the same.
    lines: Vec<(&'static str, String)>,
    /// The two were rendered and compared (`lines` empty then means equal).
    compared: bool,
    error: Option<String>,
}

async fn deployment_page(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Path((client, deployment, profile)): Path<(String, String, String)>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let repo = state.dashboard.repo.clone();
    let (c, d, p) = (client.clone(), deployment.clone(), profile.clone());
    let found = with_ledger(&state, move |l| {
        let Some(l) = l else { return Ok(None) };
        let newest = l.newest_run(None)?.map(|r| r.id);
        let Some(view) = view::deployment(l, &c, &d, &p)? else {
            return Ok(None);
        };
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let mut diff = Diff {
            server: nonempty(q.server).or_else(|| view.servers.first().cloned()),
            ..Diff::default()
        };
        // Only commits this deployment was applied at may be compared: the form offers no
        // other, and the repository is not read at arbitrary revisions for a request.
        let known = |c: &Option<String>| c.as_ref().filter(|c| view.commits.contains(c)).cloned();
        let (from, to) = (known(&nonempty(q.from)), known(&nonempty(q.to)));
        if let (Some(from), Some(to), Some(server)) = (&from, &to, &diff.server) {
            diff.error = match &repo {
                None => Some("the dashboard was started without the config repository".into()),
                Some(repo) => {
                    let doc = |c: &str| config::deployment_document(repo, c, server, &d, &p);
                    match (doc(from), doc(to)) {
                        (Ok(a), Ok(b)) => {
                            let text = config::unified_diff(
                                &a,
                                &b,
                                &format!("{}/{server}", config::short(from)),
                                &format!("{}/{server}", config::short(to)),
                            );
                            diff.lines = text
                                .lines()
                                .map(|line| {
                                    let class =
                                        if line.starts_with("+++") || line.starts_with("---") {
                                            "file"
                                        } else if line.starts_with('+') {
                                            "add"
                                        } else if line.starts_with('-') {
                                            "del"
                                        } else if line.starts_with('@') {
                                            "hunk"
                                        } else {
                                            "same"
                                        };
                                    (class, line.to_string())
                                })
                                .collect();
                            diff.compared = true;
                            None
                        }
                        (Err(e), _) | (_, Err(e)) => Some(e),
                    }
                }
            };
            diff.from = Some(from.clone());
            diff.to = Some(to.clone());
        } else if let [latest, older, ..] = view.commits.as_slice() {
            // Preselect the two newest commits in the form; nothing is compared until asked.
            diff.from = Some(older.clone());
            diff.to = Some(latest.clone());
        }
        Ok(Some((view, diff, newest)))
    })
    .await;
    match found {
        Ok(Some((view, diff, newest))) => render(
            &state,
            "deployment.html",
            &format!("{deployment} ({profile}) of {client}"),
            newest,
            minijinja::context! { view => view, diff => diff },
        ),
        Ok(None) => error_page(
            StatusCode::NOT_FOUND,
            &format!("No apply run has recorded {deployment} ({profile}) of {client}"),
        ),
        Err(e) => api_error(e),
    }
}

async fn events(State(state): State<Arc<ServeState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    secured(live::stream(state).into_response())
}

async fn script() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("static/dashboard.js"),
        )
            .into_response(),
    )
}

async fn style() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("static/dashboard.css"),
        )
            .into_response(),
    )
}
