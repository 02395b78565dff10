//! Templates: every file under `templates/` compiled once into a sandboxed minijinja
//! environment. Strict mode (an undefined variable is an error naming the template and line),
//! no loader (templates cannot read files), no access to the environment or processes, and a
//! fuel budget so a runaway loop ends with an error instead of hanging a reconcile.

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

impl Templates {
    /// Compiles every template of the inventory; parse errors come back as diagnostics.
    pub fn new(inv: &Inventory) -> (Templates, Vec<Diagnostic>) {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_function("secret", secret_function);
        let mut diags = Vec::new();
        for (name, text) in &inv.templates {
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

    /// Renders `name` with `ctx` (a serializable context) and the secrets of `bag`.
    pub fn render(
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
        tmpl.render(ctx)
            .map_err(|e| TemplateError::from_minijinja(name, &e))
    }
}

fn secret_function(state: &State, name: String) -> Result<String, minijinja::Error> {
    let bag = state
        .lookup(SECRETS_VAR)
        .and_then(|v| v.downcast_object::<SecretBag>())
        .ok_or_else(|| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "secrets are not available here",
            )
        })?;
    bag.get(&name)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
}
