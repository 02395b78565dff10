//! SSH commit signatures (`-----BEGIN SSH SIGNATURE-----`, git's `gpg.format ssh`), checked by
//! the real `ssh-keygen -Y` against an `allowed_signers` file of the trusted signers, in the
//! `git` namespace, exactly as `git verify-commit` does.

use super::{ApprovalError, RefusalKind, Scratch, TrustedKeys, Verdict, run};
use std::ffi::OsStr;

const PROGRAM: &str = "ssh-keygen";

/// Checks `signature` over `payload` (the commit without its signature header).
pub(super) fn verify(
    signature: &[u8],
    payload: &[u8],
    trusted: &TrustedKeys,
    scratch: &Scratch,
    name: &str,
) -> Result<Verdict, ApprovalError> {
    let sig = scratch.write(&format!("{name}.ssh.sig"), signature)?;
    let arg = |s: &'static str| OsStr::new(s);

    // First whether the signature matches the payload at all, whoever made it: this tells a
    // tampered commit from an untrusted signer, and gives the key's fingerprint for the message.
    let novalidate = run(
        PROGRAM,
        &[
            arg("-Y"),
            arg("check-novalidate"),
            arg("-n"),
            arg("git"),
            arg("-s"),
            sig.as_os_str(),
        ],
        Some(payload),
    )?;
    if !novalidate.success {
        return Ok(Verdict::Refused {
            kind: RefusalKind::BadSignature,
            reason: format!("bad signature (ssh-keygen: {})", novalidate.complaint()),
        });
    }
    let key = signing_key(&novalidate.stdout);
    let untrusted = |detail: String| Verdict::Refused {
        kind: RefusalKind::UntrustedKey,
        reason: format!("signed by a key that is not trusted ({key}){detail}"),
    };
    if trusted.ssh.is_empty() {
        return Ok(untrusted(": no SSH key is trusted".into()));
    }

    let allowed = scratch.write(
        &format!("{name}.allowed_signers"),
        trusted.allowed_signers().as_bytes(),
    )?;
    let found = run(
        PROGRAM,
        &[
            arg("-Y"),
            arg("find-principals"),
            arg("-f"),
            allowed.as_os_str(),
            arg("-s"),
            sig.as_os_str(),
        ],
        None,
    )?;
    let principals: Vec<&str> = found
        .stdout
        .lines()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !found.success || principals.is_empty() {
        return Ok(untrusted(String::new()));
    }

    let mut complaints = Vec::new();
    for principal in &principals {
        let verified = run(
            PROGRAM,
            &[
                arg("-Y"),
                arg("verify"),
                arg("-n"),
                arg("git"),
                arg("-f"),
                allowed.as_os_str(),
                arg("-I"),
                OsStr::new(principal),
                arg("-s"),
                sig.as_os_str(),
            ],
            Some(payload),
        )?;
        if verified.success {
            return Ok(Verdict::Good {
                signer: (*principal).to_string(),
            });
        }
        complaints.push(verified.complaint());
    }
    Ok(Verdict::Refused {
        kind: RefusalKind::UntrustedKey,
        reason: format!(
            "signed by {key} of {}, but its allowed_signers entry does not allow this signature \
             (ssh-keygen: {})",
            principals.join(", "),
            complaints.join("; ")
        ),
    })
}

/// `ED25519 key SHA256:...` from `Good "git" signature with ED25519 key SHA256:...`.
fn signing_key(check_output: &str) -> String {
    check_output
        .lines()
        .find_map(|l| {
            l.split_once(" with ")
                .map(|(_, key)| key.trim().to_string())
        })
        .filter(|k| k.contains("SHA256:"))
        .unwrap_or_else(|| "an SSH key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_taken_from_ssh_keygen_output() {
        assert_eq!(
            signing_key("Good \"git\" signature with ED25519 key SHA256:A60D+Gp7vt/p67JK4i5k\n"),
            "ED25519 key SHA256:A60D+Gp7vt/p67JK4i5k"
        );
        assert_eq!(signing_key("something else\n"), "an SSH key");
    }
}
