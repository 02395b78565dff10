//! age encryption of single values: parse recipients (the public keys allowed to read a
//! client's secrets) and identities (the private keys that decrypt), encrypt one value to
//! ASCII armor, decrypt one armored value into a `SecretString`. Errors here are fixed
//! phrases: they must never quote a ciphertext, a key or a plaintext, because they end up in
//! terminals and CI logs.

use super::SecretString;
use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::zeroize::{Zeroize, Zeroizing};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The first line of every armored value.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// Why a single value could not be encrypted or decrypted, without naming which value (the
/// caller knows; see `SecretError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("none of the given identities is a recipient of this value")]
    NotARecipient,
    #[error("the value is not an ASCII-armored age ciphertext")]
    NotArmored,
    #[error("the ciphertext is damaged: {0}")]
    Damaged(&'static str),
    #[error("the value is encrypted with a passphrase, which Clarity does not use")]
    Passphrase,
    #[error("the decrypted value is not UTF-8 text")]
    NotUtf8,
    #[error("there are no recipients to encrypt to")]
    NoRecipients,
    #[error("encryption failed: {0}")]
    Encrypt(&'static str),
}

/// Parses one line of a `recipients.txt`: an age X25519 public key (`age1...`) or an SSH
/// public key (`ssh-ed25519 ...`, `ssh-rsa ...`, a trailing comment allowed). The error says
/// what is wrong without repeating the line.
pub fn parse_recipient(line: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let line = line.trim();
    if line.starts_with("AGE-SECRET-KEY-") {
        return Err(
            "this is a private key, not a public one: remove it from the repository \
                    now and list its public key (`age-keygen -y FILE`) instead"
                .to_string(),
        );
    }
    if line.starts_with("-----BEGIN") {
        return Err(
            "this is a private key, not a public one: remove it from the repository \
                    now and list its public key instead"
                .to_string(),
        );
    }
    if let Some(data) = line.strip_prefix("age1") {
        return match age::x25519::Recipient::from_str(line) {
            Ok(r) => Ok(Box::new(r)),
            // Bech32 data never contains `1`, so a second `1` means `age1<plugin>1...`.
            Err(_) if data.contains('1') => Err("plugin recipients (age1<plugin>1...) \
                are not supported; use an age X25519 key (age1...) or an SSH key"
                .to_string()),
            Err(e) => Err(format!("invalid age public key ({e})")),
        };
    }
    if line.starts_with("ssh-") || line.starts_with("sk-") || line.starts_with("ecdsa-") {
        use age::ssh::ParseRecipientKeyError as E;
        return match age::ssh::Recipient::from_str(line) {
            Ok(r) => Ok(Box::new(r)),
            Err(E::Unsupported(kind)) => Err(format!(
                "SSH key type `{kind}` is not supported; use ssh-ed25519 or ssh-rsa"
            )),
            Err(E::RsaModulusTooSmall) => Err("ssh-rsa key shorter than 2048 bits".to_string()),
            Err(E::RsaModulusTooLarge) => Err("ssh-rsa key longer than 16384 bits".to_string()),
            Err(E::Invalid(e)) => Err(format!("invalid SSH public key ({e})")),
            Err(_) => Err("SSH key type is not supported; use ssh-ed25519 or ssh-rsa".to_string()),
        };
    }
    Err("not an age public key (age1...) or SSH public key (ssh-ed25519, ssh-rsa)".to_string())
}

/// The non-comment lines of a `recipients.txt`, with 1-based line numbers, exactly as the
/// loader reads them.
pub fn recipient_lines(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u32 + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The public keys one client's values are encrypted to.
pub struct Recipients {
    keys: Vec<Box<dyn age::Recipient + Send>>,
}

impl Recipients {
    /// Parses `(line number, line)` pairs; on failure, every bad line with its reason.
    pub fn parse_lines(lines: &[(u32, String)]) -> Result<Recipients, Vec<(u32, String)>> {
        let mut keys = Vec::new();
        let mut bad = Vec::new();
        for (n, line) in lines {
            match parse_recipient(line) {
                Ok(k) => keys.push(k),
                Err(e) => bad.push((*n, e)),
            }
        }
        if bad.is_empty() {
            Ok(Recipients { keys })
        } else {
            Err(bad)
        }
    }

    /// Parses the text of a `recipients.txt`.
    pub fn parse(text: &str) -> Result<Recipients, Vec<(u32, String)>> {
        Recipients::parse_lines(&recipient_lines(text))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipients({} keys)", self.keys.len())
    }
}

/// Encrypts `value` to every recipient, as ASCII armor ending in one newline.
pub fn encrypt(value: &str, recipients: &Recipients) -> Result<String, CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::NoRecipients);
    }
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .keys
            .iter()
            .map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| {
        CryptoError::Encrypt(match e {
            age::EncryptError::MissingRecipients => "no recipients",
            age::EncryptError::IncompatibleRecipients { .. } => {
                "these recipients cannot be mixed in one file"
            }
            _ => "a recipient refused to wrap the key",
        })
    })?;
    let io = |_| CryptoError::Encrypt("cannot write the ciphertext");
    let mut out = Vec::new();
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(io)?;
    let mut writer = encryptor.wrap_output(armor).map_err(io)?;
    writer.write_all(value.as_bytes()).map_err(io)?;
    writer.finish().and_then(|a| a.finish()).map_err(io)?;
    let text = String::from_utf8(out).map_err(|_| CryptoError::Encrypt("armor is not text"))?;
    Ok(format!("{}\n", text.trim_end()))
}

/// Decrypts one armored value with any of `identities`.
pub fn decrypt(armored: &str, identities: &Identities) -> Result<SecretString, CryptoError> {
    let armored = armored.trim();
    if !armored.starts_with(ARMOR_BEGIN) {
        return Err(CryptoError::NotArmored);
    }
    let decryptor = age::Decryptor::new_buffered(ArmoredReader::new(armored.as_bytes()))
        .map_err(decrypt_error)?;
    if decryptor.is_scrypt() {
        return Err(CryptoError::Passphrase);
    }
    let mut reader = decryptor
        .decrypt(
            identities
                .keys
                .iter()
                .map(|i| i.as_ref() as &dyn age::Identity),
        )
        .map_err(decrypt_error)?;
    let mut plain = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut plain)
        .map_err(|_| CryptoError::Damaged("the payload does not authenticate or is truncated"))?;
    match String::from_utf8(std::mem::take(&mut *plain)) {
        Ok(text) => Ok(SecretString::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(CryptoError::NotUtf8)
        }
    }
}

/// Maps age's errors to fixed phrases: its I/O errors can carry bytes of the armor.
fn decrypt_error(e: age::DecryptError) -> CryptoError {
    match e {
        age::DecryptError::NoMatchingKeys => CryptoError::NotARecipient,
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            CryptoError::Damaged("invalid age header")
        }
        age::DecryptError::InvalidMac => CryptoError::Damaged("the header does not authenticate"),
        age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
            CryptoError::Damaged("decryption failed")
        }
        age::DecryptError::ExcessiveWork { .. } => CryptoError::Passphrase,
        age::DecryptError::Io(_) => CryptoError::Damaged("invalid armor or truncated data"),
        _ => CryptoError::Damaged("unsupported age file"),
    }
}

/// Private keys that can decrypt: the contents of an age identity file (`AGE-SECRET-KEY-1...`
/// lines, `#` comments) or of an unencrypted OpenSSH private key.
pub struct Identities {
    /// Where they came from, for messages.
    source: Option<PathBuf>,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

/// Why an identity file could not be used; never quotes the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub String);

impl Identities {
    /// Parses identity file text. `source` names the file in messages.
    pub fn parse(text: &str, source: Option<&Path>) -> Result<Identities, IdentityError> {
        let name = source.map(|p| p.display().to_string());
        let keys: Vec<Box<dyn age::Identity + Send + Sync>> = if text
            .contains("-----BEGIN OPENSSH PRIVATE KEY-----")
            || text.contains("-----BEGIN RSA PRIVATE KEY-----")
        {
            match age::ssh::Identity::from_buffer(text.as_bytes(), name) {
                Ok(age::ssh::Identity::Unencrypted(k)) => {
                    vec![Box::new(age::ssh::Identity::Unencrypted(k))]
                }
                Ok(age::ssh::Identity::Encrypted(_)) => {
                    return Err(IdentityError(
                        "the SSH private key is protected by a passphrase, which Clarity \
                             cannot ask for; use an age identity file (age-keygen -o FILE)"
                            .to_string(),
                    ));
                }
                Ok(age::ssh::Identity::Unsupported(_)) => {
                    return Err(IdentityError(
                        "this SSH key type is not supported; use ssh-ed25519, ssh-rsa or \
                             an age identity file"
                            .to_string(),
                    ));
                }
                Err(_) => {
                    return Err(IdentityError("the SSH private key cannot be parsed".into()));
                }
            }
        } else {
            // age's own parser reports a line number, never the line.
            age::IdentityFile::from_buffer(text.as_bytes())
                .map_err(|e| IdentityError(e.to_string()))?
                .into_identities()
                .map_err(|_| IdentityError("unsupported identity in the file".into()))?
                .into_iter()
                .map(|i| i as Box<dyn age::Identity + Send + Sync>)
                .collect()
        };
        if keys.is_empty() {
            return Err(IdentityError(
                "no identities in it (expected AGE-SECRET-KEY-1... lines)".to_string(),
            ));
        }
        Ok(Identities {
            source: source.map(Path::to_path_buf),
            keys,
        })
    }

    /// Reads and parses an identity file.
    pub fn from_file(path: &Path) -> Result<Identities, IdentityError> {
        let mut bytes = Zeroizing::new(Vec::new());
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| IdentityError(e.to_string()))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| IdentityError("the file is not UTF-8 text".to_string()))?;
        Identities::parse(text, Some(path))
    }

    /// One X25519 identity (tests and tools that generate keys in memory).
    pub fn from_x25519(identity: age::x25519::Identity) -> Identities {
        Identities {
            source: None,
            keys: vec![Box::new(identity)],
        }
    }

    /// The file the identities were read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({} keys", self.keys.len())?;
        if let Some(s) = &self.source {
            write!(f, " from {}", s.display())?;
        }
        f.write_str(")")
    }
}

/// An X25519 identity's secret key string, for writing identity files in tests.
#[cfg(test)]
fn identity_to_string(identity: &age::x25519::Identity) -> SecretString {
    use age::secrecy::ExposeSecret;
    SecretString::new(identity.to_string().expose_secret().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    const VALUE: &str = "s3cr3t-Ω-value\nwith two lines";

    fn keypair() -> (age::x25519::Identity, Recipients) {
        let id = age::x25519::Identity::generate();
        let r = Recipients::parse(&format!("# ops\n\n{}\n", id.to_public())).unwrap();
        (id, r)
    }

    #[test]
    fn round_trip_through_armor() {
        let (id, r) = keypair();
        let armored = encrypt(VALUE, &r).unwrap();
        assert!(armored.starts_with(ARMOR_BEGIN));
        assert!(armored.ends_with("-----END AGE ENCRYPTED FILE-----\n"));
        assert!(!armored.contains(VALUE));
        let ids = Identities::from_x25519(id);
        assert_eq!(decrypt(&armored, &ids).unwrap().expose(), VALUE);
        // Indentation stripped by YAML, or surrounding whitespace, must not matter.
        assert_eq!(
            decrypt(&format!("\n{armored}\n\n"), &ids).unwrap().expose(),
            VALUE
        );
    }

    #[test]
    fn wrong_identity_fails_without_leaking() {
        let (_, r) = keypair();
        let (other, _) = keypair();
        let armored = encrypt(VALUE, &r).unwrap();
        let err = decrypt(&armored, &Identities::from_x25519(other)).unwrap_err();
        assert_eq!(err, CryptoError::NotARecipient);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let body = armored.lines().nth(1).unwrap();
        assert!(!shown.contains(&body[..16]), "{shown}");
    }

    #[test]
    fn several_recipients_each_decrypt() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let r = Recipients::parse(&format!("{}\n{}\n", a.to_public(), b.to_public())).unwrap();
        assert_eq!(r.len(), 2);
        let armored = encrypt(VALUE, &r).unwrap();
        for id in [a, b] {
            assert_eq!(
                decrypt(&armored, &Identities::from_x25519(id))
                    .unwrap()
                    .expose(),
                VALUE
            );
        }
    }

    #[test]
    fn damaged_and_plaintext_values_are_refused_by_kind() {
        let (id, r) = keypair();
        let ids = Identities::from_x25519(id);
        assert_eq!(
            decrypt("hunter2", &ids).unwrap_err(),
            CryptoError::NotArmored
        );
        let armored = encrypt(VALUE, &r).unwrap();
        let mut lines: Vec<String> = armored.lines().map(String::from).collect();
        lines[2] = lines[2].chars().rev().collect();
        let broken = lines.join("\n");
        let err = decrypt(&broken, &ids).unwrap_err();
        assert!(matches!(err, CryptoError::Damaged(_)), "{err:?}");
    }

    #[test]
    fn recipients_are_parsed_not_prefix_matched() {
        let id = age::x25519::Identity::generate();
        assert!(parse_recipient(&id.to_public().to_string()).is_ok());
        assert!(parse_recipient("age1notreallyakey").is_err());
        let err_of = |line: &str| parse_recipient(line).err().unwrap_or_default();
        assert!(err_of("age1yubikey1qwerty").contains("plugin"));
        assert!(err_of(id.to_string().expose_secret()).contains("private key"));
        assert!(parse_recipient("ssh-ed25519 AAAA").is_err());
        assert!(parse_recipient("ssh-dss AAAAB3NzaC1kc3MAAACBAP").is_err());
        assert!(parse_recipient("hello").is_err());
        // A real ed25519 public key (from ssh-keygen), with its comment.
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPVkafLKvqD88zexcHaTeXM+Dau8dQSXLhSO3pawM5kw alice@example";
        assert!(parse_recipient(ssh).is_ok());
        let bad = Recipients::parse("# c\nage1nope\n\nhello\n").unwrap_err();
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn identity_files_parse_with_comments_and_never_echo() {
        let id = age::x25519::Identity::generate();
        let text = format!(
            "# created: today\n# public key: {}\n{}\n",
            id.to_public(),
            identity_to_string(&id).expose()
        );
        let ids = Identities::parse(&text, None).unwrap();
        assert_eq!(ids.len(), 1);
        assert!(!format!("{ids:?}").contains("AGE-SECRET-KEY"));
        let err = Identities::parse("AGE-SECRET-KEY-1BROKENBROKEN\n", None).unwrap_err();
        assert!(!err.0.contains("BROKEN"), "{err}");
        assert!(Identities::parse("# only a comment\n", None).is_err());
    }
}
