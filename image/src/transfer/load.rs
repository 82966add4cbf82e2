//! `load`: an oci-archive or a docker-archive into the store, every blob verified on the way.

use std::fs;
use std::io::Read;
use std::path::Path;

use super::{adding, archive_name, docker};
use crate::archive;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::layout::{Layout, MAX_JSON};
use crate::reference::{Selector, Transport};
use crate::spec::{self, Index, Manifest};
use crate::store::{self, Store, StoreError, StoreResult};

/// Loads the images of the archive at `path` (either kind); returns the names recorded.
pub fn load(store: &Store, path: &Path) -> StoreResult<Vec<String>> {
    adding(store, |added| match archive::unpack(path) {
        Ok(dir) => load_layout(store, dir.path(), path, added),
        Err(ImageError::DockerArchive(_)) => docker::load(store, path, added),
        Err(e) => Err(e.into()),
    })
}

/// Copies each image that the layout's index.json names into the store.
fn load_layout(
    store: &Store,
    dir: &Path,
    archive: &Path,
    added: &mut Vec<Digest>,
) -> StoreResult<Vec<String>> {
    let layout = Layout::open(dir, archive, Transport::OciArchive)?;
    let index_path = dir.join(spec::INDEX_FILE);
    let mut bytes = Vec::new();
    fs::File::open(&index_path)
        .and_then(|f| f.take(MAX_JSON + 1).read_to_end(&mut bytes))
        .map_err(|e| StoreError::io("read", &index_path, e))?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| StoreError::Archive {
        path: archive.to_owned(),
        reason: format!("index.json is not valid: {e}"),
    })?;
    let mut names = Vec::new();
    for desc in &index.manifests {
        let digest = Digest::parse(&desc.digest).ok_or_else(|| StoreError::Archive {
            path: archive.to_owned(),
            reason: format!(
                "index.json holds a bad digest {:?}",
                store::error::one_line(&desc.digest, 80)
            ),
        })?;
        let image = layout.resolve(&Selector::Digest(digest))?;
        let manifest =
            Digest::parse(&image.manifest_digest).ok_or_else(|| StoreError::Archive {
                path: archive.to_owned(),
                reason: "bad manifest digest".into(),
            })?;
        let config = Digest::parse(&image.config_digest).ok_or_else(|| StoreError::Archive {
            path: archive.to_owned(),
            reason: "bad config digest".into(),
        })?;
        for layer in &image.layers {
            let d = Digest::parse(&layer.digest).ok_or_else(|| StoreError::Archive {
                path: archive.to_owned(),
                reason: "bad layer digest".into(),
            })?;
            if store.copy_blob(&layer.path, &d, layer.size)? {
                added.push(d);
            }
        }
        for d in [config, manifest.clone()] {
            let p = d.blob_path(dir);
            let size = fs::metadata(&p)
                .map_err(|e| StoreError::io("read", &p, e))?
                .len();
            if store.copy_blob(&p, &d, size)? {
                added.push(d);
            }
        }
        let m: Manifest = store.json_blob(manifest.as_str())?;
        let media_type = m
            .media_type
            .unwrap_or_else(|| spec::OCI_MANIFEST.to_owned());
        let size = fs::metadata(store.blob_path(&manifest)).map_or(0, |m| m.len());
        let name = archive_name(archive, desc.ref_name().unwrap_or("latest"))?;
        store.set_name(store::entry(&name, &media_type, &manifest, size))?;
        names.push(name);
    }
    Ok(names)
}
