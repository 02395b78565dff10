//! The deployment's env file as the supervisor and process backends read it. The agent writes
//! `KEY="VALUE"` lines with `\` and `"` escaped by a backslash (see `plan::env_file_text`);
//! systemd reads the same file itself through `EnvironmentFile=`, and this parser follows
//! systemd's rules for that subset so all three managers see the same values: a quoted value
//! may span lines, `\\` `\"` `\$` and `` \` `` unescape, any other backslash stays, unquoted
//! values lose their backslashes and trailing blanks, blank lines and `#` or `;` comments are skipped. Errors name the line
//! and key, never a value: values are secrets.

use super::{ServiceError, io_error};
use std::path::Path;

/// Reads and parses an env file; variables in file order, a repeated key keeps its first
/// position and its last value.
pub fn read(service: &str, path: &Path) -> Result<Vec<(String, String)>, ServiceError> {
    let text = std::fs::read_to_string(path).map_err(io_error(service, "read env file", path))?;
    parse(&text)
        .map_err(|message| super::invalid(service, format!("{}: {message}", path.display())))
}

pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    loop {
        // Start of a line: skip blank lines, leading blanks and comments.
        while let Some(&c) = chars.peek() {
            if c == '\n' {
                line += 1;
                chars.next();
            } else if c.is_whitespace() {
                chars.next();
            } else if c == '#' || c == ';' {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            } else {
                break;
            }
        }
        if chars.peek().is_none() {
            return Ok(vars);
        }
        let start_line = line;
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == '\n' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim_end().to_string();
        if chars.next() != Some('=') {
            return Err(format!("line {start_line}: expected KEY=VALUE"));
        }
        if !valid_key(&key) {
            return Err(format!(
                "line {start_line}: `{key}` is not a valid variable name"
            ));
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some(e @ ('\\' | '"' | '$' | '`')) => value.push(e),
                        // systemd drops a backslash-newline inside quotes (a continuation).
                        Some('\n') => line += 1,
                        Some(other) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => break,
                    },
                    '\n' => {
                        line += 1;
                        value.push('\n');
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!(
                    "line {start_line}: the value of `{key}` has no closing quote"
                ));
            }
            for c in chars.by_ref() {
                if c == '\n' {
                    line += 1;
                    break;
                }
                if !c.is_whitespace() {
                    return Err(format!(
                        "line {start_line}: unexpected text after the quoted value of `{key}`"
                    ));
                }
            }
        } else {
            while let Some(c) = chars.next() {
                match c {
                    '\n' => {
                        line += 1;
                        break;
                    }
                    // Unquoted, systemd takes the next character literally and joins a
                    // backslash-newline with the next line.
                    '\\' => match chars.next() {
                        Some('\n') => line += 1,
                        Some(other) => value.push(other),
                        None => {}
                    },
                    c => value.push(c),
                }
            }
            value = value.trim_end().to_string();
        }
        match vars.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => vars.push((key, value)),
        }
    }
}

fn valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_the_agent_writes() {
        let text = "A=\"plain\"\nB=\"with \\\"quotes\\\" and \\\\ backslash\"\nC=\"two\nlines\"\nD=\"\"\nE=\"# not a comment ; either\"\n";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                ("A", "plain"),
                ("B", "with \"quotes\" and \\ backslash"),
                ("C", "two\nlines"),
                ("D", ""),
                ("E", "# not a comment ; either"),
            ])
        );
    }

    #[test]
    fn comments_blank_lines_unquoted_values_and_repeats() {
        let text = "# comment\n\n  ; another\nA=one two  \nB = x\nA=\"again\"\nC=\\n$stays\\\nmore";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[("A", "again"), ("B", "x"), ("C", "n$staysmore")])
        );
    }

    #[test]
    fn errors_never_show_values() {
        let err = parse("TOKEN=\"s3cret").unwrap_err();
        assert!(err.contains("TOKEN") && !err.contains("s3cret"), "{err}");
        let err = parse("TOKEN=\"s3cret\" trailing").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(parse("1BAD=x").is_err());
        assert!(parse("novalue\n").is_err());
    }
}
