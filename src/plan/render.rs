//! Plans for people and programs: text in the spirit of `terraform plan` (colour only when
//! asked for), versioned JSON, and Markdown for a pull-request comment. Rendering never adds
//! information a plan does not carry, so it cannot leak what the plan redacted.

use super::{Change, HostStatus, Plan, Step};
use std::fmt::Write;

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn change(&self, c: Change, s: &str) -> String {
        match c {
            Change::Create => self.wrap("32", s),
            Change::Update => self.wrap("33", s),
            Change::Delete => self.wrap("31", s),
            Change::None => s.to_string(),
        }
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn diff_line(&self, l: &str) -> String {
        if l.starts_with("+++") || l.starts_with("---") {
            self.bold(l)
        } else if l.starts_with('+') {
            self.wrap("32", l)
        } else if l.starts_with('-') {
            self.wrap("31", l)
        } else if l.starts_with("@@") {
            self.wrap("36", l)
        } else {
            l.to_string()
        }
    }
}

fn step_line(s: &Step) -> String {
    let mut line = format!("{} {}", s.action.verb(), s.target);
    if let Some(d) = &s.detail {
        let _ = write!(line, " ({d})");
    }
    line
}

pub fn render_text(plan: &Plan, colour: bool) -> String {
    let p = Paint { on: colour };
    let mut out = String::new();
    let _ = writeln!(out, "Clarity plan for {}", plan.source);
    if let Some(base) = &plan.changed_since_base {
        let _ = writeln!(
            out,
            "Deployments changed since {}: {}",
            base.base,
            if base.deployments.is_empty() {
                "none".to_string()
            } else {
                base.deployments.join(", ")
            }
        );
    }
    for h in &plan.hosts {
        let _ = writeln!(out);
        let status = match h.status {
            HostStatus::Changes => p.wrap("33", "changes"),
            HostStatus::Unchanged => "no changes".to_string(),
            HostStatus::Unreachable => p.wrap("31", "UNREACHABLE"),
            HostStatus::Failed => p.wrap("31", "FAILED"),
        };
        let _ = writeln!(
            out,
            "{} ({}): {status}",
            p.bold(&format!("host {}", h.server)),
            h.client
        );
        for e in &h.errors {
            let _ = writeln!(out, "  {}", p.wrap("31", &format!("error: {e}")));
        }
        for d in &h.deployments {
            if d.change == Change::None {
                let _ = writeln!(
                    out,
                    "    {} {} (release {}): up to date",
                    d.name, d.version, d.release
                );
                continue;
            }
            let from = match (&d.from_version, d.change) {
                (Some(v), Change::Update) if *v != d.version => format!(" {v} →"),
                _ => String::new(),
            };
            let head = match (d.change, &d.from_release) {
                // A removal has no release to go to: name the one it takes away.
                (Change::Delete, Some(from)) => {
                    format!("- {} {} (release {from})", d.name, d.version)
                }
                (Change::Delete, None) => format!("- {} (no release)", d.name),
                _ => format!(
                    "{} {}{from} {} (release {}, {})",
                    d.change.marker(),
                    d.name,
                    d.version,
                    d.release,
                    d.profile
                ),
            };
            let _ = writeln!(out, "  {}", p.change(d.change, &head));
            for s in &d.steps {
                let marker = if s.known_after_apply.is_some() {
                    "?"
                } else {
                    s.change.marker()
                };
                let _ = writeln!(
                    out,
                    "      {}",
                    p.change(s.change, &format!("{marker} {}", step_line(s)))
                );
                if let Some(why) = &s.known_after_apply {
                    let _ = writeln!(out, "          (known after apply: {why})");
                }
                if let Some(diff) = &s.diff {
                    for l in diff.lines() {
                        let _ = writeln!(out, "          {}", p.diff_line(l));
                    }
                }
            }
        }
        for n in &h.no_longer_desired {
            let _ = writeln!(
                out,
                "  ! {n} is no longer desired here (left in place; --prune removes it)"
            );
        }
    }
    if !plan.rollout.is_empty() {
        let _ = writeln!(out);
        for line in super::rollout_order::lines(&plan.rollout) {
            let _ = writeln!(out, "{line}");
        }
    }
    let s = &plan.summary;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} {} host{} to change, {} unchanged, {} unreachable, {} failed; {} step{}.",
        p.bold("Plan:"),
        s.hosts_to_change,
        if s.hosts_to_change == 1 { "" } else { "s" },
        s.hosts_unchanged,
        s.hosts_unreachable,
        s.hosts_failed,
        s.steps,
        if s.steps == 1 { "" } else { "s" }
    );
    out
}

pub fn render_json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("plans serialize");
    s.push('\n');
    s
}

pub fn render_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let s = &plan.summary;
    let _ = writeln!(out, "### Clarity plan for {}\n", plan.source);
    let _ = writeln!(
        out,
        "**{}** to change, {} unchanged, {} unreachable, {} failed; {} steps.\n",
        s.hosts_to_change, s.hosts_unchanged, s.hosts_unreachable, s.hosts_failed, s.steps
    );
    if let Some(base) = &plan.changed_since_base {
        let _ = writeln!(
            out,
            "Deployments changed since `{}`: {}\n",
            base.base,
            if base.deployments.is_empty() {
                "none".to_string()
            } else {
                base.deployments
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    for line in super::rollout_order::lines(&plan.rollout) {
        let _ = writeln!(out, "- {}", line.replace('|', "\\|"));
    }
    if !plan.rollout.is_empty() {
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "| host | client | status | deployments |\n|---|---|---|---|"
    );
    for h in &plan.hosts {
        let deps: Vec<String> = h
            .deployments
            .iter()
            .filter(|d| d.change != Change::None)
            .map(|d| format!("{} `{}` {}", d.change.marker(), d.name, d.version))
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {:?} | {} |",
            h.server,
            h.client,
            h.status,
            deps.join("<br>")
        );
    }
    for h in plan
        .hosts
        .iter()
        .filter(|h| h.status != HostStatus::Unchanged)
    {
        let _ = writeln!(
            out,
            "\n<details><summary><code>{}</code> ({:?})</summary>\n",
            h.server, h.status
        );
        for e in &h.errors {
            let _ = writeln!(out, "- error: {e}");
        }
        for d in h.deployments.iter().filter(|d| d.change != Change::None) {
            let _ = writeln!(
                out,
                "**{} {} {}** (release `{}`)\n",
                d.change.marker(),
                d.name,
                d.version,
                d.release
            );
            for st in &d.steps {
                let suffix = st
                    .known_after_apply
                    .as_ref()
                    .map(|w| format!(" — _known after apply: {w}_"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "- {} {}{suffix}",
                    st.change.marker(),
                    step_line(st).replace('|', "\\|")
                );
                if let Some(diff) = &st.diff {
                    let _ = writeln!(
                        out,
                        "\n  ```diff\n{}  ```",
                        diff.lines().map(|l| format!("  {l}\n")).collect::<String>()
                    );
                }
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "</details>");
    }
    out
}
