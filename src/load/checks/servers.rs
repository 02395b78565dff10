//! One server file: it agrees with its location, its transport and agent settings make sense,
//! and the commands it names are argv vectors.

use super::*;

pub(super) fn server_file(
    snapshot: &Snapshot,
    inv: &Inventory,
    client: &str,
    doc: &Doc<crate::model::Server>,
    out: &mut Out,
) {
    let s = &doc.value;
    let entry = &inv.clients[client];
    if !entry.datacenters.contains_key(&s.datacenter)
        && !unparsed(
            snapshot,
            &format!("clients/{client}/datacenters/{}.yml", s.datacenter),
        )
    {
        let owner = inv
            .clients
            .iter()
            .find(|(c, e)| *c != client && e.datacenters.contains_key(&s.datacenter))
            .map(|(c, _)| c.clone());
        out.push(match owner {
            Some(other) => Diagnostic::error(
                "datacenter-other-client",
                &doc.file,
                doc.pos(&[K("datacenter")]),
                format!("datacenter `{}` belongs to client `{other}`, not `{client}`", s.datacenter),
            )
            .with_hint(format!("a server can only be in its own client's datacenters: add clients/{client}/datacenters/{}.yml or pick another", s.datacenter)),
            None => unknown("unknown-datacenter", &doc.file, doc.pos(&[K("datacenter")]), "datacenter", &s.datacenter, entry.datacenters.keys().cloned()),
        });
    }
    agent_settings(&s.agent, doc, out);
}

pub(super) fn agent_settings(a: &AgentSettings, doc: &Doc<crate::model::Server>, out: &mut Out) {
    let rule = FieldRule {
        file: &doc.file,
        doc: &doc.node,
        base: vec![K("agent")],
        what: format!("transport `{:?}`", a.transport).to_lowercase(),
    };
    match a.transport {
        Transport::Ssh => {
            rule.forbid(out, a.root.is_some(), "root");
            let has_address = a.ssh.as_ref().and_then(|s| s.address.as_ref()).is_some()
                || !doc.value.ip_addresses.is_empty();
            if !has_address {
                out.push(
                    Diagnostic::error("missing-field", &doc.file, doc.pos(&[K("agent")]), "transport `ssh` needs an address: set `ip_addresses` or `agent.ssh.address`")
                        .with_hint("add `ip_addresses: [{address: 192.0.2.5}]`"),
                );
            }
            if a.service_manager == Some(ServiceManager::Process) {
                out.push(
                    Diagnostic::warning("unsafe-setting", &doc.file, doc.pos(&[K("agent"), K("service_manager")]), "service manager `process` is for `mock` sandboxes only; it does not restart crashed services or start them at boot")
                        .with_hint("use `systemd` or `supervisor` on real hosts"),
                );
            }
        }
        Transport::Local => {
            rule.forbid(out, a.ssh.is_some(), "ssh");
            match &a.root {
                None => rule.require(out, false, "root"),
                Some(root) => {
                    if let Some(problem) = relative_path_problem(root) {
                        out.push(
                            Diagnostic::error("path-escape", &doc.file, doc.pos(&[K("agent"), K("root")]), format!("`agent.root` `{root}` {problem}"))
                                .with_hint("a local sandbox root is relative to the reconciler's --work-dir, e.g. `sandboxes/web-1`"),
                        );
                    }
                }
            }
        }
    }
}
