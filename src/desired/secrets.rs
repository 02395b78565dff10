//! The inventory's secrets as a `SecretLookup`: one lazily decrypting store per client and
//! profile, so a reference can only reach its own client's secrets. Without identities every
//! value is "unknown" and plans carry placeholders instead of failing.

use super::SecretLookup;
use crate::load::Inventory;
use crate::secret::{Identities, SecretStore, SecretString};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct InventorySecrets {
    stores: BTreeMap<(String, String), SecretStore>,
    has_identity: bool,
}

impl InventorySecrets {
    pub fn new(inv: &Inventory, identities: Option<Identities>) -> InventorySecrets {
        let has_identity = identities.is_some();
        let identities = identities.map(Arc::new);
        let mut stores = BTreeMap::new();
        for (client, entry) in &inv.clients {
            for (profile, file) in &entry.secrets {
                stores.insert(
                    (client.clone(), profile.clone()),
                    SecretStore::new(client, profile, Some(&file.value), identities.clone()),
                );
            }
        }
        InventorySecrets {
            stores,
            has_identity,
        }
    }
}

impl SecretLookup for InventorySecrets {
    fn names(&self, client: &str, profile: &str) -> Vec<String> {
        self.stores
            .get(&(client.to_string(), profile.to_string()))
            .map(|s| s.names().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn get(&self, client: &str, profile: &str, name: &str) -> Result<Option<SecretString>, String> {
        if !self.has_identity {
            return Ok(None);
        }
        match self.stores.get(&(client.to_string(), profile.to_string())) {
            Some(store) => store.get(name).map(Some).map_err(|e| {
                let hint = e
                    .hint()
                    .map(|h| format!(" (hint: {h})"))
                    .unwrap_or_default();
                format!("{e}{hint}")
            }),
            None => Err(format!(
                "client `{client}` has no secrets for profile `{profile}`"
            )),
        }
    }
}
