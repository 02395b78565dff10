//! Static rules on template source that the template engine cannot enforce by itself, checked
//! before anything renders: a secret may only be emitted whole (`{{ secret("name") }}`, alone in
//! its own expression block), and a string literal may only be repeated a small literal number
//! of times. Any other use of `secret` (a filter, an operation, a test, a loop over it, a
//! `set`, `include`/`import`/`extends` of it, a dynamic name) is an error at the position of the
//! `secret` token, naming the secret and never its value (the source holds names only). This
//! module only reads template text; rendering and the opaque secret values are in `render.rs`.

use crate::diag::{Diagnostic, Pos};

/// The largest literal repeat count allowed on a string literal (`"-" * 40`). Larger counts
/// serve no config file and are how a template asks for gigabytes in one step.
pub const MAX_LITERAL_REPEAT: u64 = 10_000;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(u64),
    Punct(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    offset: usize,
}

/// One `{{ }}` or `{% %}` block: whether it is an expression, and its tokens.
struct Block {
    expression: bool,
    tokens: Vec<Token>,
}

/// Every problem in the template `name` (its text `src`), as diagnostics on `templates/<name>`.
pub fn check(name: &str, src: &str) -> Vec<Diagnostic> {
    let file = format!("templates/{name}");
    let mut out = Vec::new();
    for block in blocks(src) {
        check_secret_uses(&file, src, &block, &mut out);
        check_repeats(&file, src, &block, &mut out);
    }
    out
}

fn check_secret_uses(file: &str, src: &str, block: &Block, out: &mut Vec<Diagnostic>) {
    let t = &block.tokens;
    for (i, token) in t.iter().enumerate() {
        if token.tok != Tok::Ident("secret".into()) {
            continue;
        }
        // `foo.secret` is an attribute of something else, not the function.
        if i > 0 && t[i - 1].tok == Tok::Punct(".".into()) {
            continue;
        }
        let literal_name = match (t.get(i + 1), t.get(i + 2), t.get(i + 3)) {
            (
                Some(Token {
                    tok: Tok::Punct(open),
                    ..
                }),
                Some(Token {
                    tok: Tok::Str(name),
                    ..
                }),
                Some(Token {
                    tok: Tok::Punct(close),
                    ..
                }),
            ) if open == "(" && close == ")" => Some(name.clone()),
            _ => None,
        };
        let whole = block.expression && i == 0 && t.len() == 4 && literal_name.is_some();
        if whole {
            continue;
        }
        let what = match &literal_name {
            Some(n) => format!("secret `{n}`"),
            None => "`secret`".to_string(),
        };
        let how = if literal_name.is_none() {
            "is used without a literal name (`secret(\"name\")`)"
        } else if !block.expression {
            "is used in a statement (set, if, for, include, import, extends, ...)"
        } else {
            "is part of a larger expression (a filter, an operation, a test, an index or a call)"
        };
        out.push(
            Diagnostic::error(
                "secret-misuse",
                file,
                position(src, token.offset),
                format!(
                    "{what} {how}; a secret may only be emitted whole, so that no template can transform or reveal it"
                ),
            )
            .with_hint(
                "write it alone in its own block, `{{ secret(\"name\") }}`, and put any text around it in the template itself",
            ),
        );
    }
}

fn check_repeats(file: &str, src: &str, block: &Block, out: &mut Vec<Diagnostic>) {
    let t = &block.tokens;
    for (i, token) in t.iter().enumerate() {
        if token.tok != Tok::Punct("*".into()) {
            continue;
        }
        let before = i.checked_sub(1).map(|j| &t[j].tok);
        let after = t.get(i + 1).map(|x| &x.tok);
        let string_side = matches!(before, Some(Tok::Str(_))) || matches!(after, Some(Tok::Str(_)));
        if !string_side {
            continue;
        }
        let count = match (before, after) {
            (Some(Tok::Int(n)), _) | (_, Some(Tok::Int(n))) => Some(*n),
            _ => None,
        };
        if count.is_some_and(|n| n <= MAX_LITERAL_REPEAT) {
            continue;
        }
        out.push(
            Diagnostic::error(
                "template-limit",
                file,
                position(src, token.offset),
                match count {
                    Some(n) => format!(
                        "a string repeated {n} times; at most {MAX_LITERAL_REPEAT} repeats are allowed"
                    ),
                    None => "a string repeated a computed number of times; the count must be a literal of at most 10000".to_string(),
                },
            )
            .with_hint("write the repeat count as a small number (`\"-\" * 40`)"),
        );
    }
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn position(src: &str, offset: usize) -> Pos {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0) as u32
        + 1;
    Pos { line, column }
}

/// The `{{ }}` and `{% %}` blocks of `src`, skipping comments and `raw` sections (whose text
/// is output literally). Unterminated blocks end at the end of the text; the engine reports
/// the syntax error.
fn blocks(src: &str) -> Vec<Block> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_raw = false;
    while i + 1 < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        match b[i + 1] {
            b'#' if !in_raw => {
                i = src[i + 2..]
                    .find("#}")
                    .map(|e| i + 2 + e + 2)
                    .unwrap_or(b.len());
            }
            open @ (b'{' | b'%') => {
                let close = if open == b'{' { b'}' } else { b'%' };
                let (tokens, end) = lex(src, i + 2, close);
                let words: Vec<&Tok> = tokens.iter().map(|t| &t.tok).collect();
                let first = match words.first() {
                    Some(Tok::Ident(w)) => w.as_str(),
                    _ => "",
                };
                if in_raw {
                    if open == b'%' && first == "endraw" {
                        in_raw = false;
                    }
                } else if open == b'%' && first == "raw" {
                    in_raw = true;
                } else {
                    out.push(Block {
                        expression: open == b'{',
                        tokens,
                    });
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

/// Tokens from `start` up to the block end `<close>}` outside a string; returns them and the
/// offset after the block. Whitespace-control marks (`-`, `+`) next to the delimiters are
/// dropped so `{{- x -}}` reads like `{{ x }}`.
fn lex(src: &str, start: usize, close: u8) -> (Vec<Token>, usize) {
    let b = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = start;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if (c == b'-' || c == b'+') && b.get(i + 1) == Some(&close) && b.get(i + 2) == Some(&b'}') {
            return (tokens, i + 3);
        }
        if c == close && b.get(i + 1) == Some(&b'}') {
            return (tokens, i + 2);
        }
        let offset = i;
        if c == b'"' || c == b'\'' {
            let mut j = i + 1;
            let mut text = String::new();
            while j < b.len() && b[j] != c {
                if b[j] == b'\\' && j + 1 < b.len() {
                    j += 1;
                }
                let ch = src[j..].chars().next().unwrap_or('\0');
                text.push(ch);
                j += ch.len_utf8().max(1);
            }
            tokens.push(Token {
                tok: Tok::Str(text),
                offset,
            });
            i = (j + 1).min(b.len());
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            tokens.push(Token {
                tok: Tok::Ident(src[i..j].to_string()),
                offset,
            });
            i = j;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'_') {
                j += 1;
            }
            let digits: String = src[i..j].chars().filter(|c| *c != '_').collect();
            tokens.push(Token {
                tok: Tok::Int(digits.parse().unwrap_or(u64::MAX)),
                offset,
            });
            i = j;
        } else {
            // `**` is a power, not a repeat; everything else is one punctuation character.
            let len = if c == b'*' && b.get(i + 1) == Some(&b'*') {
                2
            } else {
                src[i..].chars().next().map(char::len_utf8).unwrap_or(1)
            };
            tokens.push(Token {
                tok: Tok::Punct(src[i..i + len].to_string()),
                offset,
            });
            i += len;
        }
    }
    (tokens, b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(src: &str) -> Vec<(String, u32, u32)> {
        check("t.j2", src)
            .into_iter()
            .map(|d| (d.code.to_string(), d.line, d.column))
            .collect()
    }

    #[test]
    fn a_secret_emitted_whole_is_fine() {
        assert!(codes("pw={{ secret(\"db\") }}\n{{- secret('x') -}}\n").is_empty());
        assert!(codes("{% if on %}{{ secret(\"db\") }}{% endif %}").is_empty());
        assert!(codes("{{ user.secret }} {# secret(\"x\")|upper #}").is_empty());
        assert!(codes("{% raw %}{{ secret(\"x\")|upper }}{% endraw %}").is_empty());
        assert!(codes("{{ \"secret\" ~ \"secret(\" }}").is_empty());
    }

    #[test]
    fn every_other_use_is_an_error_at_the_token() {
        for src in [
            "{{ secret(\"db\")|upper }}",
            "{{ secret(\"db\")|reverse }}",
            "{{ secret(\"db\")|list|join(\",\") }}",
            "{{ secret(\"db\")[1:] }}",
            "{% for c in secret(\"db\") %}{{ c }}{% endfor %}",
            "{% include secret(\"db\") %}",
            "{% import secret(\"db\") as m %}",
            "{% extends secret(\"db\") %}",
            "{% set x = secret(\"db\") %}",
            "{{ secret(\"db\") is string }}",
            "{{ \"a\" ~ secret(\"db\") }}",
            "{{ secret(name) }}",
            "{% set s = secret %}",
        ] {
            let found = codes(src);
            assert_eq!(found.len(), 1, "{src}: {found:?}");
            assert_eq!(found[0].0, "secret-misuse", "{src}");
        }
        let d = &check("t.j2", "line1\n  {{ secret(\"db\")|upper }}")[0];
        assert_eq!((d.line, d.column), (2, 6));
        assert!(d.message.contains("secret `db`"), "{}", d.message);
    }

    #[test]
    fn large_string_repeats_are_refused() {
        assert!(codes("{{ \"-\" * 40 }}{{ 3 ** 4 }}{{ n * 100000000 }}").is_empty());
        assert_eq!(codes("{{ \"A\" * 100000000 }}")[0].0, "template-limit");
        assert_eq!(codes("{{ 100000000 * 'A' }}")[0].0, "template-limit");
        assert_eq!(codes("{{ \"A\" * n }}")[0].0, "template-limit");
    }
}
