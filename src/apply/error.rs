//! Why a run stopped before it was recorded: the repository could not be read or has errors,
//! the age identity could not be read, or the record could not be written. One type for every
//! run kind, so the command line and the watch loop report them alike (each with its hint).

use crate::diag::Diagnostic;
use crate::ledger::{LedgerError, NotesError};

#[derive(Debug)]
pub enum RunError {
    /// The commit could not be read.
    Source(crate::source::SourceError),
    /// The repository has errors: every one of them, sorted, so all are reported at once.
    Invalid(Vec<Diagnostic>),
    /// The age identity could not be read.
    Identity(crate::secret::SecretError),
    Ledger(LedgerError),
    Notes(NotesError),
}

impl RunError {
    pub fn hint(&self) -> Option<String> {
        match self {
            RunError::Source(e) => e.hint().map(String::from),
            RunError::Invalid(_) => Some(
                "fix them (`clarity-reconcile validate` lists them with file:line:column)".into(),
            ),
            RunError::Identity(e) => e.hint(),
            RunError::Ledger(e) => e.hint(),
            RunError::Notes(e) => e.hint(),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Invalid(errors) => write!(
                f,
                "the config repository has {} error{}; nothing was planned",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            ),
            RunError::Source(e) => e.fmt(f),
            RunError::Identity(e) => e.fmt(f),
            RunError::Ledger(e) => e.fmt(f),
            RunError::Notes(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RunError {
    /// The wrapped error's own causes: its message is this one's.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Invalid(_) => None,
            RunError::Source(e) => e.source(),
            RunError::Identity(e) => e.source(),
            RunError::Ledger(e) => e.source(),
            RunError::Notes(e) => e.source(),
        }
    }
}

impl From<crate::source::SourceError> for RunError {
    fn from(e: crate::source::SourceError) -> Self {
        RunError::Source(e)
    }
}

impl From<LedgerError> for RunError {
    fn from(e: LedgerError) -> Self {
        RunError::Ledger(e)
    }
}

impl From<NotesError> for RunError {
    fn from(e: NotesError) -> Self {
        RunError::Notes(e)
    }
}
