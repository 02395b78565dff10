//! Checks that depend on the reconciler operator's own configuration rather than on the
//! repository: where an absolute `file` repository may point (`--allow-file-root DIR`; by
//! default only inside the config repository), and whether credentials may travel over plain
//! `http://` (a warning everywhere, an error for `prod` unless `--allow-http-credentials`).
//! A repository is written through pull requests, so it cannot widen these for itself. Pure:
//! the operator's settings arrive as a value.

use super::{Inventory, Step};
use crate::diag::Diagnostic;
use crate::model::RepositoryType;

/// The operator's settings these checks read.
#[derive(Debug, Clone, Default)]
pub struct OperatorPolicy {
    /// Directories on the reconciler an absolute `file` repository may lie under.
    pub file_roots: Vec<String>,
    /// Credentials over plain `http://` are accepted for `prod` too.
    pub allow_http_credentials: bool,
}

/// The profile whose plain-http credentials are refused, not only warned about.
const STRICT_PROFILE: &str = "prod";

pub fn check(inv: &Inventory, policy: &OperatorPolicy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, doc) in &inv.repositories {
        let r = &doc.value;
        match r.kind {
            RepositoryType::File => {
                let Some(path) = r.path.as_deref().filter(|p| p.starts_with('/')) else {
                    continue;
                };
                if !policy.file_roots.iter().any(|root| under(path, root)) {
                    out.push(
                        Diagnostic::error(
                            "path-escape",
                            &doc.file,
                            doc.pos(&[Step::Key("path")]),
                            format!(
                                "`file` repository `{name}` points at `{path}`, outside the config repository and every allowed root ({})",
                                if policy.file_roots.is_empty() {
                                    "none".to_string()
                                } else {
                                    policy.file_roots.join(", ")
                                }
                            ),
                        )
                        .with_hint(
                            "use a path relative to the config repository, or have the operator allow the directory with --allow-file-root DIR",
                        ),
                    );
                }
            }
            RepositoryType::Http => {
                let plain = r.url.as_deref().is_some_and(|u| {
                    u.get(..7)
                        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
                });
                let credentials = r.auth.as_ref().is_some_and(|a| {
                    a.password.is_some() || a.token.is_some() || a.username.is_some()
                });
                if !(plain && credentials) {
                    continue;
                }
                out.push(
                    Diagnostic::warning(
                        "plain-http-credentials",
                        &doc.file,
                        doc.pos(&[Step::Key("url")]),
                        format!(
                            "repository `{name}` sends its credentials over plain http: anyone on the path can read them"
                        ),
                    )
                    .with_hint("use an https:// URL"),
                );
                if policy.allow_http_credentials {
                    continue;
                }
                for entry in inv.clients.values() {
                    for ((artifact, profile), dep) in &entry.deployments {
                        let repo = dep.value.repository.as_deref().or_else(|| {
                            inv.artifacts
                                .get(artifact)
                                .map(|a| a.value.repository.as_str())
                        });
                        if profile == STRICT_PROFILE && repo == Some(name.as_str()) {
                            out.push(
                                Diagnostic::error(
                                    "plain-http-credentials",
                                    &dep.file,
                                    dep.pos(&[Step::Key("artifact")]),
                                    format!(
                                        "`{STRICT_PROFILE}` deployment of `{artifact}` fetches from `{name}`, which sends credentials over plain http"
                                    ),
                                )
                                .with_hint(
                                    "use an https:// URL, or have the operator accept it with --allow-http-credentials",
                                ),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether absolute `path` is `root` or below it, comparing normalized components (so
/// `/srv/a/../b` is not under `/srv/a`).
fn under(path: &str, root: &str) -> bool {
    let (Some(path), Some(root)) = (normalize(path), normalize(root)) else {
        return false;
    };
    path.len() >= root.len() && path[..root.len()] == root[..]
}

fn normalize(p: &str) -> Option<Vec<&str>> {
    if !p.starts_with('/') {
        return None;
    }
    let mut out = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            part => out.push(part),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_compares_components() {
        assert!(under("/srv/artifacts/x", "/srv/artifacts"));
        assert!(under("/srv/artifacts", "/srv/artifacts/"));
        assert!(!under("/srv/artifacts-other", "/srv/artifacts"));
        assert!(!under("/srv/artifacts/../etc", "/srv/artifacts"));
        assert!(!under("/../srv/artifacts", "/srv/artifacts"));
        assert!(!under("/etc", "relative"));
    }
}
