//! `artifacts/<id>.yml`: an artifact's type (script, tarball, zip, jar, docker, lxc), the
//! repository it is fetched from and its versions with their sha256. File types only (serde and
//! schema); checks across files live in `load`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `artifacts/<id>.yml`: something Clarity can install, with every version it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Identifier; must equal the file name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the artifact is, which decides how it is installed.
    #[serde(rename = "type")]
    pub kind: ArtifactType,
    /// Repository (by name, `repositories/<name>.yml`) that versions are fetched from unless a
    /// deployment overrides it.
    pub repository: String,
    /// Known versions; deployments pick one by `version`.
    #[schemars(length(min = 1))]
    pub versions: Vec<ArtifactVersion>,
    /// Artifacts that must be deployed (and healthy) before this one on the same host.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// How the artifact runs as a service, unless a deployment overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactType {
    /// Java archive, placed in the release and run by the service definition.
    Jar,
    /// Web archive, placed in the release.
    War,
    /// A single executable, made executable in the release.
    Binary,
    /// A single script, made executable in the release.
    Script,
    /// An archive (`.tar.gz`, `.tar.xz`, `.zip`) extracted into the release.
    Tarball,
    /// A container image archive (`docker save` format; OCI archives where the runtime
    /// accepts them), loaded into Docker or Podman and run as one container per release.
    Docker,
    /// One tar archive holding an LXC metadata tarball (`meta.tar*`) and a rootfs tarball
    /// (`rootfs.tar*`), created as one LXC container per release.
    Lxc,
}

impl ArtifactType {
    /// Runs as a container rather than as a service of the host's service manager.
    pub fn is_container(self) -> bool {
        matches!(self, ArtifactType::Docker | ArtifactType::Lxc)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactVersion {
    /// Version string as deployments refer to it (quote it: `"2.4.1"`). It names the release
    /// directory on hosts, so it is one name: letters, digits, `.`, `_`, `+`, `-`, starting
    /// with a letter or digit, at most 100 characters.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$"))]
    pub version: String,
    /// SHA-256 of the file, 64 lowercase or uppercase hex characters; checked before anything
    /// points at the download.
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: String,
    /// Path of the file within the repository (relative, no `..`).
    pub location: String,
    /// Size in bytes; checked with the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// How an installed release runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Command as an argv vector (never a shell string); relative program paths are resolved
    /// inside the release directory. Supports `${...}` references.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
}
