//! Templates: every file under `templates/` compiled once into a sandboxed minijinja
//! environment. Strict mode (an undefined variable is an error naming the template and line),
//! no loader (templates cannot read files), no access to the environment or processes, and a
//! fuel budget so a runaway loop ends with an error instead of hanging a reconcile.
//!
//! A secret is opaque inside a template: `secret("name")` yields an object whose only text is a
//! one-character marker (a private-use code point standing for that secret), so filters,
//! slicing, loops and error messages only ever see the marker. The marker is replaced by the
//! value after rendering, in the finished text, and by `secret `name`` in error messages. The
//! rendered text of one template is limited in size.

use crate::diag::{Diagnostic, Pos};
use crate::load::Inventory;
use crate::secret::SecretString;
use minijinja::value::{Object, Value};
use minijinja::{Environment, State, UndefinedBehavior};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Steps a single render may take; generous for config files, small enough to stop a loop
/// over `range(10**9)`.
const FUEL: u64 = 5_000_000;

/// Name under which the per-render secrets travel in the context; not a documented variable.
const SECRETS_VAR: &str = "__clarity_secrets";

/// The largest text one template may render; far above any config file, far below what
/// would let a template exhaust the reconciler's (or a CI runner's) memory.
pub const MAX_RENDERED_BYTES: usize = 4 << 20;

/// Secret `i` of a bag is marked by code point `MARKER_BASE + i` (Supplementary Private Use
/// Area-A): one character, unchanged by case filters, reversing or joining.
const MARKER_BASE: u32 = 0xF0000;
const MARKER_LAST: u32 = 0xFFFFD;

pub struct Templates {
    env: Environment<'static>,
}

/// A template that failed to parse or render, with its position.
#[derive(Debug, Clone)]
pub struct TemplateError {
    pub template: String,
    pub line: Option<u32>,
    pub message: String,
}

impl TemplateError {
    fn from_minijinja(name: &str, e: &minijinja::Error) -> TemplateError {
        let mut message = e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.kind().to_string());
        if e.kind() == minijinja::ErrorKind::UndefinedError && e.detail().is_none() {
            message = "undefined value (templates run in strict mode)".into();
        }
        TemplateError {
            template: e.name().unwrap_or(name).to_string(),
            line: e.line().map(|l| l as u32),
            message,
        }
    }

    pub fn file(&self) -> String {
        format!("templates/{}", self.template)
    }
}

/// The secrets one render may use, by name. `None` means no identity could decrypt it: the
/// render then inserts a placeholder and the result is marked as not exactly known.
#[derive(Debug, Default)]
pub struct SecretBag {
    pub values: BTreeMap<String, Result<Option<SecretString>, String>>,
}

impl SecretBag {
    pub const PLACEHOLDER_PREFIX: &str = "«secret:";

    pub fn placeholder(name: &str) -> String {
        format!("{}{name}»", SecretBag::PLACEHOLDER_PREFIX)
    }

    /// The value to insert for `name`.
    pub fn get(&self, name: &str) -> Result<String, String> {
        match self.values.get(name) {
            Some(Ok(Some(v))) => Ok(v.expose().to_string()),
            Some(Ok(None)) => Ok(SecretBag::placeholder(name)),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!(
                "secret `{name}` is not defined for this client and profile"
            )),
        }
    }

    /// The marker standing for `name` in text that is not finished yet (template output,
    /// resolved configuration); `reveal` turns it into the value. Fails like `get`.
    pub fn marker(&self, name: &str) -> Result<char, String> {
        self.get(name).map(drop)?;
        let index = self.values.keys().position(|k| k == name).unwrap_or(0);
        Ok(u32::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(MARKER_BASE))
            .filter(|c| *c <= MARKER_LAST)
            .and_then(char::from_u32)
            .unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    fn name_of(&self, c: char) -> Option<&str> {
        let i = (c as u32).checked_sub(MARKER_BASE)?;
        self.values.keys().nth(i as usize).map(String::as_str)
    }

    /// The finished text: every marker replaced by its secret's value (or placeholder), in one
    /// pass, so a value that happens to contain a marker character is not expanded again.
    pub fn reveal(&self, text: &str) -> String {
        if !text.chars().any(|c| self.name_of(c).is_some()) {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match self.name_of(c) {
                Some(name) => out.push_str(&self.get(name).unwrap_or_default()),
                None => out.push(c),
            }
        }
        out
    }

    /// A message that may contain markers (an engine error), with each marker named instead:
    /// never the value.
    /// Engine messages quote names with `Debug`, which writes a marker as `\u{f0000}`: both
    /// spellings are named.
    pub fn describe(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(c) = rest.chars().next() {
            let escaped = rest
                .strip_prefix("\\u{")
                .and_then(|r| r.split_once('}'))
                .and_then(|(hex, after)| {
                    let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                    Some((self.name_of(c)?, after))
                });
            if let Some((name, after)) = escaped {
                out.push_str(&format!("«secret `{name}`»"));
                rest = after;
                continue;
            }
            match self.name_of(c) {
                Some(name) => out.push_str(&format!("«secret `{name}`»")),
                None => out.push(c),
            }
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Everything that must be redacted from output rendered with this bag.
    pub fn redactions(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|(name, v)| match v {
                Ok(Some(s)) => s.expose().to_string(),
                _ => SecretBag::placeholder(name),
            })
            .collect()
    }

    /// True when every secret could be decrypted.
    pub fn complete(&self) -> bool {
        self.values.values().all(|v| matches!(v, Ok(Some(_))))
    }
}

// The bag renders as `(sensitive)` if a template prints the hidden variable itself.
impl Object for SecretBag {
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        f.write_str("(sensitive)")
    }
}

/// What `secret("name")` gives a template: opaque, its only text the marker.
#[derive(Debug)]
struct OpaqueSecret(char);

impl Object for OpaqueSecret {
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        use std::fmt::Write;
        f.write_char(self.0)
    }
}

/// The rendering's sink: refuses to grow past [`MAX_RENDERED_BYTES`].
struct Bounded {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered output too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Templates {
    /// Compiles every template of the inventory; parse errors and the static rules of
    /// `template_scan` come back as diagnostics.
    pub fn new(inv: &Inventory) -> (Templates, Vec<Diagnostic>) {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_function("secret", secret_function);
        let mut diags = Vec::new();
        for (name, text) in &inv.templates {
            diags.extend(super::template_scan::check(name, text));
            if let Err(e) = env.add_template_owned(name.clone(), text.to_string()) {
                let err = TemplateError::from_minijinja(name, &e);
                diags.push(
                    Diagnostic::error(
                        "template-syntax",
                        &err.file(),
                        Pos {
                            line: err.line.unwrap_or(1),
                            column: 1,
                        },
                        err.message,
                    )
                    .with_hint(
                        "templates use minijinja (Jinja2) syntax: {{ value }}, {% if %}, {% for %}",
                    ),
                );
            }
        }
        (Templates { env }, diags)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders `name` with `ctx` (a serializable context) and the secrets of `bag`: the
    /// finished text, secrets in place.
    pub fn render(
        &self,
        name: &str,
        ctx: &minijinja::Value,
        bag: &Arc<SecretBag>,
    ) -> Result<String, TemplateError> {
        self.render_marked(name, ctx, bag).map(|t| bag.reveal(&t))
    }

    /// Like `render`, but secrets are still markers (for text that goes on into another
    /// substitution); errors never contain a value, only secret names.
    pub fn render_marked(
        &self,
        name: &str,
        ctx: &minijinja::Value,
        bag: &Arc<SecretBag>,
    ) -> Result<String, TemplateError> {
        let tmpl = self.env.get_template(name).map_err(|e| TemplateError {
            template: name.to_string(),
            line: None,
            message: e.to_string(),
        })?;
        let ctx = minijinja::context! { ..ctx.clone(), ..minijinja::context! { __clarity_secrets => Value::from_dyn_object(bag.clone()) } };
        let mut sink = Bounded {
            text: Vec::new(),
            overflowed: false,
        };
        match tmpl.render_captured_to(ctx, &mut sink) {
            Ok(_) => String::from_utf8(sink.text).map_err(|_| TemplateError {
                template: name.to_string(),
                line: None,
                message: "the rendered text is not UTF-8".into(),
            }),
            Err(_) if sink.overflowed => Err(TemplateError {
                template: name.to_string(),
                line: None,
                message: format!(
                    "the rendered text exceeds the limit of {} MiB per template",
                    MAX_RENDERED_BYTES >> 20
                ),
            }),
            Err(e) => {
                let mut err = TemplateError::from_minijinja(name, &e);
                err.message = bag.describe(&err.message);
                Err(err)
            }
        }
    }
}

fn secret_function(state: &State, name: String) -> Result<Value, minijinja::Error> {
    let bag = state
        .lookup(SECRETS_VAR)
        .and_then(|v| v.downcast_object::<SecretBag>())
        .ok_or_else(|| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "secrets are not available here",
            )
        })?;
    bag.marker(&name)
        .map(|c| Value::from_object(OpaqueSecret(c)))
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "Hunter2-canary";

    fn templates(src: &str) -> (Templates, Vec<Diagnostic>) {
        let mut inv = Inventory::default();
        inv.templates.insert("t.j2".into(), Arc::from(src));
        Templates::new(&inv)
    }

    fn bag() -> Arc<SecretBag> {
        let mut values = BTreeMap::new();
        values.insert(
            "pw".to_string(),
            Ok(Some(SecretString::from(VALUE.to_string()))),
        );
        Arc::new(SecretBag { values })
    }

    fn render(src: &str) -> Result<String, TemplateError> {
        templates(src).0.render("t.j2", &Value::UNDEFINED, &bag())
    }

    #[test]
    fn a_secret_emitted_whole_is_its_value() {
        assert_eq!(
            render("pw={{ secret(\"pw\") }}\n").unwrap(),
            format!("pw={VALUE}\n")
        );
    }

    // validate refuses these (template_scan); even if one renders, the engine never holds the
    // value, so no transformation or error can show it.
    #[test]
    fn transformations_never_see_the_value() {
        for src in [
            "{{ secret(\"pw\")|upper }}",
            "{{ secret(\"pw\")|lower }}",
            "{{ secret(\"pw\")|reverse }}",
            "{{ secret(\"pw\")|list|join(\",\") }}",
            "{{ (secret(\"pw\")|string)[1:4] }}",
            "{% for c in secret(\"pw\")|string %}{{ c }}.{% endfor %}",
            "{% include secret(\"pw\") %}",
            "{% import secret(\"pw\") as m %}",
            "{% extends secret(\"pw\") %}",
            "{{ secret(\"pw\")|length }}",
            "{{ secret(\"pw\")|title|replace(\"H\", \"h\") }}",
        ] {
            let (_, diags) = templates(src);
            assert!(
                diags.iter().any(|d| d.code == "secret-misuse"),
                "{src}: not refused statically"
            );
            match render(src) {
                Ok(text) => {
                    // At most the whole value, never a piece or a transformation of it.
                    let rest = text.replace(VALUE, "");
                    let lower = rest.to_lowercase();
                    for piece in VALUE.to_lowercase().as_bytes().windows(3) {
                        let piece = std::str::from_utf8(piece).unwrap();
                        let rev: String = piece.chars().rev().collect();
                        assert!(!lower.contains(piece), "{src} gave {text}");
                        assert!(!lower.contains(&rev), "{src} gave {text}");
                    }
                    assert!(
                        !lower.contains("h,u") && !lower.contains("h.u"),
                        "{src} gave {text}"
                    );
                }
                Err(e) => {
                    assert!(!e.message.contains(VALUE), "{src}: {}", e.message);
                    assert!(!e.message.contains("unt"), "{src}: {}", e.message);
                }
            }
        }
    }

    #[test]
    fn render_errors_name_the_secret_not_the_value() {
        for src in [
            "{% include secret(\"pw\")|string %}",
            "{% extends secret(\"pw\")|string %}",
            "{{ secret(\"pw\") ~ undefined_thing }}",
        ] {
            let e = render(src).unwrap_err();
            eprintln!("{src}: {}", e.message);
            assert!(!e.message.contains(VALUE), "{}", e.message);
        }
        let e = render("{% include secret(\"pw\")|string %}").unwrap_err();
        assert!(e.message.contains("secret `pw`"), "{}", e.message);
    }

    #[test]
    fn rendered_output_is_limited() {
        // Within minijinja's own repeat limit, far beyond ours.
        let src = "{% for i in range(100) %}{{ \"A\" * 10000 }}{{ \"B\" * 10000 }}{{ \"C\" * 10000 }}{% endfor %}{% for i in range(100) %}{% for j in range(20) %}{{ \"D\" * 10000 }}{% endfor %}{% endfor %}";
        let (_, diags) = templates(src);
        assert!(diags.is_empty(), "{diags:?}");
        let e = render(src).unwrap_err();
        assert!(e.message.contains("exceeds the limit"), "{}", e.message);
    }
}
