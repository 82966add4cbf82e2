//! Unpacks image layers into the root filesystem with the OCI rules (whiteouts, opaque
//! directories, hard links, devices, owners, modes, mtimes, xattrs).
//!
//! Containment: unpacking runs in a dedicated thread that called `unshare(CLONE_FS)` and then
//! `chroot(root)`, so every path it touches — including symlinks planted by earlier entries or
//! layers, absolute or full of `..` — resolves inside the root, exactly as the container will
//! later see it. Names are also cleaned lexically (`tarpath`): a name climbing above the root
//! rejects the layer. The thread's own filesystem context (root, cwd, umask) is private, so the
//! rest of guest-init keeps the real root.
//!
//! Bounds: the tar crate runs in raw mode and guest-init reads PAX records and GNU long names
//! itself, at most [`MAX_META_BYTES`] each, so a hostile header cannot make it allocate without
//! limit. File data streams through a fixed buffer.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::sys::stat::{makedev, mknod, umask, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use protocol::LayerSpec;
use tar::EntryType;
use tracing::debug;

use crate::error::{Context, Error, Result};
use crate::layer::{compression, decoder, LayerStream};
use crate::tarpath::{self, Entry};

/// Largest PAX extension block or GNU long name accepted.
const MAX_META_BYTES: u64 = 1 << 20;
/// Size of the buffer file data is copied through.
const COPY_BUF: usize = 128 << 10;

/// Receives `layers` from `conn` and unpacks them, bottom first, into `root`.
///
/// On a bad layer the rest of the layers is still read (and discarded) so the session stays in
/// step, and the first error is returned.
pub fn unpack_layers<R: Read + Send>(
    root: &Path,
    layers: &[LayerSpec],
    conn: &mut R,
) -> Result<()> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("unpack".into())
            .stack_size(8 << 20)
            .spawn_scoped(scope, || {
                enter_root(root)?;
                let mut first_error = None;
                for (index, layer) in layers.iter().enumerate() {
                    let start = Instant::now();
                    let mut stream = LayerStream::new(conn, layer.size);
                    let result = if first_error.is_none() {
                        unpack_one(layer, &mut stream)
                    } else {
                        Ok(())
                    };
                    let result = result.and_then(|()| {
                        stream
                            .drain()
                            .map_err(|e| Error::Invalid(format!("layer stream: {e}")))
                    });
                    if let Err(e) = result {
                        if stream.is_broken() {
                            return Err(e);
                        }
                        first_error.get_or_insert(Error::Invalid(format!(
                            "layer {index} ({}): {e}",
                            layer.digest
                        )));
                        stream
                            .drain()
                            .map_err(|e| Error::Invalid(format!("layer stream: {e}")))?;
                    }
                    debug!(
                        index,
                        bytes = layer.size,
                        elapsed_us = start.elapsed().as_micros() as u64,
                        "layer unpacked"
                    );
                }
                first_error.map_or(Ok(()), Err)
            })
            .ctx(|| "start the unpack thread".into())?
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("the unpack thread panicked".into())))
    })
}

/// Gives this thread its own filesystem context rooted at `root`.
fn enter_root(root: &Path) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
        .ctx(|| "unshare the filesystem context".into())?;
    nix::unistd::chroot(root).ctx(|| format!("chroot into {}", root.display()))?;
    nix::unistd::chdir("/").ctx(|| "chdir / in the image root".into())?;
    umask(Mode::empty());
    Ok(())
}

fn unpack_one<R: Read>(layer: &LayerSpec, stream: &mut LayerStream<'_, R>) -> Result<()> {
    let compression = compression(&layer.media_type)?;
    let reader = decoder(compression, stream)?;
    Unpacker::default().apply_archive(reader)
}

/// One entry's metadata after PAX records and GNU long names were applied.
struct Meta {
    kind: EntryType,
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    device: (u64, u64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Extension records waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// The state of one layer being applied.
#[derive(Default)]
struct Unpacker {
    /// Paths created by this layer: whiteouts and opaque markers leave them alone.
    created: HashSet<PathBuf>,
    /// Directory mtimes, applied once the layer is complete (children change them).
    dir_times: Vec<(PathBuf, TimeSpec)>,
    buf: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

fn tar_err(e: io::Error) -> Error {
    bad(format!("tar stream: {e}"))
}

fn read_meta_block<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>> {
    let size = entry.header().entry_size().map_err(tar_err)?;
    if size > MAX_META_BYTES {
        return Err(bad(format!(
            "extension header of {size} bytes exceeds {MAX_META_BYTES}"
        )));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut v).map_err(tar_err)?;
    Ok(v)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn id32(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad(format!("{what} {v} out of range")))
}

fn parse_mtime(s: &str) -> Result<TimeSpec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| bad(format!("bad PAX mtime {s:?}")))?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        let n: i64 = digits
            .parse()
            .map_err(|_| bad(format!("bad PAX mtime {s:?}")))?;
        n * 10i64.pow(9 - digits.len() as u32)
    };
    Ok(TimeSpec::new(secs, nanos))
}

impl Meta {
    fn new<R: Read>(entry: &tar::Entry<'_, R>, pending: Pending) -> Result<Meta> {
        let h = entry.header();
        let mut meta = Meta {
            kind: h.entry_type(),
            path: pending
                .long_name
                .unwrap_or_else(|| h.path_bytes().into_owned()),
            link: pending
                .long_link
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned())),
            mode: h.mode().map_err(tar_err)? & 0o7777,
            uid: id32(h.uid().map_err(tar_err)?, "uid")?,
            gid: id32(h.gid().map_err(tar_err)?, "gid")?,
            mtime: TimeSpec::new(h.mtime().map_err(tar_err)? as i64, 0),
            device: (0, 0),
            xattrs: Vec::new(),
        };
        if matches!(meta.kind, EntryType::Char | EntryType::Block) {
            meta.device = (
                u64::from(h.device_major().map_err(tar_err)?.unwrap_or(0)),
                u64::from(h.device_minor().map_err(tar_err)?.unwrap_or(0)),
            );
        }
        if let Some(pax) = pending.pax {
            for ext in tar::PaxExtensions::new(&pax) {
                let ext = ext.map_err(|e| bad(format!("PAX record: {e}")))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let text = || String::from_utf8_lossy(value);
                match key {
                    b"path" => meta.path = value.to_vec(),
                    b"linkpath" => meta.link = Some(value.to_vec()),
                    b"uid" => {
                        meta.uid = text().parse().map_err(|_| bad("bad PAX uid"))?;
                    }
                    b"gid" => {
                        meta.gid = text().parse().map_err(|_| bad("bad PAX gid"))?;
                    }
                    b"mtime" => meta.mtime = parse_mtime(&text())?,
                    b"size" => {
                        let size: u64 = text().parse().map_err(|_| bad("bad PAX size"))?;
                        if size != h.entry_size().map_err(tar_err)? {
                            return Err(bad("PAX size overrides of the header are not supported"));
                        }
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            meta.xattrs.push((name.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn shown(&self) -> String {
        format!(
            "/{}",
            String::from_utf8_lossy(&self.path).trim_start_matches('/')
        )
    }
}

/// Removes whatever is at `path` (a directory with its contents); a missing path is fine.
fn remove_any(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("stat /{}", path.display())),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .ctx(|| format!("remove /{}", path.display()))
}

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| bad("name with a NUL byte"))
}

impl Unpacker {
    fn apply_archive<R: Read>(&mut self, reader: R) -> Result<()> {
        self.buf = vec![0; COPY_BUF];
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(tar_err)?.raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(tar_err)?;
            match entry.header().entry_type() {
                EntryType::XHeader => pending.pax = Some(read_meta_block(&mut entry)?),
                EntryType::XGlobalHeader => {
                    read_meta_block(&mut entry)?;
                }
                EntryType::GNULongName => {
                    pending.long_name = Some(trim_nul(read_meta_block(&mut entry)?));
                }
                EntryType::GNULongLink => {
                    pending.long_link = Some(trim_nul(read_meta_block(&mut entry)?));
                }
                EntryType::GNUSparse => return Err(bad("GNU sparse entries are not supported")),
                _ => {
                    let meta = Meta::new(&entry, std::mem::take(&mut pending))?;
                    let shown = meta.shown();
                    self.apply(meta, &mut entry)
                        .map_err(|e| bad(format!("{shown}: {e}")))?;
                }
            }
        }
        for (dir, mtime) in self.dir_times.iter().rev() {
            let target = if dir.as_os_str().is_empty() {
                Path::new("/")
            } else {
                dir
            };
            utimensat(
                None,
                target,
                &mtime.clone(),
                mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .ctx(|| format!("set the mtime of /{}", dir.display()))?;
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, meta: Meta, data: &mut R) -> Result<()> {
        let path = tarpath::clean(&meta.path).map_err(|e| bad(e.to_string()))?;
        match tarpath::classify(&path).map_err(|e| bad(e.to_string()))? {
            Entry::Ignored => return Ok(()),
            Entry::Whiteout(target) => {
                if !self.created.contains(&target) {
                    remove_any(&target)?;
                }
                return Ok(());
            }
            Entry::Opaque(dir) => {
                self.ensure_dir(&dir)?;
                return self.prune(&dir);
            }
            Entry::Plain => {}
        }
        if path.as_os_str().is_empty() {
            if meta.kind != EntryType::Directory {
                return Err(bad("only a directory may replace the root"));
            }
            return self.set_attrs(Path::new("/"), &meta, true);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .ctx(|| format!("create the parent directory /{}", parent.display()))?;
        }
        let existing = fs::symlink_metadata(&path).ok();
        let keep_dir =
            meta.kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            if meta.kind == EntryType::Link {
                let target = tarpath::clean(meta.link.as_deref().unwrap_or_default())
                    .map_err(|e| bad(e.to_string()))?;
                if target == path {
                    return Ok(());
                }
            }
            remove_any(&path)?;
        }
        match meta.kind {
            EntryType::Regular | EntryType::Continuous => {
                self.write_file(&path, &meta, data)?;
            }
            EntryType::Directory => {
                if !keep_dir {
                    DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .ctx(|| "mkdir".into())?;
                }
                self.set_attrs(&path, &meta, true)?;
            }
            EntryType::Symlink => {
                let target = meta
                    .link
                    .as_deref()
                    .ok_or_else(|| bad("symlink without a target"))?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                    .ctx(|| "symlink".into())?;
                self.set_attrs(&path, &meta, false)?;
            }
            EntryType::Link => {
                let target = tarpath::clean(meta.link.as_deref().unwrap_or_default())
                    .map_err(|e| bad(format!("hard link target: {e}")))?;
                if target.as_os_str().is_empty() {
                    return Err(bad("hard link to the root"));
                }
                fs::hard_link(&target, &path)
                    .ctx(|| format!("hard link to /{}", target.display()))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match meta.kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = makedev(meta.device.0, meta.device.1);
                mknod(&path, kind, Mode::from_bits_truncate(0o600), dev).ctx(|| "mknod".into())?;
                self.set_attrs(&path, &meta, false)?;
            }
            other => {
                debug!(path = %meta.shown(), kind = ?other, "skipping an entry of unsupported type");
                return Ok(());
            }
        }
        self.mark_created(path);
        Ok(())
    }

    /// Records `path` as this layer's, with its ancestors: a directory made implicitly for an
    /// entry belongs to this layer too, so an opaque marker later in the tar keeps it.
    fn mark_created(&mut self, path: PathBuf) {
        let mut next = Some(path.as_path());
        while let Some(p) = next.filter(|p| !p.as_os_str().is_empty()) {
            if !self.created.insert(p.to_path_buf()) {
                break;
            }
            next = p.parent();
        }
    }

    fn write_file<R: Read>(&mut self, path: &Path, meta: &Meta, data: &mut R) -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ctx(|| "create".into())?;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(tar_err(e)),
            };
            file.write_all(&self.buf[..n]).ctx(|| "write".into())?;
        }
        set_owner_mode(&file, meta)?;
        for (name, value) in &meta.xattrs {
            let name_c = cstring(name)?;
            // SAFETY: valid fd, NUL-terminated name, value pointer and length from one slice.
            let rc = unsafe {
                libc::fsetxattr(
                    file.as_raw_fd(),
                    name_c.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                xattr_failed(path, name);
            }
        }
        nix::sys::stat::futimens(file.as_raw_fd(), &meta.mtime, &meta.mtime)
            .ctx(|| "set the mtime".into())
    }

    /// Owner, mode, xattrs and mtime of a non-regular entry (directories get their mtime at the
    /// end of the layer).
    fn set_attrs(&mut self, path: &Path, meta: &Meta, is_dir: bool) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).ctx(|| "chown".into())?;
        if meta.kind != EntryType::Symlink {
            // chown clears set-id bits, so the mode comes after it.
            nix::sys::stat::fchmodat(
                None,
                path,
                Mode::from_bits_truncate(meta.mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .ctx(|| "chmod".into())?;
        }
        let path_c = cstring(path.as_os_str().as_bytes())?;
        for (name, value) in &meta.xattrs {
            let name_c = cstring(name)?;
            // SAFETY: NUL-terminated path and name, value pointer and length from one slice.
            let rc = unsafe {
                libc::lsetxattr(
                    path_c.as_ptr(),
                    name_c.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                xattr_failed(path, name);
            }
        }
        if is_dir {
            self.dir_times.push((path.to_path_buf(), meta.mtime));
            Ok(())
        } else {
            utimensat(
                None,
                path,
                &meta.mtime,
                &meta.mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .ctx(|| "set the mtime".into())
        }
    }

    /// Makes `dir` a directory (the root is one already).
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if dir.as_os_str().is_empty() {
            return Ok(());
        }
        if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        remove_any(dir)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .ctx(|| format!("mkdir /{}", dir.display()))
    }

    /// Removes everything below `dir` that this layer did not create.
    fn prune(&self, dir: &Path) -> Result<()> {
        let shown = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        for child in fs::read_dir(shown).ctx(|| format!("read /{}", dir.display()))? {
            let child = child.ctx(|| format!("read /{}", dir.display()))?;
            let path = dir.join(child.file_name());
            if !self.created.contains(&path) {
                remove_any(&path)?;
            } else if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                self.prune(&path)?;
            }
        }
        Ok(())
    }
}

fn set_owner_mode(file: &File, meta: &Meta) -> Result<()> {
    std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid)).ctx(|| "chown".into())?;
    nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(meta.mode))
        .ctx(|| "chmod".into())
}

fn xattr_failed(path: &Path, name: &[u8]) {
    tracing::warn!(
        path = %path.display(),
        xattr = %String::from_utf8_lossy(name),
        error = %io::Error::last_os_error(),
        "cannot set an extended attribute; skipped"
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use protocol::{write_message, Message};

    use super::*;

    fn header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_500_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = header(EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = header(EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, path, io::empty()).unwrap();
    }

    /// Unpacks plain tar layers into a fresh directory the way a session delivers them.
    fn unpack(layers: Vec<Vec<u8>>) -> (tempfile::TempDir, Result<()>) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "unpack tests need root (chroot)"
        );
        let root = tempfile::tempdir().unwrap();
        let mut wire = Vec::new();
        let mut specs = Vec::new();
        for tar in layers {
            specs.push(LayerSpec {
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                digest: "sha256:test".into(),
                size: tar.len() as u64,
            });
            for chunk in tar.chunks(1000) {
                write_message(&mut wire, &Message::LayerData(chunk.to_vec())).unwrap();
            }
            write_message(&mut wire, &Message::LayerEnd).unwrap();
        }
        write_message(&mut wire, &Message::Started).unwrap();
        let mut r = wire.as_slice();
        let result = unpack_layers(root.path(), &specs, &mut r);
        // Every layer was consumed, whatever happened.
        assert_eq!(
            protocol::read_message(&mut r).unwrap(),
            Some(Message::Started)
        );
        (root, result)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let mut l1 = tar::Builder::new(Vec::new());
        dir(&mut l1, "o");
        file(&mut l1, "o/lower", b"1");
        dir(&mut l1, "o/sub");
        file(&mut l1, "o/sub/deep", b"1");
        dir(&mut l1, "w");
        file(&mut l1, "w/file", b"1");
        file(&mut l1, "w/other", b"1");
        let mut l2 = tar::Builder::new(Vec::new());
        dir(&mut l2, "o/sub");
        file(&mut l2, "o/sub/new", b"2");
        file(&mut l2, "o/before", b"2");
        file(&mut l2, "o/.wh..wh..opq", b"");
        file(&mut l2, "o/after", b"2");
        file(&mut l2, "w/.wh.file", b"");
        file(&mut l2, "s/x", b"2");
        file(&mut l2, "s/.wh.x", b"");
        file(&mut l2, "w/.wh..wh.plnk", b"");
        let (root, r) = unpack(vec![l1.into_inner().unwrap(), l2.into_inner().unwrap()]);
        r.unwrap();
        let p = root.path();
        assert_eq!(names(&p.join("o")), ["after", "before", "sub"]);
        assert_eq!(names(&p.join("o/sub")), ["new"]);
        assert_eq!(names(&p.join("w")), ["other"]);
        assert_eq!(names(&p.join("s")), ["x"]);
    }

    #[test]
    fn opaque_marker_keeps_this_layers_implicit_directories() {
        let mut l1 = tar::Builder::new(Vec::new());
        dir(&mut l1, "usr");
        dir(&mut l1, "usr/lib");
        file(&mut l1, "usr/lib/lower", b"1");
        file(&mut l1, "usr/old", b"1");
        // usr/lib/x comes without an entry for usr/lib, before the opaque marker of usr.
        let mut l2 = tar::Builder::new(Vec::new());
        file(&mut l2, "usr/lib/x", b"2");
        file(&mut l2, "usr/.wh..wh..opq", b"");
        let (root, r) = unpack(vec![l1.into_inner().unwrap(), l2.into_inner().unwrap()]);
        r.unwrap();
        let p = root.path();
        assert_eq!(names(&p.join("usr")), ["lib"]);
        assert_eq!(names(&p.join("usr/lib")), ["x"]);
    }

    #[test]
    fn metadata_devices_long_names_and_xattrs_are_applied() {
        let mut b = tar::Builder::new(Vec::new());
        dir(&mut b, "d");
        let mut h = header(EntryType::Regular, 0o4755, 3);
        h.set_uid(1000);
        h.set_gid(2000);
        b.append_pax_extensions([("SCHILY.xattr.user.skiff", b"yes".as_slice())])
            .unwrap();
        b.append_data(&mut h, "d/suid", b"abc".as_slice()).unwrap();
        let long = format!("d/{}", "n".repeat(150));
        file(&mut b, &long, b"long");
        let mut h = header(EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "d/null", io::empty()).unwrap();
        let mut h = header(EntryType::Fifo, 0o600, 0);
        b.append_data(&mut h, "d/fifo", io::empty()).unwrap();
        let (root, r) = unpack(vec![b.into_inner().unwrap()]);
        r.unwrap();
        let p = root.path();
        let m = fs::metadata(p.join("d/suid")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 1000, 2000));
        assert_eq!(m.mtime(), 1_500_000_000);
        assert_eq!(fs::metadata(p.join("d")).unwrap().mtime(), 1_500_000_000);
        let mut value = [0u8; 8];
        let path = CString::new(p.join("d/suid").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and a buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"user.skiff".as_ptr(),
                value.as_mut_ptr().cast(),
                8,
            )
        };
        assert_eq!(&value[..n as usize], b"yes");
        assert_eq!(fs::read(p.join(&long)).unwrap(), b"long");
        let null = fs::metadata(p.join("d/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), makedev(1, 3));
        assert!(fs::metadata(p.join("d/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn oversized_extension_headers_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(EntryType::XHeader, 0o644, MAX_META_BYTES + 1);
        h.set_cksum();
        b.append(&h, io::repeat(b'a').take(MAX_META_BYTES + 1))
            .unwrap();
        file(&mut b, "x", b"1");
        let (_root, r) = unpack(vec![b.into_inner().unwrap()]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("exceeds"), "{e}");
    }
}
