//! Checks across files, run after every file parsed on its own: names agree with locations,
//! ids are unique, references resolve, paths stay inside their roots, ports do not clash,
//! dependencies do not cycle. Each finding is a diagnostic at the place the operator must edit.

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

/// Resolves a symlink's target against its folder; `None` when it leaves the config root.
fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn symlinks(snapshot: &Snapshot, inv: &mut Inventory, out: &mut Out) {
    for (path, file) in &snapshot.files {
        let Content::Symlink(target) = &file.content else {
            continue;
        };
        match resolve_link(path, target) {
            None => out.push(
                Diagnostic::error(
                    "path-escape",
                    path,
                    Pos::START,
                    format!("symbolic link points outside the config repository (to `{target}`)"),
                )
                .with_hint("replace the link with the file itself, or point it inside the repository"),
            ),
            Some(resolved) => match (path.strip_prefix("templates/"), snapshot.text(&resolved)) {
                (Some(name), Some(bytes)) if resolved.starts_with("templates/") => {
                    if let Ok(text) = std::str::from_utf8(bytes) {
                        inv.templates.insert(name.to_string(), text.into());
                    }
                }
                _ => out.push(
                    Diagnostic::error(
                        "path-escape",
                        path,
                        Pos::START,
                        format!("symbolic link to `{target}` does not resolve to a file Clarity may read"),
                    )
                    .with_hint("only links between templates under templates/ are followed"),
                ),
            },
        }
    }
}

fn settings_file(doc: &Doc<Settings>, out: &mut Out) {
    let s = &doc.value;
    let mut seen = BTreeSet::new();
    for (i, p) in s.profiles.iter().enumerate() {
        if !seen.insert(p) {
            out.push(Diagnostic::error(
                "duplicate-id",
                &doc.file,
                doc.pos(&[K("profiles"), I(i)]),
                format!("profile `{p}` is listed twice"),
            ));
        }
    }
    for (i, p) in s.promotion.iter().enumerate() {
        if !s.profiles.contains(p) {
            out.push(
                Diagnostic::error(
                    "unknown-profile",
                    &doc.file,
                    doc.pos(&[K("promotion"), I(i)]),
                    format!("promotion lists `{p}`, which is not a profile"),
                )
                .with_hint(format!("profiles are: {}", s.profiles.join(", "))),
            );
        }
    }
    for (i, root) in s.allowed_absolute_roots.iter().enumerate() {
        if !root.starts_with('/') || root.split('/').any(|c| c == "..") || root.contains('\0') {
            out.push(
                Diagnostic::error(
                    "path-escape",
                    &doc.file,
                    doc.pos(&[K("allowed_absolute_roots"), I(i)]),
                    format!("`{root}` must be an absolute path without `..`"),
                )
                .with_hint("write it like /etc/myapp"),
            );
        }
    }
}

/// Branch profiles name profiles; trusted key files are in the repository; notify targets are
/// web addresses.
fn approval_keys(snapshot: &Snapshot, doc: &Doc<Settings>, out: &mut Out) {
    let s = &doc.value;
    for (branch, profiles) in &s.branches {
        for (i, p) in profiles.iter().enumerate() {
            if !s.profiles.contains(p) {
                out.push(
                    Diagnostic::error(
                        "unknown-profile",
                        &doc.file,
                        doc.pos(&[K("branches"), K(branch), I(i)]),
                        format!("branch `{branch}` lists `{p}`, which is not a profile"),
                    )
                    .with_hint(format!("profiles are: {}", s.profiles.join(", "))),
                );
            }
        }
    }
    for (i, path) in s.approval.trusted_keys.iter().enumerate() {
        let pos = doc.pos(&[K("approval"), K("trusted_keys"), I(i)]);
        if let Some(problem) = relative_path_problem(path) {
            out.push(
                Diagnostic::error(
                    "path-escape",
                    &doc.file,
                    pos,
                    format!("trusted key file `{path}` {problem}"),
                )
                .with_hint(
                    "name a file relative to the repository root, like keys/allowed_signers",
                ),
            );
        } else if !snapshot
            .files
            .get(path.as_str())
            .is_some_and(|f| matches!(f.content, Content::File(_)))
        {
            out.push(
                Diagnostic::error(
                    "unknown-file",
                    &doc.file,
                    pos,
                    format!("trusted key file `{path}` is not in the repository"),
                )
                .with_hint(
                    "commit the SSH allowed_signers file or armored OpenPGP key it names, under keys/",
                ),
            );
        }
    }
    for (i, target) in s.notify.iter().enumerate() {
        let url = target.url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            out.push(
                Diagnostic::error(
                    "invalid-url",
                    &doc.file,
                    doc.pos(&[K("notify"), I(i), K("url")]),
                    format!("notify url `{url}` is not an http:// or https:// address"),
                )
                .with_hint("webhooks are posted JSON over HTTP"),
            );
        }
    }
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

fn client_files(snapshot: &Snapshot, id: &str, entry: &ClientEntry, out: &mut Out) {
    let client_file = format!("clients/{id}/client.yml");
    match &entry.client {
        Some(c) => mismatch(
            out,
            &c.file,
            c.pos(&[K("id")]),
            "id",
            &c.value.id,
            id,
            "folder name",
        ),
        None if !snapshot.files.contains_key(&client_file)
            && (!entry.servers.is_empty()
                || !entry.datacenters.is_empty()
                || !entry.deployments.is_empty()) =>
        {
            out.push(
                Diagnostic::error(
                    "missing-file",
                    &client_file,
                    Pos::START,
                    format!("client folder `clients/{id}` has no client.yml"),
                )
                .with_hint("create it with id, code and name"),
            )
        }
        None => {}
    }
    for (name, d) in &entry.datacenters {
        mismatch(
            out,
            &d.file,
            d.pos(&[K("code")]),
            "code",
            &d.value.code,
            name,
            "file name",
        );
    }
    for (name, s) in &entry.servers {
        mismatch(
            out,
            &s.file,
            s.pos(&[K("hostname")]),
            "hostname",
            &s.value.hostname,
            name,
            "file name",
        );
    }
    for ((artifact, profile), d) in &entry.deployments {
        mismatch(
            out,
            &d.file,
            d.pos(&[K("artifact")]),
            "artifact",
            &d.value.artifact,
            artifact,
            "folder name",
        );
        mismatch(
            out,
            &d.file,
            d.pos(&[K("profile")]),
            "profile",
            &d.value.profile,
            profile,
            "file name",
        );
    }
}

fn uniqueness(inv: &Inventory, out: &mut Out) {
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

/// Fields that must be set, and fields that do not apply, for one `type` value.
pub(super) struct FieldRule<'a> {
    pub(super) file: &'a str,
    pub(super) doc: &'a super::Node,
    pub(super) base: Vec<Step<'a>>,
    pub(super) what: String,
}

impl FieldRule<'_> {
    fn pos(&self) -> Pos {
        self.doc.pos_at(&self.base)
    }
    pub(super) fn require(&self, out: &mut Out, present: bool, field: &str) {
        if !present {
            out.push(
                Diagnostic::error(
                    "missing-field",
                    self.file,
                    self.pos(),
                    format!("{} needs `{field}`", self.what),
                )
                .with_hint(format!("add `{field}:`")),
            );
        }
    }
    pub(super) fn forbid(&self, out: &mut Out, present: bool, field: &str) {
        if present {
            let mut path = self.base.clone();
            path.push(K(field));
            out.push(
                Diagnostic::error(
                    "field-not-applicable",
                    self.file,
                    self.doc.key_pos_at(&self.base, field),
                    format!("`{field}` does not apply to {}", self.what),
                )
                .with_hint("remove it, or change `type`"),
            );
        }
    }
}

fn repository(_name: &str, doc: &Doc<Repository>, out: &mut Out) {
    let r = &doc.value;
    let rule = FieldRule {
        file: &doc.file,
        doc: &doc.node,
        base: vec![],
        what: format!("a `{}` repository", r.kind.as_str()),
    };
    use RepositoryType as T;
    let t = r.kind;
    let applies = |kinds: &[T]| kinds.contains(&t);
    let fields: [(&str, bool, &[T]); 17] = [
        ("url", r.url.is_some(), &[T::Http]),
        ("host", r.host.is_some(), &[T::Sftp, T::Ftp]),
        ("port", r.port.is_some(), &[T::Sftp, T::Ftp]),
        ("path", r.path.is_some(), &[T::Sftp, T::Ftp, T::File]),
        ("username", r.username.is_some(), &[T::Sftp, T::Ftp]),
        ("password", r.password.is_some(), &[T::Ftp]),
        ("passive", r.passive.is_some(), &[T::Ftp]),
        (
            "auth",
            r.auth.is_some(),
            &[T::Http, T::Sftp, T::GoogleDrive],
        ),
        ("host_key", r.host_key.is_some(), &[T::Sftp]),
        ("bucket", r.bucket.is_some(), &[T::S3]),
        ("region", r.region.is_some(), &[T::S3]),
        ("endpoint", r.endpoint.is_some(), &[T::S3]),
        ("prefix", r.prefix.is_some(), &[T::S3]),
        ("access_key_id", r.access_key_id.is_some(), &[T::S3]),
        ("secret_access_key", r.secret_access_key.is_some(), &[T::S3]),
        ("folder_id", r.folder_id.is_some(), &[T::GoogleDrive]),
        (
            "service_account",
            r.service_account.is_some(),
            &[T::GoogleDrive],
        ),
    ];
    for (field, present, kinds) in fields {
        if !applies(kinds) {
            rule.forbid(out, present, field);
        }
    }
    match t {
        T::Http => {
            rule.require(out, r.url.is_some(), "url");
            if let Some(url) = &r.url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                out.push(
                    Diagnostic::error(
                        "invalid-value",
                        &doc.file,
                        doc.pos(&[K("url")]),
                        format!("`url` `{url}` is not an http(s) URL"),
                    )
                    .with_hint("write it like https://artifacts.example.net/releases"),
                );
            }
        }
        T::Sftp => {
            rule.require(out, r.host.is_some(), "host");
            rule.require(out, r.username.is_some(), "username");
            rule.require(out, r.auth.is_some(), "auth");
        }
        T::Ftp => rule.require(out, r.host.is_some(), "host"),
        T::File => {
            rule.require(out, r.path.is_some(), "path");
            if let Some(p) = &r.path
                && !p.starts_with('/')
                && let Some(problem) = relative_path_problem(p)
            {
                out.push(
                    Diagnostic::error(
                        "path-escape",
                        &doc.file,
                        doc.pos(&[K("path")]),
                        format!("`path` `{p}` {problem}"),
                    )
                    .with_hint(
                        "a relative `file` repository path stays inside the config repository",
                    ),
                );
            }
        }
        T::S3 => rule.require(out, r.bucket.is_some(), "bucket"),
        T::GoogleDrive => {}
    }
    super::repository_kinds::check(doc, &rule, out);
    if let Some(auth) = &r.auth {
        let rule = FieldRule {
            file: &doc.file,
            doc: &doc.node,
            base: vec![K("auth")],
            what: format!("`{}` auth", auth.kind.as_str()),
        };
        let allowed: &[AuthType] = match t {
            T::Http => &[
                AuthType::None,
                AuthType::Basic,
                AuthType::Bearer,
                AuthType::Header,
            ],
            T::GoogleDrive => &[AuthType::Oauth, AuthType::ServiceAccount],
            _ => &[AuthType::Password, AuthType::Key],
        };
        if !allowed.contains(&auth.kind) {
            out.push(
                Diagnostic::error(
                    "invalid-value",
                    &doc.file,
                    doc.pos(&[K("auth"), K("type")]),
                    format!(
                        "auth type `{}` is not available for a `{}` repository",
                        auth.kind.as_str(),
                        t.as_str()
                    )
                    .to_lowercase(),
                )
                .with_hint(format!(
                    "use one of: {}",
                    allowed
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            return;
        }
        let k = auth.kind;
        rule.forbid(
            out,
            auth.username.is_some() && k != AuthType::Basic,
            "username",
        );
        rule.forbid(
            out,
            auth.password.is_some() && !matches!(k, AuthType::Basic | AuthType::Password),
            "password",
        );
        rule.forbid(out, auth.token.is_some() && k != AuthType::Bearer, "token");
        rule.forbid(
            out,
            auth.private_key.is_some() && k != AuthType::Key,
            "private_key",
        );
        match k {
            AuthType::Basic => {
                rule.require(out, auth.username.is_some(), "username");
                rule.require(out, auth.password.is_some(), "password");
            }
            AuthType::Bearer => rule.require(out, auth.token.is_some(), "token"),
            AuthType::Password => rule.require(out, auth.password.is_some(), "password"),
            AuthType::Key => rule.require(out, auth.private_key.is_some(), "private_key"),
            // Checked with the repository kinds that use them (repository_kinds.rs).
            AuthType::None | AuthType::Header | AuthType::Oauth | AuthType::ServiceAccount => {}
        }
    }
}

/// Every secret a repository needs, with the path of the field that names it.
fn repository_secrets(r: &Repository) -> Vec<(Vec<Step<'static>>, &SecretRef)> {
    let mut v: Vec<(Vec<Step<'static>>, &SecretRef)> = Vec::new();
    let top = [
        ("password", &r.password),
        ("access_key_id", &r.access_key_id),
        ("secret_access_key", &r.secret_access_key),
        ("session_token", &r.session_token),
        ("service_account", &r.service_account),
    ];
    for (k, s) in top {
        if let Some(s) = s {
            v.push((vec![K(k), K("secret")], s));
        }
    }
    if let Some(a) = &r.auth {
        for (k, s) in [
            ("password", &a.password),
            ("token", &a.token),
            ("private_key", &a.private_key),
            ("value", &a.value),
            ("client_id", &a.client_id),
            ("client_secret", &a.client_secret),
            ("refresh_token", &a.refresh_token),
            ("key", &a.key),
        ] {
            if let Some(s) = s {
                v.push((vec![K("auth"), K(k), K("secret")], s));
            }
        }
    }
    v
}

fn artifacts(snapshot: &Snapshot, inv: &Inventory, out: &mut Out) {
    for (name, doc) in &inv.artifacts {
        let a = &doc.value;
        mismatch(
            out,
            &doc.file,
            doc.pos(&[K("id")]),
            "id",
            &a.id,
            name,
            "file name",
        );
        if !inv.repositories.contains_key(&a.repository)
            && !unparsed(snapshot, &format!("repositories/{}.yml", a.repository))
        {
            out.push(unknown(
                "unknown-repository",
                &doc.file,
                doc.pos(&[K("repository")]),
                "repository",
                &a.repository,
                inv.repositories.keys().cloned(),
            ));
        }
        let mut versions = HashMap::new();
        for (i, v) in a.versions.iter().enumerate() {
            if let Some(first) = versions.insert(v.version.as_str(), i) {
                out.push(Diagnostic::error(
                    "duplicate-id",
                    &doc.file,
                    doc.pos(&[K("versions"), I(i), K("version")]),
                    format!(
                        "version `{}` is listed twice (first at versions[{first}])",
                        v.version
                    ),
                ));
            }
            if let Some(problem) = relative_path_problem(&v.location) {
                out.push(
                    Diagnostic::error(
                        "path-escape",
                        &doc.file,
                        doc.pos(&[K("versions"), I(i), K("location")]),
                        format!("`location` `{}` {problem}", v.location),
                    )
                    .with_hint("locations are relative to the repository's base"),
                );
            }
        }
        for (i, dep) in a.dependencies.iter().enumerate() {
            if dep == name {
                out.push(Diagnostic::error(
                    "dependency-cycle",
                    &doc.file,
                    doc.pos(&[K("dependencies"), I(i)]),
                    format!("artifact `{name}` depends on itself"),
                ));
            } else if !inv.artifacts.contains_key(dep)
                && !unparsed(snapshot, &format!("artifacts/{dep}.yml"))
            {
                out.push(unknown(
                    "unknown-artifact",
                    &doc.file,
                    doc.pos(&[K("dependencies"), I(i)]),
                    "artifact",
                    dep,
                    inv.artifacts.keys().cloned(),
                ));
            }
        }
        if let Some(run) = &a.run {
            command_argv(
                out,
                &doc.file,
                &doc.node,
                &[K("run"), K("command")],
                &run.command,
            );
        }
    }
    dependency_cycles(inv, out);
}

fn dependency_cycles(inv: &Inventory, out: &mut Out) {
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

fn server_file(
    snapshot: &Snapshot,
    inv: &Inventory,
    client: &str,
    doc: &Doc<super::super::model::Server>,
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

fn agent_settings(a: &AgentSettings, doc: &Doc<super::super::model::Server>, out: &mut Out) {
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

/// Checks references in one string value of a deployment.
struct RefScope<'a> {
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

fn json_strings<'a>(
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

fn deployment(
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

fn destination(out: &mut Out, file: &str, pos: Pos, dest: &str, settings: &Settings) {
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

fn secrets(snapshot: &Snapshot, inv: &Inventory, client: &str, entry: &ClientEntry, out: &mut Out) {
    if entry.client.is_none()
        && !unparsed(snapshot, &format!("clients/{client}/client.yml"))
        && entry.servers.is_empty()
        && entry.deployments.is_empty()
        && entry.datacenters.is_empty()
    {
        for doc in entry.secrets.values() {
            out.push(unknown(
                "unknown-client",
                &doc.file,
                Pos::START,
                "client",
                client,
                inv.clients
                    .iter()
                    .filter(|(_, e)| e.client.is_some())
                    .map(|(c, _)| c.clone()),
            ));
        }
    }
    for (profile, doc) in &entry.secrets {
        if !inv.settings.profiles.contains(profile) {
            out.push(
                Diagnostic::error(
                    "unknown-profile",
                    &doc.file,
                    Pos::START,
                    format!("secrets file for `{profile}`, which is not a profile"),
                )
                .with_hint(format!(
                    "profiles are: {}",
                    inv.settings.profiles.join(", ")
                )),
            );
        }
        for (name, value) in &doc.value.0 {
            if !value
                .trim_start()
                .starts_with("-----BEGIN AGE ENCRYPTED FILE-----")
            {
                out.push(
                    Diagnostic::error("plaintext-secret", &doc.file, doc.node.key_pos_at(&[], name), format!("secret `{name}` is not an age-armored ciphertext"))
                        .with_hint(format!("never commit plaintext: set it with `clarity-reconcile secret set --client {client} --profile {profile} {name}`")),
                );
            }
        }
        if entry.recipients.is_empty() {
            out.push(
                Diagnostic::warning(
                    "no-recipients",
                    &doc.file,
                    Pos::START,
                    format!("client `{client}` has secrets but no secrets/{client}/recipients.txt"),
                )
                .with_hint("list the age public keys allowed to decrypt, one per line"),
            );
        }
    }
    for (line, r) in &entry.recipients {
        if let Err(reason) = crate::secret::parse_recipient(r) {
            out.push(
                Diagnostic::error(
                    "invalid-value",
                    &format!("secrets/{client}/recipients.txt"),
                    Pos {
                        line: *line,
                        column: 1,
                    },
                    format!("not a usable age recipient: {reason}"),
                )
                .with_hint(
                    "recipients are age public keys (age1..., from `age-keygen -y FILE`) or SSH \
                     public keys (ssh-ed25519, ssh-rsa), one per line",
                ),
            );
        }
    }
}

/// One artifact on one server is one deployment directory: two profiles targeting it would
/// overwrite each other's releases.
fn profile_conflicts(inv: &Inventory, out: &mut Out) {
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

fn port_conflicts(inv: &Inventory, out: &mut Out) {
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

    #[test]
    fn symlink_resolution() {
        assert_eq!(
            resolve_link("templates/a/x.j2", "../b.j2").as_deref(),
            Some("templates/b.j2")
        );
        assert_eq!(resolve_link("templates/x.j2", "../../../etc/passwd"), None);
        assert_eq!(resolve_link("templates/x.j2", "/etc/passwd"), None);
    }

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
