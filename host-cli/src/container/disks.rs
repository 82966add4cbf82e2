//! A container's disks, in its directory: the image's read-only EROFS disk, hard-linked from the
//! store's cache (so the container keeps its image's files whatever later happens to the cache,
//! at no cost in space), and its writable layer, a sparse ext4 disk made by `mke2fs` that holds
//! everything the container changes, kept across `skiff start`s until `skiff rm` (`--read-only`
//! containers have none). The guest finds each by its virtio-blk serial.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image::ResolvedImage;
use protocol::{ImageRoot, RootSpec, WritableLayer};

use crate::engine::Disk;

const IMAGE_SERIAL: &str = "skiff-image";
const WRITABLE_SERIAL: &str = "skiff-rw";
const IMAGE_FILE: &str = "image.erofs";
const WRITABLE_FILE: &str = "rootfs.ext4";
/// How long an image disk's build goes on before its progress bar shows.
const SHOW_AFTER: Duration = Duration::from_millis(300);
/// The writable layer's size; sparse, so only what the container writes takes space.
const WRITABLE_SIZE: &str = "32G";

/// Where the guest finds the container's root filesystem.
pub fn root_spec(read_only: bool) -> RootSpec {
    RootSpec {
        image: ImageRoot::Disk {
            serial: IMAGE_SERIAL.into(),
        },
        writable: if read_only {
            WritableLayer::ReadOnly
        } else {
            WritableLayer::Disk {
                serial: WRITABLE_SERIAL.into(),
            }
        },
    }
}

/// The disks the container's VM gets.
pub fn attachments(dir: &Path, read_only: bool) -> Vec<Disk> {
    let mut disks = vec![Disk {
        path: dir.join(IMAGE_FILE),
        read_only: true,
        serial: IMAGE_SERIAL,
    }];
    if !read_only {
        disks.push(Disk {
            path: dir.join(WRITABLE_FILE),
            read_only: false,
            serial: WRITABLE_SERIAL,
        });
    }
    disks
}

/// The disks as `inspect` shows them (docker's `GraphDriver.Data`): each one's path, and for
/// the writable layer the bytes it takes on the host (it is sparse).
pub fn inspect(dir: &Path, read_only: bool) -> serde_json::Value {
    use std::os::unix::fs::MetadataExt;
    let mut data = serde_json::Map::new();
    for d in attachments(dir, read_only) {
        let key = if d.read_only {
            "ImageDisk"
        } else {
            "WritableDisk"
        };
        data.insert(key.into(), serde_json::json!(d.path));
        if !d.read_only {
            let used = fs::metadata(&d.path).map(|m| m.blocks() * 512).unwrap_or(0);
            data.insert("WritableDiskBytesUsed".into(), serde_json::json!(used));
        }
    }
    serde_json::Value::Object(data)
}

/// The disks of `image`, as [`attachments`] names them, in the new container's directory.
pub fn prepare(dir: &Path, image: &ResolvedImage, read_only: bool) -> Result<()> {
    let store = crate::commands::store()?;
    let bar = building_bar(image);
    let progress = |n: u64| advance(&bar, n);
    let disk = store
        .image_disk(image, &progress)
        .with_context(|| format!("cannot make the disk of image {}", image.reference))?;
    if let Some((bar, _)) = bar {
        bar.finish_and_clear();
    }
    if let Some(built) = disk.built {
        tracing::debug!(?built, "image disk built");
    }
    link_or_copy(&disk.file, &dir.join(IMAGE_FILE))?;
    if !read_only {
        make_writable_layer(&dir.join(WRITABLE_FILE))?;
    }
    Ok(())
}

/// Gives the container its own name for the open image disk `disk` (which a sweep may have
/// unlinked from the store since): a hard link, or a copy where the container's directory is
/// on another filesystem than the store.
fn link_or_copy(disk: &fs::File, target: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", disk.as_raw_fd()))?;
    let to = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()))
        .context("the container's directory has a NUL byte in its path")?;
    // SAFETY: two NUL-terminated paths; AT_SYMLINK_FOLLOW links the file the fd names.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EXDEV) {
        return Err(err)
            .with_context(|| format!("cannot link the image disk to {}", target.display()));
    }
    let mut out = fs::File::create_new(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    std::io::copy(&mut &*disk, &mut out)
        .with_context(|| format!("cannot copy the image disk to {}", target.display()))?;
    Ok(())
}

/// A progress bar on a terminal for building an image's disk, `None` elsewhere. It stays
/// hidden until the build has taken a while (a cached disk never shows it); see [`advance`].
fn building_bar(image: &ResolvedImage) -> Option<(indicatif::ProgressBar, Instant)> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = image.layers.iter().map(|l| l.size).sum();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::hidden(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "writing the image disk [{bar:30}] {bytes:>10}/{total_bytes:<10} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some((bar, Instant::now()))
}

/// Moves the bar on by `n` bytes, showing it once the build is older than [`SHOW_AFTER`].
fn advance(bar: &Option<(indicatif::ProgressBar, Instant)>, n: u64) {
    if let Some((bar, started)) = bar {
        if bar.is_hidden() && started.elapsed() > SHOW_AFTER {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        bar.inc(n);
    }
}

/// Makes the sparse ext4 writable layer at `path`.
fn make_writable_layer(path: &Path) -> Result<()> {
    let mke2fs: PathBuf = crate::programs::find("SKIFF_MKE2FS", "mke2fs").with_context(|| {
        "mke2fs is not installed (it makes the container's writable layer): apt-get install e2fsprogs, or set SKIFF_MKE2FS"
    })?;
    let out = Command::new(&mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-m", "0"])
        // the inode tables and journal stay unwritten (the guest mounts with noinit_itable),
        // so the disk starts at a few MiB
        .args([
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        ])
        .arg(path)
        .arg(WRITABLE_SIZE)
        .output()
        .with_context(|| format!("cannot run {}", mke2fs.display()))?;
    if !out.status.success() {
        let why: String = String::from_utf8_lossy(&out.stderr)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        bail!(
            "{} could not make the writable layer {}: {}",
            mke2fs.display(),
            path.display(),
            why.chars().take(300).collect::<String>()
        );
    }
    Ok(())
}
