//! Moving images in and out of the store without a registry: `load` and `save` of oci-archive
//! and docker-archive tarballs, and `import` of a root filesystem tarball as a one-layer image.

mod docker;
mod import;
mod load;
mod save;

pub use import::import;
pub use load::load;
pub use save::{save, ArchiveFormat};

use std::path::{Component, Path, PathBuf};

use crate::name::ImageName;
use crate::store::{Store, StoreResult};

/// Media type of a layer from its first bytes: gzip, zstd, else a plain tar.
fn layer_media_type(magic: &[u8], oci: bool) -> &'static str {
    match (magic, oci) {
        ([0x1f, 0x8b, ..], true) => "application/vnd.oci.image.layer.v1.tar+gzip",
        ([0x1f, 0x8b, ..], false) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ([0x28, 0xb5, 0x2f, 0xfd, ..], _) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (_, true) => "application/vnd.oci.image.layer.v1.tar",
        (_, false) => "application/vnd.docker.image.rootfs.diff.tar",
    }
}

/// The store name for an image an archive names `name`: a full image name as it is; a bare
/// tag `T` (as `skopeo copy … oci-archive:FILE:T` writes) becomes `localhost/<file stem>:T`.
fn archive_name(archive: &Path, name: &str) -> StoreResult<String> {
    if let Ok(n) = name.parse::<ImageName>() {
        if name.contains('/') || name.contains(':') || name.contains('@') {
            return Ok(n.canonical());
        }
    }
    let stem: String = archive
        .file_name()
        .map(|f| f.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "image" } else { stem };
    Ok(format!("localhost/{stem}:{name}")
        .parse::<ImageName>()?
        .canonical())
}

/// `path` made relative and free of `.`/`..`, or `None` when it would leave the archive.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Runs `f` with the store marked as being added to; on failure, removes the blobs it added
/// that nothing references, so a failed load or import leaves the store as it was.
fn adding<T>(
    store: &Store,
    f: impl FnOnce(&mut Vec<crate::Digest>) -> StoreResult<T>,
) -> StoreResult<T> {
    let lock = store.adding()?;
    let mut added = Vec::new();
    let result = f(&mut added);
    drop(lock);
    if result.is_err() {
        store.discard_unreferenced(&added);
    }
    result
}

/// Current time as RFC 3339 (UTC, seconds).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_archives() {
        let p = Path::new("/x/busybox-latest.oci.tar");
        assert_eq!(
            archive_name(p, "latest").unwrap(),
            "localhost/busybox-latest:latest"
        );
        assert_eq!(
            archive_name(p, "docker.io/library/busybox:1").unwrap(),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            archive_name(p, "busybox:1").unwrap(),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(normalize(Path::new("./a/../b")), Some(PathBuf::from("b")));
        assert_eq!(normalize(Path::new("../b")), None);
        assert_eq!(normalize(Path::new("/etc")), None);
    }

    #[test]
    fn timestamps() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
