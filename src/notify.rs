//! Notifications: JSON webhooks for failed applies, rollbacks, drift and refusals, retried with
//! backoff on threads of their own so they never hold up the watch loop.
//!
//! [`Notifier::send`] never blocks: it puts the event on each subscribed target's bounded
//! queue (dropping, and counting, what does not fit) and returns. Each target URL has a
//! delivery thread of its own, started when the first event for it is sent: it posts that
//! target's events in the order they happened, retrying each with backoff before the next. A
//! target that is down or hangs therefore delays only its own events; the others are
//! delivered at once. Targets are few (a chat hook, an incident tool), so a thread each is
//! cheap, and blocking HTTP with sleeps between attempts stays simple.
//!
//! Payloads come from run records, which carry only redacted text. Target URLs are not logged
//! beyond their origin: a chat webhook's path is its credential.

use crate::model::run::{HostOutcome, RunRecord};
use crate::model::{NotifyEvent, NotifyTarget};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events waiting for one target; more are dropped.
pub const QUEUE_CAPACITY: usize = 256;
/// Failed hosts listed in a run payload; the count says how many there were in all.
const PAYLOAD_HOSTS: usize = 50;

/// How deliveries are retried: `attempts` in all, the waits between them doubling from
/// `first_delay` up to `max_delay`, each attempt limited to `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Retry {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// What a lane thread posts.
struct Delivery {
    event: NotifyEvent,
    body: Arc<Vec<u8>>,
}

/// `on_result`, callable from every lane thread.
type Report = Arc<Mutex<Box<dyn Fn(bool) + Send>>>;

fn report(on_result: &Report, ok: bool) {
    (on_result.lock().unwrap_or_else(|p| p.into_inner()))(ok);
}

/// Sends events to the targets subscribed to them. Cheap to call from the loop.
pub struct Notifier {
    retry: Retry,
    agent: ureq::Agent,
    on_result: Report,
    targets: Mutex<Vec<NotifyTarget>>,
    /// One delivery thread per target URL, fed through a bounded queue.
    lanes: Mutex<BTreeMap<String, SyncSender<Delivery>>>,
    /// The delivery threads, joined by [`Notifier::finish`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl Notifier {
    /// A notifier with no targets yet. Each target URL gets a delivery thread of its own when
    /// the first event for it is sent. `on_result` is called (on that thread, or on the
    /// sender's when a queue is full) once per event and target with the final result:
    /// `true` delivered, `false` given up on (a 4xx answer, retries exhausted) or dropped. It
    /// should return quickly, like a metrics update.
    pub fn start(retry: Retry, on_result: impl Fn(bool) + Send + 'static) -> Notifier {
        Notifier {
            agent: agent(&retry),
            retry,
            on_result: Arc::new(Mutex::new(Box::new(on_result))),
            targets: Mutex::new(Vec::new()),
            lanes: Mutex::new(BTreeMap::new()),
            threads: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Replaces the targets (from `notify:` in clarity.yml). Events already queued for a
    /// target that is gone are still delivered; then its thread ends.
    pub fn set_targets(&self, targets: Vec<NotifyTarget>) {
        self.lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|url, _| targets.iter().any(|t| &t.url == url));
        *self.targets.lock().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    /// Queues `event` for every target subscribed to it, as `{"event": ..., "at": ...,
    /// ...payload}` (an object payload's fields are merged in; any other payload goes under
    /// `data`). Never blocks: when a target's queue is full the event is dropped for it and
    /// counted.
    pub fn send(&self, event: NotifyEvent, payload: serde_json::Value) {
        let mut urls: Vec<String> = self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| t.events.contains(&event))
            .map(|t| t.url.clone())
            .collect();
        urls.sort();
        urls.dedup();
        if urls.is_empty() {
            return;
        }
        let body = Arc::new(body(event, &crate::clock::now_rfc3339(), payload));
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        for url in urls {
            let mut delivery = Delivery {
                event,
                body: body.clone(),
            };
            // Twice at most: a lane whose thread is gone (it panicked) is started anew.
            for _ in 0..2 {
                let Some(lane) = self.lane(&mut lanes, &url) else {
                    self.drop_one(event, &url, "its delivery thread could not start");
                    break;
                };
                match lane.try_send(delivery) {
                    Ok(()) => break,
                    Err(TrySendError::Full(_)) => {
                        self.drop_one(event, &url, "its queue is full");
                        break;
                    }
                    Err(TrySendError::Disconnected(d)) => {
                        lanes.remove(&url);
                        delivery = d;
                    }
                }
            }
        }
    }

    /// The queue of `url`'s delivery thread, started when there is none.
    fn lane<'l>(
        &self,
        lanes: &'l mut BTreeMap<String, SyncSender<Delivery>>,
        url: &str,
    ) -> Option<&'l SyncSender<Delivery>> {
        if !lanes.contains_key(url) {
            let (queue, deliveries) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
            let lane = Lane {
                url: url.to_string(),
                agent: self.agent.clone(),
                retry: self.retry.clone(),
                on_result: self.on_result.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name("clarity-notify".into())
                .spawn(move || lane.run(deliveries));
            match spawned {
                Err(e) => {
                    tracing::warn!(
                        "cannot start a notification thread for {}: {e}",
                        origin(url)
                    );
                    return None;
                }
                Ok(handle) => {
                    let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
                    // Threads of targets that are gone have ended; keep only live handles.
                    threads.retain(|t| !t.is_finished());
                    threads.push(handle);
                }
            }
            lanes.insert(url.to_string(), queue);
        }
        lanes.get(url)
    }

    fn drop_one(&self, event: NotifyEvent, url: &str, why: &str) {
        let before = self.dropped.fetch_add(1, Ordering::Relaxed);
        // A target that is down for long drops every event; one line per hundred says so.
        if before.is_multiple_of(100) {
            tracing::warn!(
                "dropped the `{}` notification to {}: {why} ({} dropped in all)",
                event.as_str(),
                origin(url),
                before + 1
            );
        }
        report(&self.on_result, false);
    }

    /// Waits until every queued event was delivered or given up on, then stops the delivery
    /// threads.
    pub fn finish(self) {
        let lanes = std::mem::take(&mut *self.lanes.lock().unwrap_or_else(|p| p.into_inner()));
        drop(lanes);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Deliveries dropped so far (a target's queue was full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn body(event: NotifyEvent, at: &str, payload: serde_json::Value) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    object.insert("event".into(), event.as_str().into());
    object.insert("at".into(), at.into());
    match payload {
        serde_json::Value::Object(fields) => {
            for (k, v) in fields {
                if k != "event" && k != "at" {
                    object.insert(k, v);
                }
            }
        }
        serde_json::Value::Null => {}
        other => {
            object.insert("data".into(), other);
        }
    }
    serde_json::to_vec(&serde_json::Value::Object(object)).expect("JSON values serialize")
}

/// The notifications a recorded run raises, whatever started it (a one-shot apply, drift or
/// rollback, or the watch loop): a failed apply, a rollback on some host, drift found.
/// `drift_findings` is how many findings a drift run recorded.
pub fn events_of(run: &RunRecord, drift_findings: usize) -> Vec<(NotifyEvent, serde_json::Value)> {
    use crate::model::run::{RunMode, RunOutcome};
    let payload = run_payload(run);
    let mut events = Vec::new();
    if run.mode == RunMode::Apply && run.outcome == RunOutcome::Failed {
        events.push((NotifyEvent::ApplyFailed, payload.clone()));
    }
    if run.hosts.iter().any(|h| h.outcome.is_rollback()) {
        events.push((NotifyEvent::Rollback, payload.clone()));
    }
    if run.mode == RunMode::Drift && drift_findings > 0 {
        let mut payload = payload;
        payload["drift_findings"] = serde_json::json!(drift_findings);
        events.push((NotifyEvent::Drift, payload));
    }
    events
}

/// Sends a one-shot run's notifications and waits for them (the process exits right after),
/// with a short retry so a dead target delays the command by seconds, not minutes. A target
/// that cannot be reached is warned about on stderr; it never changes the exit code.
pub fn deliver_now(targets: &[NotifyTarget], run: &RunRecord, drift_findings: usize) {
    let events = events_of(run, drift_findings);
    if events.is_empty() || targets.is_empty() {
        return;
    }
    let retry = Retry {
        attempts: 3,
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    };
    let notifier = Notifier::start(retry, |_| {});
    notifier.set_targets(targets.to_vec());
    for (event, payload) in events {
        notifier.send(event, payload);
    }
    notifier.finish();
}

/// A compact summary of a run for a notification: what ran, how it ended, and which hosts
/// did not converge, with their (redacted) messages and first failed step.
pub fn run_payload(run: &RunRecord) -> serde_json::Value {
    let failed: Vec<_> = run
        .hosts
        .iter()
        .filter(|h| {
            h.outcome.is_rollback()
                || matches!(h.outcome, HostOutcome::Failed | HostOutcome::Unreachable)
        })
        .collect();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for h in &run.hosts {
        *outcomes.entry(h.outcome.as_str()).or_default() += 1;
    }
    let failed_hosts: Vec<_> = failed
        .iter()
        .take(PAYLOAD_HOSTS)
        .map(|h| {
            let mut host = serde_json::json!({
                "server": h.server,
                "client": h.client,
                "outcome": h.outcome,
            });
            if let Some(m) = &h.message {
                host["message"] = m.as_str().into();
            }
            if let Some(step) = h
                .steps
                .iter()
                .find(|s| s.status == crate::model::apply::StepStatus::Failed)
            {
                let mut s = serde_json::json!({
                    "deployment": step.deployment,
                    "action": step.action,
                    "target": step.target,
                });
                if let Some(m) = &step.message {
                    s["message"] = m.as_str().into();
                }
                host["failed_step"] = s;
            }
            host
        })
        .collect();
    let mut payload = serde_json::json!({
        "run_id": run.id,
        "commit": run.commit,
        "branch": run.branch,
        "mode": run.mode,
        "outcome": run.outcome,
        "trigger": run.trigger,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "host_count": run.hosts.len(),
        "host_outcomes": outcomes,
        "failed_host_count": failed.len(),
        "failed_hosts": failed_hosts,
    });
    if let Some(m) = &run.message {
        payload["message"] = m.as_str().into();
    }
    payload
}

fn agent(retry: &Retry) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(retry.timeout))
        .http_status_as_error(false)
        // A redirect is a misconfigured target; following it would re-send the body elsewhere.
        .max_redirects(0)
        .user_agent(concat!("clarity-reconcile/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// `scheme://host[:port]` of a target, for log lines.
fn origin(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                let host = authority.as_str().rsplit('@').next().unwrap_or_default();
                format!("{scheme}://{host}")
            }
            _ => "(a URL without a host)".into(),
        },
        Err(_) => "(an invalid URL)".into(),
    }
}

enum Attempt {
    Delivered,
    /// Worth another try: a 5xx, 408 or 429 answer, a timeout, a connection failure.
    Transient(String),
    /// Will not get better by repeating it: another 4xx answer, a redirect, a bad URL.
    Permanent(String),
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Attempt {
    let response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body);
    match response {
        Ok(r) => {
            let status = r.status().as_u16();
            match status {
                200..=299 => Attempt::Delivered,
                408 | 429 | 500..=599 => Attempt::Transient(format!("HTTP {status}")),
                _ => Attempt::Permanent(format!("HTTP {status}")),
            }
        }
        Err(ureq::Error::BadUri(_)) => Attempt::Permanent("not a valid URL".into()),
        Err(ureq::Error::Timeout(t)) => Attempt::Transient(format!("timed out ({t})")),
        Err(e) => Attempt::Transient(e.to_string()),
    }
}

/// One target's delivery thread: its events in order, each retried until delivered or given
/// up on. Ends when the notifier drops the queue (the target is gone) and the queue is empty.
struct Lane {
    url: String,
    agent: ureq::Agent,
    retry: Retry,
    on_result: Report,
}

impl Lane {
    fn run(self, deliveries: Receiver<Delivery>) {
        for delivery in deliveries {
            let ok = self.deliver(&delivery);
            report(&self.on_result, ok);
        }
    }

    fn deliver(&self, delivery: &Delivery) -> bool {
        let event = delivery.event.as_str();
        let mut failures = 0;
        loop {
            match post(&self.agent, &self.url, &delivery.body) {
                Attempt::Delivered => return true,
                Attempt::Permanent(why) => {
                    tracing::warn!(
                        "the `{event}` notification to {} was refused ({why}); not retrying",
                        origin(&self.url)
                    );
                    return false;
                }
                Attempt::Transient(why) => {
                    failures += 1;
                    if failures >= self.retry.attempts.max(1) {
                        tracing::warn!(
                            "gave up on the `{event}` notification to {} after {failures} \
                             attempts ({why})",
                            origin(&self.url)
                        );
                        return false;
                    }
                    tracing::debug!(
                        attempt = failures,
                        retry_in_ms = self.retry.delay(failures).as_millis() as u64,
                        "notify: the `{event}` notification to {} failed ({why}); trying again",
                        origin(&self.url)
                    );
                    std::thread::sleep(self.retry.delay(failures));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let r = Retry::default();
        let secs: Vec<u64> = (1..=8).map(|n| r.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(r.delay(1000), Duration::from_secs(60));
    }

    #[test]
    fn bodies_merge_the_payload() {
        let b = body(
            NotifyEvent::Drift,
            "2026-11-01T09:30:00Z",
            serde_json::json!({"run_id": "r1", "event": "forged"}),
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "drift", "at": "2026-11-01T09:30:00Z", "run_id": "r1"})
        );
        let b = body(NotifyEvent::Refused, "t", serde_json::json!([1]));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["data"], serde_json::json!([1]));
    }

    #[test]
    fn origins_hide_paths_and_credentials() {
        assert_eq!(
            origin("https://hooks.example.com/services/T000/B000/XXXX"),
            "https://hooks.example.com"
        );
        assert_eq!(
            origin("http://user:pw@example.com:8080/x?y"),
            "http://example.com:8080"
        );
        assert_eq!(origin("not a url"), "(an invalid URL)");
    }
}
