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
    /// region, endpoint, prefix, access_key_id, secret_access_key; `google-drive` folder_id,
    /// service_account.
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
    /// Endpoint URL for S3-compatible stores (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Key prefix (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Access key id secret (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<SecretRef>,
    /// Secret access key secret (`s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretRef>,
    /// Folder id (`google-drive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_id: Option<String>,
    /// Service account JSON key secret (`google-drive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<SecretRef>,
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

/// Authentication for `http` (`none`, `basic`, `bearer`) and `sftp` (`password`, `key`).
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    None,
    Basic,
    Bearer,
    Password,
    Key,
}
