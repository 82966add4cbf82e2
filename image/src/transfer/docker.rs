//! docker-archive (the `docker save` tarball): `manifest.json` lists each image's config file,
//! tags and layer files. Reading is two passes over the tar (the names, then the files those
//! need), so nothing but the needed files is read and symlinked layers (`<id>/layer.tar ->
//! ../<hex>.tar`) are followed inside the archive only.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{layer_media_type, normalize};
use crate::digest::Digest;
use crate::layout::{MAX_JSON, MAX_LAYERS};
use crate::spec::{self, ConfigFile};
use crate::store::{self, Ingested, Store, StoreError, StoreResult};

/// Name of the index file of a docker-archive.
pub const MANIFEST_JSON: &str = "manifest.json";
/// How many symlinks one path may pass through.
const MAX_LINKS: usize = 8;

/// One image of `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Item {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Archive {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn open_tar(path: &Path) -> StoreResult<tar::Archive<File>> {
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    crate::tarcheck::check_extensions(&file).map_err(|r| corrupt(path, r))?;
    Ok(tar::Archive::new(file))
}

/// Loads every image of the docker-archive at `path`; returns the names recorded.
pub fn load(store: &Store, path: &Path, added: &mut Vec<Digest>) -> StoreResult<Vec<String>> {
    // pass 1: file names, symlinks, manifest.json
    let mut files: HashMap<PathBuf, u64> = HashMap::new();
    let mut links: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    let mut tar = open_tar(path)?;
    for entry in tar.entries().map_err(|e| corrupt(path, e.to_string()))? {
        let mut entry = entry.map_err(|e| corrupt(path, e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| corrupt(path, e.to_string()))?
            .into_owned();
        let rel = normalize(&raw)
            .ok_or_else(|| corrupt(path, format!("entry {} escapes the archive", raw.display())))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry
                    .header()
                    .size()
                    .map_err(|e| corrupt(path, e.to_string()))?;
                if rel == Path::new(MANIFEST_JSON) {
                    if size > MAX_JSON {
                        return Err(StoreError::TooLarge {
                            what: format!("{MANIFEST_JSON} in {}", path.display()),
                            size,
                            limit: MAX_JSON,
                        });
                    }
                    let mut bytes = Vec::new();
                    (&mut entry)
                        .take(MAX_JSON + 1)
                        .read_to_end(&mut bytes)
                        .map_err(|e| corrupt(path, e.to_string()))?;
                    manifest = Some(bytes);
                }
                files.insert(rel, size);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(path, e.to_string()))?
                    .ok_or_else(|| corrupt(path, "a symlink without a target"))?;
                let base = rel.parent().unwrap_or(Path::new("")).join(target);
                let resolved = normalize(&base).ok_or_else(|| {
                    corrupt(
                        path,
                        format!("symlink {} points outside the archive", rel.display()),
                    )
                })?;
                links.insert(rel, resolved);
            }
            _ => {}
        }
    }
    let manifest = manifest.ok_or_else(|| corrupt(path, format!("it has no {MANIFEST_JSON}")))?;
    let items: Vec<Item> = serde_json::from_slice(&manifest)
        .map_err(|e| corrupt(path, format!("{MANIFEST_JSON} is not valid: {e}")))?;
    if items.is_empty() {
        return Err(corrupt(path, format!("{MANIFEST_JSON} lists no images")));
    }
    let resolve = |name: &str| -> StoreResult<PathBuf> {
        let mut p = normalize(Path::new(name))
            .ok_or_else(|| corrupt(path, format!("{name:?} escapes the archive")))?;
        for _ in 0..MAX_LINKS {
            match links.get(&p) {
                Some(t) => p = t.clone(),
                None if files.contains_key(&p) => return Ok(p),
                None => break,
            }
        }
        Err(corrupt(
            path,
            format!("{MANIFEST_JSON} names {name:?}, which the archive does not hold"),
        ))
    };
    let mut needed: BTreeMap<PathBuf, Option<Ingested>> = BTreeMap::new();
    let mut plans = Vec::new();
    for item in &items {
        if item.layers.len() > MAX_LAYERS {
            return Err(corrupt(
                path,
                format!("an image has more than {MAX_LAYERS} layers"),
            ));
        }
        let config = resolve(&item.config)?;
        if files.get(&config).copied().unwrap_or(0) > MAX_JSON {
            return Err(corrupt(
                path,
                format!(
                    "config {} is larger than {MAX_JSON} bytes",
                    config.display()
                ),
            ));
        }
        let layers = item
            .layers
            .iter()
            .map(|l| resolve(l))
            .collect::<StoreResult<Vec<_>>>()?;
        needed.insert(config.clone(), None);
        for l in &layers {
            needed.insert(l.clone(), None);
        }
        plans.push((config, layers, item.repo_tags.clone().unwrap_or_default()));
    }
    // pass 2: stream the needed files into the store
    let mut tar = open_tar(path)?;
    for entry in tar.entries().map_err(|e| corrupt(path, e.to_string()))? {
        let entry = entry.map_err(|e| corrupt(path, e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| corrupt(path, e.to_string()))?
            .into_owned();
        let Some(rel) = normalize(&raw) else { continue };
        if let Some(slot) = needed.get_mut(&rel) {
            if slot.is_none() && entry.header().entry_type().is_file() {
                let ingested = store.ingest(entry)?;
                added.push(ingested.digest.clone());
                *slot = Some(ingested);
            }
        }
    }
    let got = |p: &PathBuf| -> StoreResult<Ingested> {
        needed
            .get(p)
            .cloned()
            .flatten()
            .ok_or_else(|| corrupt(path, format!("{} could not be read", p.display())))
    };
    let mut names = Vec::new();
    for (config_path, layer_paths, tags) in plans {
        let config = got(&config_path)?;
        let parsed: ConfigFile = store.json_blob(config.digest.as_str())?;
        let diff_ids = parsed.rootfs.map(|r| r.diff_ids.len()).unwrap_or(0);
        if diff_ids != layer_paths.len() {
            return Err(corrupt(
                path,
                format!(
                    "config {} lists {diff_ids} diff_ids for {} layers",
                    config_path.display(),
                    layer_paths.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for p in &layer_paths {
            let l = got(p)?;
            layers.push(json!({
                "mediaType": layer_media_type(&l.magic, false),
                "size": l.size,
                "digest": l.digest.to_string(),
            }));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": spec::DOCKER_MANIFEST,
            "config": {"mediaType": spec::DOCKER_CONFIG, "size": config.size, "digest": config.digest.to_string()},
            "layers": layers,
        }))
        .map_err(|e| corrupt(path, e.to_string()))?;
        let digest = store.put_blob(&manifest)?;
        added.push(digest.clone());
        // an untagged image is named after the archive, tagged with its short image ID
        let tags = if tags.is_empty() {
            vec![config.digest.hex()[..12].to_owned()]
        } else {
            tags
        };
        for tag in &tags {
            let name = super::archive_name(path, tag)?;
            store.set_name(store::entry(
                &name,
                spec::DOCKER_MANIFEST,
                &digest,
                manifest.len() as u64,
            ))?;
            names.push(name);
        }
    }
    Ok(names)
}
