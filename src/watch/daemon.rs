//! The loop itself: triggers from ref changes, the poll and drift timers, the status API and
//! signals, coalesced into passes that never overlap.

use super::{Config, Pending, Runs, Trigger, WatchStatus, cycle, mirror};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs the loop until SIGTERM or SIGINT; the run in flight finishes first.
pub fn run(config: Config, runs: Arc<dyn Runs>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run_async(config, runs))
}

async fn run_async(config: Config, runs: Arc<dyn Runs>) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let status = Arc::new(Mutex::new(WatchStatus {
        started_at: crate::clock::now_rfc3339(),
        ..WatchStatus::default()
    }));
    let metrics = Arc::new(crate::serve::metrics::Metrics::new());
    let notifier = {
        let metrics = metrics.clone();
        crate::notify::Notifier::start(crate::notify::Retry::default(), move |ok| {
            metrics.observe_notification(ok)
        })
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Trigger>();
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    let mirror = {
        let (source, work_dir) = (config.source.clone(), config.work_dir.clone());
        tokio::task::spawn_blocking(move || mirror::Mirror::open(&source, &work_dir))
            .await
            .map_err(|e| e.to_string())??
    };
    tracing::info!(
        "watching {} (mirror {})",
        mirror::redact_url(&mirror.source),
        mirror.top.display()
    );
    let _watcher = match &mirror.local_git_dir {
        Some(git_dir) => Some(watch_refs(git_dir, tx.clone())?),
        None => None,
    };

    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = match config.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!("status API on http://{bound}/ (metrics at /metrics)");
            let state = Arc::new(crate::serve::ServeState {
                ledger_path: config.ledger.clone(),
                metrics: metrics.clone(),
                status: status.clone(),
                triggers: tx.clone(),
                api_token: config.api_token.clone(),
                webhook_secret: config.webhook_secret.clone(),
                dashboard: crate::serve::dashboard::Options {
                    repo: Some(mirror.root.clone()),
                    drift_interval: config.drift_interval,
                    require_token: config.dashboard_require_token,
                },
            });
            Some(tokio::spawn(crate::serve::serve_with(
                listener,
                state,
                config.api_access.clone(),
                async {
                    let _ = shutdown_rx.await;
                },
            )))
        }
        None => None,
    };

    let poll_interval = config.poll_interval;
    let drift_interval = config.drift_interval;
    let cycle = Arc::new(cycle::Cycle {
        config,
        mirror,
        runs,
        metrics,
        notifier,
        status: status.clone(),
    });
    let _ = tx.send(Trigger::Fetch {
        reason: "start".into(),
    });
    let mut jitter = Jitter::new();
    let mut next_poll = tokio::time::Instant::now() + jitter.around(poll_interval);
    let mut next_drift = drift_interval.map(|d| tokio::time::Instant::now() + d);
    let stopping = |status: &Mutex<WatchStatus>| {
        crate::apply::request_stop();
        status.lock().expect("status lock").stopping = true;
        tracing::info!("stopping: the run in flight finishes its hosts; nothing new is started");
    };
    loop {
        let mut work = Pending::default();
        tokio::select! {
            Some(t) = rx.recv() => work.add(t),
            _ = tokio::time::sleep_until(next_poll) => {
                work.add(Trigger::Fetch { reason: "poll".into() });
                next_poll = tokio::time::Instant::now() + jitter.around(poll_interval);
            }
            _ = sleep_until_opt(next_drift) => {
                work.add(Trigger::Drift { reason: "interval".into() });
                next_drift = drift_interval.map(|d| tokio::time::Instant::now() + d);
            }
            _ = sigterm.recv() => { stopping(&status); break; }
            _ = sigint.recv() => { stopping(&status); break; }
        }
        // Let a burst of pushes or file events settle, then take everything that came in.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(t) = rx.try_recv() {
            work.add(t);
        }
        if work.is_empty() {
            continue;
        }
        let job = {
            let cycle = cycle.clone();
            tokio::task::spawn_blocking(move || cycle.run(&work))
        };
        tokio::pin!(job);
        let mut stop_seen = false;
        loop {
            tokio::select! {
                done = &mut job => {
                    if let Err(e) = done {
                        tracing::error!("the run panicked: {e}");
                    }
                    break;
                }
                _ = sigterm.recv(), if !stop_seen => { stopping(&status); stop_seen = true; }
                _ = sigint.recv(), if !stop_seen => { stopping(&status); stop_seen = true; }
            }
        }
        if stop_seen {
            break;
        }
    }
    let _ = shutdown_tx.send(());
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ref changes of a local source repository become fetch triggers.
fn watch_refs(
    git_dir: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<Trigger>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::{RecursiveMode, Watcher};
    let own = git_dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
            && !only_notes(&own, &e.paths)
        {
            let _ = tx.send(Trigger::Fetch {
                reason: "ref change".into(),
            });
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", git_dir.display()))?;
    watcher
        .watch(&git_dir.join("refs"), RecursiveMode::Recursive)
        .and_then(|_| watcher.watch(git_dir, RecursiveMode::NonRecursive))
        .map_err(|e| format!("cannot watch {}: {e}", git_dir.display()))?;
    Ok(watcher)
}

/// Whether an event touched nothing but the notes refs (which the loop itself writes after each
/// run): those must not trigger another pass, or every run would schedule the next.
fn only_notes(git_dir: &std::path::Path, paths: &[std::path::PathBuf]) -> bool {
    let notes = git_dir.join("refs").join("notes");
    !paths.is_empty() && paths.iter().all(|p| p.starts_with(&notes))
}

/// ±10% around an interval, so many reconcilers polling one server do not fetch in step.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = u64::from(crate::clock::since_epoch().subsec_nanos())
            ^ u64::from(std::process::id()) << 32;
        Jitter(seed | 1)
    }

    fn around(&mut self, d: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let tenth = d.as_millis() as u64 / 10;
        let offset = if tenth == 0 {
            0
        } else {
            self.0 % (2 * tenth + 1)
        };
        Duration::from_millis(d.as_millis() as u64 - tenth + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn note_writes_do_not_trigger_a_pass() {
        let git = Path::new("/srv/config/.git");
        let note = |p: &str| git.join(p);
        assert!(only_notes(
            git,
            &[note("refs/notes/clarity"), note("refs/notes/clarity.lock")]
        ));
        assert!(!only_notes(
            git,
            &[note("refs/notes/clarity"), note("refs/heads/main")]
        ));
        assert!(!only_notes(git, &[note("packed-refs")]));
        assert!(!only_notes(git, &[] as &[PathBuf]));
    }
}
