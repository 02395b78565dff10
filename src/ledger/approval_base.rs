//! Approval bases: for each followed branch, the commit the watch loop last judged approved (or
//! the one an operator named with `--trust-from`), which is where signed-commit approval judges
//! the next commits from. Only the watch loop writes here; `history rebuild` never does, so a
//! forged git note can never become a base, and a lost or rebuilt ledger has no base at all
//! (approval then fails closed until an operator names one). Newest means recorded last.

use super::{Ledger, LedgerError};
use rusqlite::{OptionalExtension, params};

/// Why a commit became a base: judged by the loop, or named by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseReason {
    Approved,
    TrustFrom,
}

impl BaseReason {
    fn as_str(self) -> &'static str {
        match self {
            BaseReason::Approved => "approved",
            BaseReason::TrustFrom => "named by an operator with --trust-from",
        }
    }
}

impl Ledger {
    /// Records `commit` as the base of `branch` from now on.
    pub fn record_approval_base(
        &mut self,
        branch: &str,
        commit: &str,
        reason: BaseReason,
    ) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT INTO approval_bases (branch, commit_id, reason, recorded_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![branch, commit, reason.as_str(), crate::clock::now_rfc3339()],
            )
            .map(drop)
            .map_err(|e| self.err("record an approval base", e))
    }

    /// The newest base of `branch` and why it is one; `None` when the loop never judged a
    /// commit of it in this ledger.
    pub fn approval_base(&self, branch: &str) -> Result<Option<(String, String)>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT commit_id, reason FROM approval_bases WHERE branch = ?1
                  ORDER BY rowid DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([branch], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err("find the approval base", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_recorded_base_wins_whatever_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db")).unwrap();
        assert_eq!(l.approval_base("main").unwrap(), None);
        l.record_approval_base("main", "aaa", BaseReason::Approved)
            .unwrap();
        l.conn
            .execute(
                "UPDATE approval_bases SET recorded_at = '2999-01-01T00:00:00Z'",
                [],
            )
            .unwrap();
        l.record_approval_base("main", "bbb", BaseReason::TrustFrom)
            .unwrap();
        l.record_approval_base("other", "ccc", BaseReason::Approved)
            .unwrap();
        let (commit, reason) = l.approval_base("main").unwrap().unwrap();
        assert_eq!(commit, "bbb");
        assert!(reason.contains("--trust-from"));
    }
}
