//! The reconciler's OpenSSH client configuration (`--ssh-config FILE`, else `~/.ssh/config`
//! when there is one), read the way `ssh` reads it for the settings Clarity uses: `HostName`,
//! `User`, `Port`, `IdentityFile` and `ProxyJump`, in `Host` blocks whose patterns (`*`, `?`,
//! `!negated`) are matched case-insensitively, the first value found for a setting winning.
//! Settings before the first `Host` apply to every host. `Match` blocks are conditional in
//! ways Clarity cannot evaluate, so they apply to no host; `Include` is not followed; every
//! other keyword is OpenSSH's business and ignored. A value Clarity uses that it cannot read
//! (a port that is not a number) is an error naming the file and line.
//!
//! Parsing is pure; only [`SshConfig::load`] reads a file. Nothing here connects anywhere.

use std::path::{Path, PathBuf};

/// A parsed config file.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
struct Block {
    /// `None` for a `Match` block (applies to nothing); `(negated, pattern)` otherwise.
    patterns: Option<Vec<(bool, String)>>,
    settings: Vec<(Key, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    HostName,
    User,
    Port,
    IdentityFile,
    ProxyJump,
}

/// What the config says about one host (each field the first value found).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    /// As written; `none` is kept, and means "no jump host".
    pub proxy_jump: Option<String>,
}

/// A jump host as `ProxyJump` or `agent.ssh.proxy_jump` names it: `[user@]host[:port]`, or
/// `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshConfig {
    /// Reads `explicit` (which must exist), or `~/.ssh/config` when it exists.
    pub fn load(explicit: Option<&Path>, home: Option<&Path>) -> Result<SshConfig, String> {
        let (file, required) = match explicit {
            Some(f) => (f.to_path_buf(), true),
            None => match home {
                Some(h) => (h.join(".ssh/config"), false),
                None => return Ok(SshConfig::default()),
            },
        };
        match std::fs::read_to_string(&file) {
            Ok(text) => SshConfig::parse(&text, &file.display().to_string(), home),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(SshConfig::default())
            }
            Err(e) => Err(format!(
                "cannot read the ssh config {}: {e}",
                file.display()
            )),
        }
    }

    /// Parses the text of a config file named `file` (for messages); `home` expands `~/` in
    /// `IdentityFile`. Every unreadable value is reported, one per line.
    pub fn parse(text: &str, file: &str, home: Option<&Path>) -> Result<SshConfig, String> {
        let mut blocks = vec![Block {
            patterns: Some(vec![(false, "*".to_string())]),
            settings: Vec::new(),
        }];
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |column: usize| format!("{file}:{}:{column}", i + 1);
            let (keyword, rest) = split_keyword(line);
            let column = raw.len() - raw.trim_start().len() + 1;
            let args = words(rest);
            let value = args.first().cloned().unwrap_or_default();
            let key = match keyword.to_ascii_lowercase().as_str() {
                "host" => {
                    blocks.push(Block {
                        patterns: Some(
                            args.iter()
                                .map(|p| match p.strip_prefix('!') {
                                    Some(p) => (true, p.to_ascii_lowercase()),
                                    None => (false, p.to_ascii_lowercase()),
                                })
                                .collect(),
                        ),
                        settings: Vec::new(),
                    });
                    continue;
                }
                "match" => {
                    blocks.push(Block {
                        patterns: None,
                        settings: Vec::new(),
                    });
                    continue;
                }
                "hostname" => Key::HostName,
                "user" => Key::User,
                "port" => Key::Port,
                "identityfile" => Key::IdentityFile,
                "proxyjump" => Key::ProxyJump,
                _ => continue,
            };
            if value.is_empty() {
                errors.push(format!("{}: `{keyword}` needs a value", at(column)));
                continue;
            }
            let value = match key {
                Key::Port if value.parse::<u16>().map_or(true, |p| p == 0) => {
                    errors.push(format!(
                        "{}: `Port {value}` is not a port number (1 to 65535)",
                        at(column)
                    ));
                    continue;
                }
                Key::ProxyJump if !value.eq_ignore_ascii_case("none") => {
                    if let Err(e) = JumpSpec::parse(&value) {
                        errors.push(format!("{}: `ProxyJump {value}`: {e}", at(column)));
                        continue;
                    }
                    value
                }
                Key::IdentityFile => expand_tilde(&value, home),
                _ => value,
            };
            blocks
                .last_mut()
                .expect("one block at least")
                .settings
                .push((key, value));
        }
        if errors.is_empty() {
            Ok(SshConfig { blocks })
        } else {
            Err(errors.join("\n"))
        }
    }

    /// The settings for a host known by any of `names` (a block applies when one of its
    /// patterns matches one of the names and no negated pattern matches any).
    pub fn lookup(&self, names: &[&str]) -> HostConfig {
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut found = HostConfig::default();
        for block in &self.blocks {
            let Some(patterns) = &block.patterns else {
                continue;
            };
            let negated = patterns
                .iter()
                .any(|(neg, p)| *neg && names.iter().any(|n| glob(p, n)));
            let matched = patterns
                .iter()
                .any(|(neg, p)| !*neg && names.iter().any(|n| glob(p, n)));
            if negated || !matched {
                continue;
            }
            for (key, value) in &block.settings {
                match key {
                    Key::HostName => {
                        found.hostname.get_or_insert_with(|| {
                            value.replace("%h", names.first().map_or("", |n| n.as_str()))
                        });
                    }
                    Key::User => {
                        found.user.get_or_insert_with(|| value.clone());
                    }
                    Key::Port => {
                        found.port = found.port.or(value.parse().ok());
                    }
                    Key::IdentityFile => {
                        found
                            .identity_file
                            .get_or_insert_with(|| PathBuf::from(value));
                    }
                    Key::ProxyJump => {
                        found.proxy_jump.get_or_insert_with(|| value.clone());
                    }
                }
            }
        }
        found
    }
}

impl JumpSpec {
    /// Parses one jump host; a list (`a,b`) is refused: Clarity jumps through one bastion.
    pub fn parse(text: &str) -> Result<JumpSpec, String> {
        let text = text.trim();
        if text.contains(',') {
            return Err(
                "more than one jump host; Clarity reaches hosts through a single bastion".into(),
            );
        }
        let rest = text.strip_prefix("ssh://").unwrap_or(text);
        let (user, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u.to_string()), r),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            // `[v6]:port` or `[v6]`.
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: an unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("`{text}`: unexpected `{after}` after `]`")),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (rest, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{text}`: `{p}` is not a port number (1 to 65535)"))
            })
            .transpose()?;
        let bad = |c: char| c.is_whitespace() || c == '/' || c == '@';
        if host.is_empty() || host.contains(bad) || user.as_deref().is_some_and(str::is_empty) {
            return Err(format!(
                "`{text}` is not `[user@]host[:port]` (a host name, address or ssh config alias)"
            ));
        }
        Ok(JumpSpec {
            user,
            host: host.to_string(),
            port,
        })
    }
}

/// `Keyword value`, `Keyword=value` or `Keyword = value`.
fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (keyword, rest)
}

/// Arguments separated by white space; double quotes group (as OpenSSH reads them).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn expand_tilde(value: &str, home: Option<&Path>) -> String {
    match (value.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest).display().to_string(),
        _ => match (value.strip_prefix("%d/"), home) {
            (Some(rest), Some(h)) => h.join(rest).display().to_string(),
            _ => value.to_string(),
        },
    }
}

/// OpenSSH's pattern match: `*` any run of characters, `?` any one.
pub(super) fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# the reconciler's config
IdentityFile ~/.ssh/fleet
Host bastion
  HostName 10.0.0.1
  User jump
  Port=2222
Host web-* !web-9
  ProxyJump bastion
  User deploy
Match host web-1
  User nobody
Host *
  User fallback
  Port 22
  ProxyJump none
";

    #[test]
    fn the_first_value_of_the_matching_blocks_wins() {
        let home = Path::new("/home/op");
        let c = SshConfig::parse(CONFIG, "config", Some(home)).unwrap();
        let web = c.lookup(&["web-1", "10.1.0.1"]);
        assert_eq!(
            web.user.as_deref(),
            Some("deploy"),
            "Match applies to nothing"
        );
        assert_eq!(web.proxy_jump.as_deref(), Some("bastion"));
        assert_eq!(web.port, Some(22));
        assert_eq!(
            web.identity_file,
            Some(PathBuf::from("/home/op/.ssh/fleet"))
        );
        let b = c.lookup(&["Bastion"]);
        assert_eq!(b.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!((b.user.as_deref(), b.port), (Some("jump"), Some(2222)));
        let nine = c.lookup(&["web-9"]);
        assert_eq!(nine.proxy_jump.as_deref(), Some("none"), "negated");
        assert_eq!(nine.user.as_deref(), Some("fallback"));
    }

    #[test]
    fn unreadable_values_are_reported_with_file_and_line() {
        let e = SshConfig::parse(
            "Host a\n  Port ssh\n  ProxyJump a,b\n  User\n",
            "/x/config",
            None,
        )
        .unwrap_err();
        assert!(
            e.contains("/x/config:2:3: `Port ssh` is not a port number"),
            "{e}"
        );
        assert!(
            e.contains("/x/config:3:3: `ProxyJump a,b`: more than one"),
            "{e}"
        );
        assert!(e.contains("/x/config:4:3: `User` needs a value"), "{e}");
    }

    #[test]
    fn jump_specs() {
        let j = |s: &str| JumpSpec::parse(s);
        assert_eq!(
            j("ops@bastion:2222").unwrap(),
            JumpSpec {
                user: Some("ops".into()),
                host: "bastion".into(),
                port: Some(2222)
            }
        );
        assert_eq!(j("ssh://10.0.0.1").unwrap().host, "10.0.0.1");
        assert_eq!(j("[fd00::1]:22").unwrap().host, "fd00::1");
        assert_eq!(j("fd00::1").unwrap().port, None);
        assert!(j("a:0").is_err() && j("@a").is_err() && j("a b").is_err());
    }

    #[test]
    fn a_missing_default_file_is_no_config_but_a_missing_explicit_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let none = SshConfig::load(None, Some(dir.path())).unwrap();
        assert_eq!(none.lookup(&["web-1"]), HostConfig::default());
        let e = SshConfig::load(Some(&dir.path().join("nope")), None).unwrap_err();
        assert!(e.contains("cannot read the ssh config"), "{e}");
    }
}
