//! Checks across files, run after every file parsed on its own: names agree with locations,
//! ids are unique, references resolve, paths stay inside their roots, ports do not clash,
//! dependencies do not cycle. Each finding is a diagnostic at the place the operator must edit.
//! One file per subject (links, settings, clients, names, repositories, servers, deployments,
//! conflicts); this file runs them in order and holds what several share (the imports, name
//! and path rules, the "unknown name" and argv diagnostics). Pure: it reads the snapshot and
//! inventory it is given and returns diagnostics.

use super::yaml::Step::{self, Index as I, Key as K};
use super::{ClientEntry, Doc, Inventory};
use crate::diag::{Diagnostic, Pos};
use crate::model::reference::{self, RefKind};
use crate::model::{
    AgentSettings, ArtifactType, AuthType, Deployment, HealthCheckType, MigrationEngine, Protocol,
    Repository, RepositoryType, SecretRef, ServiceManager, Settings, Transport,
};
use crate::source::{Content, Snapshot};
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod clients;
mod conflicts;
mod deployments;
mod links;
mod names;
mod repositories;
mod servers;
mod settings;

use clients::*;
use conflicts::*;
use deployments::*;
use links::*;
use names::*;
use repositories::*;
use servers::*;
use settings::*;

pub use deployments::config_lookup;
pub(super) use repositories::FieldRule;

type Out = Vec<Diagnostic>;

pub(super) fn run(
    snapshot: &Snapshot,
    inv: &mut Inventory,
    settings: Option<&Doc<Settings>>,
) -> Out {
    let mut out = Vec::new();
    symlinks(snapshot, inv, &mut out);
    if let Some(s) = settings {
        settings_file(s, &mut out);
        approval_keys(snapshot, s, &mut out);
    }
    for (id, entry) in &inv.clients {
        client_files(snapshot, id, entry, &mut out);
    }
    uniqueness(inv, &mut out);
    for (name, repo) in &inv.repositories {
        repository(name, repo, &mut out);
    }
    artifacts(snapshot, inv, &mut out);
    for (client, entry) in &inv.clients {
        for server in entry.servers.values() {
            server_file(snapshot, inv, client, server, &mut out);
        }
        for ((_, profile), dep) in &entry.deployments {
            deployment(snapshot, inv, client, entry, profile, dep, &mut out);
        }
        secrets(snapshot, inv, client, entry, &mut out);
    }
    port_conflicts(inv, &mut out);
    profile_conflicts(inv, &mut out);
    super::checks_identity::run(inv, &mut out);
    super::containers::run(inv, &mut out);
    super::rollout_checks::run(inv, &mut out);
    out
}

/// A path from the config repo must stay below the directory it is relative to.
pub(crate) fn relative_path_problem(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        Some("is empty")
    } else if p.contains('\0') {
        Some("contains a NUL byte")
    } else if p.starts_with('/') {
        Some("is absolute")
    } else if p.split('/').any(|c| c == "..") {
        Some("contains `..`")
    } else {
        None
    }
}

/// Whether `path` is in the repository although the inventory lacks what it defines: the file
/// failed to parse and its errors are reported, so a reference to it is not "unknown" as well.
fn unparsed(snapshot: &Snapshot, path: &str) -> bool {
    snapshot.files.contains_key(path)
}

fn mismatch(
    out: &mut Out,
    file: &str,
    pos: Pos,
    field: &str,
    value: &str,
    expected: &str,
    what: &str,
) {
    if value != expected {
        out.push(
            Diagnostic::error(
                "name-mismatch",
                file,
                pos,
                format!("`{field}` is `{value}` but the {what} is `{expected}`"),
            )
            .with_hint(format!(
                "set `{field}: {expected}` or rename the {what} to `{value}`"
            )),
        );
    }
}

fn unknown(
    code: &'static str,
    file: &str,
    pos: Pos,
    what: &str,
    name: &str,
    known: impl Iterator<Item = String>,
) -> Diagnostic {
    let known: Vec<String> = known.collect();
    let d = Diagnostic::error(code, file, pos, format!("unknown {what} `{name}`"));
    match super::schema::closest(name, &known) {
        Some(best) => d.with_hint(format!("did you mean `{best}`?")),
        None if known.is_empty() => d.with_hint(format!("no {what} is defined yet")),
        None if known.len() <= 8 => d.with_hint(format!("known: {}", known.join(", "))),
        None => d.with_hint(format!(
            "{} {what}s are defined; check the spelling",
            known.len()
        )),
    }
}

fn command_argv(out: &mut Out, file: &str, doc: &super::Node, path: &[Step], argv: &[String]) {
    if argv.is_empty() || argv[0].trim().is_empty() {
        out.push(
            Diagnostic::error(
                "invalid-value",
                file,
                doc.pos_at(path),
                "command must name a program as its first element",
            )
            .with_hint("write an argv list like [\"bin/server\", \"--port\", \"8080\"]"),
        );
    } else if argv.len() == 1 && argv[0].contains(' ') {
        out.push(
            Diagnostic::warning(
                "shell-string",
                file,
                doc.pos_at(path),
                format!(
                    "command `{}` looks like a shell string; it runs as one program name",
                    argv[0]
                ),
            )
            .with_hint("split it into an argv list: [\"java\", \"-jar\", \"app.jar\"]"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(relative_path_problem("conf/app.yml"), None);
        assert!(relative_path_problem("../etc/passwd").is_some());
        assert!(relative_path_problem("a/../../b").is_some());
        assert!(relative_path_problem("/etc/passwd").is_some());
        assert!(relative_path_problem("a\0b").is_some());
    }
}
