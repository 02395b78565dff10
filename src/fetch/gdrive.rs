//! `google-drive` repositories, through the Drive v3 REST API over the same `ureq` client as
//! `http`. A location is a file id (`id:<file id>`) or a path of names below the repository's
//! folder (`1.2.0/app.jar`: version subfolders, then the file), resolved with `files.list`
//! queries (every page read) so a duplicate name is an error rather than a guess. Content
//! comes from `files.get?alt=media`, resumed with `Range`. Access tokens come from the OAuth2
//! token endpoint, by refresh token (client id, secret and refresh token from secrets) or by a
//! service account's RS256-signed JWT assertion; a token is renewed before it expires and once
//! on a 401. Rate limits (429, 403 `rateLimitExceeded`) back off here and then count as
//! transient for the fetch's own retries. No token, secret, assertion or response body ever
//! reaches a message; only Google's error codes do.

use super::{FetchError, Job, cache::Incoming, http};
use crate::secret::SecretString;
use crate::transport::base64;
use std::io::Read;
use std::time::{Duration, Instant};

/// Google's endpoints, used unless the repository names others.
pub const DEFAULT_API_URL: &str = "https://www.googleapis.com/drive/v3";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// Read-only access to file content is all a fetch needs.
const SCOPE: &str = "https://www.googleapis.com/auth/drive.readonly";
const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
/// A token this close to its expiry is renewed first: the download may take a while.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Pauses after rate-limit answers before the fetch's own retry policy takes over.
const RATE_LIMIT_BACKOFF: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// Token and listing answers are small; anything larger is not what Google sends.
const MAX_JSON: u64 = 1 << 20;

/// How a Drive repository authenticates.
#[derive(Debug, Clone)]
pub enum DriveAuth {
    /// OAuth2 refresh-token grant.
    OAuth {
        client_id: SecretString,
        client_secret: SecretString,
        refresh_token: SecretString,
    },
    /// A service account's JSON key (`client_email`, `private_key` in PKCS#8 PEM).
    ServiceAccount { key_json: SecretString },
}

pub(super) struct Drive<'a> {
    pub api_url: &'a str,
    pub token_url: &'a str,
    pub folder_id: Option<&'a str>,
    pub auth: &'a DriveAuth,
}

/// `google-drive:` plus the folder and location, or the file id: for messages and plans.
pub fn describe(folder_id: Option<&str>, location: &str) -> String {
    match (location.strip_prefix("id:"), folder_id) {
        (Some(_), _) | (None, None) => format!("google-drive:{location}"),
        (None, Some(folder)) => format!("google-drive:{folder}/{location}"),
    }
}

/// An access token and when it stops working.
struct Token {
    value: SecretString,
    expires: Instant,
}

/// One fetch's conversation with Drive: the token it holds, renewed as needed.
struct Session<'a> {
    drive: &'a Drive<'a>,
    job: &'a Job<'a>,
    agent: ureq::Agent,
    token: Option<Token>,
}

/// Percent-encoding for a query parameter or form value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A string literal inside a Drive `q` query: `\` and `'` escaped with a backslash.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn base64url(bytes: &[u8]) -> String {
    base64::encode(bytes, false)
        .replace('+', "-")
        .replace('/', "_")
}

/// The body of a PEM block, decoded.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    base64::decode(&body)
}

/// The service account's JWT-bearer assertion, signed RS256.
fn assertion(key_json: &SecretString, token_url: &str, now: u64) -> Result<SecretString, String> {
    let key: serde_json::Value = serde_json::from_str(key_json.expose())
        .map_err(|_| "the service account key is not JSON (a key file from Google Cloud)")?;
    let email = key["client_email"]
        .as_str()
        .ok_or("the service account key has no `client_email`")?;
    let pem = key["private_key"]
        .as_str()
        .ok_or("the service account key has no `private_key`")?;
    let der = SecretBytes(pem_der(pem).ok_or("the service account's `private_key` is not PEM")?);
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der.0)
        .map_err(|_| "the service account's `private_key` is not a PKCS#8 RSA key")?;
    let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": email,
        "scope": SCOPE,
        "aud": token_url,
        "iat": now,
        "exp": now + 3600,
    });
    let input = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing the service account assertion failed")?;
    Ok(SecretString::new(format!(
        "{input}.{}",
        base64url(&signature)
    )))
}

/// Key material that is wiped when dropped.
struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

/// A small JSON answer, read with a size limit.
fn json_body(response: ureq::http::Response<ureq::Body>) -> Option<serde_json::Value> {
    let mut text = String::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_JSON)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// A Google error code (`invalid_grant`, `rateLimitExceeded`, ...) when it is a plain word.
fn word(v: &serde_json::Value) -> Option<String> {
    let s = v.as_str()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| s.to_string())
}

/// The reason of a Drive API error (`{"error": {"errors": [{"reason": ...}], "status": ...}}`).
fn api_reason(body: &serde_json::Value) -> Option<String> {
    let e = &body["error"];
    word(&e["errors"][0]["reason"]).or_else(|| word(&e["status"]))
}

impl Session<'_> {
    fn transfer_error(&self, e: &ureq::Error) -> FetchError {
        let (detail, transient) = http::describe(e);
        self.job.transfer(detail, transient)
    }

    /// A new access token from the token endpoint.
    fn refresh(&mut self) -> Result<(), FetchError> {
        let job = self.job;
        let now = crate::clock::now_secs();
        let (form, what) = match self.drive.auth {
            DriveAuth::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => (
                SecretString::new(format!(
                    "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
                    encode(client_id.expose()),
                    encode(client_secret.expose()),
                    encode(refresh_token.expose())
                )),
                "refresh token",
            ),
            DriveAuth::ServiceAccount { key_json } => {
                let jwt = assertion(key_json, self.drive.token_url, now)
                    .map_err(|p| job.source_problem(p))?;
                (
                    SecretString::new(format!(
                        "grant_type={}&assertion={}",
                        encode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        jwt.expose()
                    )),
                    "service account assertion",
                )
            }
        };
        let response = self
            .agent
            .post(self.drive.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(form.expose())
            .map_err(|e| self.transfer_error(&e))?;
        let status = response.status().as_u16();
        let body = json_body(response);
        let code = body.as_ref().and_then(|b| word(&b["error"]));
        match (status, code.as_deref()) {
            (200, _) => {
                let body = body.unwrap_or_default();
                let value = body["access_token"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        job.transfer("the token endpoint answered without an access_token", false)
                    })?;
                let lifetime = body["expires_in"].as_u64().unwrap_or(3600);
                self.token = Some(Token {
                    value: SecretString::new(value.to_string()),
                    expires: Instant::now() + Duration::from_secs(lifetime),
                });
                Ok(())
            }
            (_, Some("invalid_grant")) => Err(job.auth(match self.drive.auth {
                DriveAuth::OAuth { .. } => "the token endpoint refused the refresh token \
                     (invalid_grant): it was revoked, expired or issued to another client; \
                     authorize again and update the secret"
                    .to_string(),
                DriveAuth::ServiceAccount { .. } => "the token endpoint refused the service \
                     account assertion (invalid_grant): check the key is current and the \
                     machine's clock"
                    .to_string(),
            })),
            (_, Some(code @ ("invalid_client" | "unauthorized_client"))) => Err(job.auth(format!(
                "the token endpoint refused the client id or secret ({code})"
            ))),
            (s, code) if s >= 500 || s == 429 => Err(job.transfer(
                format!(
                    "the token endpoint answered HTTP {s}{}",
                    code.map(|c| format!(" {c}")).unwrap_or_default()
                ),
                true,
            )),
            (s, code) => Err(job.auth(format!(
                "the token endpoint refused the {what}: HTTP {s}{}",
                code.map(|c| format!(" {c}")).unwrap_or_default()
            ))),
        }
    }

    /// The current token, renewed first when it is missing or about to expire.
    fn bearer(&mut self) -> Result<SecretString, FetchError> {
        let fresh = self
            .token
            .as_ref()
            .is_some_and(|t| t.expires > Instant::now() + EXPIRY_MARGIN);
        if !fresh {
            self.refresh()?;
        }
        let token = self.token.as_ref().expect("refreshed");
        Ok(SecretString::new(format!(
            "Bearer {}",
            token.value.expose()
        )))
    }

    /// A Drive API GET with the token, renewed once on a 401, with backoff on rate limits.
    /// Returns the response for any other status.
    fn get(
        &mut self,
        url: &str,
        range: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
        let mut renewed = false;
        let mut limited = 0;
        loop {
            let bearer = self.bearer()?;
            let mut request = self.agent.get(url).header("Authorization", bearer.expose());
            if let Some(r) = range {
                request = request.header("Range", r);
            }
            let response = request.call().map_err(|e| self.transfer_error(&e))?;
            let status = response.status().as_u16();
            if status == 401 {
                if renewed {
                    return Err(self.job.auth(
                        "HTTP 401 from the Drive API even with a new access token".to_string(),
                    ));
                }
                // A token can go stale before its announced expiry (revoked, rotated).
                self.token = None;
                renewed = true;
                continue;
            }
            // A 401 after a good answer is a new staleness, not the same one again.
            renewed = false;
            if status == 429 || status == 403 {
                // The body decides between a rate limit and a real refusal.
                let body = json_body(response);
                let reason = body.as_ref().and_then(api_reason);
                let rate_limited = status == 429
                    || matches!(
                        reason.as_deref(),
                        Some("rateLimitExceeded" | "userRateLimitExceeded")
                    );
                if !rate_limited {
                    return Err(self.job.auth(format!(
                        "HTTP 403{}: the account may not read it (is the file shared with it?)",
                        reason.map(|r| format!(" {r}")).unwrap_or_default()
                    )));
                }
                if let Some(pause) = RATE_LIMIT_BACKOFF.get(limited) {
                    limited += 1;
                    std::thread::sleep(*pause);
                    continue;
                }
                return Err(self.job.transfer(
                    format!(
                        "rate limited by the Drive API (HTTP {status}{}) {} times in a row",
                        reason.map(|r| format!(" {r}")).unwrap_or_default(),
                        limited + 1
                    ),
                    true,
                ));
            }
            return Ok(response);
        }
    }

    /// Every file (or folder, with `folders`) called `name` in `parent`, through all pages.
    fn list(&mut self, parent: &str, name: &str, folders: bool) -> Result<Vec<String>, FetchError> {
        let q = format!(
            "{} in parents and name = {} and trashed = false and mimeType {} {}",
            quote(parent),
            quote(name),
            if folders { "=" } else { "!=" },
            quote(FOLDER_MIME)
        );
        let mut ids = Vec::new();
        let mut page: Option<String> = None;
        // Far more pages than any folder has; a server that pages forever is stopped.
        for _ in 0..1000 {
            let mut url = format!(
                "{}/files?q={}&fields={}&pageSize=100&supportsAllDrives=true&includeItemsFromAllDrives=true",
                self.drive.api_url.trim_end_matches('/'),
                encode(&q),
                encode("nextPageToken,files(id,name)")
            );
            if let Some(p) = &page {
                url.push_str(&format!("&pageToken={}", encode(p)));
            }
            let response = self.get(&url, None)?;
            let status = response.status().as_u16();
            if status != 200 {
                return Err(self.api_status(status, json_body(response)));
            }
            let body = json_body(response)
                .ok_or_else(|| self.job.transfer("files.list answered without JSON", true))?;
            for f in body["files"].as_array().into_iter().flatten() {
                if let Some(id) = f["id"].as_str() {
                    ids.push(id.to_string());
                }
            }
            match body["nextPageToken"].as_str() {
                Some(p) if !p.is_empty() => page = Some(p.to_string()),
                _ => return Ok(ids),
            }
        }
        Err(self.job.transfer("files.list did not stop paging", false))
    }

    fn api_status(&self, status: u16, body: Option<serde_json::Value>) -> FetchError {
        match status {
            404 => self.job.not_found(),
            s if s >= 500 => FetchError::Status {
                repository: self.job.repository.to_string(),
                url: self.job.url.to_string(),
                status: s,
            },
            s => self.job.transfer(
                format!(
                    "the Drive API answered HTTP {s}{}",
                    body.as_ref()
                        .and_then(api_reason)
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default()
                ),
                false,
            ),
        }
    }

    /// The file id a location names.
    fn resolve(&mut self) -> Result<String, FetchError> {
        let location = self.job.location;
        if let Some(id) = location.strip_prefix("id:") {
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(self.job.source_problem(format!(
                    "`{location}` is not a Drive file id (letters, digits, `-` and `_`)"
                )));
            }
            return Ok(id.to_string());
        }
        let Some(folder) = self.drive.folder_id else {
            return Err(self.job.source_problem(
                "a location by name needs the repository's `folder_id` (or give `id:<file id>`)",
            ));
        };
        let mut parent = folder.to_string();
        let names: Vec<&str> = location
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        for (i, name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let ids = self.list(&parent, name, !last)?;
            match ids.len() {
                0 => return Err(self.job.not_found()),
                1 => parent = ids.into_iter().next().expect("one"),
                n => {
                    return Err(self.job.source_problem(format!(
                        "{}: {n} {} named `{name}` in the same folder ({}); Drive allows that, \
                         so the location is ambiguous: remove the duplicates, or give the \
                         location as `id:<file id>`",
                        self.job.url,
                        if last { "files" } else { "folders" },
                        ids.join(", ")
                    )));
                }
            }
        }
        Ok(parent)
    }
}

pub(super) fn download(
    drive: &Drive,
    job: &Job,
    incoming: &mut Incoming,
) -> Result<(), FetchError> {
    let mut session = Session {
        drive,
        job,
        agent: http::agent(),
        token: None,
    };
    let id = session.resolve()?;
    let url = format!(
        "{}/files/{}?alt=media&supportsAllDrives=true",
        drive.api_url.trim_end_matches('/'),
        encode(&id)
    );
    loop {
        let offset = incoming.resume_at();
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let response = session.get(&url, range.as_deref())?;
        match response.status().as_u16() {
            200 => {}
            206 if offset > 0 => {}
            416 if offset > 0 => {
                job.restart(incoming)?;
                continue;
            }
            s => return Err(session.api_status(s, json_body(response))),
        }
        if http::receive(response, offset, job, incoming)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_quote_names() {
        assert_eq!(quote("it's"), r"'it\'s'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            describe(Some("F1"), "1.0/a.jar"),
            "google-drive:F1/1.0/a.jar"
        );
        assert_eq!(describe(Some("F1"), "id:XYZ"), "google-drive:id:XYZ");
    }

    #[test]
    fn error_words_are_plain() {
        assert_eq!(
            word(&serde_json::json!("invalid_grant")).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(word(&serde_json::json!("a token: ya29.x")), None);
    }

    #[test]
    fn a_bad_service_account_key_is_named_without_its_content() {
        let e = assertion(
            &SecretString::new(r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}"#.into()),
            DEFAULT_TOKEN_URL,
            0,
        )
        .unwrap_err();
        assert!(e.contains("not a PKCS#8 RSA key"), "{e}");
        assert!(!e.contains("AAAA"));
    }
}
