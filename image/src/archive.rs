//! Unpacking an oci-archive (a tar of an OCI image layout) into a private temporary directory.
//!
//! The tar is hostile input: only directories and regular files are accepted, every path must
//! stay inside the directory, and no entry may claim more bytes than the archive holds.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;
use tempfile::TempDir;
use tracing::debug;

use crate::error::{ImageError, Result};

/// Unpacks `archive` into a new temporary directory, removed when the returned handle drops.
pub fn unpack(archive: &Path) -> Result<TempDir> {
    let file = File::open(archive).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::NotFound(archive.to_owned()),
        _ => corrupt(archive, format!("cannot open it: {e}")),
    })?;
    let archive_len = file
        .metadata()
        .map_err(|e| corrupt(archive, format!("cannot stat it: {e}")))?
        .len();
    if fs::metadata(archive).is_ok_and(|m| m.is_dir()) {
        return Err(corrupt(
            archive,
            "it is a directory; use oci:DIR for an image layout directory".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("skiff-oci-archive-")
        .tempdir()
        .map_err(|e| unpack_error(archive, &std::env::temp_dir(), e))?;
    crate::tarcheck::check_extensions(&file).map_err(|r| corrupt(archive, r))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar.entries().map_err(|e| corrupt(archive, e.to_string()))?;
    let mut files = 0usize;
    // the first entry refused for its type; the scan goes on to tell a docker-archive apart
    let mut refused: Option<ImageError> = None;
    let (mut oci_layout, mut docker_manifest) = (false, false);
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(archive, e.to_string()))?;
        let raw_path = entry
            .path()
            .map_err(|e| corrupt(archive, e.to_string()))?
            .into_owned();
        let Some(rel) = contained(&raw_path) else {
            return Err(corrupt(
                archive,
                format!("entry {} escapes the archive", raw_path.display()),
            ));
        };
        let kind = entry.header().entry_type();
        oci_layout |= rel == Path::new("oci-layout");
        docker_manifest |= rel == Path::new("manifest.json");
        if refused.is_some() {
            continue;
        }
        match kind {
            EntryType::Directory => {
                fs::create_dir_all(dir.path().join(&rel))
                    .map_err(|e| unpack_error(archive, dir.path(), e))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(corrupt(archive, "a file entry has an empty name".into()));
                }
                let size = entry
                    .header()
                    .size()
                    .map_err(|e| corrupt(archive, e.to_string()))?;
                if size > archive_len {
                    return Err(corrupt(
                        archive,
                        format!(
                            "entry {} claims {size} bytes, more than the whole archive",
                            rel.display()
                        ),
                    ));
                }
                write_file(archive, dir.path(), &rel, &mut entry, size)?;
                files += 1;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            other => {
                refused = Some(corrupt(
                    archive,
                    format!(
                    "entry {} is a {other:?}: an oci-archive may only hold files and directories",
                    rel.display()
                ),
                ))
            }
        }
    }
    if docker_manifest && !oci_layout {
        return Err(ImageError::DockerArchive(archive.to_owned()));
    }
    if let Some(err) = refused {
        return Err(err);
    }
    if files == 0 {
        return Err(corrupt(archive, "it holds no files".into()));
    }
    debug!(archive = %archive.display(), files, dir = %dir.path().display(), "unpacked oci-archive");
    Ok(dir)
}

/// `path` made relative and free of `..`, or `None` when it would leave the directory.
fn contained(path: &Path) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(rel)
}

/// Copies one entry's `size` bytes to `dir/rel`; fewer bytes means the archive is truncated.
/// `rel` is the entry's path inside `dir`.
fn write_file(
    archive: &Path,
    dir: &Path,
    rel: &Path,
    entry: &mut impl Read,
    size: u64,
) -> Result<()> {
    let target = dir.join(rel);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| unpack_error(archive, dir, e))?;
    }
    let mut out = File::create(&target).map_err(|e| unpack_error(archive, dir, e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(archive, e.to_string())),
        };
        out.write_all(&buf[..n])
            .map_err(|e| unpack_error(archive, dir, e))?;
        copied += n as u64;
    }
    if copied != size {
        return Err(corrupt(
            archive,
            format!(
                "it is truncated ({copied} of {size} bytes of {})",
                rel.display()
            ),
        ));
    }
    Ok(())
}

fn corrupt(archive: &Path, reason: String) -> ImageError {
    ImageError::CorruptArchive {
        path: archive.to_owned(),
        reason,
    }
}

fn unpack_error(archive: &Path, dir: &Path, source: io::Error) -> ImageError {
    ImageError::Unpack {
        path: archive.to_owned(),
        dir: dir.to_owned(),
        source,
    }
}
