//! Named volumes: directories skiff keeps under `$SKIFF_ROOT/volumes/<name>/` (the files in
//! `_data`, the metadata in `volume.json`), shared into a container's VM like a bind mount.
//! A volume is made by `skiff volume create` or on first use by `run`; one that any container
//! (running or not) mounts is in use and cannot be removed.

pub mod commands;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::mounts::valid_volume_name;

/// What `volume.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// RFC 3339, UTC.
    pub created: String,
}

/// One named volume.
#[derive(Debug, Clone)]
pub struct Volume {
    pub name: String,
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Volume {
    /// The directory whose files the container sees.
    pub fn data(&self) -> PathBuf {
        self.dir.join("_data")
    }
}

/// Where the volumes live.
pub fn root() -> PathBuf {
    image::Store::default_root().join("volumes")
}

fn check_name(name: &str) -> Result<()> {
    if !valid_volume_name(name) {
        bail!("invalid volume name {name:?}: use letters, digits, _ . - (starting with a letter or digit)");
    }
    Ok(())
}

/// The volume `name`, if it exists.
pub fn get(root: &Path, name: &str) -> Result<Option<Volume>> {
    check_name(name)?;
    let dir = root.join(name);
    let meta = match fs::read(dir.join("volume.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("volume {name}: its volume.json is damaged"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read volume {name}")),
    };
    Ok(Some(Volume {
        name: name.to_string(),
        dir,
        meta,
    }))
}

/// The volume `name`, made empty when missing; `true` when it was made now.
pub fn ensure(root: &Path, name: &str) -> Result<(Volume, bool)> {
    if let Some(v) = get(root, name)? {
        return Ok((v, false));
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    // Made aside and renamed into place: a volume is there whole or not at all, and of two
    // runs creating it at once one wins and the other uses it.
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(root)
        .with_context(|| format!("cannot create a volume in {}", root.display()))?;
    fs::create_dir(tmp.path().join("_data")).context("cannot create the volume's directory")?;
    let meta = Meta {
        created: crate::container::time::now(),
    };
    fs::write(tmp.path().join("volume.json"), serde_json::to_vec(&meta)?)
        .context("cannot write the volume's metadata")?;
    let made = match fs::rename(tmp.path(), root.join(name)) {
        Ok(()) => {
            let _ = tmp.keep();
            true
        }
        Err(e) if root.join(name).join("volume.json").exists() => {
            tracing::debug!("volume {name} appeared meanwhile: {e}");
            false
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create volume {name}")),
    };
    let v = get(root, name)?.with_context(|| format!("volume {name} vanished as it was made"))?;
    Ok((v, made))
}

/// Every volume, by name.
pub fn list(root: &Path) -> Result<Vec<Volume>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", root.display())),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !valid_volume_name(&name) {
            continue;
        }
        if let Some(v) = get(root, &name)? {
            out.push(v);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The containers (short ids) that mount volume `name`.
pub fn users(name: &str) -> Result<Vec<String>> {
    let containers = crate::container::state::list(&crate::container::state::containers_dir())?;
    Ok(containers
        .iter()
        .filter(|c| c.config.volumes().any(|v| v == name))
        .map(|c| crate::container::state::short_id(&c.config.id).to_string())
        .collect())
}

/// Removes volume `name` and its files, unless a container uses it.
pub fn remove(root: &Path, name: &str) -> Result<()> {
    let v = get(root, name)?.with_context(|| format!("no such volume: {name}"))?;
    let users = users(name)?;
    if !users.is_empty() {
        bail!(
            "volume {name} is in use by container {}: remove the container first (skiff rm)",
            users.join(", ")
        );
    }
    // Renamed out of sight first, so a half-removed volume is never found by name.
    let gone = root.join(format!(".rm-{name}"));
    fs::rename(&v.dir, &gone).with_context(|| format!("cannot remove volume {name}"))?;
    fs::remove_dir_all(&gone).with_context(|| format!("cannot remove {}", gone.display()))
}
