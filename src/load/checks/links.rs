//! Symbolic links in the config repository: each resolves inside the config root, or the
//! inventory drops it with an error at the link. Reads only the snapshot it is given.

use super::*;

/// Resolves a symlink's target against its folder; `None` when it leaves the config root.
pub(super) fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

pub(super) fn symlinks(snapshot: &Snapshot, inv: &mut Inventory, out: &mut Out) {
    for (path, file) in &snapshot.files {
        let Content::Symlink(target) = &file.content else {
            continue;
        };
        match resolve_link(path, target) {
            None => out.push(
                Diagnostic::error(
                    "path-escape",
                    path,
                    Pos::START,
                    format!("symbolic link points outside the config repository (to `{target}`)"),
                )
                .with_hint("replace the link with the file itself, or point it inside the repository"),
            ),
            Some(resolved) => match (path.strip_prefix("templates/"), snapshot.text(&resolved)) {
                (Some(name), Some(bytes)) if resolved.starts_with("templates/") => {
                    if let Ok(text) = std::str::from_utf8(bytes) {
                        inv.templates.insert(name.to_string(), text.into());
                    }
                }
                _ => out.push(
                    Diagnostic::error(
                        "path-escape",
                        path,
                        Pos::START,
                        format!("symbolic link to `{target}` does not resolve to a file Clarity may read"),
                    )
                    .with_hint("only links between templates under templates/ are followed"),
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_resolution() {
        assert_eq!(
            resolve_link("templates/a/x.j2", "../b.j2").as_deref(),
            Some("templates/b.j2")
        );
        assert_eq!(resolve_link("templates/x.j2", "../../../etc/passwd"), None);
        assert_eq!(resolve_link("templates/x.j2", "/etc/passwd"), None);
    }
}
