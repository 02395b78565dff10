//! Credentials in URLs kept out of messages: the one place that finds the user information
//! (`user:password@`) of every `scheme://` URL in a text and puts a marker in its stead, so a
//! token in a repository, health-check or artifact URL never reaches a log, a note or the
//! ledger. Pure text in, text out: it never decides which marker a caller shows.

/// `text` with the user information of every `scheme://` URL in it replaced by `marker`
/// (`"***@"`, `"(sensitive)@"`, or `""` to drop it). A URL's authority ends at `/`, `?`, `#`,
/// white space, a quote or a backtick, so the URL may stand inside an error message; an `@`
/// after the authority (in a path or a query) is left alone.
pub fn hide(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str(marker);
                out.push_str(&tail[at + 1..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::hide;

    #[test]
    fn user_information_gives_way_to_the_marker() {
        assert_eq!(
            hide(
                "fatal: unable to access 'https://ci:s3cr3t@git.example.net/ops.git/': 403",
                "***@"
            ),
            "fatal: unable to access 'https://***@git.example.net/ops.git/': 403"
        );
        assert_eq!(hide("ssh://git@host/repo", "***@"), "ssh://***@host/repo");
        assert_eq!(
            hide("http://u:pw@127.0.0.1:8080/health?x=a@b", "(sensitive)@"),
            "http://(sensitive)@127.0.0.1:8080/health?x=a@b"
        );
        assert_eq!(hide("http://a@b@h/x", ""), "http://h/x");
    }

    #[test]
    fn every_url_in_a_text_is_covered() {
        assert_eq!(
            hide("from https://a:b@one/x to sftp://c:d@two:22", "***@"),
            "from https://***@one/x to sftp://***@two:22"
        );
    }

    #[test]
    fn an_at_sign_outside_the_authority_stays() {
        for text in [
            "/srv/config",
            "git@host:ops/config.git",
            "http://h/p@q",
            "http://h?next=a@b",
            "http://h#a@b",
            "http://h",
        ] {
            assert_eq!(hide(text, "***@"), text);
        }
    }
}
