//! The guest's initramfs: an uncompressed cpio (newc) archive holding only `/init` (guest-init)
//! and `/dev/console`, generated on the host and cached under a key derived from the guest-init
//! file's identity (path, device, inode, size, modification and change times): any rewrite of
//! the binary changes the key, and a run with a cached initramfs reads nothing of guest-init.
//! The newc writer takes any members: the nested test VM (`tests/nested/`) builds its own.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// One member of a newc archive, owned by root.
pub struct Member<'a> {
    name: &'a str,
    mode: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl<'a> Member<'a> {
    /// A directory (`name` without a leading `/`).
    pub fn dir(name: &'a str, perm: u32) -> Self {
        Member {
            name,
            mode: S_IFDIR | perm,
            rdev: (0, 0),
            data: &[],
        }
    }

    /// A regular file holding `data`.
    pub fn file(name: &'a str, perm: u32, data: &'a [u8]) -> Self {
        Member {
            name,
            mode: S_IFREG | perm,
            rdev: (0, 0),
            data,
        }
    }

    /// A character device node.
    pub fn char_device(name: &'a str, perm: u32, major: u32, minor: u32) -> Self {
        Member {
            name,
            mode: S_IFCHR | perm,
            rdev: (major, minor),
            data: &[],
        }
    }
}

fn pad4(w: &mut impl Write, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

fn write_member(w: &mut impl Write, ino: u32, e: &Member) -> io::Result<()> {
    let name_size = e.name.len() + 1;
    let nlink = if e.mode & S_IFDIR != 0 { 2 } else { 1 };
    let size = u32::try_from(e.data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "initramfs member over 4 GiB"))?;
    let fields = [
        ino,
        e.mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size,
        0, // devmajor
        0, // devminor
        e.rdev.0,
        e.rdev.1,
        name_size as u32,
        0, // check
    ];
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(e.name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w, 110 + name_size)?;
    w.write_all(e.data)?;
    pad4(w, e.data.len())
}

/// Writes a newc archive of `members`, in order (a directory before what it holds), and its
/// trailer.
pub fn write_archive(w: &mut impl Write, members: &[Member]) -> io::Result<()> {
    for (i, e) in members.iter().enumerate() {
        write_member(w, i as u32 + 1, e)?;
    }
    let trailer = Member {
        name: "TRAILER!!!",
        mode: 0,
        rdev: (0, 0),
        data: &[],
    };
    write_member(w, 0, &trailer)
}

/// Writes the guest's archive: `/dev`, `/dev/console` and `/init` = `init`.
pub fn write_cpio(w: &mut impl Write, init: &[u8]) -> io::Result<()> {
    write_archive(
        w,
        &[
            Member::dir("dev", 0o755),
            Member::char_device("dev/console", 0o600, 5, 1),
            Member::file("init", 0o755, init),
        ],
    )
}

/// Returns the cached initramfs for this guest-init binary, building it on first use.
pub fn cached(guest_init: &Path, cache: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(guest_init)
        .with_context(|| format!("cannot read guest-init at {}", guest_init.display()))?;
    let identity = format!(
        "{}\0{}:{}:{}:{}.{}:{}.{}",
        guest_init.display(),
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    );
    let key = hex::encode(&Sha256::digest(identity.as_bytes())[..12]);
    let dir = cache.join("initramfs");
    let path = dir.join(format!("{key}.cpio"));
    if path.is_file() {
        tracing::debug!(path = %path.display(), "initramfs cached");
        return Ok(path);
    }
    let init = fs::read(guest_init)
        .with_context(|| format!("cannot read guest-init at {}", guest_init.display()))?;
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    write_cpio(&mut io::BufWriter::new(tmp.as_file_mut()), &init)
        .with_context(|| format!("cannot write the initramfs in {}", dir.display()))?;
    tmp.persist(&path)
        .with_context(|| format!("cannot store the initramfs at {}", path.display()))?;
    tracing::debug!(path = %path.display(), "initramfs built");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_what_the_system_cpio_reads() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        let mut buf = Vec::new();
        write_cpio(&mut buf, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(buf.len() % 4, 0);
        fs::write(&archive, &buf).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "-v", "-F"])
            .arg(&archive)
            .output()
            .expect("cpio(1) must be installed (scripts/deps.sh)");
        assert!(out.status.success(), "{out:?}");
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 3, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" dev"));
        assert!(lines[1].starts_with("crw-------") && lines[1].contains("5,   1"));
        assert!(lines[2].starts_with("-rwxr-xr-x") && lines[2].ends_with(" init"));
        let extract = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("cpio")
            .args(["-i", "--quiet", "-F"])
            .arg(&archive)
            .arg("init")
            .current_dir(extract.path())
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            fs::read(extract.path().join("init")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn cached_archive_is_reused_until_guest_init_changes() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        fs::write(&init, b"one").unwrap();
        let a = cached(&init, dir.path()).unwrap();
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        assert_eq!(cached(&init, dir.path()).unwrap(), a);
        assert_eq!(fs::metadata(&a).unwrap().modified().unwrap(), mtime);
        // A rebuilt binary (written anew: other size or times, often another inode).
        fs::write(&init, b"three").unwrap();
        let b = cached(&init, dir.path()).unwrap();
        assert_ne!(b, a);
        let mut built = Vec::new();
        write_cpio(&mut built, b"three").unwrap();
        assert_eq!(fs::read(&b).unwrap(), built);
    }
}
