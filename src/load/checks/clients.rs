//! One client's directory: its `client.yml` agrees with the folder it is in, and the secrets
//! its deployments name are in its store and decrypt to names it knows.

use super::*;

pub(super) fn client_files(snapshot: &Snapshot, id: &str, entry: &ClientEntry, out: &mut Out) {
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

pub(super) fn secrets(
    snapshot: &Snapshot,
    inv: &Inventory,
    client: &str,
    entry: &ClientEntry,
    out: &mut Out,
) {
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
