//! How commands end: the exit codes scripts and units read (one table, `Exit` and
//! `ErrorKind`), and `CliError`, the error a command stops with, printed as `error:`, one
//! `caused by:` line per cause and a `hint:`. Errors of the layers below turn into it here, each
//! keeping its own hint.

use std::process::ExitCode;

/// How a command ended, mapped to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing to do, or success.
    Ok,
    /// Changes pending (`--dry-run`) or drift found.
    Changes,
    /// Problems were found and reported (validation errors, failed hosts).
    Failed,
    /// `agent events`: the detached apply ended without reporting an outcome (exit 3, for
    /// the reconciler, which tells it from an error of the command itself).
    ApplyGone,
    /// The rollout paused after a healthy canary; its other hosts wait for `resume` (exit 4).
    Paused,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        match e {
            Exit::Ok => ExitCode::SUCCESS,
            Exit::Failed => ExitCode::from(1),
            Exit::Changes => ExitCode::from(2),
            Exit::ApplyGone => ExitCode::from(3),
            Exit::Paused => ExitCode::from(4),
        }
    }
}

/// What kind of error stopped a command, for its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command ran and failed (exit 1).
    Failure,
    /// The command line itself is wrong (exit 64, [`EXIT_USAGE`]).
    Usage,
}

impl ErrorKind {
    /// The exit code table: 0 ok, 1 error, 2 changes pending or drift found, 3 a detached
    /// apply that ended without an outcome, 4 a rollout paused after its canary, 64 a usage
    /// error.
    pub fn code(self) -> u8 {
        match self {
            ErrorKind::Failure => 1,
            ErrorKind::Usage => EXIT_USAGE,
        }
    }
}

/// The exit code of a usage error (unknown option, missing argument), as `sysexits.h`'s
/// `EX_USAGE`: never 1 (error) or 2 (changes pending, drift found), which scripts and the drift
/// unit's `SuccessExitStatus=2` read as results.
pub const EXIT_USAGE: u8 = 64;

/// An error that stops a command, with what caused it and what to do.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub causes: Vec<String>,
    pub hint: Option<String>,
    pub kind: ErrorKind,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            causes: Vec::new(),
            hint: None,
            kind: ErrorKind::Failure,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error's own message plus its source chain as `caused by:` lines.
    pub fn from_error(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut err = CliError::new(e.to_string());
        let mut source = e.source();
        while let Some(s) = source {
            err.causes.push(s.to_string());
            source = s.source();
        }
        err
    }

    /// An error type that knows its own hint (`hint()`), as a `CliError`.
    pub fn hinted<H: Into<String>>(e: &(dyn std::error::Error + 'static), hint: Option<H>) -> Self {
        let err = CliError::from_error(e);
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    }

    /// Options that cannot be used together, or a value of the wrong shape: a usage error.
    pub fn usage(mut self) -> Self {
        self.kind = ErrorKind::Usage;
        self
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.code())
    }

    pub(super) fn print(&self) {
        // A log collector reading the JSON lines gets the command's error as one event.
        if super::logging::format() == super::logging::LogFormat::Json {
            tracing::error!(causes = ?self.causes, hint = self.hint.as_deref(), "{}", self.message);
            return;
        }
        eprintln!("error: {}", self.message);
        for c in &self.causes {
            eprintln!("caused by: {c}");
        }
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
    }
}

impl From<crate::apply::error::RunError> for CliError {
    /// Validation errors are listed on stderr first, every one of them, above the error line.
    fn from(e: crate::apply::error::RunError) -> Self {
        if let crate::apply::error::RunError::Invalid(errors) = &e {
            for d in errors {
                super::logging::diagnostic(d);
            }
        }
        CliError::hinted(&e, e.hint())
    }
}

pub type CliResult = Result<Exit, CliError>;

impl From<crate::source::SourceError> for CliError {
    fn from(e: crate::source::SourceError) -> Self {
        CliError::hinted(&e, e.hint())
    }
}

impl From<crate::ledger::LedgerError> for CliError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        CliError::hinted(&e, e.hint())
    }
}

impl From<crate::ledger::NotesError> for CliError {
    fn from(e: crate::ledger::NotesError) -> Self {
        CliError::hinted(&e, e.hint())
    }
}

impl From<crate::secret::SecretError> for CliError {
    fn from(e: crate::secret::SecretError) -> Self {
        CliError::hinted(&e, e.hint())
    }
}
