//! The plan cache's keys: for one deployment on one server, a SHA-256 over every input its plan
//! is computed from (the git blob ids of the deployment, artifact, repository, server and
//! client files, the text of every template it may render, the names of its client's secrets
//! for the profile and the ciphertexts of those it names, `clarity.yml`, the allowed
//! environment, this program's build). Pure: values in, hex strings out; no file is read here.

use crate::desired::Target;
use crate::load::Inventory;
use crate::source::{Content, Snapshot};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// What the keys of one run share: the program, the operator's options, `clarity.yml`.
pub struct Global {
    digest: [u8; 32],
}

impl Global {
    /// `build` identifies this program's build (a plan from another build is never reused);
    /// `env` is the environment the repository may read, `lenient_env` true for `validate`.
    pub fn new(
        snapshot: &Snapshot,
        build: &str,
        env: &BTreeMap<String, String>,
        allowed_env: &[String],
        config_root: Option<&std::path::Path>,
    ) -> Global {
        let mut h = Sha256::new();
        field(&mut h, "format", super::FORMAT);
        field(&mut h, "build", build);
        field(&mut h, "clarity.yml", &blob(snapshot, "clarity.yml"));
        for (k, v) in env {
            field(&mut h, "env", k);
            field(&mut h, "value", v);
        }
        for k in allowed_env {
            field(&mut h, "allowed", k);
        }
        field(
            &mut h,
            "root",
            &config_root
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        Global {
            digest: h.finalize().into(),
        }
    }
}

/// Keys for every target, computed once per deployment file and then per server.
pub fn keys(
    global: &Global,
    snapshot: &Snapshot,
    inv: &Inventory,
    targets: &[Target],
) -> BTreeMap<(String, String), String> {
    use rayon::prelude::*;
    let templates: BTreeMap<&str, String> = inv
        .templates
        .iter()
        .map(|(name, text)| (name.as_str(), crate::digest::sha256_hex(text.as_bytes())))
        .collect();
    let docs: BTreeSet<(&str, &str, &str)> = targets
        .iter()
        .map(|t| (t.client, t.artifact, t.profile))
        .collect();
    let per_doc: BTreeMap<(&str, &str, &str), [u8; 32]> = docs
        .into_par_iter()
        .map(|d| (d, deployment_digest(global, snapshot, inv, &templates, d)))
        .collect();
    targets
        .par_iter()
        .map(|t| {
            let mut h = Sha256::new();
            h.update(per_doc[&(t.client, t.artifact, t.profile)]);
            let server_file = inv.clients[t.client]
                .servers
                .get(t.server)
                .map(|s| s.file.as_str())
                .unwrap_or_default();
            field(&mut h, "server", &blob(snapshot, server_file));
            field(&mut h, "hostname", t.server);
            (
                (t.server.to_string(), t.artifact.to_string()),
                hex::encode(h.finalize()),
            )
        })
        .collect()
}

/// Everything of one deployment file's inputs that does not depend on the server.
fn deployment_digest(
    global: &Global,
    snapshot: &Snapshot,
    inv: &Inventory,
    templates: &BTreeMap<&str, String>,
    (client, artifact, profile): (&str, &str, &str),
) -> [u8; 32] {
    let entry = &inv.clients[client];
    let doc = &entry.deployments[&(artifact.to_string(), profile.to_string())];
    let mut h = Sha256::new();
    h.update(global.digest);
    field(&mut h, "client", client);
    field(&mut h, "profile", profile);
    field(&mut h, "deployment", &blob(snapshot, &doc.file));
    if let Some(c) = &entry.client {
        field(&mut h, "client.yml", &blob(snapshot, &c.file));
    }
    let artifact_doc = inv.artifacts.get(&doc.value.artifact);
    field(
        &mut h,
        "artifact",
        &artifact_doc
            .map(|a| blob(snapshot, &a.file))
            .unwrap_or_default(),
    );
    let repository = doc
        .value
        .repository
        .as_deref()
        .or(artifact_doc.map(|a| a.value.repository.as_str()))
        .and_then(|r| inv.repositories.get(r));
    field(
        &mut h,
        "repository",
        &repository
            .map(|r| blob(snapshot, &r.file))
            .unwrap_or_default(),
    );
    // Every text this deployment's plan can read a name from: a template or a secret it uses
    // is named literally in one of them (secret names and template names are never computed).
    let mut texts: Vec<&str> = [
        Some(doc.file.as_str()),
        artifact_doc.map(|a| a.file.as_str()),
        repository.map(|r| r.file.as_str()),
    ]
    .into_iter()
    .flatten()
    .filter_map(|path| text(snapshot, path))
    .collect();
    let mut used_templates = BTreeSet::new();
    // Templates may name other templates (`include`): follow names until nothing new.
    loop {
        let before = used_templates.len();
        for name in templates.keys() {
            if !used_templates.contains(name) && texts.iter().any(|t| t.contains(name)) {
                used_templates.insert(*name);
            }
        }
        if used_templates.len() == before {
            break;
        }
        texts = [
            Some(doc.file.as_str()),
            artifact_doc.map(|a| a.file.as_str()),
            repository.map(|r| r.file.as_str()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|path| text(snapshot, path))
        .chain(used_templates.iter().map(|n| &*inv.templates[*n]))
        .collect();
    }
    for name in &used_templates {
        field(&mut h, "template", name);
        field(&mut h, "text", &templates[name]);
    }
    if let Some(secrets) = entry.secrets.get(profile) {
        for (name, ciphertext) in &secrets.value.0 {
            field(&mut h, "secret", name);
            if texts.iter().any(|t| t.contains(name.as_str())) {
                field(&mut h, "ciphertext", ciphertext);
            }
        }
    }
    h.finalize().into()
}

/// A field of a key, length-prefixed so that no two sequences of fields hash alike.
fn field(h: &mut Sha256, name: &str, value: &str) {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update((value.len() as u64).to_le_bytes());
    h.update(value.as_bytes());
}

/// What identifies a file's bytes: its git blob id, else the hash of its content (a working
/// tree overlay), the target of a symlink, or nothing for a file that is absent.
fn blob(snapshot: &Snapshot, path: &str) -> String {
    match snapshot.files.get(path) {
        Some(f) => match (&f.blob, &f.content) {
            (Some(oid), Content::File(_)) => format!("blob {oid}"),
            (_, Content::File(bytes)) => format!("sha256 {}", crate::digest::sha256_hex(bytes)),
            (_, Content::Symlink(target)) => format!("symlink {target}"),
        },
        None => "absent".into(),
    }
}

fn text<'a>(snapshot: &'a Snapshot, path: &str) -> Option<&'a str> {
    match &snapshot.files.get(path)?.content {
        Content::File(bytes) => std::str::from_utf8(bytes).ok(),
        Content::Symlink(_) => None,
    }
}
