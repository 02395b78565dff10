//! Run records as git notes on the applied commit, under `refs/notes/clarity`: the copy of
//! the history that travels with the config repository (`git log --notes=clarity` shows it)
//! and from which a lost or corrupt ledger is rebuilt.
//!
//! A note holds one block per run, blocks separated by a blank line. Several runs on one
//! commit append blocks; a run already in the note is not added twice. `format` turns runs
//! into note text and back (pure); `store` reads, writes, pushes and fetches the notes ref.

mod format;
mod store;

pub use format::{DRIFT_PREFIX, RUN_PREFIX, render_block};
pub use store::{
    NOTES_REF, NotesError, NotesScan, fetch, push, read, read_all, scan, write, write_batch,
    write_drift,
};
