//! Artifact repositories and the artifacts that name them: the fields each repository `type`
//! needs or forbids, the secrets it names, and each artifact's repository and location.

use super::*;

/// Fields that must be set, and fields that do not apply, for one `type` value.
pub(in crate::load) struct FieldRule<'a> {
    pub(in crate::load) file: &'a str,
    pub(in crate::load) doc: &'a crate::load::Node,
    pub(in crate::load) base: Vec<Step<'a>>,
    pub(in crate::load) what: String,
}

impl FieldRule<'_> {
    fn pos(&self) -> Pos {
        self.doc.pos_at(&self.base)
    }
    pub(in crate::load) fn require(&self, out: &mut Out, present: bool, field: &str) {
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
    pub(in crate::load) fn forbid(&self, out: &mut Out, present: bool, field: &str) {
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

pub(super) fn repository(_name: &str, doc: &Doc<Repository>, out: &mut Out) {
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
    crate::load::repository_kinds::check(doc, &rule, out);
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
pub(super) fn repository_secrets(r: &Repository) -> Vec<(Vec<Step<'static>>, &SecretRef)> {
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

pub(super) fn artifacts(snapshot: &Snapshot, inv: &Inventory, out: &mut Out) {
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
