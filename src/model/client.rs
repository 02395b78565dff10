//! `clients/<id>/client.yml`: a client's identity (id, code, name), contact and status. File
//! types only (serde and schema).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `clients/<client>/client.yml`: one customer whose servers Clarity manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Stable identifier; must equal the folder name under `clients/`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub id: String,
    /// Short code used in reports and host naming (unique across clients).
    #[schemars(regex(pattern = r"^[A-Z0-9][A-Z0-9_-]*$"))]
    pub code: String,
    /// Human-readable name.
    pub name: String,
    /// Who to call about this client's systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// Lifecycle status; `suspended` and `inactive` clients are never reconciled.
    #[serde(default)]
    pub status: ClientStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Contact person or team.
    pub name: String,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number, free form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    #[default]
    Active,
    Inactive,
    Suspended,
}
