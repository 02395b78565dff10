//! A host's state at a glance, from what the ledger holds: the one place that turns the
//! ledger's stable outcome strings into the dashboard's ordered states. Keep it the only such
//! mapping, so switching to a typed host outcome is a change here alone. Pure: no I/O.

use crate::model::run::HostOutcome;
use serde::Serialize;

/// What the fleet page counts and sorts by, worst first (the declaration order is the order of
/// severity: `Ord` puts the worst first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// A failed apply whose rollback failed too: the host may run nothing that works.
    RestoreFailed,
    Failed,
    RolledBack,
    Unreachable,
    /// The newest commit for this host's branch was refused (unsigned, untrusted, rewritten),
    /// or its rollout paused after the canary before this host's turn.
    AwaitingApproval,
    /// The newest drift check found differences the last apply did not account for.
    Drifted,
    /// A rollout is under way on the host's branch, or halted before reaching this host.
    MidRollout,
    /// No run has looked at the host for longer than twice the drift interval.
    Stale,
    Converged,
}

impl HostState {
    pub const ALL: [HostState; 9] = [
        HostState::RestoreFailed,
        HostState::Failed,
        HostState::RolledBack,
        HostState::Unreachable,
        HostState::AwaitingApproval,
        HostState::Drifted,
        HostState::MidRollout,
        HostState::Stale,
        HostState::Converged,
    ];

    /// The stable name used in URLs (`?outcome=rolled_back`) and CSS classes.
    pub fn name(self) -> &'static str {
        match self {
            HostState::RestoreFailed => "restore_failed",
            HostState::Failed => "failed",
            HostState::RolledBack => "rolled_back",
            HostState::Unreachable => "unreachable",
            HostState::AwaitingApproval => "awaiting_approval",
            HostState::Drifted => "drifted",
            HostState::MidRollout => "mid_rollout",
            HostState::Stale => "stale",
            HostState::Converged => "converged",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            HostState::RestoreFailed => "restore failed",
            HostState::Failed => "failed",
            HostState::RolledBack => "rolled back",
            HostState::Unreachable => "unreachable",
            HostState::AwaitingApproval => "awaiting approval",
            HostState::Drifted => "drifted",
            HostState::MidRollout => "mid-rollout",
            HostState::Stale => "stale",
            HostState::Converged => "converged",
        }
    }

    pub fn from_name(name: &str) -> Option<HostState> {
        HostState::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The state an apply run's host outcome (as the ledger spells it) leaves a host in. An
/// outcome this build does not know counts as failed: a dashboard must not call an unknown
/// result converged.
pub fn from_apply_outcome(outcome: HostOutcome) -> HostState {
    match outcome {
        HostOutcome::Converged | HostOutcome::Unchanged | HostOutcome::Pinned => {
            HostState::Converged
        }
        HostOutcome::RolledBack => HostState::RolledBack,
        HostOutcome::RestoreFailed => HostState::RestoreFailed,
        HostOutcome::Unreachable => HostState::Unreachable,
        // A halted rollout (failure budget spent, canary failed, SIGTERM) left it out.
        HostOutcome::NotAttempted => HostState::MidRollout,
        // A rollout paused after its canary before this host's turn.
        HostOutcome::AwaitingApproval => HostState::AwaitingApproval,
        // Drift outcomes belong to drift runs; an apply outcome this build does not know counts
        // as failed: a dashboard must not call an unknown result converged.
        HostOutcome::NoDrift | HostOutcome::Drift | HostOutcome::Failed | HostOutcome::Unknown => {
            HostState::Failed
        }
    }
}

/// What else the ledger and the loop say about a host beyond its last apply outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    /// Findings of a drift run newer than the last apply.
    pub drift_findings: usize,
    /// A refused run on the host's branch is newer than its last apply.
    pub refused_since: bool,
    /// The loop is reconciling the host's branch right now.
    pub rolling_out: bool,
    /// No run listed the host within twice the drift interval.
    pub stale: bool,
}

/// The host's one state: the worst of its last apply outcome and the other signals.
pub fn classify(last_apply: Option<HostOutcome>, signals: Signals) -> HostState {
    let mut states = vec![last_apply.map_or(HostState::Converged, from_apply_outcome)];
    if signals.drift_findings > 0 {
        states.push(HostState::Drifted);
    }
    if signals.refused_since {
        states.push(HostState::AwaitingApproval);
    }
    if signals.rolling_out {
        states.push(HostState::MidRollout);
    }
    if signals.stale {
        states.push(HostState::Stale);
    }
    states.into_iter().min().unwrap_or(HostState::Converged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_signal_wins() {
        assert_eq!(
            classify(Some(HostOutcome::Converged), Signals::default()),
            HostState::Converged
        );
        assert_eq!(
            classify(Some(HostOutcome::Unchanged), Signals::default()),
            HostState::Converged
        );
        let drifted = Signals {
            drift_findings: 2,
            ..Signals::default()
        };
        assert_eq!(
            classify(Some(HostOutcome::Converged), drifted),
            HostState::Drifted
        );
        assert_eq!(
            classify(Some(HostOutcome::RolledBack), drifted),
            HostState::RolledBack
        );
        let stale = Signals {
            stale: true,
            ..Signals::default()
        };
        assert_eq!(
            classify(Some(HostOutcome::Unchanged), stale),
            HostState::Stale
        );
        assert_eq!(
            classify(Some(HostOutcome::parse("something_new")), stale),
            HostState::Failed
        );
        assert_eq!(
            from_apply_outcome(HostOutcome::NotAttempted),
            HostState::MidRollout
        );
        assert!(
            HostState::RestoreFailed < HostState::Converged,
            "worst sorts first"
        );
        for s in HostState::ALL {
            assert_eq!(HostState::from_name(s.name()), Some(s));
        }
    }
}
