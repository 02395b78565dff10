//! Knowing that an SSH server is the one we mean before any credential leaves this process:
//! public keys as known_hosts files and pinned `host_key` settings write them, OpenSSH
//! fingerprints for messages, reading known_hosts files (`@revoked` included, hashed host names
//! matched by libssh2, `@cert-authority` CA keys for host certificates checked by
//! [`super::host_cert`]) and, only when an operator asked for it, recording a new host's key.
//! Shared by the SSH transport (hosts) and the SFTP fetcher (artifact repositories), so both
//! trust exactly the same things. Nothing here trusts a key on first use by itself.

use super::base64;
use super::host_cert::{self, Certificate};
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, KnownHostFileKind, MethodType, Session};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Key types a known_hosts line or a pinned key may name.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// What a server is asked for when nothing is known about it yet: the strongest, smallest key
/// first, so the key recorded for a new host is the same on every run.
const UNKNOWN_HOST_ALGORITHMS: &str = "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,\
                                       ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256,ssh-rsa";

/// A public key as known_hosts shows it: type name and the SSH wire-format blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: String,
    blob: Vec<u8>,
}

impl PublicKey {
    /// Finds `TYPE BASE64` in a known_hosts-style line (a host field before it is allowed).
    pub fn parse(line: &str) -> Option<PublicKey> {
        let mut fields = line.split_whitespace();
        while let Some(field) = fields.next() {
            if KEY_TYPES.contains(&field) {
                let blob = base64::decode(fields.next()?)?;
                // The blob starts with its own type name; one that disagrees is not this key.
                let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
                if blob.get(4..4 + len)? != field.as_bytes() {
                    return None;
                }
                return Some(PublicKey {
                    kind: field.to_string(),
                    blob,
                });
            }
        }
        None
    }

    /// The type name inside a wire-format blob, for keys the server presents.
    pub fn from_blob(blob: &[u8]) -> PublicKey {
        let kind = blob
            .get(..4)
            .and_then(|l| l.try_into().ok())
            .map(|l| u32::from_be_bytes(l) as usize)
            .and_then(|len| blob.get(4..4 + len))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| "unknown".into());
        PublicKey {
            kind,
            blob: blob.to_vec(),
        }
    }

    /// The key the server presented in this session's handshake.
    pub fn presented(session: &Session) -> Option<PublicKey> {
        session
            .host_key()
            .map(|(blob, _)| PublicKey::from_blob(blob))
    }

    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The key type name (`ssh-ed25519`, `ssh-ed25519-cert-v01@openssh.com`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// `ssh-ed25519 SHA256:...`, as `ssh-keygen -l` shows it.
    pub fn fingerprint(&self) -> String {
        format!(
            "{} SHA256:{}",
            self.kind,
            base64::encode(&Sha256::digest(&self.blob), false)
        )
    }

    /// `ssh-ed25519 AAAA...`: the form of a known_hosts line and of a pinned `host_key`.
    pub fn to_openssh(&self) -> String {
        format!("{} {}", self.kind, base64::encode(&self.blob, true))
    }

    /// The host key algorithms that produce this key type, for negotiation.
    fn algorithms(&self) -> &str {
        match self.kind.as_str() {
            // An RSA key signs with SHA-2 nowadays; the SHA-1 name stays last for old servers.
            "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256,ssh-rsa",
            k => k,
        }
    }
}

/// What the server's key must be.
pub enum Expected {
    Pinned(PublicKey),
    KnownHosts(KnownHosts),
}

impl Expected {
    /// Asks the server for a key of a type we can check: a server has several, and libssh2
    /// might otherwise pick one we do not know although the host is known. Call before the
    /// handshake.
    pub fn negotiate(&self, session: &Session) {
        let preferred: Vec<&str> = match self {
            Expected::Pinned(k) => vec![k.algorithms()],
            Expected::KnownHosts(k) => {
                // A host with a CA is asked for its certificate first; its plain keys (or,
                // knowing none, any) stay acceptable for a host that has no certificate.
                let mut algorithms = Vec::new();
                if !k.cas.is_empty() {
                    algorithms.push(host_cert::CERT_ALGORITHMS);
                }
                if k.plain.is_empty() {
                    algorithms.push(UNKNOWN_HOST_ALGORITHMS);
                } else {
                    algorithms.extend(k.plain.iter().map(PublicKey::algorithms));
                }
                algorithms
            }
        };
        // Best effort: an algorithm this libssh2 lacks only means the default order is used.
        let _ = session.method_pref(MethodType::HostKey, &preferred.join(","));
    }
}

/// The known_hosts entries that apply to one host, read once per connection attempt.
pub struct KnownHosts {
    files: Vec<PathBuf>,
    /// All usable lines, for libssh2's matcher (which also understands hashed host names).
    lines: Vec<String>,
    /// Keys listed for this host under its plain name: for messages and negotiation.
    plain: Vec<PublicKey>,
    /// Keys marked `@revoked`: refused whatever else says.
    revoked: Vec<PublicKey>,
    /// `@cert-authority` keys whose host patterns match this host.
    cas: Vec<PublicKey>,
    /// What a host certificate may name the host as: its address, and its server name.
    names: Vec<String>,
}

impl KnownHosts {
    /// Reads `explicit`, or OpenSSH's files (`~/.ssh/known_hosts`, `/etc/ssh/ssh_known_hosts`).
    /// A file that does not exist knows nothing; that is not an error.
    pub fn read(explicit: Option<&Path>, host: &str, port: u16) -> KnownHosts {
        let files = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => {
                let mut files = Vec::new();
                if let Some(home) = home_dir() {
                    files.push(home.join(".ssh/known_hosts"));
                }
                files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
                files
            }
        };
        let name = known_host_name(host, port);
        let mut found = KnownHosts {
            files: Vec::new(),
            lines: Vec::new(),
            plain: Vec::new(),
            revoked: Vec::new(),
            cas: Vec::new(),
            names: vec![host.to_string()],
        };
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            found.files.push(file);
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(rest) = line.strip_prefix("@revoked") {
                    found.revoked.extend(PublicKey::parse(rest));
                    continue;
                }
                if let Some(rest) = line.strip_prefix("@cert-authority") {
                    let patterns = rest.split_whitespace().next().unwrap_or_default();
                    if host_patterns_match(patterns, &name) {
                        found.cas.extend(PublicKey::parse(rest));
                    }
                    continue;
                }
                if line.starts_with('@') {
                    // Another marker this reader does not know proves nothing.
                    continue;
                }
                let patterns = line.split_whitespace().next().unwrap_or_default();
                if patterns.split(',').any(|p| p.eq_ignore_ascii_case(&name)) {
                    found.plain.extend(PublicKey::parse(line));
                }
                found.lines.push(line.to_string());
            }
        }
        found
    }

    /// Another name a host certificate may give the host (its server name).
    pub fn also_named(mut self, name: &str) -> KnownHosts {
        self.names.push(name.to_string());
        self
    }

    /// `checked FILE and FILE`, for messages.
    pub fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        format!("checked {}", files.join(" and "))
    }
}

/// The outcome of checking a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// Another key is expected: `expected` describes it (fingerprints and where they are from).
    Mismatch {
        expected: String,
    },
    /// Nothing is known about this host; `checked` names the files that were read.
    Unknown {
        checked: String,
    },
}

/// Checks the key the server presented against what is expected of it.
pub fn verify(
    session: &Session,
    host: &str,
    port: u16,
    expected: &Expected,
    presented: &PublicKey,
) -> Result<Verdict, ssh2::Error> {
    match expected {
        Expected::Pinned(key) if key == presented => Ok(Verdict::Trusted),
        Expected::Pinned(key) => Ok(Verdict::Mismatch {
            expected: format!("{} (pinned)", key.fingerprint()),
        }),
        Expected::KnownHosts(known) if host_cert::is_certificate(presented.kind()) => {
            let names: Vec<&str> = known.names.iter().map(String::as_str).collect();
            let now = crate::clock::now_secs();
            let checked = Certificate::parse(presented.blob()).and_then(|cert| {
                if known.revoked.contains(&cert.ca) {
                    return Err(format!(
                        "its CA {} is marked @revoked",
                        cert.ca.fingerprint()
                    ));
                }
                cert.check(&known.cas, &names, now)
            });
            Ok(match checked {
                Ok(()) => Verdict::Trusted,
                Err(why) => Verdict::Mismatch {
                    expected: format!(
                        "a valid host certificate from a CA known_hosts trusts, but {why} ({})",
                        known.describe()
                    ),
                },
            })
        }
        Expected::KnownHosts(known) => {
            if known.revoked.contains(presented) {
                return Ok(Verdict::Mismatch {
                    expected: format!(
                        "any key but this one, which known_hosts marks @revoked ({})",
                        known.describe()
                    ),
                });
            }
            let mut hosts = session.known_hosts()?;
            for line in &known.lines {
                // A line libssh2 cannot parse (a key type it does not know) proves nothing;
                // skipping it must not cost the lines after it.
                let _ = hosts.read_str(line, KnownHostFileKind::OpenSSH);
            }
            Ok(match hosts.check_port(host, port, &presented.blob) {
                CheckResult::Match => Verdict::Trusted,
                CheckResult::Mismatch => Verdict::Mismatch {
                    expected: if known.plain.is_empty() {
                        format!("the key recorded in known_hosts ({})", known.describe())
                    } else {
                        let keys: Vec<String> =
                            known.plain.iter().map(PublicKey::fingerprint).collect();
                        format!("{} ({})", keys.join(" or "), known.describe())
                    },
                },
                CheckResult::NotFound | CheckResult::Failure => Verdict::Unknown {
                    checked: known.describe(),
                },
            })
        }
    }
}

/// Whether a known_hosts host field (`pattern,pattern`, `*` and `?` wildcards, `!negated`)
/// matches `name` (as [`known_host_name`] writes it).
fn host_patterns_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for p in patterns.split(',').map(str::to_ascii_lowercase) {
        match p.strip_prefix('!') {
            Some(neg) if super::ssh_config::glob(neg, name) => return false,
            Some(_) => {}
            None => matched |= super::ssh_config::glob(&p, name),
        }
    }
    matched
}

/// The host field of a known_hosts line, as OpenSSH writes it: `host`, or `[host]:port` when
/// the port is not 22.
pub fn known_host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// The file new host keys are recorded in: `explicit`, or `~/.ssh/known_hosts`.
pub fn writable_file(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| home_dir().map(|h| h.join(".ssh/known_hosts")))
}

/// Appends `host key` to a known_hosts file (created with mode 0600, its directory 0700).
/// Hosts connect in parallel: one line is one `write` under a process-wide lock, so lines from
/// two hosts never interleave.
pub fn record(file: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    static APPEND: Mutex<()> = Mutex::new(());
    let _guard = APPEND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    // A file whose last line lacks its newline would glue our line onto it.
    let len = f.metadata()?.len();
    let needs_newline = len > 0 && {
        use std::io::{Read, Seek, SeekFrom};
        let mut r = std::fs::File::open(file)?;
        r.seek(SeekFrom::End(-1))?;
        let mut last = [0u8];
        r.read_exact(&mut last)?;
        last[0] != b'\n'
    };
    let entry = format!("{} {}", known_host_name(host, port), key.to_openssh());
    // Hosts behind one bastion all meet its key: the first to record it is enough.
    if std::fs::read_to_string(file).is_ok_and(|t| t.lines().any(|l| l.trim() == entry)) {
        return Ok(());
    }
    let line = format!("{}{entry}\n", if needs_newline { "\n" } else { "" });
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // From `ssh-keygen -t ed25519`; the fingerprint is what `ssh-keygen -lf` printed for it.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMGE268hSvjAam8MwFmRNRxbgSI8JdSsILp87zGhH8/5";

    #[test]
    fn pinned_keys_parse_with_or_without_a_host_field() {
        let k = PublicKey::parse(KEY).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.blob.len(), 51);
        assert_eq!(
            PublicKey::parse(&format!("[h]:2222 {KEY} comment")),
            Some(k.clone())
        );
        assert_eq!(PublicKey::from_blob(&k.blob), k);
        assert_eq!(
            k.fingerprint(),
            "ssh-ed25519 SHA256:2ZUncdmwNfK1QZq+z2YTG/ZVHEDHGCyb14tQeoWaZ0I"
        );
        assert_eq!(k.to_openssh(), KEY);
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(PublicKey::parse("ssh-ed25519"), None);
        assert_eq!(PublicKey::parse("ssh-ed25519 !!!"), None);
        assert_eq!(PublicKey::parse("AAAA ssh-foo"), None);
        // The blob says ed25519, the line says rsa.
        let lie = KEY.replace("ssh-ed25519", "ssh-rsa");
        assert_eq!(PublicKey::parse(&lie), None);
    }

    #[test]
    fn known_hosts_lines_for_the_host_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        std::fs::write(
            &f,
            format!(
                "# comment\n[other]:2222 {KEY}\nh,[repo.example]:2222 {KEY}\n@revoked * {KEY}\n\
                 @cert-authority * {KEY}\n|1|abc=|def= {KEY}\n"
            ),
        )
        .unwrap();
        let k = KnownHosts::read(Some(&f), "Repo.Example", 2222);
        assert_eq!(k.plain.len(), 1);
        assert_eq!(k.revoked.len(), 1);
        assert_eq!(k.lines.len(), 3);
        assert_eq!(k.cas.len(), 1, "the CA for `*`");
        let k = KnownHosts::read(Some(&f), "h", 22);
        assert_eq!(k.plain.len(), 1);
    }

    #[test]
    fn cert_authority_patterns_match_like_openssh() {
        assert!(host_patterns_match("10.0.0.*", "10.0.0.7"));
        assert!(host_patterns_match(
            "*.example,[10.0.0.*]:2222",
            "[10.0.0.7]:2222"
        ));
        assert!(!host_patterns_match("10.0.0.*", "[10.0.0.7]:2222"));
        assert!(!host_patterns_match("10.0.0.*,!10.0.0.7", "10.0.0.7"));
        assert!(host_patterns_match("10.0.0.*,!10.0.0.7", "10.0.0.8"));
        assert!(
            !host_patterns_match("!10.0.0.7", "10.0.0.8"),
            "only negations: no match"
        );
    }

    #[test]
    fn recorded_keys_are_found_again_and_never_glued_to_a_previous_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ssh/known_hosts");
        let key = PublicKey::parse(KEY).unwrap();
        record(&f, "10.0.0.1", 22, &key).unwrap();
        std::fs::write(
            &f,
            std::fs::read_to_string(&f).unwrap() + "# no newline at the end",
        )
        .unwrap();
        record(&f, "Web-1", 2222, &key).unwrap();
        // Hosts behind one bastion each meet its key: it is recorded once.
        record(&f, "web-1", 2222, &key).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(
            text,
            format!("10.0.0.1 {KEY}\n# no newline at the end\n[web-1]:2222 {KEY}\n")
        );
        assert_eq!(
            KnownHosts::read(Some(&f), "10.0.0.1", 22).plain,
            vec![key.clone()]
        );
        assert_eq!(KnownHosts::read(Some(&f), "web-1", 2222).plain, vec![key]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
