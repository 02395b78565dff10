//! What the config repository said at a recorded commit: the inventory (for datacenters,
//! ports and rollout settings) and one deployment's rendered form (for the diff between two
//! applied commits). Reads git objects from the watch loop's mirror and nothing else: no
//! identity is ever given, so secrets stay encrypted and render as placeholders that are
//! redacted, and `${ENV:..}` resolves to a placeholder, never to the reconciler's environment.

use crate::desired::{self, Context, InventorySecrets, Selection, Templates};
use crate::load::Inventory;
use crate::source::{self, ReadMode};
use std::path::Path;

/// The inventory at `commit`, or why it cannot be read.
pub fn inventory_at(repo: &Path, commit: &str) -> Result<Inventory, String> {
    let snapshot =
        source::read(repo, &ReadMode::Commit(commit.to_string())).map_err(|e| e.to_string())?;
    Ok(crate::load::load(&snapshot).inventory)
}

/// Server → datacenter, for every server of the inventory.
pub fn datacenters(inv: &Inventory) -> std::collections::BTreeMap<String, String> {
    inv.clients
        .values()
        .flat_map(|c| c.servers.iter())
        .map(|(name, s)| (name.clone(), s.value.datacenter.clone()))
        .collect()
}

/// One deployment on one host as a text document: version, release, every rendered file
/// (secrets redacted), the environment (redacted), the service definition and the health
/// checks. Two of them diff line by line.
pub fn deployment_document(
    repo: &Path,
    commit: &str,
    server: &str,
    deployment: &str,
    profile: &str,
) -> Result<String, String> {
    let snapshot =
        source::read(repo, &ReadMode::Commit(commit.to_string())).map_err(|e| e.to_string())?;
    let loaded = crate::load::load(&snapshot);
    if loaded.has_errors() {
        return Err(format!(
            "the config repository has errors at {}",
            short(commit)
        ));
    }
    let inv = &loaded.inventory;
    let (templates, diags) = Templates::new(inv);
    if !diags.is_empty() {
        return Err(format!("templates do not compile at {}", short(commit)));
    }
    let secrets = InventorySecrets::new(inv, None);
    let ctx = Context {
        env: Default::default(),
        allowed_env: Default::default(),
        secrets: &secrets,
        lenient_env: true,
        config_root: Some(snapshot.root.clone()),
    };
    let selection = Selection {
        server: Some(server.to_string()),
        profiles: vec![profile.to_string()],
        deployment: Some(deployment.to_string()),
        ..Selection::default()
    };
    let host = desired::hosts(inv, &templates, &selection, &ctx)
        .into_iter()
        .next()
        .ok_or_else(|| {
            format!(
                "{server} has no {deployment} ({profile}) at {}",
                short(commit)
            )
        })?
        .map_err(|errors| {
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    let d = host
        .deployments
        .iter()
        .find(|d| d.name == deployment)
        .ok_or_else(|| format!("{server} has no {deployment} at {}", short(commit)))?;
    let mut doc = String::new();
    doc.push_str(&format!("version: {}\n", d.artifact.version));
    doc.push_str(&format!("release: {}\n", d.release));
    doc.push_str(&format!(
        "artifact: {} ({})\n",
        d.artifact.id, d.artifact.sha256
    ));
    for f in d.release_files.iter().chain(&d.host_files) {
        doc.push_str(&format!("\n== file {} (mode {})\n", f.destination, f.mode));
        doc.push_str(&f.content.redacted);
        if !f.content.redacted.ends_with('\n') {
            doc.push('\n');
        }
    }
    doc.push_str("\n== environment\n");
    for (k, v) in &d.env {
        doc.push_str(&format!("{k}={}\n", v.redacted));
    }
    doc.push_str("\n== service\n");
    doc.push_str(&yaml(&d.service));
    doc.push_str("\n== health checks\n");
    doc.push_str(&yaml(&d.health_checks));
    Ok(doc)
}

/// `from` → `to` as a unified diff (empty when they are equal).
pub fn unified_diff(from: &str, to: &str, from_name: &str, to_name: &str) -> String {
    similar::TextDiff::from_lines(from, to)
        .unified_diff()
        .context_radius(3)
        .header(from_name, to_name)
        .to_string()
}

fn yaml<T: serde::Serialize>(value: &T) -> String {
    // JSON values printed one key per line: stable, and readable in a diff.
    match serde_json::to_string_pretty(value) {
        Ok(s) => s + "\n",
        Err(e) => format!("(cannot show: {e})\n"),
    }
}

pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
