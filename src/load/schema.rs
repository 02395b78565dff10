//! Schema validation of one parsed file against the JSON Schema generated from its Rust type.
//! Every violation becomes a diagnostic at the line and column of the offending key or value,
//! so an operator sees all of a file's problems at once rather than the first serde error.

use super::yaml::{Node, Step};
use crate::diag::Diagnostic;
use crate::model::FileKind;
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use std::collections::HashMap;
use std::sync::OnceLock;

struct Compiled {
    validator: Validator,
    schema: serde_json::Value,
}

fn compiled(kind: FileKind) -> &'static Compiled {
    static CACHE: OnceLock<HashMap<FileKind, Compiled>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        FileKind::ALL
            .iter()
            .map(|k| {
                let schema = k.schema().to_value();
                let validator = jsonschema::options()
                    .should_validate_formats(false)
                    .build(&schema)
                    .expect("generated schemas are valid JSON Schema");
                (*k, Compiled { validator, schema })
            })
            .collect()
    });
    &all[&kind]
}

/// Validates `doc` (already converted to JSON as `json`); returns one diagnostic per violation.
pub fn check(kind: FileKind, file: &str, doc: &Node, json: &serde_json::Value) -> Vec<Diagnostic> {
    let compiled = compiled(kind);
    if compiled.validator.is_valid(json) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for error in compiled.validator.iter_errors(json) {
        out.extend(diagnose(kind, compiled, file, doc, &error));
    }
    out
}

fn path_of<'a>(error: &'a ValidationError) -> Vec<Step<'a>> {
    error
        .instance_path()
        .iter()
        .map(|seg| match seg {
            LocationSegment::Property(p) => Step::Key(match p {
                std::borrow::Cow::Borrowed(s) => s,
                // Owned segments only come from escaped keys; fall back to the parent.
                std::borrow::Cow::Owned(_) => "",
            }),
            LocationSegment::Index(i) => Step::Index(i),
        })
        .collect()
}

fn dotted(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() { "(document)".into() } else { s }
}

fn diagnose(
    kind: FileKind,
    compiled: &Compiled,
    file: &str,
    doc: &Node,
    error: &ValidationError,
) -> Vec<Diagnostic> {
    let path = path_of(error);
    let pos = doc.pos_at(&path);
    let field = dotted(&path);
    let last_key = path.iter().rev().find_map(|s| match s {
        Step::Key(k) => Some(*k),
        _ => None,
    });
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_properties(compiled, error);
            unexpected
                .iter()
                .map(|key| {
                    let mut d = Diagnostic::error(
                        "unknown-field",
                        file,
                        doc.key_pos_at(&path, key),
                        format!("unknown field `{key}` in {}", describe(kind, &path)),
                    );
                    d = match closest(key, &allowed) {
                        Some(best) => d.with_hint(format!("did you mean `{best}`?")),
                        None if !allowed.is_empty() => {
                            d.with_hint(format!("allowed fields: {}", allowed.join(", ")))
                        }
                        None => d,
                    };
                    d
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![
                Diagnostic::error(
                    "missing-field",
                    file,
                    pos,
                    format!(
                        "missing required field `{name}` in {}",
                        describe(kind, &path)
                    ),
                )
                .with_hint(format!(
                    "add `{name}:`; see {} in docs/config-reference.md",
                    kind.name()
                )),
            ]
        }
        ValidationErrorKind::Type { kind: expected } => {
            let found = type_name(error.instance());
            vec![
                Diagnostic::error(
                    "wrong-type",
                    file,
                    pos,
                    format!(
                        "`{field}` must be {}, found {found}",
                        type_words(&format!("{expected:?}"))
                    ),
                )
                .with_hint(type_hint(error.instance(), &format!("{expected:?}"))),
            ]
        }
        ValidationErrorKind::Enum { options } => {
            let choices = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![
                Diagnostic::error(
                    "invalid-value",
                    file,
                    pos,
                    format!(
                        "`{field}` has value {} which is not allowed",
                        error.instance()
                    ),
                )
                .with_hint(format!("use one of: {choices}")),
            ]
        }
        ValidationErrorKind::Pattern { pattern } => {
            let value = error.instance();
            if last_key == Some("sha256") {
                let len = value.as_str().map(str::len).unwrap_or(0);
                return vec![
                    Diagnostic::error(
                        "invalid-sha256",
                        file,
                        pos,
                        format!("`{field}` is not a SHA-256 digest ({len} characters, expected 64 hex digits)"),
                    )
                    .with_hint("compute it with `sha256sum FILE` and paste the first column"),
                ];
            }
            vec![
                Diagnostic::error(
                    "invalid-format",
                    file,
                    pos,
                    format!(
                        "`{field}` value {value} does not match the expected format `{pattern}`"
                    ),
                )
                .with_hint(format_hint(last_key, &field)),
            ]
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. }
            if last_key.is_some_and(|k| ["batch_size", "canary", "max_failures"].contains(&k)) =>
        {
            vec![
                Diagnostic::error(
                    "invalid-value",
                    file,
                    pos,
                    format!("`{field}` must be a count like 2 or a percentage like \"25%\""),
                )
                .with_hint("percentages are strings: quote them, e.g. \"25%\""),
            ]
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // `Option<T>` and untagged enums become anyOf: report the errors of the branch the
            // value was meant for (the one that is not a plain type mismatch at this spot).
            let here = error.instance_path().as_str();
            let consts: Vec<String> = context
                .iter()
                .flatten()
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Constant { expected_value } => Some(
                        expected_value
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| expected_value.to_string()),
                    ),
                    _ => None,
                })
                .collect();
            if !consts.is_empty() && error.instance().is_string() {
                // A documented enum: each variant is a `const` branch.
                return vec![
                    Diagnostic::error(
                        "invalid-value",
                        file,
                        pos,
                        format!(
                            "`{field}` has value {} which is not allowed",
                            error.instance()
                        ),
                    )
                    .with_hint(format!("use one of: {}", consts.join(", "))),
                ];
            }
            let meant: Vec<&Vec<ValidationError>> = context
                .iter()
                .filter(|errs| {
                    !errs.iter().all(|e| {
                        matches!(e.kind(), ValidationErrorKind::Type { .. })
                            && e.instance_path().as_str() == here
                    })
                })
                .collect();
            match meant.as_slice() {
                [one] => one
                    .iter()
                    .flat_map(|e| diagnose(kind, compiled, file, doc, e))
                    .collect(),
                _ => vec![
                    Diagnostic::error(
                        "wrong-type",
                        file,
                        pos,
                        format!(
                            "`{field}` has the wrong type ({})",
                            type_name(error.instance())
                        ),
                    )
                    .with_hint("see docs/config-reference.md for this field's type"),
                ],
            }
        }
        ValidationErrorKind::MinItems { limit } => vec![Diagnostic::error(
            "invalid-value",
            file,
            pos,
            format!(
                "`{field}` needs at least {limit} item{}",
                if *limit == 1 { "" } else { "s" }
            ),
        )],
        _ => vec![Diagnostic::error(
            "schema",
            file,
            pos,
            format!("`{field}`: {}", error.to_string().replace('\n', " ")),
        )],
    }
}

fn describe(kind: FileKind, path: &[Step]) -> String {
    if path.is_empty() {
        format!("{} file", kind.name())
    } else {
        format!("`{}`", dotted(path))
    }
}

fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing (null)",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_f64() => "a decimal number",
        serde_json::Value::Number(_) => "an integer",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

fn type_words(expected: &str) -> String {
    let e = expected.to_lowercase();
    let word = |t: &str| match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "empty",
        _ => "a valid value",
    };
    let names: Vec<&str> = [
        "string", "integer", "number", "boolean", "array", "object", "null",
    ]
    .into_iter()
    .filter(|t| e.contains(t))
    .collect();
    match names.as_slice() {
        [] => "a valid value".into(),
        [one] => word(one).into(),
        many => many
            .iter()
            .map(|t| word(t))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn type_hint(found: &serde_json::Value, expected: &str) -> String {
    let e = expected.to_lowercase();
    match found {
        serde_json::Value::Number(n) if e.contains("string") && !n.is_f64() => {
            format!("quote the value to make it a string: \"{found}\"")
        }
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) if e.contains("string") => {
            "quote the value so YAML reads it as a string, e.g. \"1.10\" or \"yes\"".into()
        }
        serde_json::Value::String(s) if e.contains("integer") => {
            format!(
                "write the number without quotes or units: `{}`",
                s.trim_matches(|c: char| !c.is_ascii_digit())
            )
        }
        serde_json::Value::Object(_) | serde_json::Value::String(_) if e.contains("array") => {
            "write a YAML list: one `- item` per line".into()
        }
        _ => "see docs/config-reference.md for this field's type".into(),
    }
}

fn format_hint(key: Option<&str>, field: &str) -> String {
    if field.starts_with("volumes[") && key == Some("name") {
        return "a volume name is one directory name: letters, digits, `_`, `.` and `-`, not starting with `.` or `-`".into();
    }
    match key {
        Some("id") | Some("code") | Some("name") | Some("hostname") => {
            "use lowercase letters, digits and dashes (client `code` uses uppercase)".into()
        }
        Some("artifact") => "an artifact id: lowercase letters, digits and dashes".into(),
        Some("version") => {
            "a version names a directory on hosts: letters, digits, `.`, `_`, `+` and `-`, starting with a letter or digit (no `/`), in quotes, e.g. \"2.4.1\"".into()
        }
        Some("mode") => "write an octal mode in quotes, e.g. \"0640\"".into(),
        _ => "see docs/config-reference.md for the accepted format".into(),
    }
}

/// The property names the object at the error's schema location allows.
fn allowed_properties(compiled: &Compiled, error: &ValidationError) -> Vec<String> {
    // The schema path ends in `/additionalProperties`; its parent is the object schema,
    // possibly behind a `$ref` we must follow into `$defs`.
    let schema_path = error.schema_path().as_str();
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    let mut node = &compiled.schema;
    for seg in parent.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        node = match node
            .get(&seg)
            .or_else(|| seg.parse::<usize>().ok().and_then(|i| node.get(i)))
        {
            Some(n) => n,
            None => return Vec::new(),
        };
        if let Some(r) = node.get("$ref").and_then(|r| r.as_str())
            && let Some(name) = r.strip_prefix("#/$defs/")
            && let Some(target) = compiled.schema.get("$defs").and_then(|d| d.get(name))
        {
            node = target;
        }
    }
    node.get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The allowed name closest to a misspelt one, if it is close enough to be a typo.
pub fn closest<'a>(wrong: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(wrong, a), a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::yaml::parse;

    fn run(kind: FileKind, text: &str) -> Vec<Diagnostic> {
        let doc = parse(text).unwrap();
        check(kind, "f.yml", &doc, &doc.to_json())
    }

    #[test]
    fn unknown_field_points_at_key_with_suggestion() {
        let d = run(
            FileKind::Datacenter,
            "code: fra1\nname: F\ntype: primary\nlocaton: Frankfurt\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "unknown-field");
        assert_eq!((d[0].line, d[0].column), (4, 1));
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `location`?"));
    }

    #[test]
    fn every_violation_is_reported() {
        let d = run(FileKind::Datacenter, "code: 12\nname: [x]\ntype: central\n");
        let codes: Vec<_> = d.iter().map(|d| d.code).collect();
        assert_eq!(codes.len(), 3, "{d:?}");
        assert!(codes.contains(&"invalid-value"));
    }

    #[test]
    fn sha256_gets_its_own_code() {
        let d = run(
            FileKind::Artifact,
            "id: a\ntype: jar\nrepository: r\nversions:\n  - version: '1'\n    sha256: abc\n    location: a.jar\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "invalid-sha256");
        assert_eq!((d[0].line, d[0].column), (6, 13));
    }

    #[test]
    fn nested_unknown_field_in_ref_gets_suggestion() {
        let d = run(
            FileKind::Server,
            "hostname: h\ndatacenter: d\nagent:\n  transport: ssh\n  ssh:\n    usr: root\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].line, d[0].column), (6, 5));
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `user`?"));
    }

    #[test]
    fn documented_enum_lists_choices() {
        let d = run(
            FileKind::Server,
            "hostname: h\ndatacenter: d\nagent:\n  transport: local\n  root: x\n  service_manager: systemv\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "invalid-value");
        assert_eq!((d[0].line, d[0].column), (6, 20));
        assert_eq!(
            d[0].hint.as_deref(),
            Some("use one of: systemd, supervisor, process")
        );
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
