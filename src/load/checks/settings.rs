//! `settings.yml` on its own and against the repository: branch profiles name profiles,
//! trusted key files exist, notify targets are web addresses.

use super::*;

pub(super) fn settings_file(doc: &Doc<Settings>, out: &mut Out) {
    let s = &doc.value;
    let mut seen = BTreeSet::new();
    for (i, p) in s.profiles.iter().enumerate() {
        if !seen.insert(p) {
            out.push(Diagnostic::error(
                "duplicate-id",
                &doc.file,
                doc.pos(&[K("profiles"), I(i)]),
                format!("profile `{p}` is listed twice"),
            ));
        }
    }
    for (i, p) in s.promotion.iter().enumerate() {
        if !s.profiles.contains(p) {
            out.push(
                Diagnostic::error(
                    "unknown-profile",
                    &doc.file,
                    doc.pos(&[K("promotion"), I(i)]),
                    format!("promotion lists `{p}`, which is not a profile"),
                )
                .with_hint(format!("profiles are: {}", s.profiles.join(", "))),
            );
        }
    }
    for (i, root) in s.allowed_absolute_roots.iter().enumerate() {
        if !root.starts_with('/') || root.split('/').any(|c| c == "..") || root.contains('\0') {
            out.push(
                Diagnostic::error(
                    "path-escape",
                    &doc.file,
                    doc.pos(&[K("allowed_absolute_roots"), I(i)]),
                    format!("`{root}` must be an absolute path without `..`"),
                )
                .with_hint("write it like /etc/myapp"),
            );
        }
    }
}

/// Branch profiles name profiles; trusted key files are in the repository; notify targets are
/// web addresses.
pub(super) fn approval_keys(snapshot: &Snapshot, doc: &Doc<Settings>, out: &mut Out) {
    let s = &doc.value;
    for (branch, profiles) in &s.branches {
        for (i, p) in profiles.iter().enumerate() {
            if !s.profiles.contains(p) {
                out.push(
                    Diagnostic::error(
                        "unknown-profile",
                        &doc.file,
                        doc.pos(&[K("branches"), K(branch), I(i)]),
                        format!("branch `{branch}` lists `{p}`, which is not a profile"),
                    )
                    .with_hint(format!("profiles are: {}", s.profiles.join(", "))),
                );
            }
        }
    }
    for (i, path) in s.approval.trusted_keys.iter().enumerate() {
        let pos = doc.pos(&[K("approval"), K("trusted_keys"), I(i)]);
        if let Some(problem) = relative_path_problem(path) {
            out.push(
                Diagnostic::error(
                    "path-escape",
                    &doc.file,
                    pos,
                    format!("trusted key file `{path}` {problem}"),
                )
                .with_hint(
                    "name a file relative to the repository root, like keys/allowed_signers",
                ),
            );
        } else if !snapshot
            .files
            .get(path.as_str())
            .is_some_and(|f| matches!(f.content, Content::File(_)))
        {
            out.push(
                Diagnostic::error(
                    "unknown-file",
                    &doc.file,
                    pos,
                    format!("trusted key file `{path}` is not in the repository"),
                )
                .with_hint(
                    "commit the SSH allowed_signers file or armored OpenPGP key it names, under keys/",
                ),
            );
        }
    }
    for (i, target) in s.notify.iter().enumerate() {
        let url = target.url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            out.push(
                Diagnostic::error(
                    "invalid-url",
                    &doc.file,
                    doc.pos(&[K("notify"), I(i), K("url")]),
                    format!("notify url `{url}` is not an http:// or https:// address"),
                )
                .with_hint("webhooks are posted JSON over HTTP"),
            );
        }
    }
}
