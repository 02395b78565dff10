//! The config repository's data model: one serde + schemars type per file kind, with the field
//! names operators write. These types describe files as written (after schema validation); the
//! cross-checked whole is `load::Inventory`. Nothing here reads files or talks to hosts.

pub mod apply;
mod artifact;
mod client;
mod container;
mod datacenter;
mod deployment;
pub mod docs;
pub mod host;
pub mod reference;
mod repository;
pub mod run;
mod server;
mod settings;

pub use artifact::*;
pub use client::*;
pub use container::*;
pub use datacenter::*;
pub use deployment::*;
pub use repository::*;
pub use server::*;
pub use settings::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a secret by name. The value lives age-encrypted in the client's secrets file
/// for the profile and is only ever decrypted in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the secret in `secrets/<client>/<profile>.yml` of the deploying client.
    pub secret: String,
}

/// A count (`3`) or a percentage of the targets (`"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CountOrPercent {
    Count(u32),
    Percent(Percent),
}

/// A percentage written as a quoted string, `"NN%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Percent(pub u8);

impl JsonSchema for Percent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A percentage such as \"25%\".",
            "type": "string",
            "pattern": "^(100|[1-9]?[0-9])%$"
        })
    }
}

impl TryFrom<String> for Percent {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.strip_suffix('%')
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| *n <= 100)
            .map(Percent)
            .ok_or_else(|| format!("`{s}` is not a percentage like \"25%\""))
    }
}

impl From<Percent> for String {
    fn from(p: Percent) -> String {
        format!("{}%", p.0)
    }
}

impl CountOrPercent {
    /// How many of `total` items this stands for; a non-zero percentage is at least 1.
    pub fn of(self, total: usize) -> usize {
        match self {
            CountOrPercent::Count(n) => n as usize,
            CountOrPercent::Percent(Percent(p)) => {
                let n = (total * p as usize).div_ceil(100);
                if p > 0 { n.max(1) } else { 0 }
            }
        }
    }
}

/// Every kind of file in a config repository, with the schema file that describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Settings,
    Client,
    Datacenter,
    Server,
    Artifact,
    Repository,
    Deployment,
    Secrets,
}

impl FileKind {
    pub const ALL: [FileKind; 8] = [
        FileKind::Settings,
        FileKind::Client,
        FileKind::Datacenter,
        FileKind::Server,
        FileKind::Artifact,
        FileKind::Repository,
        FileKind::Deployment,
        FileKind::Secrets,
    ];

    /// The schema's file name under `schemas/`.
    pub fn schema_file(self) -> &'static str {
        match self {
            FileKind::Settings => "clarity.schema.json",
            FileKind::Client => "client.schema.json",
            FileKind::Datacenter => "datacenter.schema.json",
            FileKind::Server => "server.schema.json",
            FileKind::Artifact => "artifact.schema.json",
            FileKind::Repository => "repository.schema.json",
            FileKind::Deployment => "deployment.schema.json",
            FileKind::Secrets => "secrets.schema.json",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Settings => "clarity.yml",
            FileKind::Client => "client",
            FileKind::Datacenter => "datacenter",
            FileKind::Server => "server",
            FileKind::Artifact => "artifact",
            FileKind::Repository => "repository",
            FileKind::Deployment => "deployment",
            FileKind::Secrets => "secrets",
        }
    }

    /// Where files of this kind live.
    pub fn location(self) -> &'static str {
        match self {
            FileKind::Settings => "clarity.yml",
            FileKind::Client => "clients/<client>/client.yml",
            FileKind::Datacenter => "clients/<client>/datacenters/<code>.yml",
            FileKind::Server => "clients/<client>/servers/<hostname>.yml",
            FileKind::Artifact => "artifacts/<id>.yml",
            FileKind::Repository => "repositories/<name>.yml",
            FileKind::Deployment => "clients/<client>/deployments/<artifact>/<profile>.yml",
            FileKind::Secrets => "secrets/<client>/<profile>.yml",
        }
    }

    /// The text of `schemas/<kind>.schema.json` as checked in.
    pub fn schema_text(self) -> String {
        let mut s = serde_json::to_string_pretty(&self.schema()).expect("schemas serialize");
        s.push('\n');
        s
    }

    /// The JSON Schema generated from the Rust type for this kind.
    pub fn schema(self) -> schemars::Schema {
        let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        match self {
            FileKind::Settings => generator.into_root_schema_for::<Settings>(),
            FileKind::Client => generator.into_root_schema_for::<Client>(),
            FileKind::Datacenter => generator.into_root_schema_for::<Datacenter>(),
            FileKind::Server => generator.into_root_schema_for::<Server>(),
            FileKind::Artifact => generator.into_root_schema_for::<Artifact>(),
            FileKind::Repository => generator.into_root_schema_for::<Repository>(),
            FileKind::Deployment => generator.into_root_schema_for::<Deployment>(),
            FileKind::Secrets => generator.into_root_schema_for::<SecretsFile>(),
        }
    }
}

/// `secrets/<client>/<profile>.yml`: secret names in clear (so reviewers see which secret
/// changed), each mapped to an ASCII-armored age ciphertext.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretsFile(pub std::collections::BTreeMap<String, String>);

impl JsonSchema for SecretsFile {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretsFile".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`secrets/<client>/<profile>.yml`: secret names in clear (so reviewers see which secret changed), each mapped to an ASCII-armored age ciphertext. Manage it with `clarity-reconcile secret set|get|list|rekey`.",
            "type": "object",
            "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
            "additionalProperties": {
                "type": "string",
                "description": "An age ciphertext in ASCII armor (-----BEGIN AGE ENCRYPTED FILE-----)."
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_up_and_never_to_zero() {
        assert_eq!(CountOrPercent::Percent(Percent(25)).of(10), 3);
        assert_eq!(CountOrPercent::Percent(Percent(1)).of(10), 1);
        assert_eq!(CountOrPercent::Percent(Percent(0)).of(10), 0);
        assert_eq!(CountOrPercent::Count(2).of(10), 2);
    }

    #[test]
    fn percent_parses_only_percentages() {
        assert!(Percent::try_from("50%".to_string()).is_ok());
        assert!(Percent::try_from("101%".to_string()).is_err());
        assert!(Percent::try_from("5".to_string()).is_err());
    }
}
