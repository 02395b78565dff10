//! `clarity-reconcile agent` (hidden): the host side of the binary. The reconciler runs it over
//! SSH or locally and talks versioned JSON on stdin/stdout (inspect, apply, events); stdout
//! carries only that protocol, everything for people goes to stderr.

use super::{CliError, CliResult, Exit};
use crate::agent::detached::{Detached, FollowEnd, Started};
use crate::agent::layout::Layout;
use clap::{Args, Subcommand};
use std::io::Write;
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
    /// Converge this host: read a plan (`clarity.apply/v1` JSON) on stdin, execute its steps
    /// under the host lock, and stream one JSON event per line on stdout. A failed step rolls
    /// the deployment back. Exit 0 converged, 1 otherwise.
    ///
    /// With `--run ID --detach` (how the reconciler applies over SSH) the plan on stdin is
    /// stored in `var/lib/clarity/applies/ID/`, the apply starts in a session of its own with
    /// its events going to `events.jsonl` there, and the command returns at once; a dropped
    /// connection does not stop it, and `agent events --run ID` follows it. Starting an ID
    /// again starts nothing.
    Apply {
        /// Root directory the agent manages (`/` on a real host, the sandbox for `mock`).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Seconds to wait for another agent's lock on this host before giving up.
        #[arg(long, default_value_t = 300)]
        lock_timeout: u64,
        /// The detached apply with this id: without `--detach`, run it here, reading (and
        /// deleting) its stored plan instead of stdin.
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// Store the plan and start the apply in the background (needs `--run`).
        #[arg(long, requires = "run")]
        detach: bool,
    },
    /// Print the events of a detached apply (`agent apply --run ID --detach`) from line
    /// `--from` on, one JSON object per line, and what its log gained from byte `--log-from`
    /// on to stderr. With `--follow`, wait for more until the `done` event or until nothing
    /// new came for `--idle` seconds. Exit 0, or 3 when the apply ended without an outcome
    /// (killed, or the host went down): the next apply rolls back what it started.
    Events {
        /// Root directory the agent manages.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The apply's id.
        #[arg(long, value_name = "ID")]
        run: String,
        /// Number of event lines already seen.
        #[arg(long, default_value_t = 0, value_name = "LINES")]
        from: u64,
        /// Bytes of the apply's log already seen.
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        log_from: u64,
        /// Wait for more events.
        #[arg(long)]
        follow: bool,
        /// With `--follow`: return after this many seconds without a new event.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        idle: u64,
    },
    /// Print the agent version and the wire formats it speaks.
    Version,
    /// Download an artifact over HTTP(S) into a content-addressed cache, verify its sha256 (and
    /// size) before it gets its name, and print the cached path. An artifact already in the
    /// cache is not downloaded again, so operators can pre-seed a host's cache with it.
    Fetch {
        /// The artifact's URL (http or https; no credentials in it).
        #[arg(long, value_name = "URL")]
        url: String,
        /// Expected sha256, 64 hex digits.
        #[arg(long, value_name = "HEX")]
        sha256: String,
        /// Expected size in bytes.
        #[arg(long, value_name = "BYTES")]
        size: Option<u64>,
        /// Cache directory (the agent's is `<root>/var/lib/clarity/cache`).
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
    },
    /// Print the sha256 of a file, hashed the way downloads are verified.
    Hash {
        /// The file.
        file: PathBuf,
    },
}

pub fn run(args: &AgentArgs) -> CliResult {
    match &args.command {
        AgentCommand::Inspect { root } => {
            let host = crate::agent::inspect::inspect(&Layout::new(root)).map_err(|e| {
                CliError::from_error(&e).hint("the agent state file is written only by the agent; restore it from a backup or remove it to start over")
            })?;
            // Indented for a person at a terminal; one line for the reconciler, which reads it
            // over SSH from every host.
            let text = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                serde_json::to_string_pretty(&host)
            } else {
                serde_json::to_string(&host)
            };
            println!("{}", text.expect("host state serializes"));
        }
        AgentCommand::Apply {
            root,
            lock_timeout,
            run: Some(id),
            detach: true,
        } => {
            let layout = Layout::new(root);
            let detached = Detached::new(&layout, id).map_err(|e| CliError::from_error(&e))?;
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .map_err(|e| CliError::new(format!("cannot read the plan from stdin: {e}")))?;
            let exe = std::env::current_exe()
                .map_err(|e| CliError::new(format!("cannot find this program's path: {e}")))?;
            let args: Vec<String> = vec![
                "agent".into(),
                "apply".into(),
                "--root".into(),
                root.display().to_string(),
                "--lock-timeout".into(),
                lock_timeout.to_string(),
                "--run".into(),
                id.clone(),
            ];
            match detached
                .start(&layout, &input, &exe, &args)
                .map_err(|e| CliError::from_error(&e))?
            {
                Started::Now(pid) => eprintln!("apply {id} started (PID {pid})"),
                Started::Already => eprintln!("apply {id} was already started"),
            }
        }
        AgentCommand::Apply {
            root,
            lock_timeout,
            run,
            detach: _,
        } => {
            let input = match run {
                None => {
                    let mut input = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).map_err(
                        |e| CliError::new(format!("cannot read the plan from stdin: {e}")),
                    )?;
                    input
                }
                Some(id) => {
                    // Its own session: nothing that happens to the SSH session that started it
                    // (a hang-up, a killed sshd) reaches the apply. Already a session leader
                    // when run by hand from a shell script; that is fine too.
                    let _ = nix::unistd::setsid();
                    let detached = Detached::new(&Layout::new(root), id)
                        .map_err(|e| CliError::from_error(&e))?;
                    let bytes = detached
                        .take_request()
                        .map_err(|e| CliError::from_error(&e))?;
                    String::from_utf8(bytes)
                        .map_err(|_| CliError::new("the stored plan is not UTF-8"))?
                }
            };
            // Never echo the input in an error: it carries secrets.
            let req: crate::model::apply::ApplyRequest =
                serde_json::from_str(&input).map_err(|e| {
                    CliError::new(format!(
                        "the plan on stdin is not a valid apply request (line {}, column {})",
                        e.line(),
                        e.column()
                    ))
                })?;
            let opts = crate::agent::apply::ApplyOptions {
                lock_timeout: std::time::Duration::from_secs(*lock_timeout),
                kill_after_steps: std::env::var(crate::agent::apply::KILL_AFTER_STEPS_ENV)
                    .ok()
                    .and_then(|v| v.parse().ok()),
            };
            let mut out = std::io::stdout().lock();
            let outcome =
                crate::agent::apply::apply(&Layout::new(root), &req, &opts, &mut |event| {
                    let line = serde_json::to_string(&event).expect("events serialize");
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                });
            return Ok(if outcome == crate::model::apply::HostOutcome::Converged {
                Exit::Ok
            } else {
                Exit::Failed
            });
        }
        AgentCommand::Fetch {
            url,
            sha256,
            size,
            cache,
        } => {
            // The last path segment is the artifact; everything before it plays the base URL.
            let (base_url, location) = url
                .rsplit_once('/')
                .filter(|(base, file)| {
                    base.contains("://") && !base.ends_with('/') && !file.is_empty()
                })
                .ok_or_else(|| CliError::new("the URL does not end with a file name"))?;
            let source = crate::fetch::Source::Http {
                base_url: base_url.to_string(),
                auth: crate::fetch::HttpAuth::None,
            };
            let artifact = crate::fetch::Artifact {
                repository: "command line",
                location,
                sha256,
                size: *size,
                max_size: None,
            };
            let fetched = crate::fetch::fetch(
                &source,
                &artifact,
                &crate::fetch::Cache::new(cache),
                &crate::fetch::Retry::default(),
                &mut |_| {},
            )
            .map_err(|e| CliError::from_error(&e))?;
            println!("{}", fetched.path.display());
        }
        AgentCommand::Events {
            root,
            run,
            from,
            log_from,
            follow,
            idle,
        } => {
            let detached =
                Detached::new(&Layout::new(root), run).map_err(|e| CliError::from_error(&e))?;
            let end = detached
                .follow(
                    *from,
                    *log_from,
                    *follow,
                    std::time::Duration::from_secs(*idle),
                    &mut std::io::stdout().lock(),
                    &mut std::io::stderr().lock(),
                )
                .map_err(|e| CliError::from_error(&e))?;
            if end == FollowEnd::Gone {
                eprintln!(
                    "apply {run} ended without reporting an outcome; the next apply rolls back what it started"
                );
                return Ok(Exit::ApplyGone);
            }
        }
        AgentCommand::Hash { file } => {
            let (sha256, _) = crate::digest::sha256_file(file)
                .map_err(|e| CliError::new(format!("cannot hash {}: {e}", file.display())))?;
            println!("{sha256}");
        }
        AgentCommand::Version => {
            println!(
                "{}",
                serde_json::json!({
                    "agent_version": crate::agent::AGENT_VERSION,
                    "host_state": crate::model::host::HOST_STATE_FORMAT,
                    "plan": crate::plan::PLAN_FORMAT,
                    "apply": crate::model::apply::APPLY_FORMAT,
                    // The file this process runs from (symlinks resolved): the reconciler
                    // tells its own build from another one with the same version by it.
                    "executable": std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                })
            );
        }
    }
    Ok(Exit::Ok)
}
