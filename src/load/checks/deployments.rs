//! One deployment: names agree with locations, references (`${CONFIG:..}`, `${SECRET:..}`,
//! `${ENV:..}`) resolve, destinations stay inside their roots, health checks and migrations are
//! complete, and deployment dependencies do not cycle.

use super::*;

/// Checks references in one string value of a deployment.
pub(super) struct RefScope<'a> {
    snapshot: &'a Snapshot,
    client: &'a str,
    inv: &'a Inventory,
    entry: &'a ClientEntry,
    dep: &'a Doc<Deployment>,
    profile: &'a str,
}

impl RefScope<'_> {
    fn check(&self, out: &mut Out, path: &[Step], s: &str) {
        let file = &self.dep.file;
        let pos = self.dep.pos(path);
        let refs = match reference::references(s) {
            Ok(r) => r,
            Err(e) => {
                out.push(
                    Diagnostic::error("invalid-reference", file, pos, e.message)
                        .with_hint("references look like ${CONFIG:a.b}, ${SECRET:name}, ${ENV:NAME}, ${SERVER}"),
                );
                return;
            }
        };
        for r in refs {
            match r.kind {
                RefKind::Secret => {
                    if !self.secret_known(&r.arg) {
                        out.push(self.unknown_secret(file, pos, &r.arg));
                    }
                }
                RefKind::Config => {
                    if config_lookup(&self.dep.value.configuration, &r.arg).is_none() {
                        out.push(
                            Diagnostic::error(
                                "unknown-config",
                                file,
                                pos,
                                format!(
                                    "`${{CONFIG:{}}}` does not name a value under `configuration`",
                                    r.arg
                                ),
                            )
                            .with_hint(
                                "add it under `configuration:` (dotted paths walk nested mappings)",
                            ),
                        );
                    }
                }
                RefKind::Template => {
                    if !self.inv.templates.contains_key(&r.arg)
                        && !unparsed(self.snapshot, &format!("templates/{}", r.arg))
                    {
                        out.push(unknown(
                            "unknown-template",
                            file,
                            pos,
                            "template",
                            &r.arg,
                            self.inv.templates.keys().cloned(),
                        ));
                    }
                }
                RefKind::Env | RefKind::ClientId | RefKind::Server | RefKind::Profile => {}
            }
        }
    }

    fn secret_known(&self, name: &str) -> bool {
        match self.entry.secrets.get(self.profile) {
            Some(f) => f.value.0.contains_key(name),
            None => unparsed(
                self.snapshot,
                &format!("secrets/{}/{}.yml", self.client, self.profile),
            ),
        }
    }

    fn unknown_secret(&self, file: &str, pos: Pos, name: &str) -> Diagnostic {
        let client = self
            .entry
            .client
            .as_ref()
            .map(|c| c.value.id.as_str())
            .unwrap_or("?");
        Diagnostic::error(
            "unknown-secret",
            file,
            pos,
            format!(
                "secret `{name}` is not defined for client `{client}` in profile `{}`",
                self.profile
            ),
        )
        .with_hint(format!(
            "add it with `clarity-reconcile secret set --client {client} --profile {} {name}`",
            self.profile
        ))
    }
}

/// Finds a dotted path (`a.b.0.c`) in a deployment's configuration.
pub fn config_lookup<'a>(
    config: &'a BTreeMap<String, serde_json::Value>,
    dotted: &str,
) -> Option<&'a serde_json::Value> {
    let mut parts = dotted.split('.');
    let mut v = config.get(parts.next()?)?;
    for p in parts {
        v = match v {
            serde_json::Value::Object(m) => m.get(p)?,
            serde_json::Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

pub(super) fn json_strings<'a>(
    v: &'a serde_json::Value,
    path: &mut Vec<Step<'a>>,
    f: &mut dyn FnMut(&[Step<'a>], &'a str),
) {
    match v {
        serde_json::Value::String(s) => f(path, s),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(I(i));
                json_strings(x, path, f);
                path.pop();
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                path.push(K(k));
                json_strings(x, path, f);
                path.pop();
            }
        }
        _ => {}
    }
}

pub(super) fn deployment(
    snapshot: &Snapshot,
    inv: &Inventory,
    client: &str,
    entry: &ClientEntry,
    profile: &str,
    doc: &Doc<Deployment>,
    out: &mut Out,
) {
    let d = &doc.value;
    let file = doc.file.as_str();
    if !inv.settings.profiles.iter().any(|p| p == profile) {
        out.push(
            Diagnostic::error(
                "unknown-profile",
                file,
                doc.pos(&[K("profile")]),
                format!("`{profile}` is not a profile"),
            )
            .with_hint(format!(
                "profiles are {} (set `profiles` in clarity.yml to add one)",
                inv.settings.profiles.join(", ")
            )),
        );
    }
    let artifact = inv.artifacts.get(&d.artifact);
    match artifact {
        None if unparsed(snapshot, &format!("artifacts/{}.yml", d.artifact)) => {}
        None => out.push(unknown(
            "unknown-artifact",
            file,
            doc.pos(&[K("artifact")]),
            "artifact",
            &d.artifact,
            inv.artifacts.keys().cloned(),
        )),
        Some(a) => {
            if !a.value.versions.iter().any(|v| v.version == d.version) {
                let mut diag = Diagnostic::error(
                    "unknown-version",
                    file,
                    doc.pos(&[K("version")]),
                    format!("artifact `{}` has no version `{}`", d.artifact, d.version),
                );
                diag = diag.with_hint(format!(
                    "known versions: {} (add new ones to {})",
                    a.value
                        .versions
                        .iter()
                        .map(|v| v.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    a.file
                ));
                out.push(diag);
            }
        }
    }
    let repo_name = d
        .repository
        .as_deref()
        .or(artifact.map(|a| a.value.repository.as_str()));
    if let Some(r) = &d.repository
        && !inv.repositories.contains_key(r)
        && !unparsed(snapshot, &format!("repositories/{r}.yml"))
    {
        out.push(unknown(
            "unknown-repository",
            file,
            doc.pos(&[K("repository")]),
            "repository",
            r,
            inv.repositories.keys().cloned(),
        ));
    }
    let scope = RefScope {
        snapshot,
        client,
        inv,
        entry,
        dep: doc,
        profile,
    };
    if let Some(repo) = repo_name.and_then(|r| inv.repositories.get(r)) {
        for (path, secret) in repository_secrets(&repo.value) {
            if !scope.secret_known(&secret.secret) {
                let pos = doc.pos(&[K(if d.repository.is_some() {
                    "repository"
                } else {
                    "artifact"
                })]);
                out.push(
                    scope
                        .unknown_secret(file, pos, &secret.secret)
                        .with_hint(format!(
                            "repository `{}` ({}, at {}) needs it; add it with `clarity-reconcile secret set --client {client} --profile {profile} {}`",
                            repo.value.name,
                            repo.file,
                            path.iter().map(|s| match s { K(k) => k.to_string(), I(i) => i.to_string() }).collect::<Vec<_>>().join("."),
                            secret.secret
                        )),
                );
            }
        }
    }
    let mut targets = HashMap::new();
    for (i, t) in d.targets.iter().enumerate() {
        let pos = doc.pos(&[K("targets"), I(i), K("server")]);
        if let Some(first) = targets.insert(t.server.as_str(), i) {
            out.push(Diagnostic::error(
                "duplicate-id",
                file,
                pos,
                format!(
                    "server `{}` is targeted twice (first at targets[{first}])",
                    t.server
                ),
            ));
        }
        if !entry.servers.contains_key(&t.server)
            && !unparsed(
                snapshot,
                &format!("clients/{client}/servers/{}.yml", t.server),
            )
        {
            let other = inv.server(&t.server).map(|(c, _)| c.to_string());
            out.push(match other {
                Some(c) => Diagnostic::error(
                    "server-other-client",
                    file,
                    pos,
                    format!(
                        "server `{}` belongs to client `{c}`, not `{client}`",
                        t.server
                    ),
                )
                .with_hint("a deployment can only target its own client's servers"),
                None => unknown(
                    "unknown-server",
                    file,
                    pos,
                    "server",
                    &t.server,
                    entry.servers.keys().cloned(),
                ),
            });
        } else if let Some(s) = entry.servers.get(&t.server) {
            let local = s.value.agent.transport == Transport::Local;
            if local != (profile == "mock") {
                out.push(
                    Diagnostic::warning(
                        "profile-transport",
                        file,
                        pos,
                        if local {
                            format!(
                                "server `{}` is a local sandbox but this is profile `{profile}`",
                                t.server
                            )
                        } else {
                            format!(
                                "profile `mock` targets `{}`, a real host over ssh",
                                t.server
                            )
                        },
                    )
                    .with_hint("`mock` deployments target servers with `agent.transport: local`"),
                );
            }
        }
    }
    let mut destinations = HashMap::new();
    for (i, cf) in d.config_files.iter().enumerate() {
        let base = [K("config_files"), I(i)];
        let at = |k| doc.pos(&[K("config_files"), I(i), K(k)]);
        match (&cf.template, &cf.content) {
            (Some(_), Some(_)) => out.push(
                Diagnostic::error(
                    "invalid-value",
                    file,
                    doc.pos(&base),
                    "a config file has both `template` and `content`",
                )
                .with_hint("keep one of the two"),
            ),
            (None, None) => out.push(
                Diagnostic::error(
                    "missing-field",
                    file,
                    doc.pos(&base),
                    "a config file needs `template` or `content`",
                )
                .with_hint("add `template: <path under templates/>` or `content: |`"),
            ),
            _ => {}
        }
        if let Some(t) = &cf.template {
            if let Some(problem) = relative_path_problem(t) {
                out.push(
                    Diagnostic::error(
                        "path-escape",
                        file,
                        at("template"),
                        format!("template path `{t}` {problem}"),
                    )
                    .with_hint("templates are named relative to templates/"),
                );
            } else if !inv.templates.contains_key(t)
                && !unparsed(snapshot, &format!("templates/{t}"))
            {
                out.push(unknown(
                    "unknown-template",
                    file,
                    at("template"),
                    "template",
                    t,
                    inv.templates.keys().cloned(),
                ));
            }
        }
        if let Some(c) = &cf.content {
            scope.check(out, &[K("config_files"), I(i), K("content")], c);
        }
        destination(out, file, at("destination"), &cf.destination, &inv.settings);
        if let Some(first) = destinations.insert(cf.destination.as_str(), i) {
            out.push(Diagnostic::error(
                "duplicate-id",
                file,
                at("destination"),
                format!(
                    "destination `{}` is written twice (first at config_files[{first}])",
                    cf.destination
                ),
            ));
        }
        if let Some(owner) = &cf.owner
            && (owner.is_empty()
                || owner.split(':').count() > 2
                || owner.contains(char::is_whitespace))
        {
            out.push(Diagnostic::error(
                "invalid-value",
                file,
                at("owner"),
                format!("owner `{owner}` is not `user` or `user:group`"),
            ));
        }
    }
    for (k, v) in &d.env_vars {
        if k.is_empty()
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || k.starts_with(|c: char| c.is_ascii_digit())
        {
            out.push(
                Diagnostic::error(
                    "invalid-value",
                    file,
                    doc.node.key_pos_at(&[K("env_vars")], k),
                    format!("`{k}` is not a valid environment variable name"),
                )
                .with_hint("use letters, digits and underscores, not starting with a digit"),
            );
        }
        scope.check(out, &[K("env_vars"), K(k)], v);
    }
    let mut path = vec![K("configuration")];
    for (k, v) in &d.configuration {
        path.push(K(k));
        json_strings(v, &mut path, &mut |p, s| scope.check(out, p, s));
        path.pop();
    }
    let mut volumes = HashMap::new();
    for (i, v) in d.volumes.iter().enumerate() {
        if let Some(problem) = relative_path_problem(&v.mount) {
            out.push(
                Diagnostic::error(
                    "path-escape",
                    file,
                    doc.pos(&[K("volumes"), I(i), K("mount")]),
                    format!("volume mount `{}` {problem}", v.mount),
                )
                .with_hint("mounts are relative to the release directory"),
            );
        }
        if let Some(first) = volumes.insert(v.name.as_str(), i) {
            out.push(Diagnostic::error(
                "duplicate-id",
                file,
                doc.pos(&[K("volumes"), I(i), K("name")]),
                format!(
                    "volume `{}` is declared twice (first at volumes[{first}])",
                    v.name
                ),
            ));
        }
    }
    let command = d.service.as_ref().and_then(|s| s.command.as_ref());
    if let Some(cmd) = command {
        command_argv(out, file, &doc.node, &[K("service"), K("command")], cmd);
        for (i, a) in cmd.iter().enumerate() {
            let path = [K("service"), K("command"), I(i)];
            scope.check(out, &path, a);
            let secret = reference::references(a)
                .map(|refs| refs.iter().any(|r| r.kind == RefKind::Secret))
                .unwrap_or(false);
            if secret {
                out.push(
                    Diagnostic::warning(
                        "secret-in-command",
                        file,
                        doc.pos(&path),
                        "a secret in a command-line argument is visible to every user of the host (ps, /proc)",
                    )
                    .with_hint("pass it through `env_vars` or a config file instead"),
                );
            }
        }
    } else if artifact.is_some_and(|a| {
        a.value.run.is_none()
            && matches!(
                a.value.kind,
                ArtifactType::Jar
                    | ArtifactType::Binary
                    | ArtifactType::Script
                    | ArtifactType::Tarball
            )
    }) {
        out.push(
            Diagnostic::warning("no-service", file, doc.pos(&[K("artifact")]), "neither the deployment (`service.command`) nor the artifact (`run.command`) says how to run it; no service will be managed")
                .with_hint("add `service: {command: [...]}`"),
        );
    }
    for (i, hc) in d.health_checks.iter().enumerate() {
        let rule = FieldRule {
            file,
            doc: &doc.node,
            base: vec![K("health_checks"), I(i)],
            what: format!("an `{:?}` health check", hc.kind).to_lowercase(),
        };
        use HealthCheckType as H;
        rule.forbid(out, hc.url.is_some() && hc.kind != H::Http, "url");
        rule.forbid(
            out,
            hc.expect_status.is_some() && hc.kind != H::Http,
            "expect_status",
        );
        rule.forbid(
            out,
            hc.body_contains.is_some() && hc.kind != H::Http,
            "body_contains",
        );
        rule.forbid(out, hc.host.is_some() && hc.kind != H::Tcp, "host");
        rule.forbid(out, hc.port.is_some() && hc.kind != H::Tcp, "port");
        rule.forbid(
            out,
            hc.command.is_some() && hc.kind != H::Command,
            "command",
        );
        match hc.kind {
            H::Http => {
                rule.require(out, hc.url.is_some(), "url");
                if let Some(u) = &hc.url {
                    scope.check(out, &[K("health_checks"), I(i), K("url")], u);
                }
            }
            H::Tcp => rule.require(out, hc.port.is_some(), "port"),
            H::Command => match &hc.command {
                None => rule.require(out, false, "command"),
                Some(c) => command_argv(
                    out,
                    file,
                    &doc.node,
                    &[K("health_checks"), I(i), K("command")],
                    c,
                ),
            },
        }
        if hc.timeout_s == 0 || hc.interval_s == 0 || hc.retries == 0 {
            out.push(Diagnostic::error(
                "invalid-value",
                file,
                doc.pos(&[K("health_checks"), I(i)]),
                "`timeout_s`, `interval_s` and `retries` must be at least 1",
            ));
        }
    }
    if let Some(m) = &d.migrations {
        let rule = FieldRule {
            file,
            doc: &doc.node,
            base: vec![K("migrations")],
            what: format!("`{:?}` migrations", m.engine).to_lowercase(),
        };
        match m.engine {
            MigrationEngine::Sqlite | MigrationEngine::Postgresql => {
                rule.require(out, m.database.is_some(), "database");
                rule.forbid(out, m.command.is_some(), "command");
                if let Some(problem) = relative_path_problem(&m.directory) {
                    out.push(
                        Diagnostic::error(
                            "path-escape",
                            file,
                            doc.pos(&[K("migrations"), K("directory")]),
                            format!("`directory` `{}` {problem}", m.directory),
                        )
                        .with_hint("the directory is inside the release"),
                    );
                }
            }
            MigrationEngine::Command => match &m.command {
                None => rule.require(out, false, "command"),
                Some(c) => command_argv(out, file, &doc.node, &[K("migrations"), K("command")], c),
            },
        }
        if let Some(db) = &m.database {
            scope.check(out, &[K("migrations"), K("database")], db);
            if m.engine == MigrationEngine::Sqlite
                && !db.contains("${")
                && !db.starts_with('/')
                && let Some(problem) = relative_path_problem(db)
            {
                out.push(Diagnostic::error(
                    "path-escape",
                    file,
                    doc.pos(&[K("migrations"), K("database")]),
                    format!("database path `{db}` {problem}"),
                ));
            }
        }
    }
    if let Some(k) = d.keep_releases
        && k == 0
    {
        out.push(Diagnostic::error(
            "invalid-value",
            file,
            doc.pos(&[K("keep_releases")]),
            "`keep_releases` must be at least 1 (the current release)",
        ));
    }
}

pub(super) fn destination(out: &mut Out, file: &str, pos: Pos, dest: &str, settings: &Settings) {
    if dest.contains('\0') || dest.split('/').any(|c| c == "..") || dest.is_empty() {
        out.push(
            Diagnostic::error(
                "path-escape",
                file,
                pos,
                format!(
                    "destination `{}` may not contain `..` or NUL bytes",
                    dest.replace('\0', "\\0")
                ),
            )
            .with_hint(
                "write a path inside the release (relative) or under an allowed absolute root",
            ),
        );
    } else if dest.starts_with('/') {
        let allowed = settings.allowed_absolute_roots.iter().any(|root| {
            let root = root.trim_end_matches('/');
            dest.len() > root.len() + 1
                && dest.starts_with(root)
                && dest.as_bytes()[root.len()] == b'/'
        });
        if !allowed {
            out.push(
                Diagnostic::error("path-escape", file, pos, format!("absolute destination `{dest}` is outside the allowed roots ({})", settings.allowed_absolute_roots.join(", ")))
                    .with_hint("use a relative destination (inside the release) or add the root to `allowed_absolute_roots` in clarity.yml"),
            );
        }
    } else if dest.ends_with('/') {
        out.push(Diagnostic::error(
            "invalid-value",
            file,
            pos,
            format!("destination `{dest}` names a directory, not a file"),
        ));
    }
}

pub(super) fn dependency_cycles(inv: &Inventory, out: &mut Out) {
    // Colour-marking DFS; each cycle is reported once, at the edge that closes it.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        inv: &'a Inventory,
        id: &'a str,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        out: &mut Out,
    ) {
        marks.insert(id, Mark::Visiting);
        stack.push(id);
        let doc = &inv.artifacts[id];
        for (i, dep) in doc.value.dependencies.iter().enumerate() {
            if dep == id || !inv.artifacts.contains_key(dep.as_str()) {
                continue;
            }
            match marks.get(dep.as_str()) {
                Some(Mark::Visiting) => {
                    let start = stack.iter().position(|s| *s == dep).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[start..].to_vec();
                    cycle.push(dep);
                    out.push(
                        Diagnostic::error(
                            "dependency-cycle",
                            &doc.file,
                            doc.pos(&[K("dependencies"), I(i)]),
                            format!("artifact dependencies form a cycle: {}", cycle.join(" → ")),
                        )
                        .with_hint("remove one of these dependencies"),
                    );
                }
                Some(Mark::Done) => {}
                None => visit(inv, dep, marks, stack, out),
            }
        }
        stack.pop();
        marks.insert(id, Mark::Done);
    }
    let mut marks = HashMap::new();
    for id in inv.artifacts.keys() {
        if !marks.contains_key(id.as_str()) {
            visit(inv, id, &mut marks, &mut Vec::new(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lookup_walks_nested_values() {
        let mut c = BTreeMap::new();
        c.insert(
            "db".to_string(),
            serde_json::json!({"hosts": [{"name": "a"}]}),
        );
        assert_eq!(
            config_lookup(&c, "db.hosts.0.name"),
            Some(&serde_json::json!("a"))
        );
        assert_eq!(config_lookup(&c, "db.port"), None);
    }
}
