//! Reaching hosts from the command line: the options every command that talks to agents
//! shares (keys, known_hosts, timeouts, how many hosts at once), and [`Reach`], which picks a
//! host's transport — its sandbox for `local`, [`crate::transport::ssh`] for `ssh` — and keeps
//! one SSH connection per host for the whole run, planning and applying alike.

use super::CliError;
use super::options::{defaults, merged};
use crate::desired::{DesiredHost, SshEndpoint};
use crate::model::Transport;
use crate::model::apply::{AgentEvent, ApplyRequest, HostOutcome};
use crate::model::host::ActualHost;
use crate::transport::agent_binary::HASH_CACHE_FILE;
use crate::transport::pool;
use crate::transport::ssh::{AgentBinary, Fleet, SshOptions, SshTarget};
use crate::transport::ssh_config::{JumpSpec, SshConfig};
use crate::transport::{Local, TransportError};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const HEADING: &str = "Reaching hosts";

/// How the reconciler reaches `ssh` hosts: flattened into the commands that reach hosts only.
#[derive(Debug, Clone, Args)]
pub struct ReachArgs {
    /// Private key for SSH hosts without their own `agent.ssh.identity_file`; without either,
    /// the keys of ssh-agent (`SSH_AUTH_SOCK`).
    #[arg(long, help_heading = HEADING, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The known_hosts file that must know every SSH host without a pinned
    /// `agent.ssh.host_key` (default: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts).
    #[arg(long, help_heading = HEADING, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust an SSH host that known_hosts does not know yet and record its key there. A key
    /// that differs from a recorded or pinned one is refused all the same.
    #[arg(long, help_heading = HEADING)]
    pub accept_new_host_keys: bool,
    /// The OpenSSH client config whose `Host` blocks give SSH hosts their `User`, `Port`,
    /// `IdentityFile` and `ProxyJump` where the server file does not (default: ~/.ssh/config
    /// when it exists).
    #[arg(long, help_heading = HEADING, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Seconds to connect to, and log in on, an SSH host.
    #[arg(long, help_heading = HEADING, default_value_t = 10, value_name = "SECONDS")]
    pub connect_timeout: u64,
    /// Seconds any one command on an SSH host may take.
    #[arg(long, help_heading = HEADING, default_value_t = 60, value_name = "SECONDS")]
    pub command_timeout: u64,
    /// Seconds one host may take to be inspected, or to apply one deployment (reconnects
    /// included); then it is reported and the others carry on.
    #[arg(long, help_heading = HEADING, default_value_t = 1800, value_name = "SECONDS")]
    pub host_timeout: u64,
    /// Seconds to keep trying to reconnect to a host whose connection dropped.
    #[arg(long, help_heading = HEADING, default_value_t = 60, value_name = "SECONDS")]
    pub reconnect_timeout: u64,
    /// Hosts worked on at the same time; a slow or dead host holds up only its own slot.
    #[arg(long, help_heading = HEADING, default_value_t = 32, value_name = "N")]
    pub parallel: usize,
    /// SSH connections open at once; opening one more first closes the least recently used
    /// idle one. `--watch` keeps connections open between passes, up to this many.
    #[arg(long, help_heading = HEADING, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,
    /// Agent uploads at once (first contact, a new build); the other hosts wait their turn.
    #[arg(long, help_heading = HEADING, default_value_t = 8, value_name = "N")]
    pub max_uploads: usize,
}

impl ReachArgs {
    /// These options, with those given before the subcommand where these are still their
    /// defaults (`clarity-reconcile --identity KEY drift`).
    pub fn or(&self, before: &ReachArgs) -> ReachArgs {
        let d: ReachArgs = defaults();
        ReachArgs {
            identity: self.identity.clone().or_else(|| before.identity.clone()),
            known_hosts: self
                .known_hosts
                .clone()
                .or_else(|| before.known_hosts.clone()),
            accept_new_host_keys: self.accept_new_host_keys || before.accept_new_host_keys,
            ssh_config: self
                .ssh_config
                .clone()
                .or_else(|| before.ssh_config.clone()),
            connect_timeout: merged(
                &self.connect_timeout,
                &before.connect_timeout,
                &d.connect_timeout,
            ),
            command_timeout: merged(
                &self.command_timeout,
                &before.command_timeout,
                &d.command_timeout,
            ),
            host_timeout: merged(&self.host_timeout, &before.host_timeout, &d.host_timeout),
            reconnect_timeout: merged(
                &self.reconnect_timeout,
                &before.reconnect_timeout,
                &d.reconnect_timeout,
            ),
            parallel: merged(&self.parallel, &before.parallel, &d.parallel),
            max_connections: merged(
                &self.max_connections,
                &before.max_connections,
                &d.max_connections,
            ),
            max_uploads: merged(&self.max_uploads, &before.max_uploads, &d.max_uploads),
        }
    }

    fn ssh_options(&self) -> SshOptions {
        SshOptions {
            identity: self.identity.clone(),
            known_hosts: self.known_hosts.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            command_timeout: Duration::from_secs(self.command_timeout.max(1)),
            host_timeout: Duration::from_secs(self.host_timeout.max(1)),
            reconnect_timeout: Duration::from_secs(self.reconnect_timeout),
            max_connections: self.max_connections.max(1),
            max_uploads: self.max_uploads.max(1),
        }
    }

    /// The threads hosts are worked on by (`--parallel`).
    pub fn thread_pool(&self) -> Result<rayon::ThreadPool, CliError> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.parallel.max(1))
            .thread_name(|i| format!("host-{i}"))
            .build()
            .map_err(|e| CliError::new(format!("cannot start {} threads: {e}", self.parallel)))
    }
}

/// What a run needs to reach hosts.
pub(super) struct Reach<'a> {
    exe: &'a Path,
    work_dir: &'a Path,
    assume_empty: bool,
    /// `--deployment`: the host's other deployments are out of this run's sight, so they are
    /// neither reported as no longer desired nor pruned.
    only: Option<&'a str>,
    /// This process's fleet for these settings: in `--watch`, the same one every pass, with
    /// its connections still open ([`crate::transport::pool`]).
    fleet: Arc<Fleet>,
    /// Agents the fleet had installed before this run (the run reports its own).
    installs_before: usize,
    /// `--ssh-config` (or ~/.ssh/config), or why it cannot be used (reported for every SSH
    /// host, which it would otherwise have misdirected).
    ssh_config: Result<SshConfig, String>,
}

impl<'a> Reach<'a> {
    pub fn new(
        args: &ReachArgs,
        exe: &'a Path,
        work_dir: &'a Path,
        assume_empty: bool,
        only: Option<&'a str>,
    ) -> Reach<'a> {
        // Notes go to stderr: stdout may be a JSON or Markdown plan.
        let notes = std::sync::Arc::new(|line: &str| tracing::info!("{line}"));
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let options = args.ssh_options();
        let cache = work_dir.join(HASH_CACHE_FILE);
        let key = format!("{options:?}\0{}\0{}", exe.display(), cache.display());
        let fleet = pool::fleet(key, || {
            Fleet::new(
                options,
                // The binary's sha256 names its agent build on hosts; remembered in the work
                // directory so that a run does not hash the binary again.
                AgentBinary::cached(exe.to_path_buf(), cache),
                notes,
            )
        });
        Reach {
            ssh_config: SshConfig::load(args.ssh_config.as_deref(), home.as_deref()),
            exe,
            work_dir,
            assume_empty,
            only,
            installs_before: fleet.pool().installs(),
            fleet,
        }
    }

    /// The agent of a `local` server.
    pub fn local(&self, host: &DesiredHost) -> Result<Local, TransportError> {
        match (host.transport, &host.local_root) {
            (Transport::Local, Some(root)) => {
                Ok(Local::new(&host.server, self.exe, self.work_dir.join(root)))
            }
            _ => Err(TransportError {
                host: host.server.clone(),
                message: "transport `local` needs `agent.root`".into(),
                unreachable: true,
            }),
        }
    }

    /// How `host` is reached (see [`ssh_target`]).
    fn ssh_target(&self, host: &DesiredHost) -> Result<SshTarget, TransportError> {
        let refused = |message: String, unreachable: bool| TransportError {
            host: host.server.clone(),
            message,
            unreachable,
        };
        let Some(ssh) = &host.ssh else {
            return Err(refused(
                "transport `ssh` needs an address (ip_addresses or agent.ssh.address)".into(),
                true,
            ));
        };
        let config = self
            .ssh_config
            .as_ref()
            .map_err(|e| refused(format!("the ssh config cannot be used: {e}"), false))?;
        ssh_target(&host.server, ssh, config).map_err(|e| refused(e, false))
    }
}

impl crate::apply::fleet::Hosts for Reach<'_> {
    /// The host's actual state, from its agent.
    fn inspect(&self, host: &DesiredHost) -> Result<ActualHost, TransportError> {
        match host.transport {
            Transport::Local => self.local(host)?.inspect(),
            Transport::Ssh => {
                let h = self.fleet.host(self.ssh_target(host)?);
                let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                h.inspect()
            }
        }
    }

    /// Sends `req` to the host's agent and hands back its events as they arrive.
    fn apply(
        &self,
        host: &DesiredHost,
        req: &ApplyRequest,
        lock_timeout_s: u64,
        on_event: &mut dyn FnMut(&AgentEvent),
    ) -> Result<HostOutcome, TransportError> {
        match host.transport {
            Transport::Local => self.local(host)?.apply(req, lock_timeout_s, on_event),
            Transport::Ssh => {
                let h = self.fleet.host(self.ssh_target(host)?);
                let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                h.apply(req, lock_timeout_s, on_event)
            }
        }
    }

    /// Closes the host's connection, if it has one (it has nothing more to do in this run).
    fn release(&self, server: &str) {
        self.fleet.release(server);
    }

    fn assume_empty(&self) -> bool {
        self.assume_empty
    }

    fn only(&self) -> Option<&str> {
        self.only
    }
}

/// The run's one line about the agents it installed: the only change a `--dry-run` makes on
/// hosts, so it says so whatever the command (each host's own note says where and why).
impl Drop for Reach<'_> {
    fn drop(&mut self) {
        let n = self.fleet.pool().installs() - self.installs_before;
        if n > 0 {
            tracing::info!(
                "installed agent {} ({}) on {n} host{}",
                crate::agent::AGENT_VERSION,
                self.fleet.build().unwrap_or_default(),
                if n == 1 { "" } else { "s" }
            );
        }
    }
}

/// How server `server` is reached: the server file's `agent.ssh` first, then the ssh config's
/// `Host` blocks for its host name or address, then the defaults (root, 22; the key falls back
/// to `--identity` and ssh-agent when the connection logs in).
fn ssh_target(server: &str, ssh: &SshEndpoint, config: &SshConfig) -> Result<SshTarget, String> {
    let found = config.lookup(&[server, &ssh.address]);
    let user = ssh
        .user
        .clone()
        .or(found.user)
        .unwrap_or_else(|| "root".into());
    let jump = match ssh.proxy_jump.clone().or(found.proxy_jump) {
        Some(spec) if !spec.eq_ignore_ascii_case("none") => {
            let j = JumpSpec::parse(&spec).map_err(|e| {
                format!("agent.ssh.proxy_jump (or the ssh config's ProxyJump): {e}")
            })?;
            // A jump host named by its ssh config alias gets that alias's settings; what the
            // jump spec itself says comes first.
            let alias = config.lookup(&[&j.host]);
            Some(Box::new(SshTarget {
                host: server.to_string(),
                address: alias.hostname.unwrap_or(j.host),
                port: j.port.or(alias.port).unwrap_or(22),
                // As OpenSSH does: the bastion's user is not the host's.
                user: j.user.or(alias.user).unwrap_or_else(local_user),
                host_key: None,
                identity_file: alias.identity_file,
                sudo: false,
                jump: None,
            }))
        }
        _ => None,
    };
    Ok(SshTarget {
        host: server.to_string(),
        address: ssh.address.clone(),
        port: ssh.port.or(found.port).unwrap_or(22),
        user,
        host_key: ssh.host_key.clone(),
        identity_file: ssh
            .identity_file
            .as_deref()
            .map(expand_home)
            .or(found.identity_file),
        sudo: ssh.sudo,
        jump,
    })
}

/// The user this reconciler runs as (a jump host's default user, as with OpenSSH).
fn local_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

/// `~/x` in a server file means the reconciler user's home.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> SshEndpoint {
        SshEndpoint {
            address: "10.0.0.5".into(),
            port: None,
            user: None,
            host_key: None,
            identity_file: None,
            sudo: true,
            proxy_jump: None,
        }
    }

    const CONFIG: &str = "Host bastion\n  HostName 10.9.0.1\n  Port 2222\n  \
                          IdentityFile /keys/bastion\nHost web-*\n  User deploy\n  Port 2200\n  \
                          IdentityFile /keys/web\n  ProxyJump bastion\n";

    #[test]
    fn the_server_file_wins_then_the_ssh_config_then_the_defaults() {
        let config = SshConfig::parse(CONFIG, "config", None).unwrap();
        let t = ssh_target("web-1", &endpoint(), &config).unwrap();
        assert_eq!((t.user.as_str(), t.port), ("deploy", 2200));
        assert_eq!(t.identity_file, Some(PathBuf::from("/keys/web")));
        assert!(t.sudo);
        let jump = t.jump.unwrap();
        assert_eq!((jump.address.as_str(), jump.port), ("10.9.0.1", 2222));
        assert_eq!(jump.user, local_user(), "not the host's user");
        assert_eq!(jump.identity_file, Some(PathBuf::from("/keys/bastion")));

        let own = SshEndpoint {
            user: Some("ops".into()),
            port: Some(22),
            identity_file: Some("/keys/own".into()),
            proxy_jump: Some("jump@10.9.0.2:2022".into()),
            ..endpoint()
        };
        let t = ssh_target("web-1", &own, &config).unwrap();
        assert_eq!((t.user.as_str(), t.port), ("ops", 22));
        assert_eq!(t.identity_file, Some(PathBuf::from("/keys/own")));
        let jump = t.jump.unwrap();
        assert_eq!(
            (jump.user.as_str(), jump.address.as_str(), jump.port),
            ("jump", "10.9.0.2", 2022)
        );

        let direct = SshEndpoint {
            proxy_jump: Some("none".into()),
            ..endpoint()
        };
        assert_eq!(ssh_target("web-1", &direct, &config).unwrap().jump, None);
        let t = ssh_target("db-1", &endpoint(), &config).unwrap();
        assert_eq!((t.user.as_str(), t.port, t.jump), ("root", 22, None));

        let bad = SshEndpoint {
            proxy_jump: Some("a,b".into()),
            ..endpoint()
        };
        let e = ssh_target("web-1", &bad, &config).unwrap_err();
        assert!(e.contains("more than one jump host"), "{e}");
    }
}
