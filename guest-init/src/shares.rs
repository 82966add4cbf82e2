//! Shared host directories in the container (`-v`, `--mount`): each virtio-fs share the spec
//! names is mounted at its target from inside the container's mount namespace (after
//! pivot_root, so a symlink in the image resolves within the container's root), read-only when
//! asked. A share is first mounted on a staging directory in the container's private `/dev`
//! when only one file of it is wanted (a file bind) or when an empty named volume is first
//! filled with what the image has at the target, as docker does.

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use protocol::ShareMount;

use crate::error::{Context, Error, Result};

/// Where a share is mounted for a moment (the container's `/dev` is guest-init's own tmpfs).
const STAGING: &str = "/dev/.skiff-share";

/// Whether `path` is absolute and has no `..`.
fn clean_absolute(path: &str) -> bool {
    let p = Path::new(path);
    p.is_absolute() && p.components().all(|c| c != Component::ParentDir)
}

/// Mounts one share at its target.
pub fn mount_share(share: &ShareMount) -> Result<()> {
    if !clean_absolute(&share.target) || share.target == "/" {
        return Err(Error::Invalid(format!(
            "mount target {:?} must be an absolute path other than /",
            share.target
        )));
    }
    let entry = &share.entry;
    if entry.contains('/') || entry == "." || entry == ".." {
        return Err(Error::Invalid(format!("invalid share entry {entry:?}")));
    }
    let target = Path::new(&share.target);
    if entry.is_empty() && !share.populate {
        mkdir_p(target)?;
        return virtiofs(&share.tag, target, share.read_only);
    }
    let staging = Path::new(STAGING);
    mkdir_p(staging)?;
    virtiofs(&share.tag, staging, false)?;
    let result = (|| {
        // only while the volume is empty: a later start finds it filled and keeps it
        let empty = fs::read_dir(staging).is_ok_and(|mut d| d.next().is_none());
        if share.populate && empty && fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            copy_tree(target, staging)?;
            copy_owner_mode(target, staging)?;
        }
        let source = if entry.is_empty() {
            mkdir_p(target)?;
            staging.to_path_buf()
        } else {
            let source = staging.join(entry);
            if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
                return Err(Error::Invalid(format!(
                    "the shared file {entry} is gone from its host directory"
                )));
            }
            file_mount_point(target)?;
            source
        };
        bind(&source, target, share.read_only.then_some(MsFlags::empty()))
    })();
    let _ = umount2(staging, MntFlags::MNT_DETACH);
    let _ = fs::remove_dir(staging);
    result
}

fn mkdir_p(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .ctx(|| format!("mkdir {}", path.display()))
}

/// A file to bind a file on: created empty (with its parents) when missing.
fn file_mount_point(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::Invalid(format!(
            "{} in the container is not a file; cannot bind a file on it",
            target.display()
        ))),
        Err(_) => {
            if let Some(parent) = target.parent() {
                mkdir_p(parent)?;
            }
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(target)
                .map(drop)
                .ctx(|| format!("create {}", target.display()))
        }
    }
}

fn ro_flag(read_only: bool) -> MsFlags {
    if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    }
}

fn virtiofs(tag: &str, target: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(tag),
        target,
        Some("virtiofs"),
        ro_flag(read_only),
        None::<&str>,
    )
    .ctx(|| format!("mount the shared directory {tag} on {}", target.display()))
}

/// Binds `source` on `target`; `read_only: Some(flags)` then remounts the bind read-only with
/// `flags` besides.
pub(crate) fn bind(source: &Path, target: &Path, read_only: Option<MsFlags>) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("bind {} on {}", source.display(), target.display()))?;
    if let Some(flags) = read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
            None::<&str>,
        )
        .ctx(|| format!("make {} read-only", target.display()))?;
    }
    Ok(())
}

/// Gives `to` the owner and mode of `from`.
fn copy_owner_mode(from: &Path, to: &Path) -> Result<()> {
    let m = fs::symlink_metadata(from).ctx(|| format!("stat {}", from.display()))?;
    std::os::unix::fs::lchown(to, Some(m.uid()), Some(m.gid()))
        .ctx(|| format!("chown {}", to.display()))?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))
            .ctx(|| format!("chmod {}", to.display()))?;
    }
    Ok(())
}

/// Copies the directory tree `from` into the existing directory `to`: directories, regular
/// files and symlinks with their owners and modes (other kinds of file are left out).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).ctx(|| format!("read {}", from.display()))? {
        let entry = entry.ctx(|| format!("read {}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .ctx(|| format!("stat {}", src.display()))?;
        if kind.is_dir() {
            fs::create_dir(&dst).ctx(|| format!("mkdir {}", dst.display()))?;
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst).ctx(|| format!("copy {}", src.display()))?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&src).ctx(|| format!("readlink {}", src.display()))?;
            std::os::unix::fs::symlink(&link, &dst).ctx(|| format!("symlink {}", dst.display()))?;
        } else {
            continue;
        }
        copy_owner_mode(&src, &dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_tree_keeps_files_links_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("from"), d.path().join("to"));
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::write(from.join("sub/f"), b"data").unwrap();
        fs::set_permissions(from.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/f", from.join("link")).unwrap();
        fs::create_dir(&to).unwrap();
        copy_tree(&from, &to).unwrap();
        assert_eq!(fs::read(to.join("sub/f")).unwrap(), b"data");
        assert_eq!(
            fs::metadata(to.join("sub/f")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read_link(to.join("link")).unwrap(), Path::new("sub/f"));
    }

    #[test]
    fn targets_must_be_clean_absolute_paths() {
        assert!(clean_absolute("/a/b"));
        assert!(!clean_absolute("a/b"));
        assert!(!clean_absolute("/a/../b"));
    }
}
