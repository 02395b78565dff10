//! The container parts of the data model: how a deployment of a `docker` or `lxc` artifact
//! runs (`container:` in a deployment file) and how a server's agent drives its container
//! runtime (`agent.containers` in a server file). Types only: nothing here talks to a runtime.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `container:` of a deployment whose artifact is of type `docker` or `lxc`. Each release runs
/// as its own container, named `clarity-<deployment>-<release>`; the deployment's `env_vars`,
/// `config_files`, `restart_policy`, `autostart` and `health_checks` apply to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSettings {
    /// Published ports: `external` on the host forwards to `internal` in the container
    /// (`docker`; an `lxc` container on the host network listens on the host directly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Host directories mounted into the container; host paths must lie under one of
    /// `clarity.yml` `allowed_absolute_roots` and survive releases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ContainerVolume>,
    /// How the container is networked.
    #[serde(default)]
    pub network: ContainerNetwork,
    /// DNS servers for the container (IP addresses; `docker` only, an `lxc` container reads
    /// its own `/etc/resolv.conf`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// CPU and memory limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ContainerLimits>,
    /// Command run in the container, overriding the image's (`docker`: the image `CMD`;
    /// `lxc`: `lxc.init.cmd`). An argv vector, never a shell string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Run a minimal init as PID 1 (`docker --init`), which forwards signals and reaps
    /// children, so that a stop takes a fraction of a second instead of the 10 s timeout.
    #[serde(default = "default_true")]
    pub init: bool,
    /// Where the release's relative `config_files` appear inside the container (a read-only
    /// bind mount of the release directory).
    #[serde(default = "default_config_dir")]
    pub config_dir: String,
}

fn default_true() -> bool {
    true
}

fn default_config_dir() -> String {
    "/etc/clarity".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerPort {
    /// Port on the host; one deployment per server and profile may claim it.
    #[schemars(range(min = 1, max = 65535))]
    pub external: u16,
    /// Port inside the container; defaults to `external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub internal: Option<u16>,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: super::Protocol,
    /// Host address the port is published on (default all addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Name for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ContainerPort {
    pub fn internal(&self) -> u16 {
        self.internal.unwrap_or(self.external)
    }

    /// The host side as the runtimes and the port claims name it: `8080/tcp`.
    pub fn host_port(&self) -> String {
        format!("{}/{}", self.external, self.protocol.as_str())
    }

    /// `[ip:]external`, the host side with its address, for the publish mapping.
    pub fn host_side(&self) -> String {
        match &self.host_ip {
            Some(ip) => format!("{ip}:{}", self.external),
            None => self.external.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerVolume {
    /// Absolute directory on the host, under one of `allowed_absolute_roots`; created when
    /// missing and never removed by Clarity.
    pub host_path: String,
    /// Absolute path inside the container.
    pub container_path: String,
    /// Mount it read-only.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerNetwork {
    /// `bridge` (docker's default bridge, or for `lxc` a veth on `bridge`), `host` (the
    /// host's own network) or `none` (loopback only).
    #[serde(default)]
    pub mode: NetworkMode,
    /// `lxc` with mode `bridge`: the host bridge the container's veth joins (required).
    /// `docker` with mode `bridge`: a user-defined network to join instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Bridge,
    Host,
    None,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerLimits {
    /// Memory ceiling in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4))]
    pub memory_mb: Option<u64>,
    /// CPU quota in percent of one core (`150` = one and a half cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cpu_percent: Option<u32>,
}

/// `agent.containers` of a server: how its agent drives the container runtimes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerRuntimeSettings {
    /// Which runtime runs `docker` artifacts.
    #[serde(default)]
    pub runtime: DockerRuntime,
    /// The runtime's client program (default `/usr/bin/docker` or `/usr/bin/podman`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Options put before every subcommand of the client, e.g. `["-H", "unix:///run/d.sock"]`
    /// for docker or `["--root", "/srv/podman"]` for podman.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment for the client, e.g. `CONTAINERS_CONF` for podman on a host without
    /// systemd. Plain values only: never put secrets here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// LXC's container directory (`lxc-* -P`); default `/var/lib/lxc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lxc_path: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DockerRuntime {
    #[default]
    Docker,
    Podman,
}

impl DockerRuntime {
    pub fn as_str(self) -> &'static str {
        match self {
            DockerRuntime::Docker => "docker",
            DockerRuntime::Podman => "podman",
        }
    }
}
