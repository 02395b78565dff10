//! One host, one server: two server files that reach the same machine would let one client's
//! deployments land on another client's host (its releases switched, its env file rewritten).
//! Servers reach the same machine when their `local` sandbox roots are the same directory or
//! one lies inside the other, or when their SSH endpoints (address and port) are equal. Each
//! server involved gets a diagnostic at the field that makes it collide, naming the others.
//! Pure: compares values already loaded, touches nothing.

use super::Inventory;
use super::yaml::Step::{Index as I, Key as K};
use crate::diag::{Diagnostic, Pos};
use crate::model::Transport;
use std::collections::BTreeMap;

/// One server as the check sees it: where it is declared and how it is reached.
struct Reach<'a> {
    client: &'a str,
    server: &'a str,
    file: &'a str,
    pos: Pos,
}

impl Reach<'_> {
    fn who(&self) -> String {
        format!(
            "`{}` of client `{}` ({})",
            self.server, self.client, self.file
        )
    }
}

pub(super) fn run(inv: &Inventory, out: &mut Vec<Diagnostic>) {
    let mut roots: Vec<(Vec<String>, Reach)> = Vec::new();
    let mut endpoints: BTreeMap<(String, u16), Vec<Reach>> = BTreeMap::new();
    for (client, entry) in &inv.clients {
        for (server, doc) in &entry.servers {
            let agent = &doc.value.agent;
            let reach = |pos| Reach {
                client,
                server,
                file: &doc.file,
                pos,
            };
            match agent.transport {
                Transport::Local => {
                    if let Some(root) = &agent.root {
                        let pos = doc.pos(&[K("agent"), K("root")]);
                        roots.push((root_parts(root), reach(pos)));
                    }
                }
                Transport::Ssh => {
                    let ssh = agent.ssh.clone().unwrap_or_default();
                    let (address, pos) = match &ssh.address {
                        Some(a) => (a.clone(), doc.pos(&[K("agent"), K("ssh"), K("address")])),
                        None => match doc.value.ip_addresses.first() {
                            Some(ip) => (
                                ip.address.clone(),
                                doc.pos(&[K("ip_addresses"), I(0), K("address")]),
                            ),
                            // A missing address is reported by the server checks.
                            None => continue,
                        },
                    };
                    endpoints
                        .entry((normal_address(&address), ssh.port))
                        .or_default()
                        .push(reach(pos));
                }
            }
        }
    }

    for (i, (parts, me)) in roots.iter().enumerate() {
        let others: Vec<String> = roots
            .iter()
            .enumerate()
            .filter(|(j, (p, _))| *j != i && (p.starts_with(parts) || parts.starts_with(p)))
            .map(|(_, (p, r))| format!("{} with root `{}`", r.who(), p.join("/")))
            .collect();
        if !others.is_empty() {
            out.push(
                Diagnostic::error(
                    "shared-host",
                    me.file,
                    me.pos,
                    format!(
                        "server `{}` has sandbox root `{}`, the same directory as (or nested with) {}",
                        me.server,
                        parts.join("/"),
                        others.join(", ")
                    ),
                )
                .with_hint("each server needs a sandbox root of its own, e.g. `sandboxes/<hostname>`"),
            );
        }
    }

    for ((address, port), group) in &endpoints {
        if group.len() < 2 {
            continue;
        }
        for (i, me) in group.iter().enumerate() {
            let others: Vec<String> = group
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r.who())
                .collect();
            out.push(
                Diagnostic::error(
                    "shared-host",
                    me.file,
                    me.pos,
                    format!(
                        "server `{}` is reached at {address} port {port}, like {}",
                        me.server,
                        others.join(", ")
                    ),
                )
                .with_hint("two server files may not describe one machine: give each its own address or `agent.ssh.port`, or remove the duplicate"),
            );
        }
    }
}

/// A sandbox root as its directory names (`./a//b/` is `a/b`); `..` is refused elsewhere.
fn root_parts(root: &str) -> Vec<String> {
    root.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

/// An address as the machine it names: IP addresses in canonical form (`::0001` is `::1`),
/// host names lowercase without a trailing dot.
fn normal_address(a: &str) -> String {
    let bare = a.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => bare.trim_end_matches('.').to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_roots_are_compared_as_what_they_name() {
        assert_eq!(normal_address("0:0::1"), normal_address("[::1]"));
        assert_eq!(normal_address("Web-1.Example.COM."), "web-1.example.com");
        assert_eq!(normal_address("10.0.0.1"), "10.0.0.1");
        assert_eq!(root_parts("./sandboxes//a/"), ["sandboxes", "a"]);
    }
}
