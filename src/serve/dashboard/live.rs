//! `GET /events`: Server-Sent Events for open dashboard pages. Each connection watches the
//! loop's status (what runs now) and the ledger's newest run, and sends `busy` when the loop
//! starts or finishes a run, then `run` and one `host` event per host when a run is recorded.
//! It reads the same ledger the pages read, read-only; a page that receives `run` fetches
//! itself again.

use super::super::ServeState;
use crate::ledger::{Ledger, RunFilter};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often a connection looks at the status and the ledger.
const POLL: Duration = Duration::from_millis(500);

#[derive(Serialize)]
struct RunEvent {
    id: String,
    mode: String,
    outcome: String,
    commit: String,
    hosts: Vec<HostEvent>,
}

#[derive(Serialize, Clone)]
struct HostEvent {
    run: String,
    server: String,
    client: String,
    outcome: String,
}

struct Watcher {
    state: Arc<ServeState>,
    busy: Option<Option<String>>,
    newest: Option<Option<String>>,
    queue: VecDeque<Event>,
}

fn text<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn newest_run(state: &ServeState) -> Option<RunEvent> {
    let ledger = Ledger::open_reader(&state.ledger_path).ok()?;
    let run = ledger
        .runs(&RunFilter {
            limit: Some(1),
            ..RunFilter::default()
        })
        .ok()?
        .into_iter()
        .next()?;
    Some(RunEvent {
        hosts: run
            .hosts
            .iter()
            .map(|h| HostEvent {
                run: run.id.clone(),
                server: h.server.clone(),
                client: h.client.clone(),
                outcome: h.outcome.as_str().to_string(),
            })
            .collect(),
        mode: text(&run.mode),
        outcome: text(&run.outcome),
        commit: run.commit,
        id: run.id,
    })
}

impl Watcher {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Watcher)> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some((Ok(e), self));
            }
            let busy = self
                .state
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .busy
                .clone();
            if self.busy.as_ref() != Some(&busy) {
                let first = self.busy.is_none();
                self.busy = Some(busy.clone());
                if !first || busy.is_some() {
                    self.queue
                        .push_back(json_event("busy", &serde_json::json!({ "busy": busy })));
                }
            }
            let state = self.state.clone();
            let newest = tokio::task::spawn_blocking(move || newest_run(&state))
                .await
                .ok()
                .flatten();
            let id = newest.as_ref().map(|r| r.id.clone());
            if self.newest.as_ref() != Some(&id) {
                let first = self.newest.is_none();
                self.newest = Some(id);
                // The first `run` tells the page which run is newest now (it may have been
                // recorded after the page was rendered); `host` events are for later runs.
                if let Some(run) = newest {
                    if !first {
                        for h in &run.hosts {
                            self.queue.push_back(json_event("host", h));
                        }
                    }
                    self.queue.push_front(json_event("run", &run));
                }
            }
            if self.queue.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

fn json_event<T: Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "{}".into()))
}

pub(super) fn stream(state: Arc<ServeState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watcher = Watcher {
        state,
        busy: None,
        newest: None,
        queue: VecDeque::from([Event::default().event("hello").data("{}")]),
    };
    Sse::new(futures_util::stream::unfold(watcher, Watcher::next))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
