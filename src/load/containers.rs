//! Checks of the container settings: a deployment's `container:` only on `docker` and `lxc`
//! artifacts (and none of the service-only fields there), volume host paths under the allowed
//! roots, absolute container paths without `..`, addresses that parse, port claims that do
//! not clash on a server, and a server's `agent.containers`. Pure, like the rest of `load`.

use super::yaml::Step::{Index as I, Key as K};
use super::{Doc, Inventory};
use crate::diag::{Diagnostic, Pos};
use crate::model::{ArtifactType, Deployment, NetworkMode, Protocol, Settings};
use std::collections::HashMap;

type Out = Vec<Diagnostic>;

pub(super) fn run(inv: &Inventory, out: &mut Out) {
    // (server, profile, protocol, port) → the deployment file that claims it first.
    let mut claims: HashMap<(String, String, Protocol, u16), String> = HashMap::new();
    for entry in inv.clients.values() {
        for ((artifact, profile), doc) in &entry.deployments {
            let Some(a) = inv.artifacts.get(artifact) else {
                continue;
            };
            deployment(doc, a.value.kind, a.value.run.is_some(), &inv.settings, out);
            // Ports a service listens on and ports a container publishes share the host.
            for p in &doc.value.ports {
                for t in &doc.value.targets {
                    claims
                        .entry((t.server.clone(), profile.clone(), p.protocol, p.port))
                        .or_insert_with(|| doc.file.clone());
                }
            }
        }
    }
    for entry in inv.clients.values() {
        for ((_, profile), doc) in &entry.deployments {
            let Some(c) = &doc.value.container else {
                continue;
            };
            for (i, p) in c.ports.iter().enumerate() {
                for t in &doc.value.targets {
                    let key = (t.server.clone(), profile.clone(), p.protocol, p.external);
                    match claims.get(&key) {
                        Some(first) => out.push(
                            Diagnostic::error(
                                "port-conflict",
                                &doc.file,
                                doc.pos(&[K("container"), K("ports"), I(i), K("external")]),
                                format!(
                                    "{} port {} on server `{}` is already claimed by {first} in profile `{profile}`",
                                    format!("{:?}", p.protocol).to_uppercase(),
                                    p.external,
                                    t.server
                                ),
                            )
                            .with_hint("publish the container on another host port"),
                        ),
                        None => {
                            claims.insert(key, doc.file.clone());
                        }
                    }
                }
            }
        }
        for server in entry.servers.values() {
            if let Some(c) = &server.value.agent.containers {
                let at = |k| server.pos(&[K("agent"), K("containers"), K(k)]);
                for (k, v) in [("program", &c.program), ("lxc_path", &c.lxc_path)] {
                    if let Some(v) = v
                        && !absolute_clean(v)
                    {
                        out.push(Diagnostic::error(
                            "invalid-value",
                            &server.file,
                            at(k),
                            format!("`{k}` must be an absolute path without `..`, not `{v}`"),
                        ));
                    }
                }
            }
        }
    }
}

fn absolute_clean(p: &str) -> bool {
    p.starts_with('/') && !p.contains('\0') && !p.split('/').any(|c| c == "..")
}

fn under_allowed_root(p: &str, settings: &Settings) -> bool {
    settings.allowed_absolute_roots.iter().any(|root| {
        let root = root.trim_end_matches('/');
        p.len() > root.len() + 1 && p.starts_with(root) && p.as_bytes()[root.len()] == b'/'
    })
}

fn deployment(
    doc: &Doc<Deployment>,
    kind: ArtifactType,
    artifact_has_run: bool,
    settings: &Settings,
    out: &mut Out,
) {
    let d = &doc.value;
    let file = doc.file.as_str();
    let err = |out: &mut Out, pos: Pos, msg: String, hint: &str| {
        out.push(Diagnostic::error("container-settings", file, pos, msg).with_hint(hint));
    };
    if !kind.is_container() {
        if d.container.is_some() {
            err(
                out,
                doc.pos(&[K("container")]),
                format!(
                    "`container` applies to `docker` and `lxc` artifacts, and `{}` is a {} artifact",
                    d.artifact,
                    format!("{kind:?}").to_lowercase()
                ),
                "remove `container`, or deploy a docker or lxc artifact",
            );
        }
        return;
    }
    let kind_name = format!("{kind:?}").to_lowercase();
    if d.service.as_ref().is_some_and(|s| s.command.is_some()) || artifact_has_run {
        err(
            out,
            doc.pos(&[K("service")]),
            format!("a {kind_name} artifact runs as a container: a service command does not apply"),
            "set the command with `container.command` (or leave the image's own)",
        );
    }
    for (field, hint) in [
        (
            "ports",
            "publish ports with `container.ports` (external and internal)",
        ),
        ("volumes", "mount host directories with `container.volumes`"),
    ] {
        let present = match field {
            "ports" => !d.ports.is_empty(),
            _ => !d.volumes.is_empty(),
        };
        if present {
            err(
                out,
                doc.pos(&[K(field)]),
                format!("`{field}` does not apply to a {kind_name} deployment"),
                hint,
            );
        }
    }
    if d.migrations.is_some() {
        err(
            out,
            doc.pos(&[K("migrations")]),
            format!("migrations do not run for a {kind_name} deployment"),
            "run migrations from the container's own entrypoint",
        );
    }
    let Some(c) = &d.container else { return };
    let at = |path: &[super::yaml::Step]| {
        let mut p = vec![K("container")];
        p.extend_from_slice(path);
        doc.pos(&p)
    };
    for (i, v) in c.volumes.iter().enumerate() {
        if !absolute_clean(&v.host_path) || !under_allowed_root(&v.host_path, settings) {
            out.push(
                Diagnostic::error(
                    "path-escape",
                    file,
                    at(&[K("volumes"), I(i), K("host_path")]),
                    format!(
                        "volume host path `{}` must be absolute, without `..`, and under an allowed root ({})",
                        v.host_path,
                        settings.allowed_absolute_roots.join(", ")
                    ),
                )
                .with_hint("add the root to `allowed_absolute_roots` in clarity.yml"),
            );
        }
        if !absolute_clean(&v.container_path) || v.container_path.contains(char::is_whitespace) {
            err(
                out,
                at(&[K("volumes"), I(i), K("container_path")]),
                format!(
                    "container path `{}` must be absolute, without `..` or whitespace",
                    v.container_path
                ),
                "write the path as the container sees it, e.g. /var/lib/grafana",
            );
        }
    }
    if !absolute_clean(&c.config_dir) || c.config_dir == "/" {
        err(
            out,
            at(&[K("config_dir")]),
            format!(
                "`config_dir` must be an absolute directory other than `/`, without `..`, not `{}`",
                c.config_dir
            ),
            "the default is /etc/clarity",
        );
    }
    let mut own = std::collections::BTreeSet::new();
    for (i, p) in c.ports.iter().enumerate() {
        if !own.insert((p.protocol, p.external)) {
            err(
                out,
                at(&[K("ports"), I(i), K("external")]),
                format!("host port {} is published twice", p.external),
                "publish each host port once",
            );
        }
        if let Some(ip) = &p.host_ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            err(
                out,
                at(&[K("ports"), I(i), K("host_ip")]),
                format!("`{ip}` is not an IP address"),
                "e.g. 127.0.0.1",
            );
        }
        if kind == ArtifactType::Lxc && p.internal.is_some_and(|i| i != p.external) {
            err(
                out,
                at(&[K("ports"), I(i), K("internal")]),
                "an lxc container does not forward ports: `internal` must equal `external`".into(),
                "use the host network, or forward the port on the host",
            );
        }
    }
    for (i, s) in c.dns.iter().enumerate() {
        if s.parse::<std::net::IpAddr>().is_err() {
            err(
                out,
                at(&[K("dns"), I(i)]),
                format!("DNS server `{s}` is not an IP address"),
                "list DNS servers by address",
            );
        }
    }
    if let Some(b) = &c.network.bridge {
        let ok = !b.is_empty()
            && b.len() <= 15
            && b.bytes()
                .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'-' | b'_' | b'.'));
        if !ok {
            err(
                out,
                at(&[K("network"), K("bridge")]),
                format!("`{b}` is not a valid bridge or network name"),
                "letters, digits, `-`, `_`, `.`; at most 15 characters",
            );
        }
    } else if kind == ArtifactType::Lxc && c.network.mode == NetworkMode::Bridge {
        err(
            out,
            at(&[K("network")]),
            "an lxc container on network mode `bridge` needs `network.bridge`, the host bridge its veth joins".into(),
            "name the bridge, or use `mode: host`",
        );
    }
    if let Some(cmd) = &c.command {
        if cmd.is_empty() || cmd[0].is_empty() {
            err(
                out,
                at(&[K("command")]),
                "`command` is empty".into(),
                "an argv vector, e.g. [\"/bin/httpd\", \"-f\"]",
            );
        }
        if kind == ArtifactType::Lxc && cmd.iter().any(|a| a.contains(char::is_whitespace)) {
            err(
                out,
                at(&[K("command")]),
                "an lxc command argument may not contain whitespace (lxc.init.cmd splits on it)"
                    .into(),
                "ship a start script in the rootfs",
            );
        }
        if cmd.iter().any(|a| a.contains("${")) {
            err(
                out,
                at(&[K("command")]),
                "`container.command` takes no `${...}` references: a command line is visible to every user of the host".into(),
                "pass values through `env_vars`",
            );
        }
    }
}
