//! Resolving one host: `${...}` references substituted once (a value is never re-rendered, so
//! `{{ }}` inside a value stays literal), templates rendered, release ids hashed.

use super::render::{SecretBag, Templates};
use super::*;
use crate::load::Doc;
use crate::model::apply::{WireSecret, WireSource};
use crate::model::reference::{self, Piece, RefKind};
use crate::model::{Deployment, Repository, Server};
use std::sync::Arc;

/// Access to decrypted secrets, supplied by the caller (the CLI holds the age identities).
pub trait SecretLookup: Sync {
    /// The names of the secrets defined for `client` in `profile`.
    fn names(&self, client: &str, profile: &str) -> Vec<String>;
    /// `Ok(None)` when no identity is available (plans then use placeholders);
    /// `Err` when decryption failed. The error never contains the value.
    fn get(&self, client: &str, profile: &str, name: &str) -> Result<Option<SecretString>, String>;
}

/// Everything outside the inventory that resolution needs.
pub struct Context<'a> {
    /// The reconciler's environment variables that `${ENV:NAME}` may read: only those the
    /// reconciler's own configuration allows (`--allow-env`), never chosen by the repository.
    pub env: BTreeMap<String, String>,
    /// The names allowed by `--allow-env` (set or not), for telling "not allowed" from "unset".
    pub allowed_env: Vec<String>,
    pub secrets: &'a dyn SecretLookup,
    /// `validate` has no runtime environment: a missing `${ENV:..}` then resolves to a
    /// placeholder instead of failing.
    pub lenient_env: bool,
    /// The config root on the reconciler's disk, for `file` repositories with relative paths.
    pub config_root: Option<std::path::PathBuf>,
}

/// The values `${...}` references of one deployment on one host resolve against.
struct Scope<'a> {
    client: &'a str,
    server: &'a str,
    profile: &'a str,
    config: &'a BTreeMap<String, serde_json::Value>,
    env: &'a BTreeMap<String, String>,
    allowed_env: &'a [String],
    lenient_env: bool,
    bag: &'a Arc<SecretBag>,
    templates: &'a Templates,
    template_ctx: &'a minijinja::Value,
}

impl Scope<'_> {
    /// Substitutes the references of `s` into finished text (secrets in place).
    fn resolve(&self, s: &str, allow_config: bool) -> Result<String, String> {
        self.resolve_marked(s, allow_config)
            .map(|t| self.bag.reveal(&t))
    }

    /// Substitutes the references of `s`, secrets as their markers (so a template given the
    /// result sees them opaque). `allow_config` is false inside `configuration` itself, so
    /// configuration values cannot chain into each other.
    fn resolve_marked(&self, s: &str, allow_config: bool) -> Result<String, String> {
        let pieces = reference::parse(s).map_err(|e| e.message)?;
        let mut out = String::with_capacity(s.len());
        for p in pieces {
            match p {
                Piece::Text(t) => out.push_str(&t),
                Piece::Ref(r) => match r.kind {
                    RefKind::ClientId => out.push_str(self.client),
                    RefKind::Server => out.push_str(self.server),
                    RefKind::Profile => out.push_str(self.profile),
                    RefKind::Env if !self.allowed_env.contains(&r.arg) => {
                        return Err(format!(
                            "`${{ENV:{}}}`: the reconciler does not allow reading `{}` (allowed: {})",
                            r.arg,
                            r.arg,
                            crate::load::env_refs::allowed_list(self.allowed_env)
                        ));
                    }
                    RefKind::Env => match self.env.get(&r.arg) {
                        Some(v) => out.push_str(v),
                        None if self.lenient_env => out.push_str(&format!("«env:{}»", r.arg)),
                        None => {
                            return Err(format!(
                                "`${{ENV:{}}}`: the reconciler's environment has no variable `{}`",
                                r.arg, r.arg
                            ));
                        }
                    },
                    RefKind::Secret => out.push(self.bag.marker(&r.arg)?),
                    RefKind::Config if !allow_config => {
                        return Err(format!(
                            "`${{CONFIG:{}}}` inside `configuration`: configuration values cannot refer to each other",
                            r.arg
                        ));
                    }
                    RefKind::Config => match crate::load::config_lookup(self.config, &r.arg) {
                        Some(serde_json::Value::String(v)) => out.push_str(v),
                        Some(v) => out.push_str(&v.to_string()),
                        None => {
                            return Err(format!(
                                "`${{CONFIG:{}}}` does not name a value under `configuration`",
                                r.arg
                            ));
                        }
                    },
                    RefKind::Template => out.push_str(
                        &self
                            .templates
                            .render_marked(&r.arg, self.template_ctx, self.bag)
                            .map_err(|e| format!("template {}: {}", e.file(), e.message))?,
                    ),
                },
            }
        }
        Ok(out)
    }
}

/// Resolves a configuration value, secrets as markers: it becomes template context, where a
/// secret must stay opaque, and is revealed only where it lands in finished text.
fn resolve_json(scope: &Scope, v: &serde_json::Value) -> Result<serde_json::Value, String> {
    Ok(match v {
        serde_json::Value::String(s) => serde_json::Value::String(scope.resolve_marked(s, false)?),
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(|x| resolve_json(scope, x))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), resolve_json(scope, x)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

pub(super) fn host(
    inv: &Inventory,
    templates: &Templates,
    ctx: &Context,
    client: &str,
    server: &str,
    deps: &[(&str, &str)],
    skip: &(dyn Fn(&Target) -> bool + Sync),
) -> Result<DesiredHost, Vec<DesiredError>> {
    let entry = &inv.clients[client];
    let server_doc = &entry.servers[server];
    let s = &server_doc.value;
    let mut errors = Vec::new();
    let mut built = BTreeMap::new();
    let mut dep_graph = BTreeMap::new();
    let mut bags: BTreeMap<&str, Arc<SecretBag>> = BTreeMap::new();
    // Deployments left to the caller count as built: a second profile of one is still an error.
    let mut skipped = BTreeSet::new();
    for (artifact, profile) in deps {
        let doc = &entry.deployments[&(artifact.to_string(), profile.to_string())];
        if built.contains_key(*artifact) || skipped.contains(artifact) {
            errors.push(DesiredError {
                server: server.to_string(),
                file: doc.file.clone(),
                line: None,
                message: format!(
                    "artifact `{artifact}` is deployed to this server by more than one profile in this run"
                ),
                hint: Some("select one profile with --profile".into()),
            });
            continue;
        }
        let target = Target {
            client,
            server,
            artifact,
            profile,
        };
        if skip(&target) {
            skipped.insert(*artifact);
            continue;
        }
        let bag = bags
            .entry(profile)
            .or_insert_with(|| Arc::new(secret_bag(ctx, client, profile)))
            .clone();
        match deployment(inv, templates, ctx, client, server_doc, profile, doc, &bag) {
            Ok(d) => {
                dep_graph.insert(d.name.clone(), d.depends_on.clone());
                built.insert(artifact.to_string(), d);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut deployments: Vec<DesiredDeployment> = Vec::new();
    for name in dependency_order(&dep_graph) {
        if let Some(mut d) = built.remove(&name) {
            d.depends_on.retain(|x| dep_graph.contains_key(x));
            deployments.push(d);
        }
    }
    Ok(DesiredHost {
        server: server.to_string(),
        client: client.to_string(),
        datacenter: s.datacenter.clone(),
        transport: s.agent.transport,
        local_root: s.agent.root.clone(),
        ssh: ssh_endpoint(s),
        service_manager: s.agent.service_manager.unwrap_or(match s.agent.transport {
            Transport::Local => ServiceManager::Process,
            Transport::Ssh => ServiceManager::Systemd,
        }),
        containers: s.agent.containers.clone(),
        deployments,
    })
}

/// Where an `ssh` server is reached; `None` for other transports (and for a server without
/// any address, which validation reports).
fn ssh_endpoint(s: &crate::model::Server) -> Option<super::SshEndpoint> {
    if s.agent.transport != Transport::Ssh {
        return None;
    }
    let settings = s.agent.ssh.clone().unwrap_or_default();
    let address = settings
        .address
        .clone()
        .or_else(|| s.ip_addresses.first().map(|a| a.address.clone()))?;
    Some(super::SshEndpoint {
        address,
        port: settings.port,
        user: settings.user,
        host_key: settings.host_key,
        identity_file: settings.identity_file,
        sudo: settings.sudo,
        proxy_jump: settings.proxy_jump,
    })
}

fn secret_bag(ctx: &Context, client: &str, profile: &str) -> SecretBag {
    SecretBag {
        values: ctx
            .secrets
            .names(client, profile)
            .into_iter()
            .map(|n| {
                let v = ctx.secrets.get(client, profile, &n);
                (n, v)
            })
            .collect(),
    }
}

/// The agent's view of a repository: addresses and credentials (from the client's secrets),
/// plus the names of secrets that could not be decrypted.
fn wire_source(
    repo: &Repository,
    bag: &SecretBag,
    config_root: Option<&std::path::Path>,
) -> (WireSource, Vec<String>) {
    let mut missing = Vec::new();
    let mut secret = |r: &Option<crate::model::SecretRef>| -> Option<WireSecret> {
        let r = r.as_ref()?;
        match bag.values.get(&r.secret) {
            Some(Ok(Some(v))) => Some(WireSecret(v.clone())),
            _ => {
                missing.push(r.secret.clone());
                None
            }
        }
    };
    let auth = repo.auth.as_ref();
    let dir = repo.path.clone().unwrap_or_default();
    let wire = match repo.kind {
        RepositoryType::File => WireSource::File {
            dir: match (dir.starts_with('/'), config_root) {
                (false, Some(root)) => root.join(&dir).display().to_string(),
                _ => dir,
            },
        },
        RepositoryType::Http => WireSource::Http {
            base_url: repo.url.clone().unwrap_or_default(),
            username: auth.and_then(|a| a.username.clone()),
            password: auth.and_then(|a| secret(&a.password)),
            token: auth.and_then(|a| secret(&a.token)),
            header: auth
                .filter(|a| a.kind == crate::model::AuthType::Header)
                .and_then(|a| Some((a.header.clone()?, secret(&a.value)?))),
        },
        RepositoryType::Sftp => WireSource::Sftp {
            host: repo.host.clone().unwrap_or_default(),
            port: repo.port.unwrap_or(22),
            dir,
            username: repo.username.clone().unwrap_or_default(),
            password: auth.and_then(|a| secret(&a.password)),
            private_key: auth.and_then(|a| secret(&a.private_key)),
            host_key: repo.host_key.clone(),
        },
        RepositoryType::Ftp => WireSource::Ftp {
            host: repo.host.clone().unwrap_or_default(),
            port: repo.port.unwrap_or(21),
            dir,
            username: repo.username.clone(),
            password: secret(&repo.password),
            passive: repo.passive.unwrap_or(true),
        },
        RepositoryType::S3 => WireSource::S3 {
            endpoint: repo.endpoint.clone(),
            bucket: repo.bucket.clone().unwrap_or_default(),
            region: repo.region.clone().unwrap_or_else(|| "us-east-1".into()),
            prefix: repo.prefix.clone().unwrap_or_default(),
            path_style: repo.path_style.unwrap_or(false),
            access_key_id: secret(&repo.access_key_id),
            secret_access_key: secret(&repo.secret_access_key),
            session_token: secret(&repo.session_token),
        },
        RepositoryType::GoogleDrive => WireSource::GoogleDrive {
            api_url: repo
                .api_url
                .clone()
                .unwrap_or_else(|| crate::fetch::DEFAULT_API_URL.into()),
            token_url: repo
                .token_url
                .clone()
                .unwrap_or_else(|| crate::fetch::DEFAULT_TOKEN_URL.into()),
            folder_id: repo.folder_id.clone(),
            client_id: auth.and_then(|a| secret(&a.client_id)),
            client_secret: auth.and_then(|a| secret(&a.client_secret)),
            refresh_token: auth.and_then(|a| secret(&a.refresh_token)),
            service_account: match auth {
                Some(a) => secret(&a.key),
                None => secret(&repo.service_account),
            },
        },
    };
    (wire, missing)
}

fn source_display(repo: &Repository, location: &str) -> String {
    let join = |base: &str| format!("{}/{}", base.trim_end_matches('/'), location);
    match repo.kind {
        // Credentials or a signed query in a URL never reach a plan (validation and the agent
        // refuse them anyway).
        RepositoryType::Http => crate::fetch::display_url(&join(repo.url.as_deref().unwrap_or(""))),
        RepositoryType::Sftp | RepositoryType::Ftp => {
            let scheme = repo.kind.as_str();
            let user = repo
                .username
                .as_deref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default();
            let port = repo.port.map(|p| format!(":{p}")).unwrap_or_default();
            let path = join(repo.path.as_deref().unwrap_or(""));
            format!(
                "{scheme}://{user}{}{port}/{}",
                repo.host.as_deref().unwrap_or(""),
                path.trim_start_matches('/')
            )
        }
        RepositoryType::File => join(repo.path.as_deref().unwrap_or(".")),
        RepositoryType::S3 => format!(
            "s3://{}/{}",
            repo.bucket.as_deref().unwrap_or(""),
            join(repo.prefix.as_deref().unwrap_or("")).trim_start_matches('/')
        ),
        RepositoryType::GoogleDrive => {
            crate::fetch::drive_location(repo.folder_id.as_deref(), location)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn deployment(
    inv: &Inventory,
    templates: &Templates,
    ctx: &Context,
    client: &str,
    server_doc: &Doc<Server>,
    profile: &str,
    doc: &Doc<Deployment>,
    bag: &Arc<SecretBag>,
) -> Result<DesiredDeployment, DesiredError> {
    let d = &doc.value;
    let server = server_doc.value.hostname.as_str();
    let fail = |message: String, hint: Option<&str>| DesiredError {
        server: server.to_string(),
        file: doc.file.clone(),
        line: None,
        message,
        hint: hint.map(str::to_string),
    };
    let artifact_doc = inv.artifacts.get(&d.artifact).ok_or_else(|| {
        fail(
            format!("unknown artifact `{}`", d.artifact),
            Some("run `clarity-reconcile validate`"),
        )
    })?;
    let a = &artifact_doc.value;
    let version = a
        .versions
        .iter()
        .find(|v| v.version == d.version)
        .ok_or_else(|| {
            fail(
                format!("artifact `{}` has no version `{}`", a.id, d.version),
                Some("run `clarity-reconcile validate`"),
            )
        })?;
    let repo_name = d.repository.as_deref().unwrap_or(&a.repository);
    let repo = inv
        .repositories
        .get(repo_name)
        .ok_or_else(|| fail(format!("unknown repository `{repo_name}`"), None))?;
    let client_model = inv.clients[client].client.as_ref().map(|c| &c.value);

    let empty = BTreeMap::new();
    let null_ctx = minijinja::Value::UNDEFINED;
    let pre = Scope {
        client,
        server,
        profile,
        config: &empty,
        env: &ctx.env,
        allowed_env: &ctx.allowed_env,
        lenient_env: ctx.lenient_env,
        bag,
        templates,
        template_ctx: &null_ctx,
    };
    let config: BTreeMap<String, serde_json::Value> = d
        .configuration
        .iter()
        .map(|(k, v)| Ok((k.clone(), resolve_json(&pre, v)?)))
        .collect::<Result<_, String>>()
        .map_err(|m| fail(format!("configuration: {m}"), None))?;
    let template_ctx = minijinja::Value::from_serialize(serde_json::json!({
        "config": config,
        "client": {
            "id": client,
            "code": client_model.map(|c| c.code.as_str()).unwrap_or(""),
            "name": client_model.map(|c| c.name.as_str()).unwrap_or(""),
        },
        "server": {
            "hostname": server,
            "datacenter": server_doc.value.datacenter,
            "addresses": server_doc.value.ip_addresses.iter().map(|a| a.address.as_str()).collect::<Vec<_>>(),
        },
        "profile": profile,
        "artifact": { "id": a.id, "version": version.version },
    }));
    let scope = Scope {
        config: &config,
        template_ctx: &template_ctx,
        ..pre
    };
    let redactions = bag.redactions();
    let redactions: Vec<&str> = redactions.iter().map(String::as_str).collect();
    // Only a text that actually carries an undecryptable secret's placeholder is unknown.
    let known = |text: &str| bag.complete() || !text.contains(SecretBag::PLACEHOLDER_PREFIX);

    let mut release_files = Vec::new();
    let mut host_files = Vec::new();
    for (i, cf) in d.config_files.iter().enumerate() {
        let text = match (&cf.template, &cf.content) {
            (Some(t), _) => templates.render(t, &template_ctx, bag).map_err(|e| DesiredError {
                server: server.to_string(),
                file: e.file(),
                line: e.line,
                message: format!("{} (rendering config_files[{i}] of {})", e.message, doc.file),
                hint: Some("templates see config, client, server, profile, artifact and secret(\"name\")".into()),
            })?,
            (None, Some(c)) => scope
                .resolve(c, true)
                .map_err(|m| fail(format!("config_files[{i}].content: {m}"), None))?,
            (None, None) => String::new(),
        };
        let file = DesiredFile {
            destination: cf.destination.clone(),
            mode: normalize_mode(&cf.mode),
            owner: cf.owner.clone(),
            template: cf.template.clone(),
            content: FileContent::new(known(&text), text, &redactions),
        };
        if cf.destination.starts_with('/') {
            host_files.push(file);
        } else {
            release_files.push(file);
        }
    }

    let mut env = BTreeMap::new();
    for (k, v) in &d.env_vars {
        let value = scope
            .resolve(v, true)
            .map_err(|m| fail(format!("env_vars.{k}: {m}"), None))?;
        let redacted = redact(&value, &redactions);
        env.insert(
            k.clone(),
            EnvValue {
                sensitive: redacted != value,
                value: SecretString::new(value),
                redacted,
            },
        );
    }

    let command = d
        .service
        .as_ref()
        .and_then(|s| s.command.clone())
        .or_else(|| a.run.as_ref().map(|r| r.command.clone()));
    let service = match command {
        Some(cmd) => {
            let argv: Vec<String> = cmd
                .iter()
                .map(|c| scope.resolve(c, true))
                .collect::<Result<_, _>>()
                .map_err(|m| fail(format!("service.command: {m}"), None))?;
            Some(ServiceSpec {
                command: argv.iter().map(|v| redact(v, &redactions)).collect(),
                command_exposed: argv.into_iter().map(SecretString::new).collect(),
                user: d.service.as_ref().and_then(|s| s.user.clone()),
                restart_policy: d.restart_policy,
                autostart: d.autostart,
                limits: d.service.as_ref().and_then(|s| s.limits.clone()),
                ports: d.ports.clone(),
                volumes: d.volumes.clone(),
            })
        }
        None => None,
    };

    let mut health_checks = d.health_checks.clone();
    for hc in &mut health_checks {
        if let Some(u) = &hc.url {
            hc.url = Some(
                scope
                    .resolve(u, true)
                    .map_err(|m| fail(format!("health_checks url: {m}"), None))?,
            );
        }
    }

    let migrations = match &d.migrations {
        Some(m) => {
            let db = m
                .database
                .as_ref()
                .map(|db| scope.resolve(db, true))
                .transpose()
                .map_err(|e| fail(format!("migrations.database: {e}"), None))?;
            Some(MigrationSpec {
                engine: m.engine,
                directory: m.directory.clone(),
                database: db.as_ref().map(|v| redact(v, &redactions)),
                database_exposed: db.map(SecretString::new),
                command: m.command.clone(),
                backup: m.backup.unwrap_or(profile == "prod"),
            })
        }
        None => None,
    };

    // The release id covers everything inside the release; host files are versioned apart.
    let mut h = Sha256::new();
    h.update(version.sha256.to_ascii_lowercase().as_bytes());
    for f in &release_files {
        h.update(format!(
            "\0file\0{}\0{}\0{:?}\0{}",
            f.destination, f.mode, f.owner, f.content.sha256
        ));
    }
    for (k, v) in &env {
        h.update(format!(
            "\0env\0{k}\0{}",
            sha256_hex(v.exposed().as_bytes())
        ));
    }
    h.update(serde_json::to_vec(&service).unwrap_or_default());
    // A container is created once per release, so its settings are part of the release.
    let container = a.kind.is_container().then(|| ContainerSpec {
        settings: d.container.as_deref().cloned().unwrap_or_default(),
        restart_policy: d.restart_policy,
        autostart: d.autostart,
    });
    if let Some(c) = &container {
        h.update(b"\0container\0");
        h.update(serde_json::to_vec(c).unwrap_or_default());
    }
    let release = format!("{}-{}", version.version, &hex::encode(h.finalize())[..12]);

    Ok(DesiredDeployment {
        name: a.id.clone(),
        profile: profile.to_string(),
        file: doc.file.clone(),
        artifact: ArtifactSpec {
            id: a.id.clone(),
            kind: a.kind,
            version: version.version.clone(),
            sha256: version.sha256.to_ascii_lowercase(),
            size: version.size,
            source: {
                let (wire, missing_credentials) =
                    wire_source(&repo.value, bag, ctx.config_root.as_deref());
                SourceSpec {
                    repository: repo_name.to_string(),
                    kind: repo.value.kind,
                    location: version.location.clone(),
                    display: source_display(&repo.value, &version.location),
                    wire,
                    missing_credentials,
                    max_size: repo.value.max_download_size,
                }
            },
        },
        release,
        release_known: release_files.iter().all(|f| f.content.known)
            && env.values().all(|v| known(v.exposed())),
        release_files,
        host_files,
        env,
        service,
        migrations,
        health_checks,
        keep_releases: d.keep_releases.unwrap_or(inv.settings.keep_releases),
        depends_on: a.dependencies.clone(),
        rollout: d.rollout.clone(),
        priority: d
            .targets
            .iter()
            .find(|t| t.server == server)
            .map(|t| t.priority)
            .unwrap_or_default(),
        container,
    })
}

/// `640` and `0640` mean the same mode; keep one spelling so plans compare equal.
fn normalize_mode(m: &str) -> String {
    format!("{:04o}", u32::from_str_radix(m, 8).unwrap_or(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repository(value: serde_json::Value) -> Repository {
        serde_json::from_value(value).expect("a repository")
    }

    fn server(agent: serde_json::Value, addresses: &[&str]) -> Server {
        serde_json::from_value(json!({
            "hostname": "web-1",
            "datacenter": "fra1",
            "ip_addresses": addresses.iter().map(|a| json!({ "address": a })).collect::<Vec<_>>(),
            "agent": agent,
        }))
        .expect("a server")
    }

    /// A bag holding `db_password` (decrypted) and `api_token` (no identity could decrypt it).
    fn bag() -> SecretBag {
        SecretBag {
            values: [
                ("api_token".to_string(), Ok(None)),
                (
                    "db_password".to_string(),
                    Ok(Some(SecretString::from("hunter2".to_string()))),
                ),
            ]
            .into(),
        }
    }

    #[test]
    fn modes_have_one_spelling() {
        assert_eq!(normalize_mode("640"), "0640");
        assert_eq!(normalize_mode("0640"), "0640");
        assert_eq!(normalize_mode("4755"), "4755");
        assert_eq!(normalize_mode("7"), "0007");
        // Not octal: the default file mode, never a panic.
        assert_eq!(normalize_mode("rw-r--r--"), "0644");
        assert_eq!(normalize_mode("0899"), "0644");
    }

    #[test]
    fn sources_display_without_credentials_or_queries() {
        let http = repository(json!({
            "name": "r", "type": "http",
            "url": "https://fetch:pw@releases.example/artifacts/",
        }));
        assert_eq!(
            source_display(&http, "shop/1.0.jar"),
            "https://releases.example/artifacts/shop/1.0.jar"
        );
        let signed = repository(json!({
            "name": "r", "type": "http", "url": "https://releases.example/a?sig=abc",
        }));
        assert_eq!(
            source_display(&signed, "x.jar"),
            "https://releases.example/a?…"
        );
        let sftp = repository(json!({
            "name": "r", "type": "sftp", "host": "files.example", "port": 2222,
            "username": "deploy", "path": "/srv/files/",
        }));
        assert_eq!(
            source_display(&sftp, "a.tgz"),
            "sftp://deploy@files.example:2222/srv/files/a.tgz"
        );
        let ftp = repository(json!({ "name": "r", "type": "ftp", "host": "ftp.example" }));
        assert_eq!(source_display(&ftp, "a.tgz"), "ftp://ftp.example/a.tgz");
        let file = repository(json!({ "name": "r", "type": "file", "path": "files" }));
        assert_eq!(source_display(&file, "a.sh"), "files/a.sh");
        let s3 = repository(json!({
            "name": "r", "type": "s3", "bucket": "builds", "prefix": "shop/",
        }));
        assert_eq!(source_display(&s3, "1.0.jar"), "s3://builds/shop/1.0.jar");
        let s3_root = repository(json!({ "name": "r", "type": "s3", "bucket": "builds" }));
        assert_eq!(source_display(&s3_root, "1.0.jar"), "s3://builds/1.0.jar");
    }

    #[test]
    fn wire_sources_carry_decrypted_credentials_and_name_the_missing_ones() {
        let http = repository(json!({
            "name": "r", "type": "http", "url": "https://releases.example",
            "auth": { "type": "basic", "username": "fetch", "password": { "secret": "db_password" } },
        }));
        let (wire, missing) = wire_source(&http, &bag(), None);
        let WireSource::Http {
            base_url,
            username,
            password,
            token,
            header,
        } = wire
        else {
            panic!("not http: {wire:?}");
        };
        assert_eq!(base_url, "https://releases.example");
        assert_eq!(username.as_deref(), Some("fetch"));
        assert_eq!(
            password.map(|p| p.0.expose().to_string()).as_deref(),
            Some("hunter2")
        );
        assert!(token.is_none() && header.is_none());
        assert!(missing.is_empty(), "{missing:?}");

        // Undecryptable and undefined secrets are both missing, and never sent.
        let sftp = repository(json!({
            "name": "r", "type": "sftp", "host": "files.example", "username": "deploy",
            "auth": { "type": "password", "password": { "secret": "api_token" } },
        }));
        let (wire, missing) = wire_source(&sftp, &bag(), None);
        let WireSource::Sftp { port, password, .. } = wire else {
            panic!("not sftp: {wire:?}");
        };
        assert_eq!(port, 22);
        assert!(password.is_none());
        assert_eq!(missing, ["api_token"]);
        let ftp = repository(json!({
            "name": "r", "type": "ftp", "host": "ftp.example", "password": { "secret": "nope" },
        }));
        let (wire, missing) = wire_source(&ftp, &bag(), None);
        let WireSource::Ftp { port, passive, .. } = wire else {
            panic!("not ftp: {wire:?}");
        };
        assert_eq!((port, passive), (21, true));
        assert_eq!(missing, ["nope"]);
    }

    #[test]
    fn wire_sources_fill_defaults_and_place_relative_file_repositories() {
        let relative = repository(json!({ "name": "r", "type": "file", "path": "files" }));
        let root = std::path::Path::new("/var/lib/clarity/config");
        let (wire, _) = wire_source(&relative, &bag(), Some(root));
        assert!(
            matches!(&wire, WireSource::File { dir } if dir == "/var/lib/clarity/config/files"),
            "{wire:?}"
        );
        let (wire, _) = wire_source(&relative, &bag(), None);
        assert!(
            matches!(&wire, WireSource::File { dir } if dir == "files"),
            "{wire:?}"
        );
        let absolute = repository(json!({ "name": "r", "type": "file", "path": "/srv/files" }));
        let (wire, _) = wire_source(&absolute, &bag(), Some(root));
        assert!(
            matches!(&wire, WireSource::File { dir } if dir == "/srv/files"),
            "{wire:?}"
        );
        let s3 = repository(json!({ "name": "r", "type": "s3", "bucket": "builds" }));
        let (wire, missing) = wire_source(&s3, &bag(), None);
        let WireSource::S3 {
            region,
            prefix,
            path_style,
            access_key_id,
            ..
        } = wire
        else {
            panic!("not s3: {wire:?}");
        };
        assert_eq!(
            (region.as_str(), prefix.as_str(), path_style),
            ("us-east-1", "", false)
        );
        assert!(access_key_id.is_none() && missing.is_empty());
    }

    #[test]
    fn ssh_endpoints_default_to_the_first_address() {
        let plain = server(json!({ "transport": "ssh" }), &["10.0.0.11", "10.0.0.12"]);
        let e = ssh_endpoint(&plain).expect("an ssh endpoint");
        assert_eq!(e.address, "10.0.0.11");
        assert!(e.port.is_none() && e.user.is_none() && !e.sudo);
        let explicit = server(
            json!({ "transport": "ssh", "ssh": {
                "address": "web-1.acme.example", "port": 2222, "user": "deploy", "sudo": true,
                "proxy_jump": "bastion",
            }}),
            &["10.0.0.11"],
        );
        let e = ssh_endpoint(&explicit).expect("an ssh endpoint");
        assert_eq!(
            (
                e.address.as_str(),
                e.port,
                e.user.as_deref(),
                e.sudo,
                e.proxy_jump.as_deref()
            ),
            (
                "web-1.acme.example",
                Some(2222),
                Some("deploy"),
                true,
                Some("bastion")
            )
        );
        assert!(ssh_endpoint(&server(json!({ "transport": "ssh" }), &[])).is_none());
        let local = server(json!({ "transport": "local" }), &["10.0.0.11"]);
        assert!(ssh_endpoint(&local).is_none());
    }

    /// Runs `f` with the scope of client acme, server web-1, profile prod: `config`, the
    /// environment `ALLOWED=from-env` (of which `ALLOWED` and `UNSET` may be read) and [`bag`].
    fn in_scope<T>(config: serde_json::Value, lenient_env: bool, f: impl FnOnce(&Scope) -> T) -> T {
        let config: BTreeMap<String, serde_json::Value> = serde_json::from_value(config).unwrap();
        let env: BTreeMap<String, String> =
            [("ALLOWED".to_string(), "from-env".to_string())].into();
        let allowed = ["ALLOWED".to_string(), "UNSET".to_string()];
        let bag = Arc::new(bag());
        let (templates, diags) = Templates::new(&Inventory::default());
        assert!(diags.is_empty());
        f(&Scope {
            client: "acme",
            server: "web-1",
            profile: "prod",
            config: &config,
            env: &env,
            allowed_env: &allowed,
            lenient_env,
            bag: &bag,
            templates: &templates,
            template_ctx: &minijinja::Value::UNDEFINED,
        })
    }

    /// Resolves `s` [`in_scope`]; `marked` keeps secrets as markers.
    fn resolve_with(
        s: &str,
        config: serde_json::Value,
        allow_config: bool,
        lenient_env: bool,
        marked: bool,
    ) -> Result<String, String> {
        in_scope(config, lenient_env, |scope| {
            if marked {
                scope.resolve_marked(s, allow_config)
            } else {
                scope.resolve(s, allow_config)
            }
        })
    }

    fn resolve(s: &str) -> Result<String, String> {
        resolve_with(
            s,
            json!({ "port": 8080, "db": { "url": "postgres://db" } }),
            true,
            false,
            false,
        )
    }

    #[test]
    fn references_resolve_once_against_the_host() {
        assert_eq!(
            resolve("${CLIENT_ID}-${SERVER}-${PROFILE}").unwrap(),
            "acme-web-1-prod"
        );
        assert_eq!(resolve("port=${CONFIG:port}").unwrap(), "port=8080");
        assert_eq!(
            resolve("${CONFIG:db.url}/shop").unwrap(),
            "postgres://db/shop"
        );
        assert_eq!(resolve("${ENV:ALLOWED}").unwrap(), "from-env");
        // A value is substituted once: template syntax inside it stays literal.
        let literal = resolve_with(
            "${CONFIG:x}",
            json!({ "x": "{{ secret(\"db_password\") }} ${SERVER}" }),
            true,
            false,
            false,
        );
        assert_eq!(literal.unwrap(), "{{ secret(\"db_password\") }} ${SERVER}");
        assert_eq!(resolve("no references").unwrap(), "no references");
    }

    #[test]
    fn secrets_stay_markers_until_revealed() {
        let config = json!({});
        let marked = resolve_with(
            "pw=${SECRET:db_password}",
            config.clone(),
            true,
            false,
            true,
        )
        .unwrap();
        assert!(!marked.contains("hunter2"), "{marked}");
        assert_eq!(marked.chars().count(), "pw=".len() + 1);
        let revealed = resolve_with(
            "pw=${SECRET:db_password}",
            config.clone(),
            true,
            false,
            false,
        )
        .unwrap();
        assert_eq!(revealed, "pw=hunter2");
        // Undecryptable: a placeholder, never an error.
        let placeholder = resolve_with("${SECRET:api_token}", config.clone(), true, false, false);
        assert_eq!(placeholder.unwrap(), SecretBag::placeholder("api_token"));
        let undefined = resolve_with("${SECRET:nope}", config, true, false, false).unwrap_err();
        assert!(undefined.contains("`nope` is not defined"), "{undefined}");
    }

    #[test]
    fn references_that_cannot_resolve_are_errors() {
        let missing = resolve("${CONFIG:db.user}").unwrap_err();
        assert!(missing.contains("does not name a value"), "{missing}");
        let refused = resolve("${ENV:HOME}").unwrap_err();
        assert!(
            refused.contains("does not allow reading `HOME`"),
            "{refused}"
        );
        let unset = resolve("${ENV:UNSET}").unwrap_err();
        assert!(unset.contains("has no variable `UNSET`"), "{unset}");
        // validate has no environment: an allowed but unset variable is a placeholder there,
        // and a refused one is still refused.
        let lenient = resolve_with("${ENV:UNSET}", json!({}), true, true, false);
        assert_eq!(lenient.unwrap(), "«env:UNSET»");
        assert!(resolve_with("${ENV:HOME}", json!({}), true, true, false).is_err());
        let chained =
            resolve_with("${CONFIG:port}", json!({ "port": 1 }), false, false, false).unwrap_err();
        assert!(chained.contains("cannot refer to each other"), "{chained}");
        assert!(resolve("${UNCLOSED").is_err());
    }

    #[test]
    fn configuration_values_resolve_at_every_depth_without_chaining() {
        in_scope(json!({}), false, |scope| {
            let resolved = resolve_json(
                scope,
                &json!({ "name": "${SERVER}", "list": ["${PROFILE}", 3, true, null], "n": 1.5 }),
            )
            .unwrap();
            assert_eq!(
                resolved,
                json!({ "name": "web-1", "list": ["prod", 3, true, null], "n": 1.5 })
            );
            let nested = resolve_json(scope, &json!({ "a": [{ "b": "${CONFIG:name}" }] }));
            assert!(nested.unwrap_err().contains("cannot refer to each other"));
        });
    }
}
