//! The text of `secrets/<client>/<profile>.yml`: parse it into names and ciphertexts, and
//! render it back as a YAML mapping with sorted names and each armored ciphertext as a `|`
//! block, keeping the file's leading comment. Pure text in, text out: the caller reads and
//! writes the file, and nothing here ever sees a plaintext.

use std::collections::BTreeMap;

/// The leading `#` comment lines of `text` (each with its newline), to keep on rewrite.
pub fn leading_comment(text: &str) -> String {
    text.split_inclusive('\n')
        .take_while(|l| l.starts_with('#'))
        .map(|l| {
            if l.ends_with('\n') {
                l.to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// The comment a new secrets file starts with, so a reader of the repo knows what it holds.
pub fn default_comment(client: &str, profile: &str) -> String {
    format!(
        "# Secrets of client {client} for profile {profile}: each value is age-encrypted to the \
         keys in secrets/{client}/recipients.txt.\n# Edit with `clarity-reconcile secret \
         set|get|list|rekey`, never by hand.\n"
    )
}

/// Parses a secrets file into name → ciphertext. An empty file (or only comments) is an
/// empty map. The error does not quote the file; `validate` shows where it is wrong.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let has_content = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if !has_content {
        return Ok(BTreeMap::new());
    }
    serde_saphyr::from_str::<BTreeMap<String, String>>(text)
        .map_err(|_| "not a mapping of secret names to armored ciphertexts".to_string())
}

/// Renders a secrets file: `comment`, then one `name: |` block per entry in name order.
pub fn render(comment: &str, entries: &BTreeMap<String, String>) -> String {
    let mut out = String::from(comment);
    for (name, value) in entries {
        out.push_str(&key(name));
        if fits_literal_block(value) {
            out.push_str(": |\n");
            for line in value.lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        } else {
            // A hand-written value that a `|` block would change: a JSON string is also a
            // valid YAML double-quoted scalar and keeps every byte.
            out.push_str(": ");
            out.push_str(&serde_json::to_string(value).expect("a string serializes"));
            out.push('\n');
        }
    }
    out
}

fn key(name: &str) -> String {
    const SPECIAL: [&str; 14] = [
        "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "y", "n", "yes",
        "no", "on",
    ];
    if super::is_valid_name(name) && !SPECIAL.contains(&name) && !name.eq_ignore_ascii_case("off") {
        name.to_string()
    } else {
        serde_json::to_string(name).expect("a string serializes")
    }
}

/// Whether a `|` block (clip chomping) reads back as exactly `value`.
fn fits_literal_block(value: &str) -> bool {
    value.ends_with('\n')
        && !value.ends_with("\n\n")
        && !value.starts_with([' ', '\n'])
        && value
            .bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
        && value.lines().all(|l| !l.is_empty() && !l.ends_with(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_blocks_and_reads_them_back() {
        let armored =
            "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n";
        let entries: BTreeMap<String, String> = [
            ("zeta".to_string(), armored.to_string()),
            ("alpha".to_string(), armored.to_string()),
            ("odd".to_string(), "  leading space, no newline".to_string()),
            ("true".to_string(), armored.to_string()),
        ]
        .into();
        let text = render("# keep me\n", &entries);
        assert!(text.starts_with("# keep me\nalpha: |\n  -----BEGIN"));
        assert!(text.find("alpha").unwrap() < text.find("zeta").unwrap());
        assert!(text.contains("\"true\": |"));
        assert_eq!(parse(&text).unwrap(), entries);
        assert_eq!(leading_comment(&text), "# keep me\n");
    }

    #[test]
    fn comments_only_is_empty_and_garbage_is_refused() {
        assert!(parse("# nothing yet\n\n").unwrap().is_empty());
        assert!(parse("- a list\n").is_err());
        assert_eq!(leading_comment("# a\n# b\nx: y\n# c\n"), "# a\n# b\n");
        assert_eq!(leading_comment("x: y\n"), "");
    }
}
