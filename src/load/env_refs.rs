//! Which `${ENV:NAME}` references a repository may make: only names the reconciler's own
//! configuration allows (`--allow-env NAME` or `CLARITY_ALLOW_ENV`), by default none, because a
//! repository is written through pull requests and its plans are printed in CI logs. A
//! reference to any other name is an error at its position. Pure: the allowed names arrive as
//! a value; this module never reads the environment.

use super::Inventory;
use super::yaml::{Node, Value};
use crate::diag::Diagnostic;
use crate::model::reference::{self, RefKind};

/// One error per string value of a deployment file that names a variable not in `allowed`.
pub fn check(inv: &Inventory, allowed: &[String]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for entry in inv.clients.values() {
        for doc in entry.deployments.values() {
            walk(&doc.node, &doc.file, allowed, &mut out);
        }
    }
    out
}

fn walk(node: &Node, file: &str, allowed: &[String], out: &mut Vec<Diagnostic>) {
    match &node.value {
        Value::Str(s) => {
            // Malformed references are reported by the reference checks already.
            let Ok(refs) = reference::references(s) else {
                return;
            };
            for r in refs {
                if r.kind == RefKind::Env && !allowed.contains(&r.arg) {
                    out.push(
                        Diagnostic::error(
                            "env-not-allowed",
                            file,
                            node.pos,
                            format!(
                                "`${{ENV:{}}}`: the reconciler does not allow reading `{}` (allowed: {})",
                                r.arg,
                                r.arg,
                                allowed_list(allowed)
                            ),
                        )
                        .with_hint(format!(
                            "a repository cannot choose which environment variables it reads; the operator allows one with `--allow-env {}` (or CLARITY_ALLOW_ENV) on the reconciler and in CI",
                            r.arg
                        )),
                    );
                }
            }
        }
        Value::Seq(items) => items.iter().for_each(|n| walk(n, file, allowed, out)),
        Value::Map(entries) => entries
            .iter()
            .for_each(|e| walk(&e.value, file, allowed, out)),
        _ => {}
    }
}

/// `--allow-env` names for a message.
pub fn allowed_list(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "none; the reconciler allows names with --allow-env".to_string()
    } else {
        allowed.join(", ")
    }
}
