//! Image disks: each image's layers written once into a read-only EROFS filesystem image (the
//! container's root disk), cached under `$SKIFF_ROOT/images/disks/<key>.erofs`.
//!
//! The key is the sha256 of the writer's format version and the image's ordered layer digests:
//! images that share all their layers (retagged, or differing only in config) share a disk, and
//! the layer digests are checked content (every blob is verified against them, and again as the
//! disk is written), so no image can plant a disk another image will use. A disk is written to a temporary file under the shared
//! store lock (so a sweep cannot remove it half-written) and renamed into place; a per-key lock
//! makes concurrent first runs build it once, the others waiting for it. An existing disk whose
//! superblock does not carry its key, or whose length is not what the superblock says, is
//! rebuilt. While a disk is written its layers are hashed again (`inflate`), so a layout that
//! changed after it was opened cannot plant its bytes under the digests of other ones. Sweeps
//! remove disks no name or running container's image references; a container links its own
//! copy, so removal never breaks one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use tracing::{debug, info};

use super::inflate::{LayerTar, Verdict};
use super::{Mode, Store, StoreError, StoreResult};
use crate::erofs::{self, Built, ErofsError};
use crate::resolved::ResolvedImage;

/// Changes whenever the writer's output for the same layers changes.
const WRITER_VERSION: &str = "skiff-erofs 1";

/// An image disk ready to attach.
#[derive(Debug)]
pub struct ImageDisk {
    pub path: PathBuf,
    /// Open read-only: valid even if a sweep removes the path.
    pub file: File,
    /// What was built, when this call built it (`None`: it was cached).
    pub built: Option<Built>,
}

/// The cache key of an image's disk.
pub fn disk_key<'a>(layer_digests: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    h.update(WRITER_VERSION.as_bytes());
    for d in layer_digests {
        h.update(b"\n");
        h.update(d.as_bytes());
    }
    hex::encode(h.finalize())
}

fn uuid_of_key(key: &str) -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if let Ok(bytes) = hex::decode(&key[..32.min(key.len())]) {
        uuid[..bytes.len()].copy_from_slice(&bytes);
    }
    uuid
}

impl Store {
    pub(crate) fn disks_dir(&self) -> PathBuf {
        self.dir.join("disks")
    }

    fn disk_path(&self, key: &str) -> PathBuf {
        self.disks_dir().join(format!("{key}.erofs"))
    }

    /// The image's disk, built now if it is not cached (`progress` gets the count of layer
    /// bytes read as the build goes).
    pub fn image_disk(
        &self,
        image: &ResolvedImage,
        progress: &dyn Fn(u64),
    ) -> StoreResult<ImageDisk> {
        let key = disk_key(image.layers.iter().map(|l| l.digest.as_str()));
        let path = self.disk_path(&key);
        if let Some(file) = open_valid(&path, &key) {
            return Ok(ImageDisk {
                path,
                file,
                built: None,
            });
        }
        // the shared store lock first: a sweep, which holds it exclusively, may then remove
        // the disk lock files, as no builder is between opening one and locking it
        let _adding = self.adding()?;
        let _one_builder = self.lock(&format!("disk-{key}"), Mode::Exclusive)?;
        if let Some(file) = open_valid(&path, &key) {
            debug!(%key, "another run built the image disk");
            return Ok(ImageDisk {
                path,
                file,
                built: None,
            });
        }
        let started = Instant::now();
        let dir = self.disks_dir();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
        let tmp = tempfile::Builder::new()
            .prefix("disk-")
            .tempfile_in(self.tmp_dir())
            .map_err(|e| StoreError::io("create a temporary file in", self.tmp_dir(), e))?;
        let built = write_layers(image, tmp.as_file(), uuid_of_key(&key), progress)?;
        // on disk before its name is (a crash must not leave a disk that looks whole), and
        // read-only: containers share its inode
        let file = tmp.as_file();
        file.sync_all()
            .and_then(|()| {
                file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
            })
            .map_err(|e| StoreError::io("write", tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| StoreError::io("store the image disk as", &path, e.error))?;
        info!(
            image = %image.reference,
            %key,
            inodes = built.inodes,
            bytes = built.bytes,
            dead_bytes = built.dead_bytes,
            elapsed = ?started.elapsed(),
            "built the image disk"
        );
        let file = open_valid(&path, &key).ok_or_else(|| StoreError::Invalid {
            what: format!("image disk {}", path.display()),
            reason:
                "it cannot be read back after writing it; run `skiff image prune` and try again"
                    .into(),
        })?;
        Ok(ImageDisk {
            path,
            file,
            built: Some(built),
        })
    }

    /// Removes the disks whose key is not in `keep`, and the lock files of disks that are not
    /// there; returns the count of disks and the bytes that freed (a disk containers still
    /// link to frees nothing yet). Called by a sweep, which holds the store lock exclusively.
    pub(crate) fn sweep_disks(&self, keep: &std::collections::HashSet<String>) -> (usize, u64) {
        use std::os::unix::fs::MetadataExt;
        let (mut count, mut bytes) = (0, 0);
        for d in fs::read_dir(self.disks_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = d.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".erofs") else {
                continue;
            };
            if keep.contains(key) {
                continue;
            }
            let meta = d.metadata().ok();
            if fs::remove_file(d.path()).is_ok() {
                debug!(%key, "removed an unreferenced image disk");
                count += 1;
                bytes += meta.filter(|m| m.nlink() == 1).map_or(0, |m| m.len());
            }
        }
        for l in fs::read_dir(self.locks_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = l.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_prefix("disk-") {
                if !self.disk_path(key).exists() {
                    let _ = fs::remove_file(l.path());
                }
            }
        }
        (count, bytes)
    }
}

/// Opens the disk at `path` if its superblock carries `key` and the file is as long as the
/// superblock says.
fn open_valid(path: &Path, key: &str) -> Option<File> {
    let file = File::open(path).ok()?;
    if erofs::uuid_of(&file) == Some(uuid_of_key(key)) {
        Some(file)
    } else {
        if path.exists() {
            info!(path = %path.display(), "the cached image disk is not valid: rebuilding it");
        }
        None
    }
}

fn write_layers(
    image: &ResolvedImage,
    out: &File,
    uuid: [u8; 16],
    progress: &dyn Fn(u64),
) -> StoreResult<Built> {
    let invalid = |reason: String| StoreError::Invalid {
        what: format!("image {}", image.reference),
        // a tar error may quote the layer's bytes
        reason: super::error::one_line(&reason, 300),
    };
    let verdicts: Vec<Verdict> = image.layers.iter().map(|_| Verdict::default()).collect();
    let readers = image
        .layers
        .iter()
        .zip(&verdicts)
        .map(|(l, v)| LayerTar::new(l, progress, v.clone()));
    let built = erofs::write(readers, out, uuid, |index, e| {
        let layer = &image.layers[index];
        ErofsError::Layer(format!("layer {} ({}): {e}", index + 1, layer.digest))
    })
    .map_err(|e| invalid(e.to_string()))?;
    for (layer, verdict) in image.layers.iter().zip(&verdicts) {
        verdict.check(layer).map_err(invalid)?;
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Peak RSS growth of this process (KiB) while `f` runs: the high-water mark is reset first
    /// (`clear_refs` 5).
    fn peak_growth(f: impl FnOnce()) -> u64 {
        let field = |name: &str| {
            let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                .unwrap_or(0)
        };
        fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
        let before = field("VmRSS:");
        f();
        field("VmHWM:").saturating_sub(before)
    }

    /// The benchmark's figure for the builder's memory: writing the busybox (1 MB) and the
    /// Debian (51 MB) test images' disks, `$SKIFF_TEST_IMAGES` being tests/images/build.sh's
    /// output. Run by scripts/bench.sh.
    #[test]
    #[ignore]
    fn bench_disk_builder_memory() {
        let images = std::env::var("SKIFF_TEST_IMAGES").expect("SKIFF_TEST_IMAGES");
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for name in ["busybox", "debian"] {
            let image = crate::open(&format!("oci:{images}/oci/{name}:latest")).unwrap();
            let size: u64 = image.layers.iter().map(|l| l.size).sum();
            let mut built = None;
            let started = std::time::Instant::now();
            let grew = peak_growth(|| built = store.image_disk(&image, &|_| {}).unwrap().built);
            let elapsed = started.elapsed();
            let built = built.expect("a fresh store builds the disk");
            println!(
                "image disk of {name}: {} layer bytes -> {} bytes, {} inodes in {elapsed:.2?}; builder peak RSS growth {grew} KiB",
                size, built.bytes, built.inodes
            );
        }
    }
}
