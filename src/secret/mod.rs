//! Secrets in the config repository: each value age-encrypted on its own (SOPS-style, names in
//! clear so a review shows which secret changed) to the public keys in
//! `secrets/<client>/recipients.txt`, and decrypted only in memory into a `SecretString` that
//! cannot be printed, logged or serialized by accident. This module never writes a plaintext
//! anywhere and never puts a value, a key or a ciphertext fragment into an error message; it
//! does not read the config repository either (callers hand it a `SecretsFile` and recipient
//! lines), apart from the one identity file the operator names.
//!
//! Isolation between clients follows from encryption, not from checks: a value is encrypted
//! only to its own client's recipients, so another client's key cannot open it.

pub mod credentials;
mod crypto;
pub mod file;
mod store;
mod value;

pub use crypto::{
    ARMOR_BEGIN, CryptoError, Identities, IdentityError, Recipients, decrypt, encrypt,
    parse_recipient, recipient_lines,
};
pub use store::SecretStore;
pub use value::{REDACTED, SecretString};

use std::path::{Path, PathBuf};

/// Environment variable naming the age identity file, when `--age-identity` is not given.
pub const IDENTITY_ENV: &str = "CLARITY_AGE_IDENTITY";

/// Whether `name` may name a secret: `^[A-Za-z_][A-Za-z0-9_]*$`, so it fits `${SECRET:name}`
/// and every shell and template language without quoting.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Loads the identities named by `explicit` (the `--age-identity` flag), else by the
/// `CLARITY_AGE_IDENTITY` environment variable, else the service's `age-identity` credential
/// ([`credentials`]); `None` when there is none of them.
pub fn identities_from(explicit: Option<&Path>) -> Result<Option<Identities>, SecretError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os(IDENTITY_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => match credentials::path("age-identity") {
                Some(p) => p,
                None => return Ok(None),
            },
        },
    };
    Identities::from_file(&path)
        .map(Some)
        .map_err(|source| SecretError::IdentityFile { path, source })
}

/// Why a secret could not be resolved, encrypted or decrypted. Every variant names the client
/// (and profile and secret name where there is one) and none carries a value or ciphertext.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no age identity to decrypt secret `{name}` of client `{client}` (profile {profile})")]
    NoIdentity {
        client: String,
        profile: String,
        name: String,
    },
    #[error("client `{client}` has no secret `{name}` for profile {profile}")]
    Unknown {
        client: String,
        profile: String,
        name: String,
        /// The names that do exist, for the hint.
        known: Vec<String>,
    },
    #[error("cannot decrypt secret `{name}` of client `{client}` (profile {profile})")]
    Decrypt {
        client: String,
        profile: String,
        name: String,
        #[source]
        source: CryptoError,
    },
    #[error("cannot encrypt secret `{name}` for client `{client}` (profile {profile})")]
    Encrypt {
        client: String,
        profile: String,
        name: String,
        #[source]
        source: CryptoError,
    },
    #[error("client `{client}` has no recipients in secrets/{client}/recipients.txt")]
    NoRecipients { client: String },
    #[error("secrets/{client}/recipients.txt line {line}: {reason}")]
    InvalidRecipient {
        client: String,
        line: u32,
        reason: String,
    },
    #[error("cannot use age identity file {}", path.display())]
    IdentityFile {
        path: PathBuf,
        #[source]
        source: IdentityError,
    },
}

impl SecretError {
    /// What the operator can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            SecretError::NoIdentity { client, .. } => format!(
                "no identity given: pass --age-identity FILE or set {IDENTITY_ENV} to an age \
                 identity file whose public key is in secrets/{client}/recipients.txt"
            ),
            SecretError::Unknown {
                client,
                profile,
                name,
                known,
            } => {
                let set = format!(
                    "set it with `clarity-reconcile secret set --client {client} --profile \
                     {profile} {name}` (value on stdin)"
                );
                if known.is_empty() {
                    format!("secrets/{client}/{profile}.yml has no secrets; {set}")
                } else {
                    format!("known secrets: {}; or {set}", known.join(", "))
                }
            }
            SecretError::Decrypt {
                client,
                profile,
                name,
                source,
            } => match source {
                CryptoError::NotARecipient => format!(
                    "this identity is not a recipient of client {client}'s secrets: someone who \
                     can decrypt must add its public key (`age-keygen -y FILE`) to \
                     secrets/{client}/recipients.txt and run `clarity-reconcile secret rekey \
                     --client {client}`"
                ),
                _ => format!(
                    "set it again with `clarity-reconcile secret set --client {client} \
                     --profile {profile} {name}`"
                ),
            },
            SecretError::Encrypt { client, .. } | SecretError::NoRecipients { client } => {
                format!(
                    "list the age public keys (age1..., from `age-keygen -y FILE`) or SSH public \
                     keys allowed to read client {client}'s secrets in \
                     secrets/{client}/recipients.txt, one per line"
                )
            }
            SecretError::InvalidRecipient { .. } => {
                "recipients are age public keys (age1...) or SSH public keys (ssh-ed25519, \
                 ssh-rsa), one per line; `#` starts a comment line"
                    .to_string()
            }
            SecretError::IdentityFile { .. } => format!(
                "pass an age identity file (AGE-SECRET-KEY-1... lines, made by `age-keygen -o \
                 FILE`) or an unencrypted SSH private key with --age-identity or {IDENTITY_ENV}"
            ),
        })
    }
}

/// Parses one client's recipient lines (as `load::ClientEntry::recipients` holds them).
pub fn client_recipients(client: &str, lines: &[(u32, String)]) -> Result<Recipients, SecretError> {
    match Recipients::parse_lines(lines) {
        Ok(r) if r.is_empty() => Err(SecretError::NoRecipients {
            client: client.to_string(),
        }),
        Ok(r) => Ok(r),
        Err(bad) => {
            let (line, reason) = bad.into_iter().next().unwrap_or_default();
            Err(SecretError::InvalidRecipient {
                client: client.to_string(),
                line,
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_reference_syntax() {
        for ok in ["a", "_x", "DB_PASSWORD", "token2"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "2x", "a-b", "a.b", "a b", "ä"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_error_has_a_hint_naming_the_client() {
        let e = SecretError::Decrypt {
            client: "acme".into(),
            profile: "prod".into(),
            name: "db".into(),
            source: CryptoError::NotARecipient,
        };
        assert!(e.to_string().contains("acme"));
        assert!(
            e.hint()
                .unwrap()
                .contains("not a recipient of client acme's secrets")
        );
        let e = SecretError::NoIdentity {
            client: "acme".into(),
            profile: "prod".into(),
            name: "db".into(),
        };
        assert!(e.hint().unwrap().contains("--age-identity"));
        assert!(e.hint().unwrap().contains(IDENTITY_ENV));
    }

    #[test]
    fn client_recipients_reports_the_first_bad_line() {
        assert!(matches!(
            client_recipients("acme", &[]),
            Err(SecretError::NoRecipients { .. })
        ));
        let err = client_recipients("acme", &[(3, "nope".into())]).unwrap_err();
        assert!(matches!(err, SecretError::InvalidRecipient { line: 3, .. }));
    }
}
