//! Clashes between deployments on one server: two profiles of one artifact in one deployment
//! directory, or two services on one port.

use super::*;

/// One artifact on one server is one deployment directory: two profiles targeting it would
/// overwrite each other's releases.
pub(super) fn profile_conflicts(inv: &Inventory, out: &mut Out) {
    for entry in inv.clients.values() {
        let mut seen: HashMap<(&str, &str), &Doc<Deployment>> = HashMap::new();
        for ((artifact, _), doc) in &entry.deployments {
            for (i, t) in doc.value.targets.iter().enumerate() {
                match seen.get(&(artifact.as_str(), t.server.as_str())) {
                    Some(first) => out.push(
                        Diagnostic::error(
                            "target-conflict",
                            &doc.file,
                            doc.pos(&[K("targets"), I(i), K("server")]),
                            format!(
                                "server `{}` already runs `{artifact}` for profile `{}` ({}); two profiles would overwrite each other's releases",
                                t.server, first.value.profile, first.file
                            ),
                        )
                        .with_hint("give each profile its own servers"),
                    ),
                    None => {
                        seen.insert((artifact.as_str(), t.server.as_str()), doc);
                    }
                }
            }
        }
    }
}

pub(super) fn port_conflicts(inv: &Inventory, out: &mut Out) {
    // (server, profile, protocol, port) → first claim.
    let mut claims: HashMap<(&str, &str, Protocol, u16), &Doc<Deployment>> = HashMap::new();
    for entry in inv.clients.values() {
        for ((_, profile), doc) in &entry.deployments {
            let mut own = BTreeSet::new();
            for (i, p) in doc.value.ports.iter().enumerate() {
                if !own.insert((p.protocol, p.port)) {
                    out.push(Diagnostic::error(
                        "duplicate-id",
                        &doc.file,
                        doc.pos(&[K("ports"), I(i), K("port")]),
                        format!("port {} is listed twice", p.port),
                    ));
                    continue;
                }
                for t in &doc.value.targets {
                    let key = (t.server.as_str(), profile.as_str(), p.protocol, p.port);
                    match claims.get(&key) {
                        Some(first) => out.push(
                            Diagnostic::error(
                                "port-conflict",
                                &doc.file,
                                doc.pos(&[K("ports"), I(i), K("port")]),
                                format!("{:?} port {} on server `{}` is already claimed by {} in profile `{profile}`", p.protocol, p.port, t.server, first.file).replacen("Tcp", "TCP", 1).replacen("Udp", "UDP", 1),
                            )
                            .with_hint("give one of the deployments another port"),
                        ),
                        None => {
                            claims.insert(key, doc);
                        }
                    }
                }
            }
        }
    }
}
