//! `repositories/<name>.yml`: where artifacts are fetched from (file, http, sftp, ftp, s3,
//! google-drive) and the secret references of their credentials. File types only (serde and
//! schema); fetching lives in `fetch`.

use super::SecretRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `repositories/<name>.yml`: where artifact files are fetched from. Credentials are only ever
/// references to secrets, resolved in the deploying client's secrets for the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// Name; must equal the file name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub name: String,
    /// Protocol. Fields that apply: `http` url, auth; `sftp` host, port, path, username, auth,
    /// host_key; `ftp` host, port, path, username, password, passive; `file` path; `s3` bucket,
    /// region, endpoint, path_style, prefix, access_key_id, secret_access_key, session_token;
    /// `google-drive` folder_id, auth (`oauth` or `service-account`), token_url, api_url.
    /// Every kind: max_download_size. See docs/repositories.md.
    #[serde(rename = "type")]
    pub kind: RepositoryType,
    /// Base URL (`http`); artifact locations are appended to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Server host name (`sftp`, `ftp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Server port (`sftp` default 22, `ftp` default 21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Base directory (`sftp`, `ftp`, `file`). For `file`, a relative path is resolved against
    /// the config root and may not leave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Login name (`sftp`, `ftp`; `ftp` without it logs in anonymously).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password secret (`ftp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Passive mode (`ftp`, default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<bool>,
    /// Authentication (`http`, `sftp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RepositoryAuth>,
    /// Pinned server host key in `known_hosts` form (`sftp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Bucket (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Region (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores (`s3`); default
    /// `https://s3.<region>.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing, `<endpoint>/<bucket>/<key>` (`s3`); default false (the bucket is
    /// a subdomain of the endpoint), true is what most S3-compatible stores want.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Key prefix (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Access key id secret (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<SecretRef>,
    /// Secret access key secret (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretRef>,
    /// Session token secret for temporary credentials (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretRef>,
    /// Folder id that locations are names in (`google-drive`); a location `id:<file id>`
    /// needs no folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_id: Option<String>,
    /// Service account JSON key secret (`google-drive`); the same as
    /// `auth: {type: service-account, key: ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<SecretRef>,
    /// OAuth2 token endpoint (`google-drive`); default `https://oauth2.googleapis.com/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Drive API base URL (`google-drive`); default `https://www.googleapis.com/drive/v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The most bytes a download of a version without a declared `size` may have (every
    /// kind); default 4294967296 (4 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_download_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RepositoryType {
    Http,
    Sftp,
    Ftp,
    File,
    S3,
    GoogleDrive,
}

impl RepositoryType {
    pub fn as_str(self) -> &'static str {
        match self {
            RepositoryType::Http => "http",
            RepositoryType::Sftp => "sftp",
            RepositoryType::Ftp => "ftp",
            RepositoryType::File => "file",
            RepositoryType::S3 => "s3",
            RepositoryType::GoogleDrive => "google-drive",
        }
    }
}

/// Authentication for `http` (`none`, `basic`, `bearer`, `header`), `sftp` (`password`, `key`)
/// and `google-drive` (`oauth`, `service-account`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepositoryAuth {
    /// Method.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// User name (`basic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password secret (`basic`, `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Bearer token secret (`bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// Private key secret, OpenSSH format (`key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<SecretRef>,
    /// Header name (`header`), e.g. `X-JFrog-Art-Api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Secret that is the header's whole value (`header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretRef>,
    /// OAuth2 client id secret (`oauth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<SecretRef>,
    /// OAuth2 client secret (`oauth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,
    /// OAuth2 refresh token secret (`oauth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SecretRef>,
    /// Service account JSON key secret (`service-account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    None,
    Basic,
    Bearer,
    Header,
    Password,
    Key,
    Oauth,
    ServiceAccount,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::None => "none",
            AuthType::Basic => "basic",
            AuthType::Bearer => "bearer",
            AuthType::Header => "header",
            AuthType::Password => "password",
            AuthType::Key => "key",
            AuthType::Oauth => "oauth",
            AuthType::ServiceAccount => "service-account",
        }
    }
}
