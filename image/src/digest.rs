//! Content digests (`sha256:<hex>`), the blob paths they name, and streaming verification.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` digest: 64 lowercase hex digits, so it is safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

/// The algorithm prefix of every digest skiff accepts.
const SHA256: &str = "sha256:";

impl Digest {
    /// Validates `s` as a sha256 digest; `None` for anything else (other algorithms, upper case,
    /// wrong length, path characters).
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix(SHA256)?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Digest(s.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("{SHA256}{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The hex part, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0[SHA256.len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where an OCI image layout rooted at `layout` keeps this blob.
    pub fn blob_path(&self, layout: &Path) -> PathBuf {
        layout.join("blobs").join("sha256").join(self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The digest of everything `reader` yields, read in fixed-size chunks.
pub fn hash_reader(mut reader: impl Read) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(Digest(format!(
        "{SHA256}{}",
        hex::encode(hasher.finalize())
    )))
}

/// Opens a file of an image that must be a regular file: a FIFO or device planted in its
/// place is refused instead of blocking the reader (the open does not wait for a writer).
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn digest_of_bytes_and_reader_agree() {
        assert_eq!(Digest::of(b"hello").as_str(), HELLO);
        assert_eq!(hash_reader(&b"hello"[..]).unwrap().as_str(), HELLO);
    }

    #[test]
    fn hostile_digest_strings_are_refused() {
        let hex = &HELLO[7..];
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            &format!("sha512:{hex}"),
            &format!("SHA256:{hex}"),
            &format!("sha256:{}", hex.to_uppercase()),
            &format!("sha256:{hex}0"),
            &format!("sha256:../../../../etc/passwd{}", &hex[20..]),
            &format!("sha256:{}/{}", &hex[..31], &hex[32..]),
            &format!("sha256:{}\0", &hex[..63]),
            &format!(" sha256:{hex}"),
        ] {
            assert_eq!(Digest::parse(bad), None, "{bad:?} accepted");
        }
        let ok = Digest::parse(HELLO).unwrap();
        assert_eq!(
            ok.blob_path(Path::new("/l")),
            Path::new("/l/blobs/sha256").join(hex)
        );
    }
}
