//! Inventory × server → `DesiredHost`: what one host should run, fully resolved. References
//! (`${CONFIG:..}`, `${SECRET:..}`, `${ENV:..}`, built-ins) are substituted once, templates are
//! rendered in strict mode, release ids are content hashes. Pure: the environment and the
//! secrets arrive as values; nothing here reads files, the clock or the network.
//!
//! Plaintext secrets live only inside `SecretString`s and `FileContent::exposed`; everything
//! that can be printed (`redacted` texts, hashes, `Debug`) is safe to show.

mod check;
mod render;
mod resolve;
mod secrets;
mod template_scan;

pub use check::check;
pub use render::{SecretBag, Templates};
pub use resolve::{Context, SecretLookup};
pub use secrets::InventorySecrets;

use crate::load::Inventory;
use crate::model::{
    ArtifactType, HealthCheck, Limits, MigrationEngine, Port, RepositoryType, RestartPolicy,
    ServiceManager, Transport, Volume,
};
use crate::secret::SecretString;
use serde::Serialize;
// `resolve` hashes through this import (its `use super::*`).
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// What the plan and the agent know about one host.
#[derive(Debug, Clone, Serialize)]
pub struct DesiredHost {
    pub server: String,
    pub client: String,
    pub datacenter: String,
    pub transport: Transport,
    /// Sandbox root for transport `local`, relative to the reconciler's work directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_root: Option<String>,
    /// How to reach the host for transport `ssh` (address resolved). Not part of any output:
    /// plans show the server, not how it is reached.
    #[serde(skip)]
    pub ssh: Option<SshEndpoint>,
    pub service_manager: ServiceManager,
    /// The server's `agent.containers` settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<crate::model::ContainerRuntimeSettings>,
    /// In dependency order: a deployment comes after the deployments it depends on.
    pub deployments: Vec<DesiredDeployment>,
}

/// A server's `agent.ssh` settings with the address resolved (`agent.ssh.address`, else the
/// first of `ip_addresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    pub address: String,
    /// As the server file says; unset ones come from the ssh config or the defaults.
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Pinned host key, known_hosts-style.
    pub host_key: Option<String>,
    /// Private key file on the reconciler's machine, as written in the server file.
    pub identity_file: Option<String>,
    /// Run the agent with `sudo -n`.
    pub sudo: bool,
    /// `agent.ssh.proxy_jump`, as written.
    pub proxy_jump: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DesiredDeployment {
    /// Name on the host (the artifact id).
    pub name: String,
    pub profile: String,
    /// The deployment file, for messages.
    pub file: String,
    pub artifact: ArtifactSpec,
    /// `<version>-<12 hex of the release content hash>`: a new release whenever the version or
    /// anything inside the release (files, env, service definition) changes.
    pub release: String,
    /// False when the release id includes secrets that could not be decrypted (no identity).
    pub release_known: bool,
    /// Files inside the release directory (relative destinations).
    pub release_files: Vec<DesiredFile>,
    /// Files outside releases (absolute destinations), written atomically, kept for rollback.
    pub host_files: Vec<DesiredFile>,
    pub env: BTreeMap<String, EnvValue>,
    pub service: Option<ServiceSpec>,
    pub migrations: Option<MigrationSpec>,
    pub health_checks: Vec<HealthCheck>,
    pub keep_releases: u32,
    /// Other deployments on the same host this one depends on.
    pub depends_on: Vec<String>,
    /// How the deployment rolls out across its targets.
    pub rollout: Option<crate::model::Rollout>,
    /// This host's priority among the deployment's targets (lower goes first).
    pub priority: i32,
    /// How the release's container runs (`docker` and `lxc` artifacts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
}

/// A container deployment's settings with the deployment-wide fields that apply to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    #[serde(flatten)]
    pub settings: crate::model::ContainerSettings,
    pub restart_policy: RestartPolicy,
    pub autostart: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    pub version: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub source: SourceSpec,
}

/// Where the artifact comes from. Credentials are only secret names here.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSpec {
    pub repository: String,
    #[serde(rename = "type")]
    pub kind: RepositoryType,
    /// The location within the repository.
    pub location: String,
    /// A human-readable address (URL, host:path, or file path) without credentials.
    pub display: String,
    /// How the agent reaches it, credentials included (never serialized with the plan).
    #[serde(skip)]
    pub wire: crate::model::apply::WireSource,
    /// Secrets the source needs that could not be decrypted (apply refuses; dry-run is fine).
    #[serde(skip)]
    pub missing_credentials: Vec<String>,
    /// The repository's cap on a download without a declared size.
    #[serde(skip)]
    pub max_size: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DesiredFile {
    pub destination: String,
    /// Octal mode as written in the config (`0640`).
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The template it was rendered from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub content: FileContent,
}

/// A rendered file. `redacted` has every secret value replaced by `(sensitive)` and is what
/// diffs, notes and logs may show; the plaintext is reachable only through `exposed()`.
#[derive(Clone, Serialize)]
pub struct FileContent {
    #[serde(skip)]
    text: SecretString,
    pub redacted: String,
    /// SHA-256 of the real bytes (with secrets), the comparison key against the host.
    pub sha256: String,
    /// The content includes secret values.
    pub sensitive: bool,
    /// False when some secret could not be decrypted: `sha256` is then not the real hash.
    pub known: bool,
}

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileContent")
            .field("sha256", &self.sha256)
            .field("sensitive", &self.sensitive)
            .finish_non_exhaustive()
    }
}

impl FileContent {
    pub fn new(known: bool, text: String, secrets: &[&str]) -> FileContent {
        let redacted = redact(&text, secrets);
        let sensitive = redacted != text;
        FileContent {
            sha256: sha256_hex(text.as_bytes()),
            text: SecretString::new(text),
            redacted,
            sensitive,
            known,
        }
    }

    /// The real bytes, for writing the file on its host and nothing else.
    pub fn exposed(&self) -> &str {
        self.text.expose()
    }
}

/// Replaces every occurrence of every secret value with `(sensitive)`; longest first, so a
/// secret that contains another is not half-revealed.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut sorted: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    sorted.dedup();
    let mut out = text.to_string();
    for s in sorted {
        if out.contains(s) {
            out = out.replace(s, "(sensitive)");
        }
    }
    out
}

// The digest's old home, still named by `desired::resolve` and `plan::drift` (restructured apart
// from this change); everything else uses `crate::digest`.
use crate::digest::sha256_hex;

#[derive(Debug, Clone, Serialize)]
pub struct EnvValue {
    #[serde(skip)]
    value: SecretString,
    pub redacted: String,
    pub sensitive: bool,
}

impl EnvValue {
    pub fn exposed(&self) -> &str {
        self.value.expose()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceSpec {
    /// Argv as shown (secrets redacted); a relative program path is resolved inside the
    /// release directory.
    pub command: Vec<String>,
    /// The real argv, for the agent only.
    #[serde(skip)]
    pub command_exposed: Vec<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub restart_policy: RestartPolicy,
    pub autostart: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    pub ports: Vec<Port>,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationSpec {
    pub engine: MigrationEngine,
    pub directory: String,
    /// Redacted form of the database address (it may carry a password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip)]
    pub database_exposed: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    pub backup: bool,
}

/// Which hosts to compute.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub client: Option<String>,
    /// These profiles only; empty: every profile.
    pub profiles: Vec<String>,
    pub server: Option<String>,
    /// Only this deployment (artifact id).
    pub deployment: Option<String>,
}

/// A problem computing one host's desired state (a template that does not render, a secret
/// that cannot be decrypted). It names the host and the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredError {
    pub server: String,
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for DesiredError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}: {}:{l}: {}", self.server, self.file, self.message),
            None => write!(f, "{}: {}: {}", self.server, self.file, self.message),
        }
    }
}

/// Every selected server with at least one deployment in the selection, in host-name order.
/// The selected servers (by `--client`, `--server`, and with `--profile` those its deployments
/// target) as hosts to reach, with none of their deployments: what `decommission` needs to
/// take deployments off a server, including one no deployment targets any more.
pub fn bare_hosts(
    inv: &Inventory,
    templates: &Templates,
    selection: &Selection,
    ctx: &Context,
) -> Vec<Result<DesiredHost, Vec<DesiredError>>> {
    let mut out = Vec::new();
    for (client_id, entry) in &inv.clients {
        if selection.client.as_deref().is_some_and(|c| c != client_id) {
            continue;
        }
        for server in entry.servers.keys() {
            if selection.server.as_deref().is_some_and(|s| s != server) {
                continue;
            }
            let in_profiles = selection.profiles.is_empty()
                || entry.deployments.iter().any(|((_, profile), d)| {
                    selection.profiles.contains(profile)
                        && d.value.targets.iter().any(|t| &t.server == server)
                });
            if in_profiles {
                out.push(resolve::host(
                    inv,
                    templates,
                    ctx,
                    client_id,
                    server,
                    &[],
                    &|_| false,
                ));
            }
        }
    }
    out
}

pub fn hosts(
    inv: &Inventory,
    templates: &Templates,
    selection: &Selection,
    ctx: &Context,
) -> Vec<Result<DesiredHost, Vec<DesiredError>>> {
    hosts_except(inv, templates, selection, ctx, &|_| false)
}

/// One deployment of one server: client, server, artifact, profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target<'a> {
    pub client: &'a str,
    pub server: &'a str,
    pub artifact: &'a str,
    pub profile: &'a str,
}

/// Every selected target in host-name order, as `hosts` computes them.
pub fn targets<'a>(inv: &'a Inventory, selection: &Selection) -> Vec<Target<'a>> {
    selected(inv, selection)
        .into_iter()
        .flat_map(|(server, (client, deps))| {
            deps.into_iter().map(move |(artifact, profile)| Target {
                client,
                server,
                artifact,
                profile,
            })
        })
        .collect()
}

/// Like `hosts`, but the deployments `skip` names are left out of each host (the plan cache
/// has their plans); the checks between a host's deployments still see every one of them.
pub fn hosts_except(
    inv: &Inventory,
    templates: &Templates,
    selection: &Selection,
    ctx: &Context,
    skip: &(dyn Fn(&Target) -> bool + Sync),
) -> Vec<Result<DesiredHost, Vec<DesiredError>>> {
    use rayon::prelude::*;
    selected(inv, selection)
        .into_par_iter()
        .map(|(server, (client, deps))| {
            resolve::host(inv, templates, ctx, client, server, &deps, skip)
        })
        .collect()
}

/// server → (client, [(artifact, profile)]) for the selection.
type Targets<'a> = BTreeMap<&'a str, (&'a str, Vec<(&'a str, &'a str)>)>;

fn selected<'a>(inv: &'a Inventory, selection: &Selection) -> Targets<'a> {
    let mut targets: Targets = BTreeMap::new();
    for (client_id, entry) in &inv.clients {
        if selection.client.as_deref().is_some_and(|c| c != client_id) {
            continue;
        }
        if entry
            .client
            .as_ref()
            .is_some_and(|c| c.value.status != crate::model::ClientStatus::Active)
        {
            continue;
        }
        for ((artifact, profile), dep) in &entry.deployments {
            if (!selection.profiles.is_empty() && !selection.profiles.contains(profile))
                || selection
                    .deployment
                    .as_deref()
                    .is_some_and(|d| d != artifact)
            {
                continue;
            }
            for t in &dep.value.targets {
                if selection.server.as_deref().is_some_and(|s| s != t.server) {
                    continue;
                }
                if !entry.servers.contains_key(&t.server) {
                    continue;
                }
                targets
                    .entry(t.server.as_str())
                    .or_insert((client_id.as_str(), Vec::new()))
                    .1
                    .push((artifact.as_str(), profile.as_str()));
            }
        }
    }
    targets
}

/// Orders deployment names so that dependencies come first; ties and cycles fall back to name
/// order (cycles are rejected by `validate`).
pub(crate) fn dependency_order(deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    fn visit(
        name: &str,
        deps: &BTreeMap<String, Vec<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) {
        if done.contains(name) || path.iter().any(|p| p == name) {
            return;
        }
        path.push(name.to_string());
        for d in deps.get(name).into_iter().flatten() {
            if deps.contains_key(d) {
                visit(d, deps, done, path, order);
            }
        }
        path.pop();
        done.insert(name.to_string());
        order.push(name.to_string());
    }
    for name in deps.keys() {
        visit(name, deps, &mut done, &mut Vec::new(), &mut order);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_every_occurrence_longest_first() {
        let r = redact("pw=hunter2 again hunter2x", &["hunter2", "hunter2x"]);
        assert_eq!(r, "pw=(sensitive) again (sensitive)");
        assert_eq!(redact("plain", &[""]), "plain");
    }

    #[test]
    fn file_content_debug_never_shows_text() {
        let c = FileContent::new(true, "password: s3cr3t\n".into(), &["s3cr3t"]);
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!serde_json::to_string(&c).unwrap().contains("s3cr3t"));
        assert_eq!(c.redacted, "password: (sensitive)\n");
        assert!(c.sensitive);
    }

    #[test]
    fn dependencies_come_first() {
        let mut d = BTreeMap::new();
        d.insert("app".to_string(), vec!["db".to_string()]);
        d.insert("db".to_string(), vec![]);
        d.insert("agent".to_string(), vec!["app".to_string()]);
        assert_eq!(dependency_order(&d), vec!["db", "app", "agent"]);
    }
}
