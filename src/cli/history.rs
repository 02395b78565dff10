//! `clarity-reconcile history`: what ran where, when, from which commit and with what result,
//! read from the ledger. Lists runs (`history`), prints one run step by step (`history show`)
//! and recreates a lost ledger from the git notes (`history rebuild`). Listing and showing
//! change nothing (opening an old ledger upgrades its schema); `rebuild` only ever creates a
//! new file.

use super::{CliError, CliResult, Exit, GlobalArgs, Output, SelectionArgs, StateArgs};
use crate::ledger::{Ledger, RunFilter, RunSummary};
use crate::model::run::RunRecord;
use clap::{Args, Subcommand};

/// Show what ran where, when, from which commit and with what result: the runs in the ledger,
/// newest first, each with its hosts' outcomes and the versions they ended with. `--client`
/// and `--server` select runs with a matching host (and list only those hosts). `history show
/// RUN` prints every step of one run; `history rebuild` recreates the ledger from the git
/// notes of the config repository (`--repo`).
#[derive(Debug, Args)]
#[command(
    mut_arg("work_dir", |a| a.global(true)),
    mut_arg("ledger", |a| a.global(true)),
    mut_arg("client", |a| a.global(true)),
    mut_arg("profile", |a| a.global(true)),
    mut_arg("server", |a| a.global(true))
)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub action: Option<HistoryAction>,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Only runs in which a host recorded, or ran a step for, this deployment.
    #[arg(long, value_name = "NAME")]
    pub deployment: Option<String>,
    /// Only runs started at or after this time: a date (`2026-11-01`), a UTC time
    /// (`2026-11-01T08:00:00Z`) or an age (`90m`, `12h`, `7d`, `2w`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many runs, the newest; 0 lists all.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum HistoryAction {
    /// Every step of one run: per host, each deployment's steps with status, duration, bytes
    /// fetched and message.
    Show {
        /// The run id, or enough of its start to be unique.
        run: String,
    },
    /// Create a fresh ledger from the run records in the git notes (`refs/notes/clarity`) of
    /// the config repository given with --repo, for instance after a corrupt ledger was moved
    /// aside. Refuses to replace an existing ledger.
    Rebuild,
}

pub fn run(global: &GlobalArgs, args: &HistoryArgs) -> CliResult {
    let path = args.state.ledger_path();
    match &args.action {
        None => list(global, args, &path),
        Some(HistoryAction::Show { run }) => show(global, &path, run),
        Some(HistoryAction::Rebuild) => rebuild(global, &path),
    }
}

fn list(global: &GlobalArgs, args: &HistoryArgs, path: &std::path::Path) -> CliResult {
    let since = match &args.since {
        Some(s) => Some(parse_since(s, crate::clock::now_secs()).map_err(|e| {
            CliError::new(format!("--since {s}: {e}")).hint(
                "give a date (2026-11-01), a UTC time (2026-11-01T08:00:00Z) or an age (12h, 7d)",
            )
        })?),
        None => None,
    };
    let filter = RunFilter {
        client: args.selection.client.clone(),
        server: args.selection.server.clone(),
        deployment: args.deployment.clone(),
        since,
        limit: (args.limit > 0).then_some(args.limit),
        mode: None,
    };
    let ledger = Ledger::open_existing(path)?;
    let runs = ledger.runs(&filter)?;
    let mut out = String::new();
    match global.output {
        Output::Json => {
            out.push_str(&serde_json::to_string_pretty(&runs).expect("summaries serialize"));
            out.push('\n');
        }
        Output::Markdown => render_markdown(&runs, &mut out),
        Output::Text => {
            render_text(&runs, &mut out);
            if runs.is_empty() {
                out.push_str("no runs match\n");
            } else if filter.limit == Some(runs.len()) {
                out.push_str(&format!(
                    "(the newest {} runs; --limit 0 lists all)\n",
                    runs.len()
                ));
            }
        }
    }
    print_out(&out);
    Ok(Exit::Ok)
}

/// Writes to stdout, treating a closed pipe (`history | head`) as the reader being done.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn render_text(runs: &[RunSummary], out: &mut String) {
    for r in runs {
        out.push_str(&format!(
            "{}  {}  {}  {}  commit {}{}  by {}\n",
            r.id,
            r.started_at,
            enum_text(&r.mode),
            enum_text(&r.outcome),
            short(&r.commit),
            r.branch
                .as_deref()
                .map(|b| format!(" ({b})"))
                .unwrap_or_default(),
            r.trigger
        ));
        let w_server = r.hosts.iter().map(|h| h.server.len()).max().unwrap_or(0);
        let w_client = r.hosts.iter().map(|h| h.client.len()).max().unwrap_or(0);
        let w_outcome = r
            .hosts
            .iter()
            .map(|h| h.outcome.as_str().len())
            .max()
            .unwrap_or(0);
        let durations: Vec<String> = r.hosts.iter().map(|h| seconds(h.duration_ms)).collect();
        let w_duration = durations.iter().map(String::len).max().unwrap_or(0);
        for (h, duration) in r.hosts.iter().zip(&durations) {
            let deps: Vec<String> = h
                .deployments
                .iter()
                .map(|d| {
                    format!(
                        "{} {}{}",
                        d.name,
                        d.version,
                        if d.healthy { "" } else { " (unhealthy)" }
                    )
                })
                .collect();
            let mut line = format!(
                "    {:w_server$}  {:w_client$}  {:w_outcome$}  {:>w_duration$}  {}",
                h.server,
                h.client,
                h.outcome.as_str(),
                duration,
                deps.join(", ")
            );
            if let Some(m) = &h.message {
                line.push_str("  ");
                line.push_str(m);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if r.hosts.len() < r.host_count {
            out.push_str(&format!(
                "    ({} of {} hosts match the filter)\n",
                r.hosts.len(),
                r.host_count
            ));
        }
        if r.drift_findings > 0 {
            out.push_str(&format!("    {} drift findings\n", r.drift_findings));
        }
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn render_markdown(runs: &[RunSummary], out: &mut String) {
    out.push_str("| run | started | mode | outcome | commit | hosts |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for r in runs {
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|h| md_cell(&format!("{} {}", h.server, h.outcome)))
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | `{}` | {} |\n",
            md_cell(&r.id),
            md_cell(&r.started_at),
            enum_text(&r.mode),
            enum_text(&r.outcome),
            short(&r.commit),
            hosts.join("<br>")
        ));
    }
}

fn show(global: &GlobalArgs, path: &std::path::Path, wanted: &str) -> CliResult {
    let ledger = Ledger::open_existing(path)?;
    let record = match ledger.run(wanted)? {
        Some(r) => r,
        None => {
            let ids = ledger.run_ids_with_prefix(wanted)?;
            match ids.as_slice() {
                [one] => ledger.run(one)?.ok_or_else(|| no_such_run(wanted))?,
                [] => return Err(no_such_run(wanted)),
                many => {
                    return Err(CliError::new(format!(
                        "`{wanted}` matches {} runs: {}{}",
                        many.len(),
                        many.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                        if many.len() > 5 { ", …" } else { "" }
                    ))
                    .hint("give more of the run id"));
                }
            }
        }
    };
    let findings = ledger.drift_findings(&record.id)?;
    let mut out = String::new();
    match global.output {
        Output::Json => {
            let mut value = serde_json::to_value(&record).expect("records serialize");
            if !findings.is_empty() {
                value["drift_findings"] =
                    serde_json::to_value(&findings).expect("findings serialize");
            }
            out.push_str(&serde_json::to_string_pretty(&value).expect("records serialize"));
            out.push('\n');
        }
        Output::Text | Output::Markdown => render_run(&record, &findings, &mut out),
    }
    print_out(&out);
    Ok(Exit::Ok)
}

fn no_such_run(wanted: &str) -> CliError {
    CliError::new(format!("no run `{wanted}` in the ledger"))
        .hint("`clarity-reconcile history` lists the runs with their ids")
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn render_run(r: &RunRecord, findings: &[crate::model::run::DriftFinding], out: &mut String) {
    out.push_str(&format!("run       {}\n", r.id));
    out.push_str(&format!(
        "mode      {}, outcome {}\n",
        enum_text(&r.mode),
        enum_text(&r.outcome)
    ));
    out.push_str(&format!(
        "commit    {}{}\n",
        r.commit,
        r.branch
            .as_deref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default()
    ));
    out.push_str(&format!("trigger   {}\n", r.trigger));
    out.push_str(&format!("started   {}\n", r.started_at));
    out.push_str(&format!("finished  {}\n", r.finished_at));
    if let Some(m) = &r.message {
        out.push_str(&format!("message   {m}\n"));
    }
    for h in &r.hosts {
        out.push_str(&format!(
            "\n{} ({}): {} in {}",
            h.server,
            h.client,
            h.outcome,
            seconds(h.duration_ms)
        ));
        if let Some(m) = &h.message {
            out.push_str(&format!(": {m}"));
        }
        out.push('\n');
        for d in &h.deployments {
            out.push_str(&format!(
                "  {} {} ({}), release {}, {}\n",
                d.name,
                d.version,
                d.profile,
                d.release,
                if d.healthy { "healthy" } else { "UNHEALTHY" }
            ));
        }
        if h.steps.is_empty() {
            out.push_str("  no steps\n");
            continue;
        }
        let rows: Vec<[String; 7]> = h
            .steps
            .iter()
            .map(|s| {
                [
                    s.deployment.clone(),
                    s.action.verb().to_string(),
                    s.target.clone(),
                    enum_text(&s.status),
                    seconds(s.duration_ms),
                    s.bytes.map(bytes).unwrap_or_default(),
                    s.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let header = [
            "DEPLOYMENT",
            "STEP",
            "TARGET",
            "STATUS",
            "DURATION",
            "BYTES",
            "MESSAGE",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 7]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                s.push_str("  ");
                // Durations and sizes read best right-aligned.
                if i == 4 || i == 5 {
                    s.push_str(&format!("{cell:>w$}"));
                } else {
                    s.push_str(&format!("{cell:w$}"));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        out.push_str(&line(header));
        for row in &rows {
            out.push_str(&line(row.each_ref().map(String::as_str)));
        }
    }
    if !findings.is_empty() {
        out.push_str("\ndrift findings:\n");
        for f in findings {
            out.push_str(&format!(
                "  {} ({}) {}: {}: {}\n",
                f.server, f.client, f.deployment, f.kind, f.detail
            ));
        }
    }
}

fn rebuild(global: &GlobalArgs, path: &std::path::Path) -> CliResult {
    let report = Ledger::rebuild_from_notes(path, &global.repo)?;
    for s in &report.skipped {
        tracing::warn!("skipped an unreadable run record in the note on {s}");
    }
    println!(
        "rebuilt {} from {} note{}: {} run{}",
        path.display(),
        report.notes,
        if report.notes == 1 { "" } else { "s" },
        report.runs,
        if report.runs == 1 { "" } else { "s" }
    );
    Ok(Exit::Ok)
}

/// `--since` as the RFC 3339 lower bound the ledger compares start times with.
fn parse_since(s: &str, now: u64) -> Result<String, String> {
    let s = s.trim();
    let unit = s.chars().last().unwrap_or(' ');
    let number = &s[..s.len() - unit.len_utf8().min(s.len())];
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{s}` is too large an age"))?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "unknown unit `{unit}` in an age (use s, m, h, d or w)"
                ));
            }
        };
        return Ok(crate::clock::rfc3339(
            now.saturating_sub(n.saturating_mul(secs)),
        ));
    }
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let date = b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10);
    let time = b.len() == 20
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z';
    if date && (b.len() == 10 || time) {
        Ok(s.to_string())
    } else {
        Err("not a date, a UTC time ending in Z, or an age".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_dates_utc_times_and_ages() {
        let now = 1_795_000_000; // 2026-11-18T11:06:40Z
        assert_eq!(parse_since("2026-11-01", now).unwrap(), "2026-11-01");
        assert_eq!(
            parse_since("2026-11-01T08:00:00Z", now).unwrap(),
            "2026-11-01T08:00:00Z"
        );
        assert_eq!(parse_since("1d", now).unwrap(), "2026-11-17T11:06:40Z");
        assert_eq!(parse_since("90m", now).unwrap(), "2026-11-18T09:36:40Z");
        assert!(parse_since("2026-11-01T08:00:00+02:00", now).is_err());
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("3y", now).is_err());
        assert!(parse_since("12", now).is_err());
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_900_000), "12.3 MiB");
    }
}
