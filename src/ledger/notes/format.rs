//! A note's text and the run records in it, both ways: the block a run adds (a short human
//! summary, one line per host, then the machine line `clarity-run: <RunRecord JSON>`, and for
//! a drift run `clarity-drift: {"run", "findings"}`), blocks separated by a blank line, and the
//! union of two notes on one commit. Pure text in, text out: it never touches git.

use crate::model::run::{DriftFinding, RunMode, RunOutcome, RunRecord};
use std::collections::{BTreeMap, BTreeSet};

/// The prefix of a note's machine-readable line.
pub const RUN_PREFIX: &str = "clarity-run: ";
/// The prefix of a drift run's findings line, after its run line in the same block:
/// `clarity-drift: {"run": ID, "findings": [...]}` (readers that do not know it skip it).
pub const DRIFT_PREFIX: &str = "clarity-drift: ";
/// Hosts listed by name in a block's summary; a bigger run lists the ones that did not
/// converge first and counts the rest (the machine line always has all of them).
const SUMMARY_HOSTS: usize = 50;
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// The block a run adds to a note: the human summary, then the machine line. Never contains
/// a blank line (blank lines separate blocks).
pub fn render_block(run: &RunRecord) -> String {
    let mode = match run.mode {
        RunMode::Apply if run.kind == crate::model::run::RunKind::Decommission => "decommission",
        RunMode::Apply => "apply",
        RunMode::DryRun => "dry run",
        RunMode::Drift => "drift check",
    };
    let outcome = match run.outcome {
        RunOutcome::Success => "success",
        RunOutcome::Failed => "FAILED",
        RunOutcome::NoChanges => "no changes",
        RunOutcome::Refused => "REFUSED",
        RunOutcome::DriftFound => "DRIFT FOUND",
        RunOutcome::AwaitingApproval => "AWAITING APPROVAL",
    };
    let mut out = format!("Clarity {mode} {}: {outcome}\n", one_line(&run.id));
    out.push_str(&format!(
        "  by {}{}, {} to {}\n",
        one_line(&run.trigger),
        run.branch
            .as_deref()
            .map(|b| format!(" on {}", one_line(b)))
            .unwrap_or_default(),
        one_line(&run.started_at),
        one_line(&run.finished_at)
    ));
    if let Some(m) = &run.message {
        out.push_str(&format!("  {}\n", one_line(m)));
    }
    if let Some(paused) = &run.rollout.resumes {
        out.push_str(&format!("  resumes the paused run {}\n", one_line(paused)));
    }
    let waiting = run.rollout.waiting_hosts();
    if !waiting.is_empty() {
        out.push_str(&format!(
            "  paused after the canary; waiting: {}; continue with `clarity-reconcile resume {}`{}\n",
            one_line(&waiting.join(", ")),
            one_line(&run.id),
            run.rollout
                .pause_deadline
                .as_deref()
                .map(|d| format!(" (the watch loop resumes it after {})", one_line(d)))
                .unwrap_or_default()
        ));
    }
    let settled = |o: &crate::model::run::HostOutcome| o.is_ok();
    let mut listed: Vec<usize> = (0..run.hosts.len()).collect();
    if listed.len() > SUMMARY_HOSTS {
        // Stable: hosts that need attention first, each group in run order.
        listed.sort_by_key(|&i| settled(&run.hosts[i].outcome));
        listed.truncate(SUMMARY_HOSTS);
    }
    for &i in &listed {
        let host = &run.hosts[i];
        let mut line = format!(
            "  {} ({}): {} in {}",
            one_line(&host.server),
            one_line(&host.client),
            host.outcome.as_str(),
            seconds(host.duration_ms)
        );
        let deps: Vec<String> = host
            .deployments
            .iter()
            .map(|d| {
                format!(
                    "{} {} (release {}){}",
                    one_line(&d.name),
                    one_line(&d.version),
                    one_line(&d.release),
                    if d.healthy { "" } else { " unhealthy" }
                )
            })
            .collect();
        if !deps.is_empty() {
            line.push_str("; ");
            line.push_str(&deps.join(", "));
        }
        if let Some(m) = &host.message {
            line.push_str("; ");
            line.push_str(&one_line(m));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if listed.len() < run.hosts.len() {
        let mut shown = vec![false; run.hosts.len()];
        for &i in &listed {
            shown[i] = true;
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (host, _) in run.hosts.iter().zip(&shown).filter(|(_, s)| !**s) {
            *counts.entry(host.outcome.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = counts
            .into_iter()
            .map(|(o, n)| format!("{} {n}", one_line(o)))
            .collect();
        out.push_str(&format!(
            "  … and {} more hosts: {}\n",
            run.hosts.len() - listed.len(),
            counts.join(", ")
        ));
    }
    out.push_str(RUN_PREFIX);
    out.push_str(&serde_json::to_string(run).expect("run records serialize"));
    out.push('\n');
    out
}

/// The blocks of a note, in order.
fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The run id of a block's machine line, if it has a readable one.
fn block_run_id(block: &str) -> Option<String> {
    block.lines().find_map(|l| {
        let json = l.strip_prefix(RUN_PREFIX)?;
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        v.get("id")?.as_str().map(str::to_string)
    })
}

fn join_blocks(blocks: &[String]) -> String {
    blocks.join("\n")
}

/// `ours` plus the blocks of `theirs` that `ours` lacks (same run id, or same text for blocks
/// that are not runs): the union of two notes on one commit, with nothing repeated.
pub(super) fn merge_texts(ours: &str, theirs: &str) -> String {
    let mut merged = blocks(ours);
    let mut ids: BTreeSet<String> = merged.iter().filter_map(|b| block_run_id(b)).collect();
    for block in blocks(theirs) {
        let new = match block_run_id(&block) {
            Some(id) => ids.insert(id),
            None => !merged.contains(&block),
        };
        if new {
            merged.push(block);
        }
    }
    join_blocks(&merged)
}

/// The runs in one note's text; lines that do not parse come back as errors.
pub(super) fn parse_note(text: &str) -> Vec<Result<RunRecord, String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix(RUN_PREFIX))
        .map(|json| serde_json::from_str::<RunRecord>(json).map_err(|e| e.to_string()))
        .collect()
}

/// `text` with `block` (the block of run `run_id`) appended, or `None` when the note already
/// holds that run: a run is never added twice.
pub(super) fn with_block(text: &str, run_id: &str, block: &str) -> Option<String> {
    let mut existing = blocks(text);
    if existing
        .iter()
        .any(|b| block_run_id(b).as_deref() == Some(run_id))
    {
        return None;
    }
    existing.push(block.to_string());
    Some(join_blocks(&existing))
}

/// A drift run's block: its run block, then its findings line when it found anything.
pub(super) fn render_drift_block(run: &RunRecord, findings: &[DriftFinding]) -> String {
    let mut block = render_block(run);
    if !findings.is_empty() {
        block.push_str(DRIFT_PREFIX);
        block.push_str(
            &serde_json::to_string(&serde_json::json!({"run": run.id, "findings": findings}))
                .expect("findings serialize"),
        );
        block.push('\n');
    }
    block
}

/// The drift findings in one note's text, by run id; lines that do not parse come back as
/// errors.
pub(super) fn parse_drift(text: &str) -> Vec<Result<(String, Vec<DriftFinding>), String>> {
    #[derive(serde::Deserialize)]
    struct Drift {
        run: String,
        findings: Vec<DriftFinding>,
    }
    text.lines()
        .filter_map(|l| l.strip_prefix(DRIFT_PREFIX))
        .map(|line| {
            serde_json::from_str::<Drift>(line)
                .map(|d| (d.run, d.findings))
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::run::{DeploymentRecord, HostRecord};

    fn run(id: &str, hosts: usize) -> RunRecord {
        RunRecord {
            format: crate::model::run::RUN_FORMAT.into(),
            message: None,
            id: id.into(),
            commit: "0".repeat(40),
            branch: Some("main".into()),
            started_at: "2026-11-23T10:00:00Z".into(),
            finished_at: "2026-11-23T10:01:00Z".into(),
            trigger: "watch".into(),
            mode: RunMode::Apply,
            outcome: RunOutcome::Success,
            hosts: (0..hosts)
                .map(|i| HostRecord {
                    server: format!("h{i:03}"),
                    client: "acme".into(),
                    outcome: if i == hosts - 1 {
                        crate::model::run::HostOutcome::Failed
                    } else {
                        crate::model::run::HostOutcome::Converged
                    },
                    duration_ms: 1500,
                    message: Some("line one\nline two".into()),
                    deployments: vec![DeploymentRecord {
                        name: "web".into(),
                        profile: "prod".into(),
                        version: "1.2.3".into(),
                        release: "1.2.3-a".into(),
                        healthy: true,
                        health: None,
                    }],
                    steps: vec![],
                })
                .collect(),
            rollout: Default::default(),
            kind: Default::default(),
        }
    }

    #[test]
    fn a_block_has_no_blank_line_and_its_machine_line_is_the_record() {
        let r = run("R1", 2);
        let block = render_block(&r);
        assert!(!block.lines().any(|l| l.trim().is_empty()), "{block}");
        assert!(block.contains(
            "  h000 (acme): converged in 1.5 s; web 1.2.3 (release 1.2.3-a); line one line two"
        ));
        let parsed: Vec<_> = parse_note(&block).into_iter().map(Result::unwrap).collect();
        assert_eq!(parsed, vec![r]);
    }

    #[test]
    fn a_big_run_lists_the_failed_hosts_and_counts_the_rest() {
        let block = render_block(&run("R1", 120));
        assert!(block.contains("h119 (acme): failed"), "{block}");
        assert!(
            block.contains("… and 70 more hosts: converged 70"),
            "{block}"
        );
    }

    #[test]
    fn merging_notes_keeps_each_run_once() {
        let a = render_block(&run("A", 1));
        let b = render_block(&run("B", 1));
        let c = render_block(&run("C", 1));
        let ours = join_blocks(&[a.clone(), b.clone()]);
        let theirs = join_blocks(&[a.clone(), c.clone()]);
        let merged = merge_texts(&ours, &theirs);
        let ids: Vec<_> = blocks(&merged)
            .iter()
            .filter_map(|b| block_run_id(b))
            .collect();
        assert_eq!(ids, ["A", "B", "C"]);
    }
}
