//! Validation of the repository fields that `s3`, `google-drive` and header-authenticated
//! `http` repositories add: which fields apply to which `type` and auth, which come in pairs,
//! and which must be URLs or HTTP header names. Called once from
//! `checks::repositories::repository`; it only reads the parsed document and reports
//! diagnostics at the field to edit, and must not do I/O.

use super::Doc;
use super::checks::FieldRule;
use super::yaml::Step::Key as K;
use crate::diag::Diagnostic;
use crate::model::{AuthType, Repository, RepositoryType};

type Out = Vec<Diagnostic>;

pub(super) fn check(doc: &Doc<Repository>, rule: &FieldRule, out: &mut Out) {
    let r = &doc.value;
    let t = r.kind;
    use RepositoryType as T;
    rule.forbid(out, r.path_style.is_some() && t != T::S3, "path_style");
    rule.forbid(
        out,
        r.session_token.is_some() && t != T::S3,
        "session_token",
    );
    rule.forbid(
        out,
        r.token_url.is_some() && t != T::GoogleDrive,
        "token_url",
    );
    rule.forbid(out, r.api_url.is_some() && t != T::GoogleDrive, "api_url");
    for (field, value) in [
        ("endpoint", &r.endpoint),
        ("token_url", &r.token_url),
        ("api_url", &r.api_url),
    ] {
        if let Some(url) = value
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            out.push(
                Diagnostic::error(
                    "invalid-value",
                    &doc.file,
                    doc.pos(&[K(field)]),
                    format!("`{field}` `{url}` is not an http(s) URL"),
                )
                .with_hint("write it like https://storage.example.net"),
            );
        }
    }
    if r.max_download_size == Some(0) {
        out.push(
            Diagnostic::error(
                "invalid-value",
                &doc.file,
                doc.pos(&[K("max_download_size")]),
                "`max_download_size` is 0, so no download without a declared size could succeed",
            )
            .with_hint("give a size in bytes, or remove it for the default (4 GiB)"),
        );
    }
    match t {
        T::S3 => {
            let (id, key) = (r.access_key_id.is_some(), r.secret_access_key.is_some());
            if id != key {
                rule.require(out, id, "access_key_id");
                rule.require(out, key, "secret_access_key");
            }
            if r.session_token.is_some() {
                rule.require(out, id, "access_key_id");
            }
        }
        T::GoogleDrive => google_drive(doc, rule, out),
        _ => {}
    }
    if let Some(auth) = &r.auth {
        auth_fields(doc, auth, out);
    }
}

fn google_drive(doc: &Doc<Repository>, rule: &FieldRule, out: &mut Out) {
    let r = &doc.value;
    match (&r.auth, &r.service_account) {
        (None, None) => out.push(
            Diagnostic::error(
                "missing-field",
                &doc.file,
                doc.pos(&[]),
                "a `google-drive` repository needs `auth` (`oauth` or `service-account`)",
            )
            .with_hint(
                "add `auth: {type: oauth, client_id: {secret: ...}, client_secret: {secret: ...}, \
                 refresh_token: {secret: ...}}`",
            ),
        ),
        (Some(_), Some(_)) => rule.forbid(out, true, "service_account"),
        _ => {}
    }
}

/// The fields of the auth kinds this file adds, and that they appear with no other kind.
fn auth_fields(doc: &Doc<Repository>, auth: &crate::model::RepositoryAuth, out: &mut Out) {
    let k = auth.kind;
    let rule = FieldRule {
        file: &doc.file,
        doc: &doc.node,
        base: vec![K("auth")],
        what: format!("`{}` auth", k.as_str()),
    };
    let fields: [(&str, bool, AuthType); 6] = [
        ("header", auth.header.is_some(), AuthType::Header),
        ("value", auth.value.is_some(), AuthType::Header),
        ("client_id", auth.client_id.is_some(), AuthType::Oauth),
        (
            "client_secret",
            auth.client_secret.is_some(),
            AuthType::Oauth,
        ),
        (
            "refresh_token",
            auth.refresh_token.is_some(),
            AuthType::Oauth,
        ),
        ("key", auth.key.is_some(), AuthType::ServiceAccount),
    ];
    for (field, present, kind) in fields {
        if kind == k {
            rule.require(out, present, field);
        } else {
            rule.forbid(out, present, field);
        }
    }
    if let Some(name) = &auth.header
        && k == AuthType::Header
        && let Some(problem) = header_name_problem(name)
    {
        out.push(
            Diagnostic::error(
                "invalid-value",
                &doc.file,
                doc.pos(&[K("auth"), K("header")]),
                format!("`header` `{name}` {problem}"),
            )
            .with_hint("a header name like X-JFrog-Art-Api"),
        );
    }
}

/// Why `name` cannot be an HTTP header name (RFC 9110 `token`), if it cannot.
fn header_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Some("is not an HTTP header name (letters, digits and `-` as a rule)");
    }
    let lower = name.to_ascii_lowercase();
    // Headers the HTTP client or the download itself sets: a secret there would be overwritten
    // or would break the transfer.
    if [
        "host",
        "range",
        "content-length",
        "accept-encoding",
        "connection",
    ]
    .contains(&&*lower)
    {
        return Some("is set by the download itself");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::header_name_problem;

    #[test]
    fn header_names() {
        assert_eq!(header_name_problem("X-JFrog-Art-Api"), None);
        assert_eq!(header_name_problem("Authorization"), None);
        assert!(header_name_problem("").is_some());
        assert!(header_name_problem("X Api").is_some());
        assert!(header_name_problem("X:Api").is_some());
        assert!(header_name_problem("Range").is_some());
    }
}
