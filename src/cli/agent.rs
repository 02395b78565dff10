use super::{CliError, CliResult, Exit};
use crate::agent::layout::Layout;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// The agent side: run on a host (over SSH, or locally for `mock` sandboxes) by the
/// reconciler. Prints versioned JSON on stdout.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Print the host's actual state (releases, current release, hashes, modes and owners of
    /// managed files, service states, applied migrations) as JSON. Reads reality, changes
    /// nothing.
    Inspect {
        /// Root directory the agent manages (`/` on a real host, the sandbox for `mock`).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Print the agent version and the wire formats it speaks.
    Version,
}

pub fn run(args: &AgentArgs) -> CliResult {
    match &args.command {
        AgentCommand::Inspect { root } => {
            let host = crate::agent::inspect::inspect(&Layout::new(root)).map_err(|e| {
                CliError::from_error(&e).hint("the agent state file is written only by the agent; restore it from a backup or remove it to start over")
            })?;
            println!(
                "{}",
                serde_json::to_string_pretty(&host).expect("host state serializes")
            );
        }
        AgentCommand::Version => {
            println!(
                "{}",
                serde_json::json!({
                    "agent_version": crate::agent::AGENT_VERSION,
                    "host_state": crate::model::host::HOST_STATE_FORMAT,
                    "plan": crate::plan::PLAN_FORMAT,
                })
            );
        }
    }
    Ok(Exit::Ok)
}
