//! SHA-256 digests in lowercase hexadecimal, the form every record, plan and cache key carries:
//! of bytes in memory (pure), and of a file read once in large blocks. Only
//! [`sha256_file`] touches the filesystem, and only to read the file it is given.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// How much of a file one read takes.
const BLOCK: usize = 256 * 1024;

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sha256 (lowercase hex) and size of a file, read once in large blocks: the same hashing
/// a download gets.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = feed(File::open(path)?, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Reads `reader` to its end in large blocks into `hasher` (which may already hold a prefix)
/// and returns how many bytes it read.
pub fn feed(mut reader: impl Read, hasher: &mut Sha256) -> io::Result<u64> {
    let mut buffer = vec![0; BLOCK];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::{BLOCK, sha256_file, sha256_hex};

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn bytes_and_files_hash_alike() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), (EMPTY.to_string(), 0));
        assert_eq!(sha256_hex(b""), EMPTY);
        let content: Vec<u8> = (0..(BLOCK * 3 + 17)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &content).unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            (sha256_hex(&content), content.len() as u64)
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }
}
