//! The apply summary table printed at the end of a run: one row per host with its outcome and
//! one line of detail. A long failure (a stack trace, an error page) shows as its first
//! meaningful line and a pointer to `history show RUN`, which keeps the whole text; this
//! module only prints, the record is written elsewhere.

use super::terminal::paint_outcome;
use crate::apply::fleet::RunReport;
use crate::failure_text::{LINE_LIMIT, first_line};

/// The table's text: header and one row per host. `colour` paints the RESULT column.
pub fn table(report: &RunReport, run_id: &str, colour: bool) -> String {
    let mut out = format!("{:<28} {:<14} DETAIL\n", "HOST", "RESULT");
    for r in &report.hosts {
        let result = paint_outcome(r.outcome, &format!("{:<14}", r.outcome.label()), colour);
        out.push_str(&format!(
            "{:<28} {result} {}\n",
            r.host,
            detail(&r.detail, run_id)
        ));
    }
    out
}

/// One line of `text`, pointing at the run's history when something was left out.
fn detail(text: &str, run_id: &str) -> String {
    let (line, cut) = first_line(text, LINE_LIMIT);
    if cut {
        format!("{line} (full text: history show {run_id})")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_line_detail_points_at_the_history() {
        assert_eq!(
            detail("web: health check: unhealthy\n\tat Main.java:1\n", "R1"),
            "web: health check: unhealthy (full text: history show R1)"
        );
        assert_eq!(detail("web applied in 0.3s", "R1"), "web applied in 0.3s");
    }
}
