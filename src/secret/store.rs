//! `SecretStore`: resolves `${SECRET:name}` for one client and one profile. It holds that
//! client's ciphertexts and the operator's identities, decrypts a value the first time it is
//! asked for, and keeps the plaintext in memory (as `SecretString`) for later lookups. It knows
//! nothing of other clients, so a reference can only ever reach its own client's secrets; it
//! never writes anything.

use super::{CryptoError, Identities, SecretError, SecretString, decrypt};
use crate::model::SecretsFile;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// One client's secrets for one profile, decrypted lazily.
///
/// `Send + Sync`: rendering hosts in parallel can share one store per (client, profile).
pub struct SecretStore {
    client: String,
    profile: String,
    ciphertexts: BTreeMap<String, String>,
    identities: Option<Arc<Identities>>,
    cache: Mutex<BTreeMap<String, SecretString>>,
}

impl SecretStore {
    /// `file` is `secrets/<client>/<profile>.yml` as loaded (`None` when the client has no
    /// secrets for the profile); `identities` is `None` when the operator gave no key, which
    /// is only an error once a secret is actually needed.
    pub fn new(
        client: &str,
        profile: &str,
        file: Option<&SecretsFile>,
        identities: Option<Arc<Identities>>,
    ) -> SecretStore {
        SecretStore {
            client: client.to_string(),
            profile: profile.to_string(),
            ciphertexts: file.map(|f| f.0.clone()).unwrap_or_default(),
            identities,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The secret names, sorted. Needs no key.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.ciphertexts.keys().map(String::as_str)
    }

    /// Whether `name` exists (checking references needs no key).
    pub fn contains(&self, name: &str) -> bool {
        self.ciphertexts.contains_key(name)
    }

    /// The plaintext of `name`, decrypted on first use.
    pub fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        if let Some(v) = self.cache_lock().get(name) {
            return Ok(v.clone());
        }
        let Some(armored) = self.ciphertexts.get(name) else {
            return Err(SecretError::Unknown {
                client: self.client.clone(),
                profile: self.profile.clone(),
                name: name.to_string(),
                known: self.ciphertexts.keys().cloned().collect(),
            });
        };
        let Some(identities) = &self.identities else {
            return Err(SecretError::NoIdentity {
                client: self.client.clone(),
                profile: self.profile.clone(),
                name: name.to_string(),
            });
        };
        let value =
            decrypt(armored, identities).map_err(|source| self.decrypt_error(name, source))?;
        self.cache_lock().insert(name.to_string(), value.clone());
        Ok(value)
    }

    /// Every secret decrypted, or the first failure (for rekeying and checks that need all).
    pub fn get_all(&self) -> Result<BTreeMap<String, SecretString>, SecretError> {
        self.ciphertexts
            .keys()
            .map(|n| self.get(n).map(|v| (n.clone(), v)))
            .collect()
    }

    fn decrypt_error(&self, name: &str, source: CryptoError) -> SecretError {
        SecretError::Decrypt {
            client: self.client.clone(),
            profile: self.profile.clone(),
            name: name.to_string(),
            source,
        }
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SecretString>> {
        // A panic while holding the lock cannot leave the map half-written (inserts are
        // atomic), so a poisoned cache is still a valid cache.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("client", &self.client)
            .field("profile", &self.profile)
            .field("names", &self.ciphertexts.keys().collect::<Vec<_>>())
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{Recipients, encrypt};

    const CANARY: &str = "CANARY-store-5e1d";

    struct Client {
        identity: Arc<Identities>,
        recipients: Recipients,
    }

    fn client() -> Client {
        let id = age::x25519::Identity::generate();
        let recipients = Recipients::parse(&id.to_public().to_string()).unwrap();
        Client {
            identity: Arc::new(Identities::from_x25519(id)),
            recipients,
        }
    }

    fn file(entries: &[(&str, &str)], to: &Recipients) -> SecretsFile {
        SecretsFile(
            entries
                .iter()
                .map(|(n, v)| (n.to_string(), encrypt(v, to).unwrap()))
                .collect(),
        )
    }

    #[test]
    fn resolves_lazily_and_caches() {
        let a = client();
        let f = file(&[("db", CANARY), ("api", "x")], &a.recipients);
        let store = SecretStore::new("acme", "prod", Some(&f), Some(a.identity.clone()));
        assert_eq!(store.names().collect::<Vec<_>>(), vec!["api", "db"]);
        assert!(store.cache_lock().is_empty());
        assert_eq!(store.get("db").unwrap().expose(), CANARY);
        assert_eq!(store.cache_lock().len(), 1);
        assert_eq!(store.get("db").unwrap().expose(), CANARY);
        assert_eq!(store.get_all().unwrap().len(), 2);
        assert!(!format!("{store:?}").contains(CANARY));
    }

    #[test]
    fn one_clients_key_cannot_read_another_clients_secret() {
        let acme = client();
        let globex = client();
        let globex_file = file(&[("db", CANARY)], &globex.recipients);
        // Resolving globex's secrets with acme's key: what a misrouted reference would do.
        let store = SecretStore::new("globex", "prod", Some(&globex_file), Some(acme.identity));
        let err = store.get("db").unwrap_err();
        assert!(matches!(
            err,
            SecretError::Decrypt {
                source: CryptoError::NotARecipient,
                ..
            }
        ));
        let shown = format!("{err} {err:?} {}", err.hint().unwrap());
        assert!(!shown.contains(CANARY), "{shown}");
        assert!(!shown.contains(&globex_file.0["db"].lines().nth(1).unwrap()[..12]));
        assert!(shown.contains("globex") && shown.contains("prod") && shown.contains("db"));
        assert!(shown.contains("not a recipient of client globex's secrets"));
    }

    #[test]
    fn missing_name_or_key_is_an_error_naming_both_sides() {
        let a = client();
        let f = file(&[("db", CANARY)], &a.recipients);
        let store = SecretStore::new("acme", "staging", Some(&f), None);
        assert!(store.contains("db"));
        let err = store.get("db").unwrap_err();
        assert!(matches!(err, SecretError::NoIdentity { .. }));
        assert!(err.to_string().contains("acme") && err.to_string().contains("staging"));
        let err = store.get("nope").unwrap_err();
        assert!(matches!(err, SecretError::Unknown { .. }));
        assert!(err.hint().unwrap().contains("known secrets: db"));
        let empty = SecretStore::new("acme", "dev", None, Some(a.identity));
        assert!(matches!(
            empty.get("db").unwrap_err(),
            SecretError::Unknown { .. }
        ));
    }
}
