//! The agent: the same binary, run on a host (over SSH, or locally for `mock` sandboxes) to
//! inspect and converge that one host. It reads and writes only below its root directory.

pub mod inspect;
pub mod layout;
pub mod state;

/// The agent's version, checked by the reconciler before it trusts the wire format.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
