//! The agent: the same binary, run on a host (over SSH, or locally for `mock` sandboxes) to
//! inspect and converge that one host. It reads and writes only below its root directory.

pub mod apply;
pub mod container;
pub mod detached;
pub mod extract;
pub mod files;
pub mod health;
pub mod inspect;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod migrate;
pub mod names;
pub mod owner;
pub mod ports;
pub mod release;
pub mod state;

/// The agent's version, checked by the reconciler before it trusts the wire format.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

// The clock's old home: `src/cli/` still names these through `agent` (it is restructured
// apart from this change); everything else uses `crate::clock`.
