//! `s3` repositories: Amazon S3 and S3-compatible stores, over the same `ureq` client as
//! `http`, each request signed with AWS Signature Version 4 (`sigv4`). An object is
//! `<prefix>/<location>` in the bucket, addressed virtual-hosted style
//! (`https://<bucket>.<endpoint host>/<key>`) or path style (`<endpoint>/<bucket>/<key>`).
//! Without credentials requests go unsigned (a public bucket). An interrupted download goes
//! on with `Range`. Errors name the bucket and key and the store's error code, never the
//! response body (a `SignatureDoesNotMatch` answer echoes what was signed), and no credential
//! or signature ever reaches a message.

use super::{FetchError, Job, cache::Incoming, http, sigv4};
use crate::secret::SecretString;
use std::io::Read;
use ureq::http::Uri;

/// Credentials for signing.
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
    /// For temporary credentials (STS).
    pub session_token: Option<SecretString>,
}

/// Where a bucket is.
pub(super) struct Bucket<'a> {
    /// `https://s3.<region>.amazonaws.com` unless the repository names another.
    pub endpoint: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
    pub prefix: &'a str,
    pub path_style: bool,
    pub credentials: Option<&'a S3Credentials>,
}

/// The object key for `location`: the prefix and the location joined by one `/`.
pub(super) fn key(prefix: &str, location: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        location.to_string()
    } else {
        format!("{prefix}/{location}")
    }
}

/// The endpoint used when a repository names none.
pub(super) fn default_endpoint(region: &str) -> String {
    format!("https://s3.{region}.amazonaws.com")
}

/// The object's URL and the `Host` it is signed for.
fn object_url(b: &Bucket, key: &str) -> Result<(String, String), String> {
    let endpoint: Uri = b
        .endpoint
        .parse()
        .map_err(|_| format!("`endpoint` `{}` is not a URL", b.endpoint))?;
    let scheme = endpoint.scheme_str().unwrap_or("https");
    let authority = endpoint
        .authority()
        .ok_or_else(|| format!("`endpoint` `{}` has no host", b.endpoint))?
        .as_str();
    if authority.contains('@') {
        return Err("`endpoint` carries credentials; give them as secrets instead".into());
    }
    let base_path = endpoint.path().trim_end_matches('/');
    let path = sigv4::encode_path(key);
    Ok(if b.path_style {
        (
            format!("{scheme}://{authority}{base_path}/{}/{path}", b.bucket),
            authority.to_string(),
        )
    } else {
        let host = format!("{}.{authority}", b.bucket);
        (format!("{scheme}://{host}{base_path}/{path}"), host)
    })
}

/// The `<Code>` of an S3 error document, when the body has one. Only the code is ever shown.
fn error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = start + body[start..].find("</Code>")?;
    let code = &body[start..end];
    code.bytes()
        .all(|c| c.is_ascii_alphanumeric())
        .then(|| code.to_string())
}

pub(super) fn download(b: &Bucket, job: &Job, incoming: &mut Incoming) -> Result<(), FetchError> {
    let key = key(b.prefix, job.location);
    let (url, host) = object_url(b, &key).map_err(|p| job.source_problem(p))?;
    let uri: Uri = url
        .parse()
        .map_err(|_| job.source_problem(format!("`{}` is not a usable URL", job.url)))?;
    let agent = http::agent();
    loop {
        let offset = incoming.resume_at();
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let now = crate::clock::now_secs();
        let date = sigv4::amz_date(now);
        let mut request = agent.get(&uri);
        if let Some(r) = &range {
            request = request.header("Range", r.as_str());
        }
        if let Some(c) = b.credentials {
            let mut headers: Vec<(&str, &str)> = vec![
                ("host", &host),
                ("x-amz-content-sha256", sigv4::EMPTY_PAYLOAD_SHA256),
                ("x-amz-date", &date),
            ];
            if let Some(r) = &range {
                headers.push(("range", r));
            }
            if let Some(t) = &c.session_token {
                headers.push(("x-amz-security-token", t.expose()));
            }
            let authorization = SecretString::new(
                sigv4::Signer {
                    access_key_id: c.access_key_id.expose(),
                    secret_access_key: c.secret_access_key.expose(),
                    region: b.region,
                    service: "s3",
                }
                .authorization(&sigv4::Request {
                    method: "GET",
                    path: uri.path(),
                    query: "",
                    headers: &headers,
                    payload_sha256: sigv4::EMPTY_PAYLOAD_SHA256,
                    amz_date: &date,
                }),
            );
            request = request
                .header("x-amz-content-sha256", sigv4::EMPTY_PAYLOAD_SHA256)
                .header("x-amz-date", &date)
                .header("Authorization", authorization.expose());
            if let Some(t) = &c.session_token {
                request = request.header("x-amz-security-token", t.expose());
            }
        }
        let response = request.call().map_err(|e| {
            let (detail, transient) = http::describe(&e);
            job.transfer(detail, transient)
        })?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            206 if offset > 0 => {}
            416 if offset > 0 => {
                job.restart(incoming)?;
                continue;
            }
            _ => return Err(refusal(b, &key, job, response)),
        }
        if http::receive(response, offset, job, incoming)? {
            return Ok(());
        }
    }
}

/// The error for an answer that is not the object, from its status and S3 error code.
fn refusal(
    b: &Bucket,
    key: &str,
    job: &Job,
    response: ureq::http::Response<ureq::Body>,
) -> FetchError {
    let status = response.status().as_u16();
    let mut body = String::new();
    let _ = response
        .into_body()
        .into_reader()
        .take(64 * 1024)
        .read_to_string(&mut body);
    let code = error_code(&body);
    let code_text = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
    let object = format!("bucket `{}`, key `{key}`", b.bucket);
    match (status, code.as_deref()) {
        (404, Some("NoSuchBucket")) => job.source_problem(format!(
            "{}: HTTP 404 NoSuchBucket: the store has no bucket `{}`",
            job.url, b.bucket
        )),
        (404, _) => job.not_found(),
        (401 | 403, _) => job.auth(match b.credentials {
            None => format!(
                "HTTP {status}{code_text} for {object}: the store wants credentials and the \
                 repository has none"
            ),
            Some(_) => format!(
                "HTTP {status}{code_text} for {object}: the store refused the repository's \
                 credentials (check `access_key_id`, `secret_access_key` and `region`)"
            ),
        }),
        (301 | 307, _) => job.source_problem(format!(
            "{}: HTTP {status}{code_text}: the bucket is in another region or needs another \
             endpoint (check `region` and `endpoint`)",
            job.url
        )),
        _ => FetchError::Status {
            repository: job.repository.to_string(),
            url: job.url.to_string(),
            status,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_urls() {
        assert_eq!(key("", "a/b.jar"), "a/b.jar");
        assert_eq!(key("/releases/", "b.jar"), "releases/b.jar");
        let b = Bucket {
            endpoint: "http://127.0.0.1:9000",
            bucket: "art",
            region: "us-east-1",
            prefix: "",
            path_style: true,
            credentials: None,
        };
        assert_eq!(
            object_url(&b, "r/app 1.jar").unwrap(),
            (
                "http://127.0.0.1:9000/art/r/app%201.jar".to_string(),
                "127.0.0.1:9000".to_string()
            )
        );
        let b = Bucket {
            path_style: false,
            endpoint: "https://s3.eu-west-1.amazonaws.com",
            ..b
        };
        assert_eq!(
            object_url(&b, "x").unwrap().0,
            "https://art.s3.eu-west-1.amazonaws.com/x"
        );
    }

    #[test]
    fn only_the_error_code_is_taken_from_a_body() {
        let body =
            "<Error><Code>SignatureDoesNotMatch</Code><StringToSign>AWS4…</StringToSign></Error>";
        assert_eq!(error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code("<Code>a b</Code>"), None);
        assert_eq!(error_code("nothing"), None);
    }
}
