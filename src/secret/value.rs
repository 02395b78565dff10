//! `SecretString`: a decrypted value that cannot be printed, logged or serialized by accident.
//! Its `Debug`, `Display` and `Serialize` all give `(sensitive)`; the only way to the text is
//! the explicit `expose()`, so every place a plaintext leaves memory is a grep away. It must not
//! grow conversions into plain strings (`Deref`, `AsRef<str>`, `Into<String>`), because each one
//! would make a leak silent again.

use age::secrecy::zeroize::Zeroize;
use age::secrecy::{ExposeSecret, SecretString as Zeroizing};
use std::fmt;

/// What every rendering of a secret shows instead of its value.
pub const REDACTED: &str = "(sensitive)";

/// A plaintext secret, held in memory that is wiped when the value is dropped.
///
/// Cloning gives another `SecretString` (not a `String`), so a copy is exactly as guarded as the
/// original.
#[derive(Clone)]
pub struct SecretString(Zeroizing);

impl SecretString {
    /// Takes ownership of `value` and wipes the `String`'s buffer once copied.
    pub fn new(mut value: String) -> Self {
        // Copying from `&str` allocates exactly `len` bytes; converting the `String` itself
        // could shrink it by reallocation and free the old buffer without wiping it.
        let inner = Zeroizing::from(value.as_str());
        value.zeroize();
        SecretString(inner)
    }

    /// The plaintext. Call it only where the value must reach its destination (a file on the
    /// host that needs it, or `secret get` on explicit request).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "hunter2-correct-horse";

    #[test]
    fn renderings_never_show_the_value() {
        let s = SecretString::new(VALUE.to_string());
        let renderings = [
            format!("{s}"),
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{:>40}", s),
            s.to_string(),
            serde_json::to_string(&s).unwrap(),
            serde_json::to_string(&vec![s.clone()]).unwrap(),
            format!("{:?}", Some(&s)),
        ];
        for r in renderings {
            assert!(!r.contains(VALUE), "leaked in {r}");
            assert!(r.contains(REDACTED), "{r}");
        }
        assert_eq!(s.expose(), VALUE);
    }

    #[test]
    fn clones_stay_secret() {
        let s = SecretString::from(VALUE.to_string());
        let c = s.clone();
        drop(s);
        assert_eq!(c.expose(), VALUE);
        assert_eq!(format!("{c:?}"), REDACTED);
    }
}
