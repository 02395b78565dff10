//! Pins: an emergency rollback switches a deployment's hosts before its revert commit is
//! merged, and pins it at that version so that applying the (still bad) branch does not switch
//! it forward again. The pin is released by the first apply that brings the pinned version from
//! the repository.

use super::{Ledger, LedgerError};
use rusqlite::params;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub client: String,
    pub deployment: String,
    pub profile: String,
    pub version: String,
    /// The revert commit whose application releases the pin.
    pub commit: String,
    pub reason: String,
    pub created_at: String,
}

impl Ledger {
    pub fn pin(&mut self, p: &Pin) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO pins (client, deployment, profile, version, commit_id, reason, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![p.client, p.deployment, p.profile, p.version, p.commit, p.reason, p.created_at],
            )
            .map(|_| ())
            .map_err(|e| self.err("pin a deployment", e))
    }

    pub fn pinned(
        &self,
        client: &str,
        deployment: &str,
        profile: &str,
    ) -> Result<Option<Pin>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, commit_id, reason, created_at FROM pins
                  WHERE client = ?1 AND deployment = ?2 AND profile = ?3",
            )
            .map_err(|e| self.err("read pins", e))?;
        let mut rows = stmt
            .query_map(params![client, deployment, profile], |r| {
                Ok(Pin {
                    client: client.to_string(),
                    deployment: deployment.to_string(),
                    profile: profile.to_string(),
                    version: r.get(0)?,
                    commit: r.get(1)?,
                    reason: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .map_err(|e| self.err("read pins", e))?;
        rows.next()
            .transpose()
            .map_err(|e| self.err("read pins", e))
    }

    /// Returns whether there was a pin.
    pub fn unpin(
        &mut self,
        client: &str,
        deployment: &str,
        profile: &str,
    ) -> Result<bool, LedgerError> {
        self.conn
            .execute(
                "DELETE FROM pins WHERE client = ?1 AND deployment = ?2 AND profile = ?3",
                params![client, deployment, profile],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err("release a pin", e))
    }
}
