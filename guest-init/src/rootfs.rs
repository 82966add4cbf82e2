//! The container's root filesystem: the image's files read-only (an EROFS disk in the VM, a
//! directory natively) under an overlay whose upper directory takes the container's writes (an
//! ext4 disk that outlives the VM, or memory). With `--read-only` the upper is a small tmpfs
//! that only holds what guest-init itself puts in place (`/etc` files, mount points), and the
//! container's root is made read-only once they are there ([`seal`]). Disks are found by
//! their virtio-blk serial, so their order on the bus does not matter.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use protocol::{ImageRoot, RootSpec, ShareMount, TmpfsMount, WritableLayer};
use tracing::debug;

use crate::error::{Context, Error, Result};

/// How long a disk may take to show up in sysfs (it is probed during boot, before init).
const DISK_WAIT: Duration = Duration::from_secs(2);

fn mkdir_p(path: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .ctx(|| format!("mkdir {}", path.display()))
}

/// The block device whose virtio-blk serial is `serial`.
fn find_disk(serial: &str) -> Result<PathBuf> {
    let deadline = Instant::now() + DISK_WAIT;
    loop {
        if let Ok(entries) = fs::read_dir("/sys/block") {
            for e in entries.flatten() {
                let found = fs::read_to_string(e.path().join("serial"))
                    .is_ok_and(|s| s.trim_end_matches(['\0', '\n', ' ']) == serial);
                if found {
                    return Ok(Path::new("/dev").join(e.file_name()));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "the VM has no disk with serial {serial:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn mount_at(
    source: &Path,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(Some(source), target, Some(fstype), flags, data).ctx(|| {
        format!(
            "mount {} ({fstype}) on {}",
            source.display(),
            target.display()
        )
    })
}

/// Builds the root at `root` (an empty directory), with its parts under `scratch` (a
/// directory of guest-init's own).
pub fn assemble(spec: &RootSpec, root: &Path, scratch: &Path) -> Result<()> {
    let started = Instant::now();
    let lower = match &spec.image {
        ImageRoot::Disk { serial } => {
            let image = scratch.join("image");
            mkdir_p(&image, 0o755)?;
            mount_at(
                &find_disk(serial)?,
                &image,
                "erofs",
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                None,
            )?;
            image
        }
        ImageRoot::Directory { path } => PathBuf::from(path),
    };
    if lower.to_string_lossy().contains([',', ':']) {
        return Err(Error::Invalid(format!(
            "the image directory {} has a comma or colon in its path",
            lower.display()
        )));
    }
    let writable = scratch.join("writable");
    mkdir_p(&writable, 0o755)?;
    let tmpfs = Path::new("tmpfs");
    match &spec.writable {
        WritableLayer::Disk { serial } => mount_at(
            &find_disk(serial)?,
            &writable,
            "ext4",
            MsFlags::MS_NODEV,
            // the inode tables were left unwritten by mke2fs; zeroing them now would fill
            // the sparse disk for nothing
            Some("noinit_itable"),
        )?,
        WritableLayer::Memory => mount_at(
            tmpfs,
            &writable,
            "tmpfs",
            MsFlags::empty(),
            Some("mode=0755"),
        )?,
        WritableLayer::ReadOnly => mount_at(
            tmpfs,
            &writable,
            "tmpfs",
            MsFlags::empty(),
            Some("mode=0755,size=16m"),
        )?,
    }
    let upper = writable.join("upper");
    let work = writable.join("work");
    if !upper.exists() {
        mkdir_p(&upper, 0o755)?;
        // the overlay's root shows its upper directory's attributes: the image root's
        copy_attributes(&lower, &upper)?;
    }
    mkdir_p(&work, 0o700)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount_at(
        Path::new("overlay"),
        root,
        "overlay",
        MsFlags::empty(),
        Some(&options),
    )?;
    debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "root filesystem assembled"
    );
    Ok(())
}

/// Gives `to` the owner, mode and times of `from`.
fn copy_attributes(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(from).ctx(|| format!("stat {}", from.display()))?;
    std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid()))
        .ctx(|| format!("chown {}", to.display()))?;
    fs::set_permissions(
        to,
        std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
    )
    .ctx(|| format!("chmod {}", to.display()))?;
    let times = [
        nix::sys::time::TimeSpec::new(m.atime(), m.atime_nsec()),
        nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec()),
    ];
    nix::sys::stat::utimensat(
        None,
        to,
        &times[0],
        &times[1],
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .ctx(|| format!("set the times of {}", to.display()))
}

/// Inside the container, once its own mounts are in place: the tmpfs mounts and shared
/// directories of the spec, parents before what is mounted inside them (as docker orders
/// them), then a read-only root when the spec has no writable layer.
pub fn finish_inside(spec: &RootSpec, tmpfs: &[TmpfsMount], shares: &[ShareMount]) -> Result<()> {
    let depth = |p: &str| Path::new(p).components().count();
    let mut mounts: Vec<(usize, Result<&TmpfsMount, &ShareMount>)> = tmpfs
        .iter()
        .map(|t| (depth(&t.path), Ok(t)))
        .chain(shares.iter().map(|s| (depth(&s.target), Err(s))))
        .collect();
    // stable: mounts at the same depth keep the order they were given in
    mounts.sort_by_key(|m| m.0);
    for (_, m) in mounts {
        match m {
            Ok(t) => mount_tmpfs(t)?,
            Err(s) => crate::shares::mount_share(s)?,
        }
    }
    if spec.writable == WritableLayer::ReadOnly {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx(|| "make the root read-only".into())?;
    }
    Ok(())
}

/// Mounts one `--tmpfs`: flags as named (docker's default is `nosuid,nodev,noexec` unless
/// `suid`, `dev` or `exec` say otherwise), the rest as tmpfs's own options.
fn mount_tmpfs(t: &TmpfsMount) -> Result<()> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut data = Vec::new();
    for o in &t.options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags -= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags -= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags -= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags -= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            other => data.push(other),
        }
    }
    let target = Path::new(&t.path);
    if !target.is_absolute() {
        return Err(Error::Invalid(format!(
            "tmpfs path {:?} is not absolute",
            t.path
        )));
    }
    mkdir_p(target, 0o755)?;
    let data = data.join(",");
    mount_at(
        Path::new("tmpfs"),
        target,
        "tmpfs",
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
}
