//! OpenSSH host certificates (`ssh-keygen -s CA -h`), trusted through `@cert-authority` lines
//! in known_hosts: a host that presents a certificate is who it says when the certificate is
//! a host certificate, signed by one of the CA keys known_hosts lists for that host, valid
//! now, and names the host (its address or its server name) among its principals. libssh2
//! checks that the host holds the certificate's key (the handshake signature); everything
//! else is checked here, from the certificate's bytes (PROTOCOL.certkeys). CA signatures
//! are verified for Ed25519, ECDSA (P-256, P-384) and RSA (SHA-2) CA keys.
//!
//! Pure: no I/O, no trust decisions beyond the certificate itself (known_hosts is read by
//! [`super::host_key`]).

use super::host_key::PublicKey;
use ring::signature;

/// The host certificate types (OpenSSH names), for negotiation: libssh2 understands these.
pub const CERT_ALGORITHMS: &str = "ssh-ed25519-cert-v01@openssh.com,\
                                   ecdsa-sha2-nistp256-cert-v01@openssh.com,\
                                   ecdsa-sha2-nistp384-cert-v01@openssh.com,\
                                   ecdsa-sha2-nistp521-cert-v01@openssh.com,\
                                   rsa-sha2-512-cert-v01@openssh.com,\
                                   rsa-sha2-256-cert-v01@openssh.com";

/// OpenSSH's certificate type for hosts (1 is a user certificate).
const HOST_CERT: u32 = 2;

/// The parts of a certificate that are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub cert_type: u32,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub critical_options: Vec<String>,
    /// The CA's public key (wire format).
    pub ca: PublicKey,
    /// The bytes the CA signed: everything before the signature.
    signed: Vec<u8>,
    signature: Vec<u8>,
}

/// Whether a key type name is a certificate's.
pub fn is_certificate(kind: &str) -> bool {
    kind.ends_with("-cert-v01@openssh.com")
}

impl Certificate {
    /// Reads a certificate blob as a server presents it.
    pub fn parse(blob: &[u8]) -> Result<Certificate, String> {
        let mut r = Reader { data: blob, at: 0 };
        let kind = r.text()?;
        let _nonce = r.bytes()?;
        // The certified public key: its fields depend on the type.
        match kind.as_str() {
            "ssh-ed25519-cert-v01@openssh.com" => {
                r.bytes()?;
            }
            k if k.starts_with("ecdsa-sha2-") => {
                r.bytes()?;
                r.bytes()?;
            }
            "ssh-rsa-cert-v01@openssh.com" => {
                r.bytes()?;
                r.bytes()?;
            }
            other => return Err(format!("certificate type `{other}` is not supported")),
        }
        let _serial = r.u64()?;
        let cert_type = r.u32()?;
        let key_id = r.text()?;
        let principals = strings(r.bytes()?)?;
        let valid_after = r.u64()?;
        let valid_before = r.u64()?;
        let critical = r.bytes()?;
        let critical_options = pairs(critical)?;
        let _extensions = r.bytes()?;
        let _reserved = r.bytes()?;
        let ca = PublicKey::from_blob(r.bytes()?);
        let signed = blob[..r.at].to_vec();
        let signature = r.bytes()?.to_vec();
        Ok(Certificate {
            cert_type,
            key_id,
            principals,
            valid_after,
            valid_before,
            critical_options,
            ca,
            signed,
            signature,
        })
    }

    /// Checks the certificate for a host known as any of `names`, at `now` (seconds since
    /// the epoch), against the CA keys known_hosts trusts for it. The error says why not.
    pub fn check(&self, cas: &[PublicKey], names: &[&str], now: u64) -> Result<(), String> {
        if self.cert_type != HOST_CERT {
            return Err(format!(
                "certificate `{}` is not a host certificate",
                self.key_id
            ));
        }
        if !cas.contains(&self.ca) {
            let trusted: Vec<String> = cas.iter().map(PublicKey::fingerprint).collect();
            return Err(format!(
                "certificate `{}` is signed by CA {}, not by a CA known_hosts trusts for this \
                 host ({})",
                self.key_id,
                self.ca.fingerprint(),
                trusted.join(", ")
            ));
        }
        verify_signature(&self.ca, &self.signed, &self.signature)
            .map_err(|e| format!("certificate `{}`: {e}", self.key_id))?;
        if now < self.valid_after || now >= self.valid_before {
            // `forever` is u64::MAX in the certificate.
            let until = match self.valid_before {
                u64::MAX => "forever".to_string(),
                t => crate::clock::rfc3339(t),
            };
            return Err(format!(
                "certificate `{}` is valid from {} until {until}, not now ({})",
                self.key_id,
                crate::clock::rfc3339(self.valid_after),
                crate::clock::rfc3339(now)
            ));
        }
        if let Some(option) = self.critical_options.first() {
            return Err(format!(
                "certificate `{}` has the critical option `{option}`, which Clarity does not \
                 understand",
                self.key_id
            ));
        }
        // An empty principal list would be valid for any host: OpenSSH refuses it too.
        let named = self
            .principals
            .iter()
            .any(|p| names.iter().any(|n| p.eq_ignore_ascii_case(n)));
        if !named {
            return Err(format!(
                "certificate `{}` is for {}, not for {}",
                self.key_id,
                if self.principals.is_empty() {
                    "no host".to_string()
                } else {
                    self.principals.join(", ")
                },
                names.join(" or ")
            ));
        }
        Ok(())
    }
}

/// Verifies the CA's `signature` blob over `signed`.
fn verify_signature(ca: &PublicKey, signed: &[u8], blob: &[u8]) -> Result<(), String> {
    let mut sig = Reader { data: blob, at: 0 };
    let algorithm = sig.text()?;
    let sig = sig.bytes()?;
    let mut key = Reader {
        data: ca.blob(),
        at: 0,
    };
    let kind = key.text()?;
    let bad = || "its CA signature does not verify".to_string();
    match (kind.as_str(), algorithm.as_str()) {
        ("ssh-ed25519", "ssh-ed25519") => {
            let pk = key.bytes()?;
            signature::UnparsedPublicKey::new(&signature::ED25519, pk)
                .verify(signed, sig)
                .map_err(|_| bad())
        }
        ("ssh-rsa", "rsa-sha2-256" | "rsa-sha2-512") => {
            let e = key.bytes()?;
            let n = key.bytes()?;
            let params = if algorithm == "rsa-sha2-256" {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PKCS1_2048_8192_SHA512
            };
            signature::RsaPublicKeyComponents {
                n: strip_zeros(n),
                e: strip_zeros(e),
            }
            .verify(params, signed, sig)
            .map_err(|_| bad())
        }
        (k, a) if k == a && (k == "ecdsa-sha2-nistp256" || k == "ecdsa-sha2-nistp384") => {
            let _curve = key.bytes()?;
            let point = key.bytes()?;
            let (alg, width) = if k.ends_with("256") {
                (&signature::ECDSA_P256_SHA256_FIXED, 32)
            } else {
                (&signature::ECDSA_P384_SHA384_FIXED, 48)
            };
            // The SSH form is two mpints; ring wants r and s as fixed-width big-endian.
            let mut rs = Reader { data: sig, at: 0 };
            let mut fixed = Vec::with_capacity(2 * width);
            for _ in 0..2 {
                let v = strip_zeros(rs.bytes()?);
                if v.len() > width {
                    return Err(bad());
                }
                fixed.extend(std::iter::repeat_n(0u8, width - v.len()));
                fixed.extend_from_slice(v);
            }
            signature::UnparsedPublicKey::new(alg, point)
                .verify(signed, &fixed)
                .map_err(|_| bad())
        }
        (k, a) => Err(format!(
            "its CA key type `{k}` with signature `{a}` is not supported (use an Ed25519, \
             ECDSA P-256/P-384 or RSA CA key with SHA-2 signatures)"
        )),
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

/// A packed list of strings (principals).
fn strings(data: &[u8]) -> Result<Vec<String>, String> {
    let mut r = Reader { data, at: 0 };
    let mut out = Vec::new();
    while r.at < data.len() {
        out.push(r.text()?);
    }
    Ok(out)
}

/// A packed list of (name, data) pairs; the names.
fn pairs(data: &[u8]) -> Result<Vec<String>, String> {
    let mut r = Reader { data, at: 0 };
    let mut out = Vec::new();
    while r.at < data.len() {
        out.push(r.text()?);
        r.bytes()?;
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or_else(|| "the certificate is truncated".to_string())?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn text(&mut self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_certificates_are_refused() {
        assert!(Certificate::parse(&[]).is_err());
        let mut blob = Vec::new();
        for s in [
            &b"ssh-ed25519-cert-v01@openssh.com"[..],
            &[0u8; 32],
            &[1u8; 32],
        ] {
            blob.extend((s.len() as u32).to_be_bytes());
            blob.extend_from_slice(s);
        }
        let e = Certificate::parse(&blob).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
}
