//! Trusted signing keys as read from key files: SSH `allowed_signers` lines and ASCII-armored
//! OpenPGP public keys, each remembering where it came from. The format of a file is told by its
//! content, never by its name. This module only parses text; it runs no program.

use super::ApprovalError;
use std::path::PathBuf;

const PGP_PUBLIC_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const PGP_PUBLIC_END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
const PGP_PRIVATE_BEGIN: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";

/// The keys whose signatures approve a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    pub(super) ssh: Vec<SshSigner>,
    pub(super) openpgp: Vec<OpenPgpKey>,
    /// Repository key files (or parts of them) that could not be used. A refusal mentions them:
    /// they are the likely reason a signer is not trusted.
    pub(super) problems: Vec<String>,
}

/// One line of an SSH `allowed_signers` file (`principals [options] keytype base64 [comment]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SshSigner {
    pub line: String,
    /// `file:line`, with the commit for repository files.
    pub from: String,
}

/// One ASCII-armored OpenPGP public key block (it may hold several keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenPgpKey {
    pub armored: String,
    pub from: String,
}

impl TrustedKeys {
    pub fn empty() -> Self {
        TrustedKeys::default()
    }

    /// Key files from the reconciler's own configuration. Any problem in them is an error: the
    /// operator wrote them, and a silently ignored key would show up later as a puzzling refusal.
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys, ApprovalError> {
        let mut keys = TrustedKeys::empty();
        for path in paths {
            let bytes = std::fs::read(path).map_err(|source| ApprovalError::Io {
                path: path.clone(),
                source,
            })?;
            let file = parse_key_file(&bytes, &path.display().to_string());
            if !file.problems.is_empty() {
                return Err(ApprovalError::Config {
                    path: path.clone(),
                    message: file.problems.join("; "),
                });
            }
            if file.is_empty() {
                return Err(ApprovalError::Config {
                    path: path.clone(),
                    message: "holds no SSH allowed_signers line and no OpenPGP public key".into(),
                });
            }
            keys.extend(file);
        }
        Ok(keys)
    }

    /// True when no key is trusted (problems do not count).
    pub fn is_empty(&self) -> bool {
        self.ssh.is_empty() && self.openpgp.is_empty()
    }

    /// `2 SSH signers and 1 OpenPGP key block`, for logs.
    pub fn describe(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{} and {}",
            plural(self.ssh.len(), "SSH signer", "SSH signers"),
            plural(
                self.openpgp.len(),
                "OpenPGP key block",
                "OpenPGP key blocks"
            )
        )
    }

    /// Where the trusted keys come from, one entry per line or key block.
    pub fn sources(&self) -> Vec<String> {
        self.ssh
            .iter()
            .map(|s| s.from.clone())
            .chain(self.openpgp.iter().map(|k| k.from.clone()))
            .collect()
    }

    pub(super) fn extend(&mut self, other: TrustedKeys) {
        self.ssh.extend(other.ssh);
        self.openpgp.extend(other.openpgp);
        self.problems.extend(other.problems);
    }

    /// The content of an `allowed_signers` file with every trusted SSH signer.
    pub(super) fn allowed_signers(&self) -> String {
        let mut text = String::new();
        for signer in &self.ssh {
            text.push_str(&signer.line);
            text.push('\n');
        }
        text
    }

    /// A note for refusals about keys: repository key files that could not be used.
    pub(super) fn problems_note(&self) -> String {
        if self.problems.is_empty() {
            String::new()
        } else {
            format!(
                "; note: some trusted key files could not be used: {}",
                self.problems.join("; ")
            )
        }
    }
}

/// Parses one key file. Usable keys are kept even when other parts of the file are broken;
/// what could not be used is listed in `problems`.
pub(super) fn parse_key_file(bytes: &[u8], from: &str) -> TrustedKeys {
    let mut keys = TrustedKeys::empty();
    let Ok(text) = std::str::from_utf8(bytes) else {
        keys.problems.push(format!(
            "{from} is not text: give an SSH allowed_signers file or an ASCII-armored OpenPGP \
             public key (gpg --armor --export)"
        ));
        return keys;
    };
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("-----BEGIN PGP "))
    {
        parse_openpgp(text, from, &mut keys);
    } else {
        parse_allowed_signers(text, from, &mut keys);
    }
    keys
}

fn parse_openpgp(text: &str, from: &str, keys: &mut TrustedKeys) {
    let mut block: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        match &mut block {
            None if line.trim_start() == PGP_PUBLIC_BEGIN => {
                block = Some((n + 1, format!("{PGP_PUBLIC_BEGIN}\n")));
            }
            None if line.trim_start() == PGP_PRIVATE_BEGIN => {
                keys.problems.push(format!(
                    "{from}:{} is a private key; trust the public key instead \
                     (gpg --armor --export KEYID), and keep the private one secret",
                    n + 1
                ));
            }
            None => {}
            Some((start, armored)) => {
                armored.push_str(line.trim_start());
                armored.push('\n');
                if line.trim_start() == PGP_PUBLIC_END {
                    keys.openpgp.push(OpenPgpKey {
                        armored: std::mem::take(armored),
                        from: format!("{from}:{start}"),
                    });
                    block = None;
                }
            }
        }
    }
    if let Some((start, _)) = block {
        keys.problems.push(format!(
            "{from}:{start}: the OpenPGP key block has no `{PGP_PUBLIC_END}` line"
        ));
    }
    if keys.openpgp.is_empty() && keys.problems.is_empty() {
        keys.problems.push(format!(
            "{from} holds no `{PGP_PUBLIC_BEGIN}` block (an OpenPGP key file must be an \
             ASCII-armored public key)"
        ));
    }
}

fn parse_allowed_signers(text: &str, from: &str, keys: &mut TrustedKeys) {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{from}:{}", n + 1);
        match check_allowed_signer(line) {
            Ok(()) => keys.ssh.push(SshSigner {
                line: line.to_string(),
                from: at,
            }),
            Err(problem) => keys.problems.push(format!("{at}: {problem}")),
        }
    }
}

/// Checks the shape of an `allowed_signers` line, so that a broken line is reported with its
/// file and number rather than as a refusal that `ssh-keygen` would explain badly.
fn check_allowed_signer(line: &str) -> Result<(), String> {
    let tokens = split_fields(line)?;
    let Some(first) = tokens.first() else {
        return Err("empty line".into());
    };
    if is_key_type(first) {
        return Err(
            "an SSH public key without principals: an allowed_signers line reads \
                    `alice@example.com ssh-ed25519 AAAA...` (see ssh-keygen(1), ALLOWED SIGNERS)"
                .into(),
        );
    }
    let key_at = if tokens.get(1).is_some_and(|t| is_key_type(t)) {
        1
    } else if tokens.get(2).is_some_and(|t| is_key_type(t)) {
        2
    } else {
        return Err(
            "not an allowed_signers line (`principals [options] ssh-ed25519 AAAA...`): \
             no SSH key type after the principals"
                .into(),
        );
    };
    match tokens.get(key_at + 1) {
        Some(blob) if is_base64(blob) => Ok(()),
        Some(_) => Err(format!(
            "the {} key is not base64 (copy it from the .pub file)",
            tokens[key_at]
        )),
        None => Err(format!("the {} key itself is missing", tokens[key_at])),
    }
}

/// Splits on blanks outside double quotes (options like `namespaces="git"` may hold quotes).
fn split_fields(line: &str) -> Result<Vec<&str>, String> {
    let mut fields = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(i);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    fields.push(&line[s..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if quoted {
        return Err("a double quote is not closed".into());
    }
    if let Some(s) = start {
        fields.push(&line[s..]);
    }
    Ok(fields)
}

fn is_key_type(token: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"]
        .iter()
        .any(|p| token.starts_with(p) && token.len() > p.len())
}

fn is_base64(token: &str) -> bool {
    token.len() >= 16
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa3mGCDgk0Pv3/4S7Kx8bL2W7u1c8oKx0xJzOQW0Hnd";

    fn armored() -> String {
        format!("{PGP_PUBLIC_BEGIN}\n\nmDMEZabc\n=abcd\n{PGP_PUBLIC_END}\n")
    }

    #[test]
    fn allowed_signers_lines_are_kept_with_their_origin() {
        let text = format!(
            "# release managers\n\nalice@example.com {ED25519} alice\n\
             bob@example.com,*@ops.example.com namespaces=\"git,file\",valid-after=\"20240101\" {ED25519}\n"
        );
        let keys = parse_key_file(text.as_bytes(), "keys/allowed_signers");
        assert!(keys.problems.is_empty(), "{:?}", keys.problems);
        assert_eq!(keys.ssh.len(), 2);
        assert!(keys.openpgp.is_empty());
        assert_eq!(keys.ssh[0].from, "keys/allowed_signers:3");
        assert_eq!(keys.ssh[1].from, "keys/allowed_signers:4");
        assert!(keys.ssh[1].line.starts_with("bob@example.com,"));
        assert_eq!(
            keys.allowed_signers(),
            format!("{}\n{}\n", keys.ssh[0].line, keys.ssh[1].line)
        );
    }

    #[test]
    fn a_bare_public_key_is_reported_with_its_line() {
        let text = format!("alice@example.com {ED25519}\n{ED25519} bob\n");
        let keys = parse_key_file(text.as_bytes(), "signers");
        assert_eq!(keys.ssh.len(), 1, "the good line is kept");
        assert_eq!(keys.problems.len(), 1);
        assert!(keys.problems[0].starts_with("signers:2: an SSH public key without principals"));
    }

    #[test]
    fn broken_allowed_signers_lines() {
        for (line, expected) in [
            ("alice@example.com", "no SSH key type"),
            ("alice@example.com ssh-ed25519", "key itself is missing"),
            (
                "alice@example.com ssh-ed25519 not*base64*at*all",
                "not base64",
            ),
            ("alice namespaces=\"git ssh-ed25519 AAAA", "not closed"),
        ] {
            let problem = check_allowed_signer(line).unwrap_err();
            assert!(problem.contains(expected), "{line}: {problem}");
        }
        // Quoted option values may hold blanks.
        check_allowed_signer(&format!(
            "a@b namespaces=\"git\",valid-before=\"2030 x\" {ED25519}"
        ))
        .unwrap();
        check_allowed_signer(&format!("a@b cert-authority {ED25519}")).unwrap();
    }

    #[test]
    fn openpgp_blocks_are_detected_by_content() {
        let text = format!("Alice's key, exported 2024\n{}\n{}", armored(), armored());
        let keys = parse_key_file(text.as_bytes(), "keys/alice.txt");
        assert!(keys.problems.is_empty(), "{:?}", keys.problems);
        assert!(keys.ssh.is_empty());
        assert_eq!(keys.openpgp.len(), 2);
        assert_eq!(keys.openpgp[0].from, "keys/alice.txt:2");
        assert_eq!(keys.openpgp[0].armored, armored());
    }

    #[test]
    fn private_truncated_and_binary_openpgp_files_are_problems() {
        let private = format!("{PGP_PRIVATE_BEGIN}\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n");
        let keys = parse_key_file(private.as_bytes(), "k.asc");
        assert!(keys.is_empty());
        assert!(
            keys.problems[0].contains("is a private key"),
            "{:?}",
            keys.problems
        );

        let truncated = format!("{PGP_PUBLIC_BEGIN}\nmDMEZabc\n");
        let keys = parse_key_file(truncated.as_bytes(), "k.asc");
        assert!(keys.is_empty());
        assert!(keys.problems[0].contains("k.asc:1"), "{:?}", keys.problems);

        let keys = parse_key_file(&[0x99, 0x01, 0x0d, 0xff, 0xfe], "k.gpg");
        assert!(keys.is_empty());
        assert!(keys.problems[0].contains("not text"));
    }

    #[test]
    fn load_refuses_broken_or_empty_configured_files() {
        let dir = super::super::Scratch::new("keys-test").unwrap();
        let good = dir
            .write("good", format!("a@b {ED25519}\n").as_bytes())
            .unwrap();
        let empty = dir.write("empty", b"# nobody yet\n").unwrap();
        let broken = dir.write("broken", b"a@b ssh-ed25519\n").unwrap();
        let both = TrustedKeys::load(&[good.clone(), good.clone()]).unwrap();
        assert_eq!(both.describe(), "2 SSH signers and 0 OpenPGP key blocks");
        assert_eq!(both.sources()[0], format!("{}:1", good.display()));
        let err = TrustedKeys::load(&[good.clone(), empty]).unwrap_err();
        assert!(err.to_string().contains("holds no SSH"), "{err}");
        let err = TrustedKeys::load(&[broken]).unwrap_err();
        assert!(err.to_string().contains("broken:1"), "{err}");
        assert!(err.hint().is_some());
        let missing = dir.path().join("missing");
        assert!(matches!(
            TrustedKeys::load(&[missing]),
            Err(ApprovalError::Io { .. })
        ));
        assert!(TrustedKeys::empty().is_empty());
    }
}
