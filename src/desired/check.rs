//! Desired state as a validation step: render every template and resolve every reference for
//! every targeted host, without secrets or a runtime environment, and report what fails as
//! diagnostics. This catches what only shows when values meet templates (an undefined variable
//! in strict mode, a loop that runs out of fuel) before anything is planned.

use super::{Context, InventorySecrets, Selection, Templates};
use crate::diag::{Diagnostic, Pos};
use crate::load::Inventory;
use std::collections::{BTreeMap, BTreeSet};

pub fn check(inv: &Inventory) -> Vec<Diagnostic> {
    let (templates, mut out) = Templates::new(inv);
    // A template that does not compile is reported once, as `template-syntax`; every other
    // template and reference is still checked, so one typo does not hide the other problems.
    let broken: BTreeSet<String> = out.iter().map(|d| d.file.clone()).collect();
    let secrets = InventorySecrets::new(inv, None);
    let ctx = Context {
        env: Default::default(),
        secrets: &secrets,
        lenient_env: true,
        config_root: None,
    };
    // The same broken template or reference fails on every host (and in every deployment)
    // that uses it: report it once, at its position, saying how many more places it breaks.
    let mut found: BTreeMap<(String, u32, String), (super::DesiredError, usize)> = BTreeMap::new();
    for result in super::hosts(inv, &templates, &Selection::default(), &ctx) {
        let Err(errors) = result else { continue };
        for e in errors {
            if broken.contains(&e.file) {
                continue;
            }
            let core = e
                .message
                .split(" (rendering ")
                .next()
                .unwrap_or_default()
                .to_string();
            found
                .entry((e.file.clone(), e.line.unwrap_or(1), core))
                .and_modify(|(_, n)| *n += 1)
                .or_insert((e, 0));
        }
    }
    for ((file, line, _), (e, more)) in found {
        let code = if file.starts_with("templates/") {
            "template-render"
        } else {
            "unresolved-reference"
        };
        let place = match more {
            0 => format!("on server {}", e.server),
            n => format!("on server {} and {n} more", e.server),
        };
        let mut d = Diagnostic::error(
            code,
            &file,
            Pos { line, column: 1 },
            format!("{} ({place})", e.message),
        );
        if let Some(h) = e.hint {
            d = d.with_hint(h);
        }
        out.push(d);
    }
    out
}
