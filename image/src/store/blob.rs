//! Writing one blob into the store: bytes go to a partial file under `tmp/` while they are
//! hashed, and only a blob whose size and sha256 match its descriptor is renamed into
//! `blobs/sha256/`. A partial file survives an interrupted download so the next attempt resumes
//! where it stopped; one writer per blob at a time (a lock per digest).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use tracing::debug;

use super::error::{StoreError, StoreResult};
use super::lock::{Lock, Mode};
use super::Store;
use crate::digest::Digest;

/// A blob being written; see the module docs.
pub struct BlobWriter {
    digest: Digest,
    size: u64,
    partial: PathBuf,
    target: PathBuf,
    file: File,
    hasher: Sha256,
    written: u64,
    /// Where the bytes come from, for messages.
    source_name: String,
    _lock: Lock,
}

impl BlobWriter {
    /// Opens the writer for `digest`, waiting while another process writes the same blob.
    /// `None` when the store already holds the blob. An earlier partial file is re-hashed and
    /// kept, so [`BlobWriter::offset`] tells where to resume.
    pub(super) fn open(
        store: &Store,
        digest: &Digest,
        size: u64,
        source_name: &str,
    ) -> StoreResult<Option<BlobWriter>> {
        let lock_path = store.locks_dir().join(format!("blob-{}", digest.hex()));
        let lock = Lock::acquire(&lock_path, Mode::Exclusive)
            .map_err(|e| StoreError::io("lock", &lock_path, e))?;
        if store.has_blob(digest, size) {
            return Ok(None);
        }
        let partial = store.tmp_dir().join(format!("{}.partial", digest.hex()));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&partial)
            .map_err(|e| StoreError::io("create", &partial, e))?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let existing = file
            .metadata()
            .map_err(|e| StoreError::io("stat", &partial, e))?
            .len();
        if existing > size {
            file.set_len(0)
                .map_err(|e| StoreError::io("truncate", &partial, e))?;
        } else if existing > 0 {
            let mut buf = vec![0u8; 256 * 1024];
            let mut reader = (&file).take(existing);
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(StoreError::io("read", &partial, e)),
                };
                hasher.update(&buf[..n]);
                written += n as u64;
            }
            debug!(%digest, resume_at = written, "found a partial blob");
        }
        Ok(Some(BlobWriter {
            digest: digest.clone(),
            size,
            target: store.blob_path(digest),
            partial,
            file,
            hasher,
            written,
            source_name: source_name.to_owned(),
            _lock: lock,
        }))
    }

    /// Bytes already held (where a download resumes).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The blob's size, as its descriptor gives it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts over: drops the bytes held so far.
    pub fn restart(&mut self) -> StoreResult<()> {
        self.file
            .set_len(0)
            .map_err(|e| StoreError::io("truncate", &self.partial, e))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Appends `buf`; refuses bytes beyond the descriptor's size.
    pub fn write(&mut self, buf: &[u8]) -> StoreResult<()> {
        let after = self.written + buf.len() as u64;
        if after > self.size {
            return Err(StoreError::SizeMismatch {
                digest: self.digest.to_string(),
                source_name: self.source_name.clone(),
                expected: self.size,
                actual: after,
            });
        }
        self.file
            .write_all(buf)
            .map_err(|e| StoreError::io("write", &self.partial, e))?;
        self.hasher.update(buf);
        self.written = after;
        Ok(())
    }

    /// Copies `reader` to the end into the blob.
    pub fn copy_from(&mut self, mut reader: impl Read) -> io::Result<StoreResult<()>> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(Ok(())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = self.write(&buf[..n]) {
                return Ok(Err(e));
            }
        }
    }

    /// Checks size and digest, makes the bytes durable and moves the blob into place. A blob
    /// that does not match is deleted.
    pub fn finish(self) -> StoreResult<()> {
        if self.written != self.size {
            let err = StoreError::SizeMismatch {
                digest: self.digest.to_string(),
                source_name: self.source_name.clone(),
                expected: self.size,
                actual: self.written,
            };
            self.discard();
            return Err(err);
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if actual != self.digest.as_str() {
            let err = StoreError::DigestMismatch {
                digest: self.digest.to_string(),
                source_name: self.source_name.clone(),
            };
            self.discard();
            return Err(err);
        }
        self.file
            .sync_all()
            .map_err(|e| StoreError::io("sync", &self.partial, e))?;
        fs::rename(&self.partial, &self.target)
            .map_err(|e| StoreError::io("move a blob into", &self.target, e))?;
        sync_dir(&self.target);
        debug!(digest = %self.digest, size = self.size, "stored blob");
        Ok(())
    }

    /// Deletes the partial file (a blob that can never be right, or a failed write).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.partial);
    }
}

/// Makes a rename in the directory of `path` durable (best effort: errors only delay it).
pub(super) fn sync_dir(path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// A blob stored from a stream whose digest was not known before.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub digest: Digest,
    pub size: u64,
    /// The first bytes (up to 4), to tell compressions apart.
    pub magic: Vec<u8>,
}

/// Streams `reader` into a temporary file while hashing it, then moves it into place under
/// its digest (or drops it when the store already holds that blob).
pub(super) fn ingest(store: &Store, mut reader: impl Read) -> StoreResult<Ingested> {
    let tmp_dir = store.tmp_dir();
    let mut tmp = tempfile::Builder::new()
        .prefix("ingest-")
        .tempfile_in(&tmp_dir)
        .map_err(|e| StoreError::io("create a file in", &tmp_dir, e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut magic = Vec::with_capacity(4);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("read the input for", tmp.path(), e)),
        };
        if magic.len() < 4 {
            magic.extend(buf[..n].iter().take(4 - magic.len()));
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| StoreError::io("write", tmp.path().to_owned(), e))?;
        size += n as u64;
    }
    let digest =
        Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize()))).ok_or_else(|| {
            StoreError::Invalid {
                what: "a computed digest".into(),
                reason: "not sha256".into(),
            }
        })?;
    if !store.has_blob(&digest, size) {
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("sync", tmp.path().to_owned(), e))?;
        let target = store.blob_path(&digest);
        tmp.persist(&target)
            .map_err(|e| StoreError::io("move a blob into", &target, e.error))?;
        sync_dir(&target);
    }
    Ok(Ingested {
        digest,
        size,
        magic,
    })
}
