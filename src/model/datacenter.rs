//! `clients/<id>/datacenters/<code>.yml`: a client's datacenter (code, name, location, type).
//! File types only (serde and schema).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `clients/<client>/datacenters/<code>.yml`: a site where a client's servers run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Datacenter {
    /// Datacenter code; must equal the file name and be unique across all clients.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub code: String,
    /// Human-readable name.
    pub name: String,
    /// City, region or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Role of the site.
    #[serde(rename = "type")]
    pub kind: DatacenterType,
    /// Serial number used for ordering sites in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sl_no: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatacenterType {
    Primary,
    Backup,
    Edge,
}
