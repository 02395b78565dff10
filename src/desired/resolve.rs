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
