//! YAML with source positions. Files are parsed by serde-saphyr (budgets against alias bombs,
//! duplicate keys rejected) into a small tree whose every node and key knows its line and
//! column, so that schema errors (reported by JSON path) and cross-reference errors point at
//! the exact place in the file.

use crate::diag::Pos;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// A YAML document that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    /// The input exceeded a parsing budget (alias expansion, nesting, size).
    pub budget: bool,
}

/// Limits for config files: generous for hand-written YAML, small enough that an alias bomb
/// fails in milliseconds with bounded memory.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_nodes = 100_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_depth = 64;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = 8 << 20;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    options
}

pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(Node {
            pos: Pos::START,
            value: Value::Null,
        });
    }
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options()) {
        Ok(doc) => Ok(doc.into()),
        Err(e) => {
            let pos = e.location().map(pos_of).unwrap_or(Pos::START);
            let rendered = e.to_string();
            // A second `---` document trips the document budget, but it is a plain mistake,
            // not an alias bomb.
            if rendered.contains("budget breached: Documents") {
                return Err(SyntaxError {
                    pos,
                    message: "a second YAML document starts here; a config file holds one".into(),
                    budget: false,
                });
            }
            let budget = rendered.contains("budget breached");
            Err(SyntaxError {
                pos,
                message: clean_message(&rendered, budget),
                budget,
            })
        }
    }
}

fn pos_of(loc: Location) -> Pos {
    Pos {
        line: loc.line().max(1) as u32,
        column: loc.column().max(1) as u32,
    }
}

/// serde-saphyr renders `error: line L column C: message[, advice for its own API]`; keep the
/// message, which we print with our own position.
fn clean_message(rendered: &str, budget: bool) -> String {
    if budget {
        return "document exceeds the parsing budget (too many nodes, aliases or nesting levels); \
                a YAML alias bomb?"
            .to_string();
    }
    let first = rendered.lines().next().unwrap_or(rendered);
    let mut msg = first.trim_start_matches("error: ");
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
    {
        msg = &rest[idx + 2..];
    }
    let msg = msg.split(", set DuplicateKeyPolicy").next().unwrap_or(msg);
    msg.trim().to_string()
}

/// What serde-saphyr hands us: any YAML value, children spanned.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Raw, E> {
                i64::try_from(v)
                    .map(Raw::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Raw::Map(entries))
            }
        }
        d.deserialize_any(RawVisitor)
    }
}

impl From<Spanned<Raw>> for Node {
    fn from(s: Spanned<Raw>) -> Node {
        let value = match s.value {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::Int(i) => Value::Int(i),
            Raw::Float(f) => Value::Float(f),
            Raw::Str(s) => Value::Str(s),
            Raw::Seq(items) => Value::Seq(items.into_iter().map(Node::from).collect()),
            Raw::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| Entry {
                        key: k.value,
                        key_pos: pos_of(k.referenced),
                        value: v.into(),
                    })
                    .collect(),
            ),
        };
        Node {
            pos: pos_of(s.referenced),
            value,
        }
    }
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn index(&self, i: usize) -> Option<&Node> {
        match &self.value {
            Value::Seq(items) => items.get(i),
            _ => None,
        }
    }

    /// The node at `path`.
    pub fn at(&self, path: &[Step]) -> Option<&Node> {
        path.iter().try_fold(self, |node, step| match step {
            Step::Key(k) => node.get(k),
            Step::Index(i) => node.index(*i),
        })
    }

    /// Position of the deepest node along `path` that exists: a missing leaf points at its
    /// parent, which is where the operator has to add it.
    pub fn pos_at(&self, path: &[Step]) -> Pos {
        let mut node = self;
        for step in path {
            let next = match step {
                Step::Key(k) => node.get(k),
                Step::Index(i) => node.index(*i),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }

    /// Position of the key `key` at `path` (for unknown-field errors), else of the node.
    pub fn key_pos_at(&self, path: &[Step], key: &str) -> Pos {
        self.at(path)
            .and_then(|n| n.entry(key))
            .map(|e| e.key_pos)
            .unwrap_or_else(|| self.pos_at(path))
    }

    /// The JSON equivalent, for schema validation and typed deserialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(f.to_string())),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_nested_values_and_keys() {
        let doc = parse("a: 1\nb:\n  - x\n  - {c: true}\n").unwrap();
        assert_eq!(doc.get("a").unwrap().pos, Pos { line: 1, column: 4 });
        let c = doc
            .at(&[Step::Key("b"), Step::Index(1), Step::Key("c")])
            .unwrap();
        assert_eq!(c.value, Value::Bool(true));
        assert_eq!(c.pos, Pos { line: 4, column: 9 });
        assert_eq!(doc.key_pos_at(&[], "b"), Pos { line: 2, column: 1 });
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let doc = parse("v: '007'\nw: 007\nx: \"1.0\"\n").unwrap();
        assert_eq!(doc.get("v").unwrap().value, Value::Str("007".into()));
        assert_eq!(doc.get("x").unwrap().value, Value::Str("1.0".into()));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(!err.message.starts_with("error"), "{}", err.message);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, column: 1 });
        assert!(err.message.contains("duplicate"), "{}", err.message);
        assert!(!err.message.contains("DuplicateKeyPolicy"));
    }

    #[test]
    fn alias_bomb_fails_fast() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.budget);
    }

    #[test]
    fn second_document_is_a_syntax_error_not_a_budget_breach() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(!err.budget, "{}", err.message);
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
    }
}
