//! The apply summary table printed at the end of a run: one row per host with its outcome and
//! one line of detail. A long failure (a stack trace, an error page) shows as its first
//! meaningful line and a pointer to `history show RUN`, which keeps the whole text; this
//! module only prints, the record is written elsewhere.

use super::terminal::paint_outcome;
use crate::failure_text::{LINE_LIMIT, first_line};
use crate::model::run::RunRecord;

/// The per-host results of an applied run, as the table a one-shot apply and the watch loop
/// print after it: header and one row per host. `colour` paints the RESULT column.
pub fn table(run: &RunRecord, colour: bool) -> String {
    let mut out = format!("{:<28} {:<14} DETAIL\n", "HOST", "RESULT");
    for h in &run.hosts {
        let result = paint_outcome(h.outcome, &format!("{:<14}", h.outcome.label()), colour);
        out.push_str(&format!(
            "{:<28} {result} {}\n",
            h.server,
            detail(h.message.as_deref().unwrap_or_default(), &run.id)
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
