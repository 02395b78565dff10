//! Value references inside deployment configuration: `${CONFIG:dotted.path}`,
//! `${SECRET:name}`, `${ENV:NAME}`, `${TEMPLATE:path}` and the built-ins `${CLIENT_ID}`,
//! `${SERVER}`, `${PROFILE}`. `$${` writes a literal `${`. This module only finds references
//! in a string; resolving them is `desired`'s job.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    Config,
    Secret,
    Env,
    Template,
    ClientId,
    Server,
    Profile,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: RefKind,
    /// The part after the colon (empty for built-ins).
    pub arg: String,
    /// Byte offset of the `$` in the string.
    pub start: usize,
    /// Byte offset just past the closing `}`.
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A piece of a string with references: literal text or a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(std::borrow::Cow<'a, str>),
    Ref(Reference),
}

/// Splits `s` into literal text and references.
pub fn parse(s: &str) -> Result<Vec<Piece<'_>>, RefError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest_start = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && s[i..].starts_with("$${") {
            text.push_str(&s[rest_start..i]);
            text.push_str("${");
            i += 3;
            rest_start = i;
            continue;
        }
        if bytes[i] == b'$' && s[i..].starts_with("${") {
            text.push_str(&s[rest_start..i]);
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text).into()));
            }
            let close = s[i..].find('}').ok_or_else(|| RefError {
                offset: i,
                message: "`${` is not closed by `}`".into(),
            })?;
            let inner = &s[i + 2..i + close];
            let end = i + close + 1;
            pieces.push(Piece::Ref(reference(inner, i, end)?));
            i = end;
            rest_start = i;
            continue;
        }
        i += 1;
    }
    text.push_str(&s[rest_start..]);
    if !text.is_empty() {
        pieces.push(Piece::Text(text.into()));
    }
    Ok(pieces)
}

/// Only the references of `s`.
pub fn references(s: &str) -> Result<Vec<Reference>, RefError> {
    Ok(parse(s)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref(r) => Some(r),
            Piece::Text(_) => None,
        })
        .collect())
}

fn reference(inner: &str, start: usize, end: usize) -> Result<Reference, RefError> {
    let err = |message: String| RefError {
        offset: start,
        message,
    };
    let (head, arg) = match inner.split_once(':') {
        Some((h, a)) => (h, Some(a)),
        None => (inner, None),
    };
    let kind = match head {
        "CONFIG" => RefKind::Config,
        "SECRET" => RefKind::Secret,
        "ENV" => RefKind::Env,
        "TEMPLATE" => RefKind::Template,
        "CLIENT_ID" => RefKind::ClientId,
        "SERVER" => RefKind::Server,
        "PROFILE" => RefKind::Profile,
        other => {
            return Err(err(format!(
                "unknown reference `${{{other}}}`: use CONFIG:, SECRET:, ENV:, TEMPLATE:, CLIENT_ID, SERVER or PROFILE (write `$${{` for a literal `${{`)"
            )));
        }
    };
    let takes_arg = matches!(
        kind,
        RefKind::Config | RefKind::Secret | RefKind::Env | RefKind::Template
    );
    let arg = match (takes_arg, arg) {
        (true, Some(a)) if !a.trim().is_empty() => a.trim().to_string(),
        (true, _) => {
            return Err(err(format!(
                "`${{{head}:...}}` needs a name after the colon"
            )));
        }
        (false, None) => String::new(),
        (false, Some(_)) => return Err(err(format!("`${{{head}}}` takes no argument"))),
    };
    Ok(Reference {
        kind,
        arg,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_and_text() {
        let p = parse("jdbc://${CONFIG:db.host}:5432/${CLIENT_ID}?p=${SECRET:db_pw}").unwrap();
        assert_eq!(p.len(), 6);
        let refs = references("a ${ENV:HOME} b").unwrap();
        assert_eq!(refs[0].kind, RefKind::Env);
        assert_eq!(refs[0].arg, "HOME");
        assert_eq!((refs[0].start, refs[0].end), (2, 13));
    }

    #[test]
    fn escaped_dollar_is_literal() {
        assert_eq!(
            parse("cost $${x}").unwrap(),
            vec![Piece::Text("cost ${x}".into())]
        );
    }

    #[test]
    fn bad_references_are_errors() {
        assert!(parse("${NOPE:x}").is_err());
        assert!(parse("${SECRET:}").is_err());
        assert!(parse("${SERVER:x}").is_err());
        assert!(parse("${CONFIG:a").is_err());
    }
}
