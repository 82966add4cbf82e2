//! `import`: a root filesystem tarball (plain or gzip) as a one-layer linux/amd64 image.

use std::fs::File;
use std::path::Path;

use serde_json::json;

use super::{adding, layer_media_type, now_rfc3339};
use crate::digest::{hash_reader, Digest};
use crate::name::ImageName;
use crate::spec;
use crate::store::{self, Store, StoreError, StoreResult};

/// Imports `rootfs` as `name`; returns the image ID (the config's digest).
pub fn import(store: &Store, rootfs: &Path, name: &ImageName) -> StoreResult<Digest> {
    if name.digest.is_some() {
        return Err(StoreError::Invalid {
            what: format!("image name {name}"),
            reason: "an imported image is named NAME[:TAG], without a digest".into(),
        });
    }
    adding(store, |added| {
        let file = File::open(rootfs).map_err(|e| StoreError::io("open", rootfs, e))?;
        let layer = store.ingest(file)?;
        added.push(layer.digest.clone());
        let blob = store.blob_path(&layer.digest);
        let diff_id = match layer.magic.as_slice() {
            [0x1f, 0x8b, ..] => {
                let f = File::open(&blob).map_err(|e| StoreError::io("open", &blob, e))?;
                hash_reader(flate2::read::GzDecoder::new(f)).map_err(|e| StoreError::Archive {
                    path: rootfs.to_owned(),
                    reason: format!("it is not valid gzip: {e}"),
                })?
            }
            [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                return Err(StoreError::Archive {
                    path: rootfs.to_owned(),
                    reason: "zstd root filesystems are not supported: give a plain or gzip tar"
                        .into(),
                })
            }
            _ => layer.digest.clone(),
        };
        let created = now_rfc3339();
        let config = serde_json::to_vec(&json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created": created, "created_by": "skiff import"}],
        }))
        .map_err(|e| StoreError::Invalid {
            what: "config".into(),
            reason: e.to_string(),
        })?;
        let config_digest = store.put_blob(&config)?;
        added.push(config_digest.clone());
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": spec::OCI_MANIFEST,
            "config": {"mediaType": spec::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": layer_media_type(&layer.magic, true), "digest": layer.digest.to_string(), "size": layer.size}],
        }))
        .map_err(|e| StoreError::Invalid { what: "manifest".into(), reason: e.to_string() })?;
        let manifest_digest = store.put_blob(&manifest)?;
        added.push(manifest_digest.clone());
        store.set_name(store::entry(
            &name.canonical(),
            spec::OCI_MANIFEST,
            &manifest_digest,
            manifest.len() as u64,
        ))?;
        Ok(config_digest)
    })
}
