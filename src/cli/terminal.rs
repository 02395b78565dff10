//! What the command line does differently on a terminal: whether stdout gets colour
//! (`--color auto|always|never`, `NO_COLOR`) and the colours of the apply summary's RESULT
//! column. Piped output stays plain text, byte for byte what scripts and snapshots expect; this
//! module decides, it prints nothing itself.

use crate::model::run::HostOutcome;
use clap::ValueEnum;
use std::io::IsTerminal;

/// When stdout gets colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Colour even when piped or with `NO_COLOR` set.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// Whether stdout gets escape codes.
    pub fn stdout(self) -> bool {
        self.decide(std::io::stdout().is_terminal(), no_color_set())
    }

    /// The rule without the world: `always` forces, `never` refuses, and `auto` colours a
    /// terminal unless `NO_COLOR` asks otherwise (https://no-color.org: set and not empty).
    fn decide(self, terminal: bool, no_color: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => terminal && !no_color,
        }
    }
}

fn no_color_set() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// `text` (already padded, so the table stays aligned) in the colour of `outcome`: green where
/// the host ended as wanted, yellow for a change that was undone, red for failures.
pub fn paint_outcome(outcome: HostOutcome, text: &str, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match outcome {
        HostOutcome::Unchanged
        | HostOutcome::NoDrift
        | HostOutcome::Converged
        | HostOutcome::Pinned => "32",
        HostOutcome::RolledBack | HostOutcome::Drift | HostOutcome::AwaitingApproval => "33",
        HostOutcome::NotAttempted => return text.to_string(),
        HostOutcome::Unreachable
        | HostOutcome::Failed
        | HostOutcome::RestoreFailed
        | HostOutcome::Unknown => "31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `text` in red (failures, unreachable hosts) when colouring.
pub fn red(text: &str, colour: bool) -> String {
    paint(text, "31", colour)
}

/// `text` in yellow (findings, pending changes) when colouring.
pub fn yellow(text: &str, colour: bool) -> String {
    paint(text, "33", colour)
}

/// `text` in green (nothing to do) when colouring.
pub fn green(text: &str, colour: bool) -> String {
    paint(text, "32", colour)
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_wins_over_auto_and_always_forces() {
        assert!(ColorChoice::Auto.decide(true, false));
        assert!(!ColorChoice::Auto.decide(true, true));
        assert!(!ColorChoice::Auto.decide(false, false));
        assert!(ColorChoice::Always.decide(false, true));
        assert!(!ColorChoice::Never.decide(true, false));
    }

    #[test]
    fn outcomes_are_padded_before_painting() {
        let s = paint_outcome(HostOutcome::Failed, "failed    ", true);
        assert_eq!(s, "\x1b[31mfailed    \x1b[0m");
        assert_eq!(
            paint_outcome(HostOutcome::Failed, "failed    ", false),
            "failed    "
        );
    }
}
