use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `clarity.yml` at the config root: repository-wide settings. Optional; every field has a
/// default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Profile names deployments may use (the file name of a deployment file).
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
    /// Order in which a version must pass through profiles: it is applied to a profile only
    /// after it ran healthy on every host of the profile before it (for the same client).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion: Vec<String>,
    /// How long a version must have run healthy in the previous profile before promotion.
    #[serde(default)]
    pub promotion_soak_minutes: u32,
    /// Releases kept per deployment on a host, for rollback.
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// Absolute directories that config files may be written under (on `mock` sandboxes they
    /// are rebased under the sandbox root). Relative destinations always land in the release.
    #[serde(default = "default_absolute_roots")]
    pub allowed_absolute_roots: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            profiles: default_profiles(),
            promotion: Vec::new(),
            promotion_soak_minutes: 0,
            keep_releases: default_keep_releases(),
            allowed_absolute_roots: default_absolute_roots(),
        }
    }
}

fn default_profiles() -> Vec<String> {
    ["dev", "staging", "prod", "mock"]
        .map(String::from)
        .to_vec()
}

fn default_keep_releases() -> u32 {
    5
}

fn default_absolute_roots() -> Vec<String> {
    ["/etc", "/opt", "/srv", "/var/lib"]
        .map(String::from)
        .to_vec()
}
