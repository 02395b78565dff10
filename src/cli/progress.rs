//! How a one-shot apply reports its progress: every step as a line on stdout (exactly as when
//! piped, so scripts keep reading the same text), and on a terminal's stderr one live line per
//! host (`indicatif`) saying what it does now, with bytes and rate while it downloads. When
//! stderr is not a terminal nothing is drawn at all. It observes the apply; it changes nothing.

use crate::apply::fleet;
use crate::failure_text::{LINE_LIMIT, first_line};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// The apply's observer for the command line.
pub struct Progress {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    hosts: Mutex<BTreeMap<String, ProgressBar>>,
    /// Hosts whose line shows a download now (bytes and rate) rather than a step.
    downloading: Mutex<BTreeSet<String>>,
}

impl Progress {
    /// Live per-host lines when stderr is a terminal; plain step lines on stdout always.
    pub fn new() -> Progress {
        let bars = std::io::stderr().is_terminal().then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            hosts: Mutex::new(BTreeMap::new()),
            downloading: Mutex::new(BTreeSet::new()),
        });
        Progress { bars }
    }

    /// Ends every host's line, leaving its last state on the terminal.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            for bar in lock(&b.hosts).values() {
                bar.finish();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking drawer leaves the bars usable: they only ever hold display state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold}: {wide_msg}").expect("a valid template")
}

fn download_style(total: bool) -> ProgressStyle {
    let template = if total {
        "{spinner} {prefix:.bold}: {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)"
    } else {
        "{spinner} {prefix:.bold}: {msg} {binary_bytes} ({binary_bytes_per_sec})"
    };
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

impl Bars {
    /// The host's line, made on its first event.
    fn host(&self, server: &str) -> ProgressBar {
        lock(&self.hosts)
            .entry(server.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(spinner_style());
                bar.set_prefix(server.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Stops the spinners' ticking wherever the caller forgot to.
        self.finish();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl fleet::Observer for Progress {
    fn line(&self, text: &str) {
        let Some(b) = &self.bars else {
            println!("{text}");
            return;
        };
        // Step lines start with the host they are about (`host: deployment: step: ok`); a
        // halt or a held unit (`client/deployment/profile: ...`) is about no one host.
        if let Some((server, rest)) = text.split_once(": ")
            && server != "halt"
            && !server.contains('/')
        {
            let bar = b.host(server);
            if lock(&b.downloading).remove(server) {
                bar.set_style(spinner_style());
                bar.unset_length();
            }
            bar.set_message(first_line(rest, LINE_LIMIT).0);
        }
        // Printing through the bars keeps stdout's lines from tearing the live ones.
        b.multi.suspend(|| println!("{text}"));
    }

    fn progress(&self, server: &str, deployment: &str, downloaded: u64, total: Option<u64>) {
        let Some(b) = &self.bars else { return };
        let bar = b.host(server);
        let total = total.filter(|t| *t > 0);
        if lock(&b.downloading).insert(server.to_string()) || bar.length() != total {
            bar.set_style(download_style(total.is_some()));
            match total {
                Some(t) => bar.set_length(t),
                None => bar.unset_length(),
            }
            bar.reset_elapsed();
            bar.set_position(0);
        }
        bar.set_message(format!("{deployment}: downloading"));
        bar.set_position(downloaded);
    }
}
