//! The store's name index: `index.json` of its OCI layout, one entry per image name
//! (`org.opencontainers.image.ref.name` holds the full name, e.g.
//! `docker.io/library/alpine:latest`). Rewritten whole to a temporary file and renamed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::blob::sync_dir;
use super::error::{StoreError, StoreResult};
use crate::layout::MAX_JSON;
use crate::spec::REF_NAME;

/// Annotation: the digest the registry gave for the name (an index's, for multi-platform
/// images), docker's "repo digest".
pub const SOURCE_DIGEST: &str = "io.skiff.source.digest";

/// One named image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The image manifest (after platform selection).
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Entry {
    /// The full image name of this entry.
    pub fn name(&self) -> &str {
        self.annotations.get(REF_NAME).map_or("", String::as_str)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Entry>,
}

/// Reads the entries of `path` (an empty list when it does not exist yet).
pub fn read(path: &Path) -> StoreResult<Vec<Entry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::io("read", path, e))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(StoreError::TooLarge {
            what: path.display().to_string(),
            size: bytes.len() as u64,
            limit: MAX_JSON,
        });
    }
    let index: IndexFile = serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(index.manifests)
}

/// Replaces `path` with these entries: write a temporary file, sync, rename.
pub fn write(path: &Path, entries: Vec<Entry>) -> StoreResult<()> {
    let index = IndexFile {
        schema_version: 2,
        media_type: Some(crate::spec::OCI_INDEX.to_owned()),
        manifests: entries,
    };
    let bytes = serde_json::to_vec_pretty(&index).map_err(|e| StoreError::Invalid {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temporary file beside it, sync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| StoreError::io("create a file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| StoreError::io("write", tmp.path().to_owned(), e))?;
    tmp.persist(path)
        .map_err(|e| StoreError::io("replace", path, e.error))?;
    sync_dir(path);
    Ok(())
}
