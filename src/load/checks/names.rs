//! Names and ids that must be unique across the inventory (servers, deployments, clients),
//! each duplicate reported at both places.

use super::*;

pub(super) fn uniqueness(inv: &Inventory, out: &mut Out) {
    let mut dup =
        |seen: &mut HashMap<String, String>, key: &str, file: &str, pos: Pos, what: &str| {
            if let Some(first) = seen.get(key) {
                out.push(
                    Diagnostic::error(
                        "duplicate-id",
                        file,
                        pos,
                        format!("{what} `{key}` is already used by {first}"),
                    )
                    .with_hint(format!(
                        "{what}s must be unique across the whole repository"
                    )),
                );
            } else {
                seen.insert(key.to_string(), file.to_string());
            }
        };
    let (mut codes, mut dcs, mut hosts) = (HashMap::new(), HashMap::new(), HashMap::new());
    for entry in inv.clients.values() {
        if let Some(c) = &entry.client {
            dup(
                &mut codes,
                &c.value.code,
                &c.file,
                c.pos(&[K("code")]),
                "client code",
            );
        }
        for d in entry.datacenters.values() {
            dup(
                &mut dcs,
                &d.value.code,
                &d.file,
                d.pos(&[K("code")]),
                "datacenter code",
            );
        }
        for s in entry.servers.values() {
            dup(
                &mut hosts,
                &s.value.hostname,
                &s.file,
                s.pos(&[K("hostname")]),
                "hostname",
            );
        }
    }
    for (name, r) in &inv.repositories {
        mismatch(
            out,
            &r.file,
            r.pos(&[K("name")]),
            "name",
            &r.value.name,
            name,
            "file name",
        );
    }
}
