//! `clients/<id>/servers/<hostname>.yml`: a server, its datacenter and addresses, and how its
//! agent is reached (transport, SSH endpoint, sandbox root, service manager). File types only
//! (serde and schema); reaching hosts lives in `transport`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `clients/<client>/servers/<hostname>.yml`: one machine Clarity converges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Host name; must equal the file name and be unique across all clients.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))]
    pub hostname: String,
    /// Code of one of this client's datacenters.
    pub datacenter: String,
    /// Addresses the reconciler may reach the host on; the first is used unless
    /// `agent.ssh.address` says otherwise.
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    /// Hardware or VM sizing, for inventory reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specifications: Option<Specifications>,
    /// How the machine is provided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualization: Option<Virtualization>,
    /// Operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OperatingSystem>,
    /// How the reconciler reaches this host's agent.
    pub agent: AgentSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpAddress {
    /// IPv4 or IPv6 address.
    pub address: String,
    /// Network the address belongs to.
    #[serde(default, rename = "type")]
    pub kind: AddressType,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressType {
    #[default]
    Private,
    Public,
    Management,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Specifications {
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    /// Memory in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_gb: Option<u32>,
    /// Disk in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Virtualization {
    BareMetal,
    Vm,
    Lxc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatingSystem {
    /// Distribution, e.g. `debian`.
    pub family: String,
    /// Release, e.g. `"12"` (quote it so YAML keeps it a string).
    pub version: String,
}

/// Where and how the agent runs for this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// `ssh` for real hosts; `local` runs the agent on the reconciler's machine against a
    /// sandbox directory (the `mock` profile).
    pub transport: Transport,
    /// SSH connection settings (transport `ssh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
    /// Sandbox root for transport `local`: a relative path is resolved under the reconciler's
    /// work directory (`--work-dir`); it may not contain `..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Service manager on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_manager: Option<ServiceManager>,
    /// Container runtimes on the host, for `docker` and `lxc` artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<super::ContainerRuntimeSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ssh,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    /// systemd units (production).
    Systemd,
    /// supervisord programs, where systemd is not PID 1.
    Supervisor,
    /// A detached process with a pidfile; for `mock` sandboxes only, never production.
    Process,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// Address to connect to; defaults to the first of `ip_addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Remote user; defaults to the `User` of the reconciler's ssh config for this host, else
    /// `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// TCP port; defaults to the `Port` of the reconciler's ssh config for this host, else 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Pinned host key in `known_hosts` form (`ssh-ed25519 AAAA...`); when absent the
    /// reconciler's known_hosts file decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Private key file on the reconciler's machine; defaults to the `IdentityFile` of the
    /// reconciler's ssh config for this host, else the reconciler's `--identity`, else
    /// ssh-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Run the agent as root with `sudo -n` (for a `user` other than root). The host needs
    /// the sudoers rule `USER ALL=(root) NOPASSWD: /var/lib/clarity/agent/clarity-reconcile-*`
    /// and `/var/lib/clarity/agent` owned by that user (see docs/operations.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sudo: bool,
    /// The jump host (bastion) to reach this host through, as `[user@]host[:port]` or a `Host`
    /// alias of the reconciler's ssh config; defaults to the ssh config's `ProxyJump` for this
    /// host. `none` connects directly even when the ssh config names a jump host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_jump: Option<String>,
}
