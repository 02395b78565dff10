//! `clarity-reconcile secret set|get|list|rekey`: manage the age-encrypted values in
//! `secrets/<client>/<profile>.yml` of the config repository's working tree. Values come in on
//! standard input only (never argv, which `ps` and shell history show) and leave in clear only
//! through `secret get`, on explicit request. Nothing here commits: the operator reviews and
//! commits the changed file like any other change.

use super::{CliError, CliResult, Exit, GlobalArgs, IdentityArgs, Output, SelectionArgs};
use crate::atomic_file::WriteFailed;
use crate::diag::Severity;
use crate::load::{ClientEntry, Inventory, Loaded};
use crate::model::SecretsFile;
use crate::secret::{self, Identities, SecretError, SecretStore, SecretString, file};
use crate::source::{self, ReadMode, Snapshot};
use age::secrecy::zeroize::{Zeroize, Zeroizing};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Manage secrets: values age-encrypted one by one in `secrets/<client>/<profile>.yml`, to the
/// public keys listed in `secrets/<client>/recipients.txt`. Names stay readable so a review
/// shows which secret changed; values are decrypted only in memory, with the identity given by
/// --age-identity or CLARITY_AGE_IDENTITY.
#[derive(Debug, Args)]
#[command(
    mut_arg("age_identity", |a| a
        .global(true)
        .help("age identity file that decrypts (AGE-SECRET-KEY-1... lines, as made by `age-keygen -o FILE`, or an unencrypted SSH private key); default: $CLARITY_AGE_IDENTITY. Needed by `get` and `rekey` only.")),
    mut_arg("client", |a| a.global(true)),
    mut_arg("profile", |a| a.global(true)),
    mut_arg("server", |a| a.global(true).hide(true))
)]
pub struct SecretArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    Set(SetArgs),
    Get(GetArgs),
    List(ListArgs),
    Rekey(RekeyArgs),
}

/// Encrypt a value read from standard input to the client's current recipients and store it
/// under NAME in `secrets/<client>/<profile>.yml` (created if needed; other entries are kept).
/// Needs --client and --profile. Example: `printf %s "$PASSWORD" | clarity-reconcile secret set
/// --client acme --profile prod db_password`. Commit the file afterwards.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Secret name, as referenced by `${SECRET:name}`: letters, digits and `_`, not starting
    /// with a digit.
    pub name: String,
    /// Keep a trailing newline of the input (by default one is stripped).
    #[arg(long)]
    pub keep_newline: bool,
}

/// Decrypt one secret and print it to standard output. Needs --client and --profile. This is
/// the only command that prints a plaintext, and only the one asked for.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Secret name.
    pub name: String,
}

/// List secret names per client and profile (narrowed by --client and --profile). Needs no
/// key and prints no value.
#[derive(Debug, Args)]
pub struct ListArgs {}

/// Re-encrypt every secret of a client (--client; --profile for just one profile) to the
/// recipients now in `secrets/<client>/recipients.txt`, after a key was added or removed.
/// Decrypts with the given identity; writes nothing unless every value decrypted. Prints the
/// names rekeyed.
#[derive(Debug, Args)]
pub struct RekeyArgs {}

pub fn run(global: &GlobalArgs, args: &SecretArgs) -> CliResult {
    let identity = args.identity.age_identity.as_deref();
    let selection = &args.selection;
    match &args.command {
        SecretCommand::Set(a) => {
            let client = need(&selection.client, "set")?;
            set(global, client, need(&selection.profile, "set")?, a)
        }
        SecretCommand::Get(a) => {
            let client = need(&selection.client, "get")?;
            get(
                global,
                identity,
                client,
                need(&selection.profile, "get")?,
                a,
            )
        }
        SecretCommand::List(_) => list(global, selection),
        SecretCommand::Rekey(_) => {
            let client = need(&selection.client, "rekey")?;
            rekey(global, identity, client, selection.profile.as_ref())
        }
    }
}

/// `--client` and `--profile` are options of `secret` that every one of its subcommands takes,
/// so clap cannot require them for one subcommand; this does.
fn need<'a>(value: &'a Option<String>, cmd: &str) -> Result<&'a str, CliError> {
    let needs = if cmd == "rekey" {
        "--client"
    } else {
        "--client and --profile"
    };
    value.as_deref().ok_or_else(|| {
        CliError::new(format!("`secret {cmd}` needs {needs}")).hint(format!(
            "e.g. `clarity-reconcile secret {cmd} --client acme --profile prod{}`",
            if cmd == "rekey" { "" } else { " NAME" }
        ))
    })
}

/// The repository as `validate` would see it: at `--rev` if given (read-only commands), else
/// the working tree with uncommitted changes.
fn open(global: &GlobalArgs, writes: Option<&str>) -> Result<(Snapshot, Loaded), CliError> {
    let mode = match (&global.rev, writes) {
        (Some(_), Some(cmd)) => {
            return Err(CliError::new(format!(
                "`secret {cmd}` changes files in the working tree, so --rev does not apply"
            ))
            .hint("drop --rev; commit the changed file afterwards"));
        }
        (Some(rev), None) => ReadMode::Commit(rev.clone()),
        (None, _) => ReadMode::WorkingTree,
    };
    let snapshot = source::read(&global.repo, &mode)?;
    let loaded = crate::load::load(&snapshot);
    Ok((snapshot, loaded))
}

fn has_errors(loaded: &Loaded, path: &str) -> bool {
    loaded
        .diagnostics
        .iter()
        .any(|d| d.file == path && d.severity == Severity::Error)
}

fn broken_file(path: &str) -> CliError {
    CliError::new(format!("{path} has errors, so it cannot be used"))
        .hint("run `clarity-reconcile validate` to see them and fix the file first")
}

fn client<'a>(loaded: &'a Loaded, id: &str) -> Result<&'a ClientEntry, CliError> {
    let inv = &loaded.inventory;
    if let Some(entry) = inv.clients.get(id).filter(|e| e.client.is_some()) {
        return Ok(entry);
    }
    let path = format!("clients/{id}/client.yml");
    if has_errors(loaded, &path) {
        return Err(broken_file(&path));
    }
    let known: Vec<&str> = inv
        .clients
        .iter()
        .filter(|(_, e)| e.client.is_some())
        .map(|(c, _)| c.as_str())
        .collect();
    Err(
        CliError::new(format!("unknown client `{id}`: there is no {path}")).hint(
            if known.is_empty() {
                "this config repository has no clients yet (is --repo right?)".to_string()
            } else {
                format!("clients are: {}", known.join(", "))
            },
        ),
    )
}

fn profile(inv: &Inventory, p: &str) -> Result<(), CliError> {
    if inv.settings.profiles.iter().any(|x| x == p) {
        return Ok(());
    }
    Err(
        CliError::new(format!("unknown profile `{p}`")).hint(format!(
            "profiles are: {} (set in clarity.yml `profiles`)",
            inv.settings.profiles.join(", ")
        )),
    )
}

fn secrets_path(client: &str, profile: &str) -> String {
    format!("secrets/{client}/{profile}.yml")
}

fn identities(explicit: Option<&Path>, client: &str) -> Result<Arc<Identities>, CliError> {
    match secret::identities_from(explicit)? {
        Some(ids) => Ok(Arc::new(ids)),
        None => Err(CliError::new(format!(
            "no age identity to decrypt client `{client}`'s secrets"
        ))
        .hint(format!(
            "no identity given: pass --age-identity FILE or set {}",
            secret::IDENTITY_ENV
        ))),
    }
}

/// A secrets file's leading comment and its name → ciphertext entries.
type DiskFile = (String, BTreeMap<String, String>);

/// The secrets file as it is on disk now (the file `set` and `rekey` rewrite): its leading
/// comment and entries. A missing file is empty.
fn read_disk(root: &Path, rel: &str) -> Result<Option<DiskFile>, CliError> {
    let text = match std::fs::read_to_string(root.join(rel)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::from_error(&e).hint(format!("check that {rel} is readable")));
        }
    };
    let entries = file::parse(&text).map_err(|reason| {
        CliError::new(format!("{rel} cannot be updated: {reason}"))
            .hint("run `clarity-reconcile validate` to see where, and fix the file first")
    })?;
    Ok(Some((file::leading_comment(&text), entries)))
}

/// Replaces `root/rel` in one step (temp file in the same folder, fsync, rename), so an
/// interrupted run leaves the old file or the new one, never half of one.
fn write_atomic(root: &Path, rel: &str, text: &str) -> Result<(), CliError> {
    // A dot file until renamed: the loader ignores it should a crash leave it behind.
    crate::atomic_file::write_atomic::<WriteFailed>(&root.join(rel), text.as_bytes(), 0o644, |_| {
        Ok(())
    })
    .map_err(|e| {
        let mut err = CliError::new(format!("cannot write {rel}"));
        err.causes
            .push(format!("{} {}: {}", e.action, e.path.display(), e.source));
        err
    })
}

/// Reads the value from standard input, never from argv.
fn read_value(keep_newline: bool) -> Result<SecretString, CliError> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "reading the value from standard input (end it with Ctrl-D; the terminal echoes it, \
             so prefer a pipe)"
        );
    }
    let mut bytes = Zeroizing::new(Vec::new());
    stdin
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::from_error(&e).hint("pipe the value into the command"))?;
    if !keep_newline && bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(CliError::new("the value on standard input is empty").hint(
            "pipe the value in, e.g. `printf %s \"$VALUE\" | clarity-reconcile secret set ...`",
        ));
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(SecretString::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(
                CliError::new("the value on standard input is not UTF-8 text")
                    .hint("encode binary values (e.g. base64) before storing them"),
            )
        }
    }
}

fn set(global: &GlobalArgs, client_id: &str, profile_id: &str, args: &SetArgs) -> CliResult {
    if !secret::is_valid_name(&args.name) {
        return Err(
            CliError::new(format!("`{}` is not a valid secret name", args.name)).hint(
                "names match ^[A-Za-z_][A-Za-z0-9_]*$ (letters, digits and _, not starting with \
                 a digit), so they fit ${SECRET:name}",
            ),
        );
    }
    let (snapshot, loaded) = open(global, Some("set"))?;
    let entry = client(&loaded, client_id)?;
    profile(&loaded.inventory, profile_id)?;
    let recipients = secret::client_recipients(client_id, &entry.recipients)?;
    let rel = secrets_path(client_id, profile_id);
    let (comment, mut entries, existed) = match read_disk(&snapshot.root, &rel)? {
        Some((c, e)) => (c, e, true),
        None => (
            file::default_comment(client_id, profile_id),
            BTreeMap::new(),
            false,
        ),
    };
    let value = read_value(args.keep_newline)?;
    let armored =
        secret::encrypt(value.expose(), &recipients).map_err(|source| SecretError::Encrypt {
            client: client_id.to_string(),
            profile: profile_id.to_string(),
            name: args.name.clone(),
            source,
        })?;
    drop(value);
    let replaced = entries.insert(args.name.clone(), armored).is_some();
    write_atomic(&snapshot.root, &rel, &file::render(&comment, &entries))?;
    let action = if replaced { "updated" } else { "added" };
    match global.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "client": client_id,
                "profile": profile_id,
                "name": args.name,
                "file": rel,
                "action": action,
                "recipients": recipients.len(),
            })
        ),
        Output::Text | Output::Markdown => {
            println!(
                "{action} secret `{}` in {rel} ({}encrypted to {} recipient{})",
                args.name,
                if existed { "" } else { "new file, " },
                recipients.len(),
                if recipients.len() == 1 { "" } else { "s" }
            );
            println!("next: review and commit {rel}");
        }
    }
    Ok(Exit::Ok)
}

fn get(
    global: &GlobalArgs,
    identity: Option<&Path>,
    client_id: &str,
    profile_id: &str,
    args: &GetArgs,
) -> CliResult {
    let (snapshot, loaded) = open(global, None)?;
    let entry = client(&loaded, client_id)?;
    profile(&loaded.inventory, profile_id)?;
    let rel = secrets_path(client_id, profile_id);
    let file = entry.secrets.get(profile_id).map(|d| &d.value);
    if file.is_none() && snapshot.files.contains_key(&rel) {
        return Err(broken_file(&rel));
    }
    // Checked before the key is loaded: a typo in the name needs no identity to report.
    let known = SecretStore::new(client_id, profile_id, file, None);
    if !known.contains(&args.name) {
        return Err(known
            .get(&args.name)
            .expect_err("the name is missing")
            .into());
    }
    let store = SecretStore::new(
        client_id,
        profile_id,
        file,
        Some(identities(identity, client_id)?),
    );
    let value = store.get(&args.name)?;
    let text = value.expose();
    let mut out = std::io::stdout().lock();
    // A terminal prompt would otherwise start on the value's last line; pipes get the value
    // byte for byte.
    let newline = out.is_terminal() && !text.ends_with('\n');
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    written.map_err(|e| CliError::from_error(&e))?;
    Ok(Exit::Ok)
}

fn list(global: &GlobalArgs, selection: &SelectionArgs) -> CliResult {
    let (_snapshot, loaded) = open(global, None)?;
    let inv = &loaded.inventory;
    if let Some(c) = &selection.client {
        client(&loaded, c)?;
    }
    if let Some(p) = &selection.profile {
        profile(inv, p)?;
    }
    let mut rows = Vec::new();
    for (c, entry) in &inv.clients {
        if selection.client.as_ref().is_some_and(|x| x != c) {
            continue;
        }
        for (p, doc) in &entry.secrets {
            if selection.profile.as_ref().is_some_and(|x| x != p) {
                continue;
            }
            let names: Vec<&str> = doc.value.0.keys().map(String::as_str).collect();
            rows.push((c.as_str(), p.as_str(), doc.file.as_str(), names));
        }
    }
    match global.output {
        Output::Json => {
            let json: Vec<_> = rows
                .iter()
                .map(|(c, p, f, n)| {
                    serde_json::json!({ "client": c, "profile": p, "file": f, "names": n })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("names serialize")
            );
        }
        Output::Text | Output::Markdown => {
            if rows.is_empty() {
                println!("no secrets");
            }
            for (c, p, f, names) in &rows {
                println!("{c}/{p} ({f}): {}", names.join(", "));
            }
        }
    }
    Ok(Exit::Ok)
}

fn rekey(
    global: &GlobalArgs,
    identity: Option<&Path>,
    client_id: &str,
    profile_id: Option<&String>,
) -> CliResult {
    let (snapshot, loaded) = open(global, Some("rekey"))?;
    let entry = client(&loaded, client_id)?;
    let recipients = secret::client_recipients(client_id, &entry.recipients)?;
    let profiles: Vec<String> = match profile_id {
        Some(p) => {
            profile(&loaded.inventory, p)?;
            vec![p.clone()]
        }
        None => {
            let prefix = format!("secrets/{client_id}/");
            snapshot
                .files
                .keys()
                .filter_map(|f| f.strip_prefix(&prefix)?.strip_suffix(".yml"))
                .filter(|p| !p.contains('/'))
                .map(str::to_string)
                .collect()
        }
    };
    let ids = identities(identity, client_id)?;
    // Every value is decrypted and re-encrypted before any file is written, so a value that
    // cannot be decrypted leaves the repository exactly as it was.
    let mut rewritten = Vec::new();
    for p in &profiles {
        let rel = secrets_path(client_id, p);
        let Some((comment, entries)) = read_disk(&snapshot.root, &rel)? else {
            return Err(CliError::new(format!("{rel} does not exist"))
                .hint(format!("client {client_id} has no secrets for profile {p}")));
        };
        let store = SecretStore::new(client_id, p, Some(&SecretsFile(entries)), Some(ids.clone()));
        let mut fresh = BTreeMap::new();
        for (name, value) in store.get_all()? {
            let armored = secret::encrypt(value.expose(), &recipients).map_err(|source| {
                SecretError::Encrypt {
                    client: client_id.to_string(),
                    profile: p.clone(),
                    name: name.clone(),
                    source,
                }
            })?;
            fresh.insert(name, armored);
        }
        rewritten.push((p.clone(), rel, comment, fresh));
    }
    for (_, rel, comment, entries) in &rewritten {
        write_atomic(&snapshot.root, rel, &file::render(comment, entries))?;
    }
    match global.output {
        Output::Json => {
            let json: Vec<_> = rewritten
                .iter()
                .map(|(p, rel, _, e)| {
                    serde_json::json!({
                        "client": client_id,
                        "profile": p,
                        "file": rel,
                        "names": e.keys().collect::<Vec<_>>(),
                        "recipients": recipients.len(),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("names serialize")
            );
        }
        Output::Text | Output::Markdown => {
            if rewritten.is_empty() {
                println!("client {} has no secrets to rekey", client_id);
            }
            for (p, rel, _, e) in &rewritten {
                println!(
                    "rekeyed {}/{p} ({rel}) to {} recipient{}: {}",
                    client_id,
                    recipients.len(),
                    if recipients.len() == 1 { "" } else { "s" },
                    e.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            if !rewritten.is_empty() {
                println!("next: review and commit the rekeyed files");
            }
        }
    }
    Ok(Exit::Ok)
}
