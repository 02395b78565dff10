//! The ids of an apply request that become path components on the host (host, client,
//! deployment, artifact, version, release, volume, removed deployment) must each be one normal
//! name, and the paths it writes below a directory (release files, volume mounts, migrations)
//! must stay below it. `validate` already refuses bad ids in the repository; this is the agent's own check, so
//! a request that bypassed validate (a tampered or hand-written plan) cannot name `..` or a
//! path. Pure: it reads the request and nothing else.

use crate::model::apply::ApplyRequest;

/// The longest id the agent accepts: a DNS host name's limit, and still a valid file name.
pub const MAX_NAME_LEN: usize = 253;

/// Why `s` is not one normal name, or `None` when it is: ASCII letters, digits, `.`, `_`, `+`
/// and `-`, starting with a letter, digit or `_` (so never `.`, `..`, a hidden name or an
/// option), at most [`MAX_NAME_LEN`] bytes.
pub fn name_problem(s: &str) -> Option<&'static str> {
    let first = s.bytes().next()?;
    if s.len() > MAX_NAME_LEN {
        Some("is longer than 253 bytes")
    } else if s.contains('/') {
        Some("contains `/`")
    } else if !(first.is_ascii_alphanumeric() || first == b'_') {
        Some("does not start with a letter, digit or `_`")
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    {
        Some("contains a character other than letters, digits, `.`, `_`, `+` and `-`")
    } else {
        None
    }
}

fn one(what: &str, value: &str) -> Result<(), String> {
    let problem = if value.is_empty() {
        Some("is empty")
    } else {
        name_problem(value)
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(format!(
            "the apply request's {what} `{}` {p}: ids the agent uses as path names must be one normal name; nothing was changed",
            value.escape_debug()
        )),
    }
}

/// Why `p` is not a path below a directory (`absolute` false) or an absolute path (`absolute`
/// true) without `..`, or `None`: the rule `validate` applies to destinations.
fn path_problem(p: &str, absolute: bool) -> Option<&'static str> {
    let rest = match (absolute, p.strip_prefix('/')) {
        (true, Some(rest)) => rest,
        (true, None) => return Some("is not an absolute path"),
        (false, Some(_)) => return Some("is an absolute path"),
        (false, None) => p,
    };
    if rest.is_empty() {
        Some("is empty")
    } else if p.contains('\0') {
        Some("contains a NUL byte")
    } else if rest.split('/').any(|c| c == "..") {
        Some("contains `..`")
    } else {
        None
    }
}

fn path(what: &str, value: &str, absolute: bool) -> Result<(), String> {
    match path_problem(value, absolute) {
        None => Ok(()),
        Some(p) => Err(format!(
            "the apply request's {what} `{}` {p}; nothing was changed",
            value.escape_debug()
        )),
    }
}

/// Checks every id of `req` that the agent joins into a path, and every path it writes
/// below a directory, before anything is touched.
pub fn check_request(req: &ApplyRequest) -> Result<(), String> {
    one("host", &req.host)?;
    one("client", &req.client)?;
    for d in &req.deployments {
        one("deployment name", &d.name)?;
        one("artifact id", &d.artifact.id)?;
        one("version", &d.version)?;
        one("release id", &d.release)?;
        for v in &d.volumes {
            one("volume name", &v.name)?;
            path("volume mount", &v.mount, false)?;
        }
        for f in &d.release_files {
            path("release file destination", &f.destination, false)?;
        }
        for f in &d.host_files {
            path("host file destination", &f.destination, true)?;
        }
        if let Some(m) = &d.migrations {
            path("migrations directory", &m.directory, false)?;
        }
    }
    for name in &req.remove {
        one("name of a deployment to remove", name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_names_pass_and_path_like_ones_do_not() {
        for ok in [
            "web",
            "2.4.1",
            "1.0.0-rc.1+build.5",
            "2.4.1-0123456789ab",
            "_data",
            "sbx-1",
        ] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("..", "does not start"),
            (".", "does not start"),
            (".hidden", "does not start"),
            ("-rf", "does not start"),
            ("../x", "contains `/`"),
            ("a/b", "contains `/`"),
            ("a b", "character"),
            ("a\0b", "character"),
            ("ä", "does not start"),
        ] {
            assert!(name_problem(bad).is_some_and(|p| p.contains(why)), "{bad}");
        }
        assert!(name_problem(&"a".repeat(254)).is_some());
        assert!(one("version", "").unwrap_err().contains("`` is empty"));
    }

    #[test]
    fn paths_below_a_directory_stay_below_it() {
        assert_eq!(path_problem("conf/app.yml", false), None);
        assert_eq!(path_problem("/etc/app/app.conf", true), None);
        assert!(path_problem("../x", false).is_some());
        assert!(path_problem("a/../../x", false).is_some());
        assert!(path_problem("/etc/x", false).is_some());
        assert!(path_problem("etc/x", true).is_some());
        assert!(path_problem("/etc/../root/x", true).is_some());
        assert!(path_problem("/", true).is_some());
        assert_eq!(path_problem("./a//b", false), None);
    }
}
