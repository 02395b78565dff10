//! Turning an argv vector into the one string an SSH exec channel takes. The remote side runs
//! that string with the user's login shell, so every argument is quoted here, by this one
//! function, and never glued into a command line by hand: an argument is either made only of
//! characters no POSIX shell treats specially, or wrapped in single quotes (inside which
//! nothing is special) with each `'` written as `'\''`.

/// Characters that stand for themselves in every POSIX shell, in any position of a word.
/// `=` is not among them (a first word `A=b` is an assignment), nor `~` (tilde expansion).
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | ',' | '+' | '@' | '%')
}

/// One argument, quoted so that the shell hands the program exactly these bytes.
pub fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(is_plain) {
        return arg.to_string();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The command line for `argv`: each argument quoted, separated by spaces.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const HOSTILE: &[&str] = &[
        "",
        " ",
        "plain/path-1.0_x:y,z+@%",
        "two words",
        "it's",
        "''",
        "'\\''",
        "\"double\"",
        "$HOME",
        "${HOME}",
        "$(id)",
        "`id`",
        "a;b",
        "a|b",
        "a&b",
        "a>b",
        "<a",
        "*",
        "?",
        "[a]",
        "{a,b}",
        "~",
        "~root",
        "A=b",
        "#comment",
        "!",
        "back\\slash",
        "tab\there",
        "new\nline",
        "-n",
        "--",
        "ünïcødé",
    ];

    #[test]
    fn plain_arguments_stay_readable() {
        assert_eq!(
            command_line(&[
                "/var/lib/clarity/agent/clarity-reconcile",
                "agent",
                "inspect"
            ]),
            "/var/lib/clarity/agent/clarity-reconcile agent inspect"
        );
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("A=b"), "'A=b'");
    }

    /// A real shell gets back exactly the argv it was given, however hostile.
    #[test]
    fn sh_receives_every_argument_unchanged() {
        let line = command_line(
            &std::iter::once("printf")
                .chain(std::iter::once("%s\\0"))
                .chain(HOSTILE.iter().copied())
                .collect::<Vec<_>>(),
        );
        for shell in ["sh", "bash"] {
            let Ok(out) = Command::new(shell).arg("-c").arg(&line).output() else {
                continue;
            };
            assert!(out.status.success(), "{shell}: {line}");
            let got: Vec<String> = out
                .stdout
                .split(|b| *b == 0)
                .map(|a| String::from_utf8(a.to_vec()).unwrap())
                .collect();
            // printf's output ends with a NUL, so the split leaves an empty last piece.
            assert_eq!(&got[..got.len() - 1], HOSTILE, "{shell}");
        }
    }
}
