//! OpenPGP commit signatures (`-----BEGIN PGP SIGNATURE-----`), checked by the real `gpg` in a
//! private GNUPGHOME that holds only the trusted public keys. A signature is accepted only when
//! gpg's machine-readable status says `GOODSIG` and `VALIDSIG`; the signer recorded is the
//! primary key's fingerprint. The user's own keyring and `gpg.conf` are never read.

use super::keys::OpenPgpKey;
use super::{ApprovalError, RefusalKind, Scratch, Verdict, run};
use std::ffi::OsStr;
use std::path::PathBuf;

const PROGRAM: &str = "gpg";

/// A GNUPGHOME with a set of trusted keys imported.
pub(super) struct Keyring {
    home: PathBuf,
    /// What gpg said when some keys could not be imported (added to untrusted-key refusals).
    import_note: Option<String>,
    /// No key to import and no gpg to run: every OpenPGP signature is untrusted.
    without_gpg: bool,
}

impl Keyring {
    pub(super) fn new(keys: &[OpenPgpKey], scratch: &Scratch) -> Result<Keyring, ApprovalError> {
        let home = unique_subdir(scratch)?;
        let mut keyring = Keyring {
            home,
            import_note: None,
            without_gpg: false,
        };
        if keys.is_empty() {
            // gpg is still wanted, for the signer's fingerprint in the refusal; without it the
            // refusal stands anyway.
            keyring.without_gpg = run(PROGRAM, &[OsStr::new("--version")], None).is_err();
            return Ok(keyring);
        }
        let mut armored = String::new();
        for key in keys {
            armored.push_str(&key.armored);
        }
        let file = scratch.write(
            &format!(
                "{}.keys.asc",
                keyring.home.file_name().unwrap().to_string_lossy()
            ),
            armored.as_bytes(),
        )?;
        let mut args = keyring.base_args();
        args.extend([OsStr::new("--import"), file.as_os_str()]);
        let imported = run(PROGRAM, &args, None)?;
        if !imported.success {
            let from: Vec<&str> = keys.iter().map(|k| k.from.as_str()).collect();
            keyring.import_note = Some(format!(
                "; note: gpg could not import every trusted OpenPGP key ({}): {}",
                from.join(", "),
                imported
                    .stderr
                    .lines()
                    .filter(|l| !l.contains("no gpg-agent running"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ));
        }
        Ok(keyring)
    }

    fn base_args(&self) -> Vec<&OsStr> {
        [
            "--batch",
            "--no-options",
            "--no-autostart",
            "--no-tty",
            "--no-auto-key-retrieve",
            "--trust-model",
            "always",
            "--homedir",
        ]
        .into_iter()
        .map(OsStr::new)
        .chain([self.home.as_os_str()])
        .collect()
    }

    /// Checks `signature` over `payload` (the commit without its signature header).
    pub(super) fn verify(
        &self,
        signature: &[u8],
        payload: &[u8],
        scratch: &Scratch,
        name: &str,
    ) -> Result<Verdict, ApprovalError> {
        if self.without_gpg {
            return Ok(Verdict::Refused {
                kind: RefusalKind::UntrustedKey,
                reason: "signed by a key that is not trusted (an OpenPGP key; no OpenPGP key is \
                         trusted)"
                    .into(),
            });
        }
        let sig = scratch.write(&format!("{name}.pgp.sig"), signature)?;
        let data = scratch.write(&format!("{name}.payload"), payload)?;
        let mut args = self.base_args();
        args.extend([
            OsStr::new("--status-fd"),
            OsStr::new("1"),
            OsStr::new("--verify"),
            sig.as_os_str(),
            data.as_os_str(),
        ]);
        let ran = run(PROGRAM, &args, None)?;
        let mut verdict = judge_status(&ran.stdout);
        if let Verdict::Refused {
            kind: RefusalKind::UntrustedKey,
            reason,
        } = &mut verdict
            && let Some(note) = &self.import_note
        {
            reason.push_str(note);
        }
        if let Verdict::Refused { kind, reason } = &mut verdict
            && *kind == RefusalKind::BadSignature
            && !ran.stdout.contains("BADSIG")
        {
            let complaint = ran.complaint();
            reason.push_str(&format!(" (gpg: {complaint})"));
        }
        Ok(verdict)
    }
}

fn unique_subdir(scratch: &Scratch) -> Result<PathBuf, ApprovalError> {
    let mut n = 0;
    loop {
        let name = format!("gnupg-{n}");
        if !scratch.path().join(&name).exists() {
            return scratch.subdir(&name);
        }
        n += 1;
    }
}

/// Reads gpg's `--status-fd` lines (see gnupg's doc/DETAILS).
fn judge_status(status: &str) -> Verdict {
    let lines: Vec<Vec<&str>> = status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .map(|l| l.split(' ').collect())
        .collect();
    let find = |keyword: &str| lines.iter().find(|l| l[0] == keyword);
    let refused = |kind, reason: String| Verdict::Refused { kind, reason };

    if let Some(bad) = find("BADSIG") {
        return refused(
            RefusalKind::BadSignature,
            format!(
                "bad signature (OpenPGP key {})",
                bad.get(1).copied().unwrap_or("?")
            ),
        );
    }
    // VALIDSIG <fpr> <date> <timestamp> <expire> <version> <reserved> <algo> <hash> <class>
    //          <primary-fpr>
    let primary = find("VALIDSIG").and_then(|v| v.get(10).or(v.get(1)).copied());
    for (keyword, what) in [
        ("EXPKEYSIG", "an expired OpenPGP key"),
        ("REVKEYSIG", "a revoked OpenPGP key"),
    ] {
        if find(keyword).is_some() {
            return refused(
                RefusalKind::UntrustedKey,
                format!(
                    "signed by {what} (fingerprint {})",
                    primary.unwrap_or("unknown")
                ),
            );
        }
    }
    if find("EXPSIG").is_some() {
        return refused(
            RefusalKind::BadSignature,
            "bad signature: the OpenPGP signature has expired".into(),
        );
    }
    if let (Some(_), Some(primary)) = (find("GOODSIG"), primary) {
        return Verdict::Good {
            signer: primary.to_string(),
        };
    }
    // ERRSIG <keyid> <algo> <hash> <class> <time> <rc> <fpr>; rc 9 is "no public key".
    if let Some(err) = find("ERRSIG") {
        if err.get(6) == Some(&"9") || find("NO_PUBKEY").is_some() {
            let key = match err.get(7) {
                Some(fpr) if *fpr != "-" && !fpr.is_empty() => {
                    format!("OpenPGP fingerprint {fpr}")
                }
                _ => format!("OpenPGP key id {}", err.get(1).copied().unwrap_or("?")),
            };
            return refused(
                RefusalKind::UntrustedKey,
                format!("signed by a key that is not trusted ({key})"),
            );
        }
        return refused(
            RefusalKind::BadSignature,
            format!(
                "bad signature: gpg cannot check it (error code {})",
                err.get(6).copied().unwrap_or("?")
            ),
        );
    }
    refused(
        RefusalKind::BadSignature,
        "bad signature: gpg reported no valid signature".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPR: &str = "E5CB7523E07E2F17248B4B99BF7BE5E4D0043CF5";

    fn reason(v: Verdict) -> (RefusalKind, String) {
        match v {
            Verdict::Refused { kind, reason } => (kind, reason),
            Verdict::Good { signer } => panic!("accepted, signer {signer}"),
        }
    }

    #[test]
    fn good_and_valid_is_accepted_with_the_primary_fingerprint() {
        let status = format!(
            "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG BF7BE5E4D0043CF5 Alice <alice@example.com>\n\
             [GNUPG:] VALIDSIG 1111111111111111111111111111111111111111 2026-11-24 1795503965 0 \
             4 0 22 8 00 {FPR}\n"
        );
        match judge_status(&status) {
            Verdict::Good { signer } => assert_eq!(signer, FPR),
            Verdict::Refused { reason, .. } => panic!("{reason}"),
        }
    }

    #[test]
    fn goodsig_alone_is_not_enough() {
        let (kind, _) = reason(judge_status(
            "[GNUPG:] GOODSIG BF7BE5E4D0043CF5 Alice <a@example.com>\n",
        ));
        assert_eq!(kind, RefusalKind::BadSignature);
    }

    #[test]
    fn bad_missing_expired_and_broken_signatures() {
        let (kind, text) = reason(judge_status(
            "[GNUPG:] BADSIG BF7BE5E4D0043CF5 Alice <alice@example.com>\n",
        ));
        assert_eq!(kind, RefusalKind::BadSignature);
        assert_eq!(text, "bad signature (OpenPGP key BF7BE5E4D0043CF5)");

        let (kind, text) = reason(judge_status(&format!(
            "[GNUPG:] ERRSIG BF7BE5E4D0043CF5 22 8 00 1795503965 9 {FPR}\n\
             [GNUPG:] NO_PUBKEY BF7BE5E4D0043CF5\n"
        )));
        assert_eq!(kind, RefusalKind::UntrustedKey);
        assert_eq!(
            text,
            format!("signed by a key that is not trusted (OpenPGP fingerprint {FPR})")
        );

        let (_, text) = reason(judge_status(
            "[GNUPG:] ERRSIG BF7BE5E4D0043CF5 22 8 00 1795503965 9 -\n",
        ));
        assert!(
            text.ends_with("(OpenPGP key id BF7BE5E4D0043CF5)"),
            "{text}"
        );

        let (kind, text) = reason(judge_status(&format!(
            "[GNUPG:] EXPKEYSIG BF7BE5E4D0043CF5 Alice\n[GNUPG:] VALIDSIG {FPR} 2026-11-24 \
             1795503965 0 4 0 22 8 00 {FPR}\n"
        )));
        assert_eq!(kind, RefusalKind::UntrustedKey);
        assert!(text.contains("expired OpenPGP key"), "{text}");

        let (kind, _) = reason(judge_status(
            "[GNUPG:] ERRSIG BF7BE5E4D0043CF5 99 8 00 1795503965 4 -\n",
        ));
        assert_eq!(kind, RefusalKind::BadSignature);
        let (kind, _) = reason(judge_status(""));
        assert_eq!(kind, RefusalKind::BadSignature);
    }
}
