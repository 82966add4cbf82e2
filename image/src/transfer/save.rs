//! `save`: named images of the store into an oci-archive or a docker-archive. The tarball is
//! written to a temporary file beside the target and renamed when complete; entries carry fixed
//! owners, modes and times, so saving the same images twice gives the same bytes.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::json;

use super::docker::{Item, MANIFEST_JSON};
use crate::digest::Digest;
use crate::name::ImageName;
use crate::spec::{self, Manifest, REF_NAME};
use crate::store::{Entry, Store, StoreError, StoreResult};

/// Which kind of tarball to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar of an OCI image layout.
    Oci,
    /// `docker save`'s format: `manifest.json`, configs and layers.
    Docker,
}

/// Saves the images named by `users` (names or image IDs) to `out`.
pub fn save(store: &Store, users: &[String], out: &Path, format: ArchiveFormat) -> StoreResult<()> {
    let mut entries = Vec::new();
    for u in users {
        let e = store
            .find(u)?
            .ok_or_else(|| StoreError::NoSuchImage(u.clone()))?;
        entries.push(e);
    }
    // hold a pin on each manifest so a concurrent rmi cannot sweep the blobs mid-write
    let _pins = entries
        .iter()
        .map(|e| {
            Digest::parse(&e.digest)
                .ok_or_else(|| StoreError::Invalid {
                    what: format!("the store's entry for {}", e.name()),
                    reason: "bad digest".into(),
                })
                .and_then(|d| store.pin(&d))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".skiff-save-")
        .tempfile_in(dir)
        .map_err(|e| StoreError::io("create a file in", dir, e))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(tmp.as_file()));
    let written = match format {
        ArchiveFormat::Oci => write_oci(store, &entries, &mut tar),
        ArchiveFormat::Docker => write_docker(store, &entries, &mut tar),
    };
    written
        .and_then(|()| tar.into_inner())
        .and_then(|mut w| w.flush())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| StoreError::io("write", out, e))?;
    tmp.persist(out)
        .map_err(|e| StoreError::io("write", out, e.error))?;
    Ok(())
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

fn add_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
}

fn add_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    tar.append_data(&mut h, path, io::empty())
}

/// Adds a store blob as `path`, streaming it.
fn add_blob<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    path: &str,
    digest: &str,
) -> io::Result<()> {
    let d = Digest::parse(digest).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad digest {digest}"))
    })?;
    let file = File::open(store.blob_path(&d))?;
    let len = file.metadata()?.len();
    let mut h = header(len, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, path, file.take(len))
}

fn manifest_of(store: &Store, e: &Entry) -> io::Result<Manifest> {
    store
        .json_blob(&e.digest)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))
}

fn write_oci<W: Write>(
    store: &Store,
    entries: &[Entry],
    tar: &mut tar::Builder<W>,
) -> io::Result<()> {
    add_bytes(
        tar,
        spec::OCI_LAYOUT_FILE,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_dir(tar, "blobs/")?;
    add_dir(tar, "blobs/sha256/")?;
    let mut done = BTreeSet::new();
    let mut index = Vec::new();
    for e in entries {
        let m = manifest_of(store, e)?;
        let blobs = std::iter::once(e.digest.clone())
            .chain(std::iter::once(m.config.digest.clone()))
            .chain(m.layers.iter().map(|l| l.digest.clone()));
        for d in blobs {
            if done.insert(d.clone()) {
                let hex = d.trim_start_matches("sha256:");
                add_blob(store, tar, &format!("blobs/sha256/{hex}"), &d)?;
            }
        }
        index.push(json!({
            "mediaType": e.media_type,
            "digest": e.digest,
            "size": e.size,
            "annotations": {REF_NAME: e.name(), "io.containerd.image.name": e.name()},
        }));
    }
    let index = json!({"schemaVersion": 2, "mediaType": spec::OCI_INDEX, "manifests": index});
    add_bytes(tar, spec::INDEX_FILE, index.to_string().as_bytes())
}

fn write_docker<W: Write>(
    store: &Store,
    entries: &[Entry],
    tar: &mut tar::Builder<W>,
) -> io::Result<()> {
    let mut done = BTreeSet::new();
    let mut items: Vec<Item> = Vec::new();
    for e in entries {
        let m = manifest_of(store, e)?;
        let config = format!("{}.json", m.config.digest.trim_start_matches("sha256:"));
        if done.insert(config.clone()) {
            add_blob(store, tar, &config, &m.config.digest)?;
        }
        let mut layers = Vec::new();
        for l in &m.layers {
            let file = format!("{}.tar", l.digest.trim_start_matches("sha256:"));
            if done.insert(file.clone()) {
                add_blob(store, tar, &file, &l.digest)?;
            }
            layers.push(file);
        }
        let tag = e
            .name()
            .parse::<ImageName>()
            .ok()
            .filter(|n| n.digest.is_none())
            .map(|n| n.canonical());
        match items
            .iter_mut()
            .find(|i| i.config == config && i.layers == layers)
        {
            Some(item) => item.repo_tags.get_or_insert_with(Vec::new).extend(tag),
            None => items.push(Item {
                config,
                repo_tags: tag.map(|t| vec![t]),
                layers,
            }),
        }
    }
    let manifest = serde_json::to_vec(&items)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    add_bytes(tar, MANIFEST_JSON, &manifest)
}
