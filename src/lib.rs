//! Clarity: a GitOps reconciler for fleets of ordinary servers.
//!
//! The pipeline and the dependency rule:
//!
//! ```text
//! source ──▶ load ──▶ desired ──▶ plan ──▶ apply/agent ──▶ ledger
//!            (model, diag)
//! ```
//!
//! `model`, `diag`, `load`, `desired` and `plan` are pure: they take values and return values
//! and never touch the network, the clock, processes or the host's filesystem. Everything that
//! touches the world sits at the edges (`source` reads git, `cli` prints and exits). A module
//! may depend on modules to its left, never to its right.

pub mod agent;
pub mod apply;
pub mod approval;
pub mod atomic_file;
pub mod cli;
pub mod clock;
pub mod desired;
pub mod diag;
pub mod digest;
pub mod failure_text;
pub mod fetch;
pub mod ledger;
pub mod load;
pub mod model;
pub mod notify;
pub mod plan;
/// Reuses single deployments' plans between dry-runs (an edge: reads and writes the work dir).
pub mod plan_cache;
pub mod secret;
pub mod serve;
pub mod service;
pub mod source;
pub mod transport;
pub mod url_credentials;
pub mod watch;
