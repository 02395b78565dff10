//! Files → `Inventory`. Every config file is parsed with positions, checked against its JSON
//! Schema, deserialized into its model type, and then the whole is cross-checked. All problems
//! are collected and returned together; nothing stops at the first error. Pure: the input is a
//! `source::Snapshot` already in memory.

mod checks;
mod checks_identity;
mod containers;
pub mod env_refs;
pub mod operator_policy;
mod repository_kinds;
mod rollout_checks;
pub mod schema;
mod ssh_reach;
pub mod yaml;

use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::model::{
    Artifact, Client, Datacenter, Deployment, FileKind, Repository, SecretsFile, Server, Settings,
};
use crate::source::{Content, Snapshot};
pub use checks::config_lookup;
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
pub use yaml::{Node, Step};

/// A model value together with the file it came from and its position tree.
#[derive(Debug, Clone)]
pub struct Doc<T> {
    pub file: String,
    pub value: T,
    pub node: Arc<Node>,
}

impl<T> Doc<T> {
    pub fn pos(&self, path: &[Step]) -> Pos {
        self.node.pos_at(path)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientEntry {
    pub client: Option<Doc<Client>>,
    pub datacenters: BTreeMap<String, Doc<Datacenter>>,
    pub servers: BTreeMap<String, Doc<Server>>,
    /// Keyed by (artifact, profile).
    pub deployments: BTreeMap<(String, String), Doc<Deployment>>,
    /// Keyed by profile.
    pub secrets: BTreeMap<String, Doc<SecretsFile>>,
    /// age recipients allowed to read this client's secrets, with their line numbers.
    pub recipients: Vec<(u32, String)>,
}

/// A validated config repository.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub settings: Settings,
    pub clients: BTreeMap<String, ClientEntry>,
    pub artifacts: BTreeMap<String, Doc<Artifact>>,
    pub repositories: BTreeMap<String, Doc<Repository>>,
    /// Template text keyed by path under `templates/`.
    pub templates: BTreeMap<String, Arc<str>>,
}

impl Inventory {
    /// The server `hostname` and the client it belongs to.
    pub fn server(&self, hostname: &str) -> Option<(&str, &Doc<Server>)> {
        self.clients
            .iter()
            .find_map(|(id, c)| c.servers.get(hostname).map(|s| (id.as_str(), s)))
    }
}

/// The result of loading: the inventory (possibly partial) and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    pub inventory: Inventory,
    pub diagnostics: Diagnostics,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.error_count() > 0
    }
}

/// Where a file sits in the layout and what it therefore is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Settings,
    Client {
        client: String,
    },
    Datacenter {
        client: String,
        name: String,
    },
    Server {
        client: String,
        name: String,
    },
    Deployment {
        client: String,
        artifact: String,
        profile: String,
    },
    Artifact {
        name: String,
    },
    Repository {
        name: String,
    },
    Secrets {
        client: String,
        profile: String,
    },
    Recipients {
        client: String,
    },
    Template {
        name: String,
    },
    Ignored,
    Unknown(&'static str),
}

fn classify(path: &str) -> Place {
    // Trusted signing keys (`approval.trusted_keys`), read by the watch loop from the tree.
    if path.starts_with("keys/") {
        return Place::Ignored;
    }
    if let Some(name) = path.strip_prefix("templates/") {
        return Place::Template {
            name: name.to_string(),
        };
    }
    if path.ends_with(".md") || path.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
        return Place::Ignored;
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.last().is_some_and(|n| n.ends_with(".yaml")) {
        return Place::Unknown("config files use the `.yml` extension: rename it");
    }
    let yml = |s: &str| s.strip_suffix(".yml").map(str::to_string);
    match parts.as_slice() {
        ["clarity.yml"] => Place::Settings,
        ["clients", c, "client.yml"] => Place::Client {
            client: c.to_string(),
        },
        ["clients", c, "datacenters", f] if yml(f).is_some() => Place::Datacenter {
            client: c.to_string(),
            name: yml(f).unwrap_or_default(),
        },
        ["clients", c, "servers", f] if yml(f).is_some() => Place::Server {
            client: c.to_string(),
            name: yml(f).unwrap_or_default(),
        },
        ["clients", c, "deployments", a, f] if yml(f).is_some() => Place::Deployment {
            client: c.to_string(),
            artifact: a.to_string(),
            profile: yml(f).unwrap_or_default(),
        },
        ["artifacts", f] if yml(f).is_some() => Place::Artifact {
            name: yml(f).unwrap_or_default(),
        },
        ["repositories", f] if yml(f).is_some() => Place::Repository {
            name: yml(f).unwrap_or_default(),
        },
        ["secrets", c, "recipients.txt"] => Place::Recipients {
            client: c.to_string(),
        },
        ["secrets", c, f] if yml(f).is_some() => Place::Secrets {
            client: c.to_string(),
            profile: yml(f).unwrap_or_default(),
        },
        ["clients", ..] => Place::Unknown(
            "client files live at clients/<client>/client.yml, datacenters/<code>.yml, servers/<hostname>.yml or deployments/<artifact>/<profile>.yml",
        ),
        ["secrets", ..] => Place::Unknown(
            "secrets live at secrets/<client>/<profile>.yml with recipients in secrets/<client>/recipients.txt",
        ),
        _ => Place::Unknown("artifacts/ and repositories/ hold one <name>.yml per entry"),
    }
}

/// One parsed file before cross-checks.
enum Parsed {
    Settings(Doc<Settings>),
    Client(String, Doc<Client>),
    Datacenter(String, String, Doc<Datacenter>),
    Server(String, String, Doc<Server>),
    Deployment(String, String, String, Doc<Deployment>),
    Artifact(String, Doc<Artifact>),
    Repository(String, Doc<Repository>),
    Secrets(String, String, Doc<SecretsFile>),
    Recipients(String, Vec<(u32, String)>),
    Template(String, Arc<str>),
    Nothing,
}

/// Parses `text` as a `T` of `kind`: position tree, then schema, then typed value.
fn parse_doc<T: DeserializeOwned>(
    kind: FileKind,
    file: &str,
    bytes: &[u8],
    diags: &mut Vec<Diagnostic>,
) -> Option<Doc<T>> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    "encoding",
                    file,
                    Pos::START,
                    format!("file is not valid UTF-8 (byte {})", e.valid_up_to()),
                )
                .with_hint("save the file as UTF-8"),
            );
            return None;
        }
    };
    let node = match yaml::parse(text) {
        Ok(n) => n,
        Err(e) => {
            let (code, hint) = if e.budget {
                (
                    "yaml-budget",
                    "config files need no deep alias expansion; write the values out",
                )
            } else {
                (
                    "yaml-syntax",
                    "check indentation and quoting near this position",
                )
            };
            diags.push(Diagnostic::error(code, file, e.pos, e.message).with_hint(hint));
            return None;
        }
    };
    let json = node.to_json();
    let schema_errors = schema::check(kind, file, &node, &json);
    if !schema_errors.is_empty() {
        diags.extend(schema_errors);
        return None;
    }
    match serde_json::from_value::<T>(json) {
        Ok(value) => Some(Doc {
            file: file.to_string(),
            value,
            node: Arc::new(node),
        }),
        Err(e) => {
            // The schema and the types agree, so this is a value the schema cannot express
            // (e.g. a number out of range for its Rust type).
            diags.push(Diagnostic::error(
                "invalid-value",
                file,
                node.pos,
                e.to_string(),
            ));
            None
        }
    }
}

fn parse_one(path: &str, content: &Content) -> (Parsed, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let place = classify(path);
    let bytes: &[u8] = match content {
        Content::File(b) => b,
        // Symlinks are checked (and, for templates, followed) by the cross-checks.
        Content::Symlink(_) => return (Parsed::Nothing, diags),
    };
    let parsed = match place {
        Place::Settings => {
            parse_doc(FileKind::Settings, path, bytes, &mut diags).map(Parsed::Settings)
        }
        Place::Client { client } => {
            parse_doc(FileKind::Client, path, bytes, &mut diags).map(|d| Parsed::Client(client, d))
        }
        Place::Datacenter { client, name } => {
            parse_doc(FileKind::Datacenter, path, bytes, &mut diags)
                .map(|d| Parsed::Datacenter(client, name, d))
        }
        Place::Server { client, name } => parse_doc(FileKind::Server, path, bytes, &mut diags)
            .map(|d| Parsed::Server(client, name, d)),
        Place::Deployment {
            client,
            artifact,
            profile,
        } => parse_doc(FileKind::Deployment, path, bytes, &mut diags)
            .map(|d| Parsed::Deployment(client, artifact, profile, d)),
        Place::Artifact { name } => parse_doc(FileKind::Artifact, path, bytes, &mut diags)
            .map(|d| Parsed::Artifact(name, d)),
        Place::Repository { name } => parse_doc(FileKind::Repository, path, bytes, &mut diags)
            .map(|d| Parsed::Repository(name, d)),
        Place::Secrets { client, profile } => parse_doc(FileKind::Secrets, path, bytes, &mut diags)
            .map(|d| Parsed::Secrets(client, profile, d)),
        Place::Recipients { client } => Some(Parsed::Recipients(
            client,
            String::from_utf8_lossy(bytes)
                .lines()
                .enumerate()
                .map(|(i, l)| (i as u32 + 1, l.trim().to_string()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .collect(),
        )),
        Place::Template { name } => match std::str::from_utf8(bytes) {
            Ok(text) => Some(Parsed::Template(name, Arc::from(text))),
            Err(_) => {
                diags.push(Diagnostic::error(
                    "encoding",
                    path,
                    Pos::START,
                    "template is not valid UTF-8",
                ));
                None
            }
        },
        Place::Ignored => None,
        Place::Unknown(hint) => {
            diags.push(
                Diagnostic::error(
                    "unexpected-file",
                    path,
                    Pos::START,
                    "file is not where Clarity reads config from, so it would be ignored",
                )
                .with_hint(hint),
            );
            None
        }
    };
    (parsed.unwrap_or(Parsed::Nothing), diags)
}

/// Loads and cross-checks a snapshot.
pub fn load(snapshot: &Snapshot) -> Loaded {
    let results: Vec<(Parsed, Vec<Diagnostic>)> = snapshot
        .files
        .par_iter()
        .map(|(path, file)| parse_one(path, &file.content))
        .collect();

    let mut diagnostics = Diagnostics::default();
    let mut inv = Inventory::default();
    let mut settings_doc = None;
    for (parsed, diags) in results {
        diagnostics.extend(diags);
        match parsed {
            Parsed::Settings(d) => settings_doc = Some(d),
            Parsed::Client(c, d) => inv.clients.entry(c).or_default().client = Some(d),
            Parsed::Datacenter(c, n, d) => {
                inv.clients.entry(c).or_default().datacenters.insert(n, d);
            }
            Parsed::Server(c, n, d) => {
                inv.clients.entry(c).or_default().servers.insert(n, d);
            }
            Parsed::Deployment(c, a, p, d) => {
                inv.clients
                    .entry(c)
                    .or_default()
                    .deployments
                    .insert((a, p), d);
            }
            Parsed::Artifact(n, d) => {
                inv.artifacts.insert(n, d);
            }
            Parsed::Repository(n, d) => {
                inv.repositories.insert(n, d);
            }
            Parsed::Secrets(c, p, d) => {
                inv.clients.entry(c).or_default().secrets.insert(p, d);
            }
            Parsed::Recipients(c, r) => inv.clients.entry(c).or_default().recipients = r,
            Parsed::Template(n, t) => {
                inv.templates.insert(n, t);
            }
            Parsed::Nothing => {}
        }
    }
    if let Some(d) = &settings_doc {
        inv.settings = d.value.clone();
    }
    diagnostics.extend(checks::run(snapshot, &mut inv, settings_doc.as_ref()));
    let mut reach = Vec::new();
    ssh_reach::check(&inv, &mut reach);
    diagnostics.extend(reach);
    Loaded {
        inventory: inv,
        diagnostics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_classified() {
        assert_eq!(
            classify("clients/acme/servers/web-1.yml"),
            Place::Server {
                client: "acme".into(),
                name: "web-1".into()
            }
        );
        assert!(matches!(
            classify("clients/acme/server/web-1.yml"),
            Place::Unknown(_)
        ));
        assert!(matches!(classify("artifacts/x.yaml"), Place::Unknown(_)));
        assert_eq!(classify("clients/acme/README.md"), Place::Ignored);
        assert_eq!(
            classify("templates/a/b.j2"),
            Place::Template {
                name: "a/b.j2".into()
            }
        );
    }
}
