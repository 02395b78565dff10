//! Desired state as a validation step: render every template and resolve every reference for
//! every targeted host, without secrets or a runtime environment, and report what fails as
//! diagnostics. This catches what only shows when values meet templates (an undefined variable
//! in strict mode, a loop that runs out of fuel) before anything is planned.

use super::{Context, InventorySecrets, Selection, Templates};
use crate::diag::{Diagnostic, Pos};
use crate::load::Inventory;
use std::collections::BTreeSet;

/// `allowed_env` are the `${ENV:..}` names the reconciler allows (`--allow-env`).
pub fn check(inv: &Inventory, allowed_env: &[String]) -> Vec<Diagnostic> {
    let (templates, mut out) = Templates::new(inv);
    if !out.is_empty() {
        return out;
    }
    let secrets = InventorySecrets::new(inv, None);
    let ctx = Context {
        env: Default::default(),
        allowed_env: allowed_env.to_vec(),
        secrets: &secrets,
        lenient_env: true,
        config_root: None,
    };
    let mut seen = BTreeSet::new();
    for result in super::hosts(inv, &templates, &Selection::default(), &ctx) {
        let Err(errors) = result else { continue };
        for e in errors {
            // The same broken template fails on every host that uses it: report it once.
            if !seen.insert((e.file.clone(), e.line, e.message.clone())) {
                continue;
            }
            let code = if e.file.starts_with("templates/") {
                "template-render"
            } else {
                "unresolved-reference"
            };
            let mut d = Diagnostic::error(
                code,
                &e.file,
                Pos {
                    line: e.line.unwrap_or(1),
                    column: 1,
                },
                format!("{} (on server {})", e.message, e.server),
            );
            if let Some(h) = e.hint {
                d = d.with_hint(h);
            }
            out.push(d);
        }
    }
    out
}
