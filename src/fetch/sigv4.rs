//! AWS Signature Version 4 for the requests an `s3` repository makes: the canonical request,
//! the string to sign, the derived signing key and the `Authorization` header value, as AWS
//! documents them, checked below against AWS's published examples. Pure: the caller passes
//! the time and the headers, and this module does no I/O and keeps no credential (the secret
//! key is only borrowed, and no value computed from it is ever shown).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The sha256 of an empty payload, which every GET sends.
pub(super) const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Who signs, and for which region and service.
pub(super) struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// One request to sign. `path` is already URI-encoded (see [`encode_path`]) and `query` is
/// the canonical query string (sorted, encoded), empty for none. `headers` hold every header
/// to sign, `host` and `x-amz-date` included, with lowercase names.
pub(super) struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the same as the `x-amz-date` header.
    pub amz_date: &'a str,
}

impl Signer<'_> {
    /// The `Authorization` header value for `request`.
    pub(super) fn authorization(&self, request: &Request) -> String {
        let (signed_headers, signature) = self.signature(request);
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id,
            self.scope(request.amz_date)
        )
    }

    fn scope(&self, amz_date: &str) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            &amz_date[..8.min(amz_date.len())],
            self.region,
            self.service
        )
    }

    fn signature(&self, request: &Request) -> (String, String) {
        let (canonical, signed_headers) = canonical_request(request);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            request.amz_date,
            self.scope(request.amz_date),
            crate::digest::sha256_hex(canonical.as_bytes())
        );
        let date = &request.amz_date[..8.min(request.amz_date.len())];
        let key = format!("AWS4{}", self.secret_access_key);
        let k = hmac(key.as_bytes(), date.as_bytes());
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, self.service.as_bytes());
        let k = hmac(&k, b"aws4_request");
        (signed_headers, hex::encode(hmac(&k, to_sign.as_bytes())))
    }
}

/// The canonical request and the signed-headers list.
fn canonical_request(r: &Request) -> (String, String) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(n, v)| {
            // Header values are trimmed and inner runs of spaces folded to one.
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (n.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (
        format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
            r.method, r.path, r.query, r.payload_sha256
        ),
        signed,
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// An object key as S3 wants it in the canonical URI and the request line: every byte but
/// the unreserved ones (`A-Z a-z 0-9 - _ . ~`) percent-encoded, `/` kept as the separator.
pub(super) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a time in seconds since the Unix epoch (UTC).
pub(super) fn amz_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's S3 documentation, "Signature Calculations for the Authorization Header", example
    /// "GET Object": the first 10 bytes of `test.txt` from `examplebucket`.
    #[test]
    fn aws_s3_get_object_example() {
        let signer = Signer {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
        };
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let request = Request {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &headers,
            payload_sha256: EMPTY_PAYLOAD_SHA256,
            amz_date: "20130524T000000Z",
        };
        let (canonical, _) = canonical_request(&request);
        assert_eq!(
            crate::digest::sha256_hex(canonical.as_bytes()),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            signer.authorization(&request),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's Signature Version 4 test suite, `get-vanilla`.
    #[test]
    fn aws_test_suite_get_vanilla() {
        let signer = Signer {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "service",
        };
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let request = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256: EMPTY_PAYLOAD_SHA256,
            amz_date: "20150830T123600Z",
        };
        assert_eq!(
            signer.authorization(&request),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn keys_are_encoded_except_unreserved_and_slashes() {
        assert_eq!(encode_path("/b/app 1+2/ü.jar"), "/b/app%201%2B2/%C3%BC.jar");
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(1_709_210_096), "20240229T123456Z");
    }
}
