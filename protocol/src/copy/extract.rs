//! Extracts a `skiff cp` archive into a directory without trusting it: the other side may be a
//! hostile container. Every entry is placed with `*at` system calls relative to directory
//! descriptors opened from the destination down, each parent a real directory opened with
//! `O_NOFOLLOW` (created when missing), so no symlink — one the archive planted or one already
//! there — is ever followed out of the destination; an entry replaces what is at its name
//! (never writing through it), names with `..` or a leading `/` are refused, hard links must
//! name an earlier path inside the destination, and names, long-name records and pax headers
//! are bounded before they are read. A bad entry ends the extraction with a one-line error
//! naming it; what was extracted before it stays.
//!
//! Inside the guest the same code runs in the container's mount namespace with its root as the
//! thread's root, where following the container's own directory symlinks (`/bin` → `usr/bin`)
//! cannot leave the container: [`Options::follow_dir_symlinks`].

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::EntryType;

/// Longest path an entry may name (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Longest component of a path.
pub const MAX_NAME: usize = 255;
/// Largest pax extended header read.
pub const MAX_PAX: u64 = 64 * 1024;
/// Directories whose mode and times are applied at the end (so that a read-only directory
/// still receives its entries); beyond this many, at once.
const MAX_DEFERRED: usize = 1 << 20;
/// Buffer of file data.
const BUF: usize = 256 * 1024;

/// How the archive maps onto the destination directory.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The name of the archive's top entry (`None`: entries are relative to the archive's root).
    pub strip: Option<String>,
    /// What the top entry becomes in the destination (`None`: its content is merged into it).
    pub rename: Option<String>,
    /// Keep the archive's owners and setuid/setgid bits; else entries belong to whoever
    /// extracts and those bits are dropped.
    pub keep_owners: bool,
    /// Existing symlinks to directories may be parents (only where the thread's root confines
    /// them: the guest).
    pub follow_dir_symlinks: bool,
    /// Create device nodes (else they are skipped with a warning).
    pub devices: bool,
}

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("bad archive entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("cannot read the archive: {0}")]
    Read(io::Error),
    #[error("cannot open the destination {path}: {source}")]
    Destination { path: String, source: io::Error },
}

/// What an extraction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
    pub skipped: u64,
}

/// Extracts the tar stream `archive` into the directory `dir` (which must exist).
pub fn extract<R: Read>(dir: &Path, archive: R, opts: &Options) -> Result<Summary, ExtractError> {
    let root = open_path_dir(dir).map_err(|source| ExtractError::Destination {
        path: dir.display().to_string(),
        source,
    })?;
    let mut x = Extractor {
        opts,
        root,
        cache: None,
        deferred: Vec::new(),
        buf: vec![0u8; BUF],
        summary: Summary::default(),
    };
    x.run(archive)?;
    x.finish_dirs()?;
    Ok(x.summary)
}

type Comps = Vec<Vec<u8>>;

struct Extractor<'a> {
    opts: &'a Options,
    root: OwnedFd,
    /// The last parent opened, by its components.
    cache: Option<(Comps, OwnedFd)>,
    deferred: Vec<DirMeta>,
    buf: Vec<u8>,
    summary: Summary,
}

struct DirMeta {
    path: Comps,
    meta: Meta,
}

#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// A path and the reason it was refused.
struct Bad(String);

fn bad<T>(reason: impl Into<String>) -> Result<T, Bad> {
    Err(Bad(reason.into()))
}

impl Extractor<'_> {
    fn run<R: Read>(&mut self, archive: R) -> Result<(), ExtractError> {
        let mut ar = tar::Archive::new(archive);
        let entries = ar.entries().map_err(ExtractError::Read)?.raw(true);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax = Pax::default();
        for entry in entries {
            let mut entry = entry.map_err(ExtractError::Read)?;
            let header_name = entry.header().path_bytes().into_owned();
            let fail = |name: &[u8], reason: String| ExtractError::Entry {
                entry: shown(name),
                reason,
            };
            let kind = entry.header().entry_type();
            let size = entry
                .header()
                .entry_size()
                .map_err(|e| fail(&header_name, e.to_string()))?;
            match kind {
                EntryType::GNULongName | EntryType::GNULongLink => {
                    if size > MAX_PATH as u64 + 1 {
                        return Err(fail(&header_name, format!("long name of {size} bytes")));
                    }
                    let mut v = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut v).map_err(ExtractError::Read)?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    match kind {
                        EntryType::GNULongName => long_name = Some(v),
                        _ => long_link = Some(v),
                    }
                    continue;
                }
                EntryType::XHeader => {
                    if size > MAX_PAX {
                        return Err(fail(&header_name, format!("pax header of {size} bytes")));
                    }
                    let mut v = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut v).map_err(ExtractError::Read)?;
                    pax = Pax::parse(&v).map_err(|Bad(r)| fail(&header_name, r))?;
                    continue;
                }
                EntryType::XGlobalHeader => continue,
                _ => {}
            }
            let name = pax.path.take().or(long_name.take()).unwrap_or(header_name);
            let link = pax
                .linkpath
                .take()
                .or(long_link.take())
                .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
            if let Some(s) = pax.size.take() {
                if s != size {
                    return Err(fail(&name, "a pax size other than the header's".into()));
                }
            }
            let result = self.one(&mut entry, kind, &name, link.as_deref(), size);
            match result {
                Ok(()) => self.summary.entries += 1,
                Err(Placed::Bad(Bad(reason))) => return Err(fail(&name, reason)),
                Err(Placed::Read(e)) => return Err(ExtractError::Read(e)),
            }
        }
        Ok(())
    }

    /// Maps an archive path to its components under the destination; `None`: the destination
    /// itself.
    fn map(&self, raw: &[u8]) -> Result<Option<Comps>, Bad> {
        if raw.len() > MAX_PATH {
            return bad(format!("a path of {} bytes", raw.len()));
        }
        if raw.first() == Some(&b'/') {
            return bad("an absolute path");
        }
        let mut comps: Comps = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return bad("a path with `..`"),
                c if c.len() > MAX_NAME => return bad("a name longer than 255 bytes"),
                c if c.contains(&0) => return bad("a name with a NUL byte"),
                c => comps.push(c.to_vec()),
            }
        }
        if let Some(top) = &self.opts.strip {
            if comps.first().map(Vec::as_slice) != Some(top.as_bytes()) {
                return bad(format!("outside the copied {top:?}"));
            }
            comps.remove(0);
        }
        match &self.opts.rename {
            Some(name) => comps.insert(0, name.as_bytes().to_vec()),
            None if comps.is_empty() => return Ok(None),
            None => {}
        }
        Ok(Some(comps))
    }

    fn one<R: Read + HasHeader>(
        &mut self,
        entry: &mut R,
        kind: EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        size: u64,
    ) -> Result<(), Placed> {
        let Some(comps) = self.map(name)? else {
            // The destination directory itself keeps its metadata.
            return Ok(());
        };
        let meta = entry.meta()?;
        let (last, parents) = comps.split_last().ok_or(Bad("an empty path".into()))?;
        let dir = self.parent(parents, true)?;
        let leaf = cstring(last)?;
        match kind {
            EntryType::Directory => {
                self.make_dir(&dir, &leaf)?;
                let d = DirMeta { path: comps, meta };
                if self.deferred.len() < MAX_DEFERRED {
                    self.deferred.push(d);
                } else {
                    self.apply_dir(&d)?;
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                self.clear(&dir, &leaf)?;
                let fd = sys(unsafe {
                    libc::openat(
                        dir.as_raw_fd(),
                        leaf.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600 as libc::c_uint,
                    )
                })
                .map_err(|e| Bad(format!("cannot create it: {e}")))?;
                // SAFETY: openat returned a new descriptor that nothing else owns.
                let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                let mut left = size;
                while left > 0 {
                    let want = left.min(self.buf.len() as u64) as usize;
                    let n = entry.read(&mut self.buf[..want]).map_err(Placed::Read)?;
                    if n == 0 {
                        return Err(Placed::Read(io::ErrorKind::UnexpectedEof.into()));
                    }
                    file.write_all(&self.buf[..n])
                        .map_err(|e| Bad(format!("cannot write it: {e}")))?;
                    left -= n as u64;
                }
                self.summary.bytes += size;
                self.set_meta(file.as_raw_fd(), meta)?;
            }
            EntryType::Symlink => {
                let target = link.ok_or(Bad("a symlink without a target".into()))?;
                if target.len() > MAX_PATH {
                    return Err(Bad("a symlink target longer than 4096 bytes".into()).into());
                }
                let target = cstring(target)?;
                self.clear(&dir, &leaf)?;
                sys(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), leaf.as_ptr()) })
                    .map_err(|e| Bad(format!("cannot create the symlink: {e}")))?;
                self.set_link_meta(&dir, &leaf, meta)?;
            }
            EntryType::Link => {
                let target = link.ok_or(Bad("a hard link without a target".into()))?;
                let tcomps = self
                    .map(target)
                    .map_err(|Bad(r)| Bad(format!("a hard link to {}: {r}", shown(target))))?
                    .ok_or(Bad("a hard link to the destination itself".into()))?;
                let (tlast, tparents) = tcomps
                    .split_last()
                    .ok_or(Bad("an empty hard link target".into()))?;
                let tdir = self
                    .parent(tparents, false)
                    .map_err(|_| Bad(format!("a hard link to a missing {}", shown(target))))?;
                let tleaf = cstring(tlast)?;
                match lstat_at(&tdir, &tleaf) {
                    Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {}
                    _ => {
                        return Err(Bad(format!(
                            "a hard link to {}, which is no file here",
                            shown(target)
                        ))
                        .into())
                    }
                }
                self.clear(&dir, &leaf)?;
                sys(unsafe {
                    libc::linkat(
                        tdir.as_raw_fd(),
                        tleaf.as_ptr(),
                        dir.as_raw_fd(),
                        leaf.as_ptr(),
                        0,
                    )
                })
                .map_err(|e| Bad(format!("cannot create the hard link: {e}")))?;
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                let (ftype, dev) = match kind {
                    EntryType::Fifo => (libc::S_IFIFO, 0),
                    EntryType::Char if self.opts.devices => (libc::S_IFCHR, entry.device()?),
                    EntryType::Block if self.opts.devices => (libc::S_IFBLK, entry.device()?),
                    _ => {
                        tracing::warn!(entry = %shown(name), "skipping a device node");
                        self.summary.skipped += 1;
                        return Ok(());
                    }
                };
                self.clear(&dir, &leaf)?;
                sys(unsafe { libc::mknodat(dir.as_raw_fd(), leaf.as_ptr(), ftype | 0o600, dev) })
                    .map_err(|e| Bad(format!("cannot create it: {e}")))?;
                let fd = self.open_dir_or_node(&dir, &leaf)?;
                self.set_meta(fd.as_raw_fd(), meta)?;
            }
            EntryType::GNUSparse => return Err(Bad("sparse files are not supported".into()).into()),
            other => {
                tracing::debug!(entry = %shown(name), kind = ?other, "skipping an entry");
                self.summary.skipped += 1;
            }
        }
        Ok(())
    }

    /// The directory `comps` under the destination, each step a real directory (created when
    /// `create` and missing).
    fn parent(&mut self, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, Bad> {
        if let Some((c, fd)) = &self.cache {
            if c.as_slice() == comps {
                return fd.try_clone().map_err(|e| Bad(e.to_string()));
            }
        }
        let mut cur = self.root.try_clone().map_err(|e| Bad(e.to_string()))?;
        for c in comps {
            let name = cstring(c)?;
            cur = match self.open_dir(&cur, &name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    match sys(unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) }) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return bad(format!("cannot create {}: {e}", shown(c))),
                    }
                    self.open_dir(&cur, &name)
                        .map_err(|e| Bad(format!("cannot open {}: {e}", shown(c))))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return bad(format!("{} is not a directory (a symlink?)", shown(c)))
                }
                Err(e) => return bad(format!("cannot open {}: {e}", shown(c))),
            };
        }
        let keep = cur.try_clone().map_err(|e| Bad(e.to_string()))?;
        self.cache = Some((comps.to_vec(), keep));
        Ok(cur)
    }

    fn open_dir(&self, dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
        let nofollow = if self.opts.follow_dir_symlinks {
            0
        } else {
            libc::O_NOFOLLOW
        };
        let fd = sys(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow,
            )
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// An `O_PATH` descriptor of a node just made (fchmod/fchown work on it through /proc).
    fn open_dir_or_node(&self, dir: &OwnedFd, name: &CStr) -> Result<OwnedFd, Bad> {
        let fd = sys(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| Bad(format!("cannot open it: {e}")))?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Makes a directory at `name`, or accepts one that is there.
    fn make_dir(&mut self, dir: &OwnedFd, name: &CStr) -> Result<(), Bad> {
        match sys(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) }) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match self.open_dir(dir, name) {
                Ok(_) => Ok(()),
                Err(_) => bad("cannot replace a non-directory with a directory"),
            },
            Err(e) => bad(format!("cannot create the directory: {e}")),
        }
    }

    /// Removes a non-directory at `name` so that a new entry takes its place (never written
    /// through it).
    fn clear(&mut self, dir: &OwnedFd, name: &CStr) -> Result<(), Bad> {
        match lstat_at(dir, name) {
            Err(_) => Ok(()),
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                bad("cannot replace a directory with a non-directory")
            }
            Ok(_) => sys(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
                .map(drop)
                .map_err(|e| Bad(format!("cannot replace it: {e}"))),
        }
    }

    fn mode(&self, meta: Meta) -> libc::mode_t {
        let mask = if self.opts.keep_owners {
            0o7777
        } else {
            0o1777
        };
        (meta.mode & mask) as libc::mode_t
    }

    /// Owner (with `keep_owners`), mode and modification time of an opened node.
    fn set_meta(&self, fd: libc::c_int, meta: Meta) -> Result<(), Bad> {
        let o_path = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_PATH != 0;
        let proc_path = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| Bad("".into()))?;
        if self.opts.keep_owners {
            let r = if o_path {
                unsafe { libc::chown(proc_path.as_ptr(), meta.uid, meta.gid) }
            } else {
                unsafe { libc::fchown(fd, meta.uid, meta.gid) }
            };
            sys(r).map_err(|e| Bad(format!("cannot keep its owner: {e}")))?;
        }
        let r = if o_path {
            unsafe { libc::chmod(proc_path.as_ptr(), self.mode(meta)) }
        } else {
            unsafe { libc::fchmod(fd, self.mode(meta)) }
        };
        sys(r).map_err(|e| Bad(format!("cannot set its mode: {e}")))?;
        let times = times(meta.mtime);
        let r = if o_path {
            unsafe { libc::utimensat(libc::AT_FDCWD, proc_path.as_ptr(), times.as_ptr(), 0) }
        } else {
            unsafe { libc::futimens(fd, times.as_ptr()) }
        };
        sys(r).map_err(|e| Bad(format!("cannot set its times: {e}")))?;
        Ok(())
    }

    fn set_link_meta(&self, dir: &OwnedFd, name: &CStr, meta: Meta) -> Result<(), Bad> {
        if self.opts.keep_owners {
            sys(unsafe {
                libc::fchownat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    meta.uid,
                    meta.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })
            .map_err(|e| Bad(format!("cannot keep its owner: {e}")))?;
        }
        let times = times(meta.mtime);
        sys(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(|e| Bad(format!("cannot set its times: {e}")))?;
        Ok(())
    }

    fn apply_dir(&mut self, d: &DirMeta) -> Result<(), Bad> {
        let fd = self.parent(&d.path, false)?;
        self.set_meta(fd.as_raw_fd(), d.meta)
    }

    /// Modes and times of the directories, deepest last made first.
    fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        self.cache = None;
        let deferred = std::mem::take(&mut self.deferred);
        for d in deferred.iter().rev() {
            self.apply_dir(d)
                .map_err(|Bad(reason)| ExtractError::Entry {
                    entry: shown(&d.path.join(&b'/')),
                    reason,
                })?;
        }
        Ok(())
    }
}

/// The header fields an entry's placement needs.
trait HasHeader {
    fn meta(&self) -> Result<Meta, Bad>;
    fn device(&self) -> Result<libc::dev_t, Bad>;
}

impl<R: Read> HasHeader for tar::Entry<'_, R> {
    fn meta(&self) -> Result<Meta, Bad> {
        let h = self.header();
        let field = |r: io::Result<u64>, what: &str| -> Result<u64, Bad> {
            r.map_err(|e| Bad(format!("bad {what}: {e}")))
        };
        let id = |v: u64, what: &str| -> Result<u32, Bad> {
            u32::try_from(v).map_err(|_| Bad(format!("{what} {v} out of range")))
        };
        Ok(Meta {
            mode: h.mode().map_err(|e| Bad(format!("bad mode: {e}")))?,
            uid: id(field(h.uid(), "owner")?, "owner")?,
            gid: id(field(h.gid(), "group")?, "group")?,
            mtime: i64::try_from(field(h.mtime(), "time")?).unwrap_or(i64::MAX),
        })
    }

    fn device(&self) -> Result<libc::dev_t, Bad> {
        let h = self.header();
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        Ok(libc::makedev(major, minor))
    }
}

/// A placement failed: the entry is bad here, or reading the archive failed.
enum Placed {
    Bad(Bad),
    Read(io::Error),
}

impl From<Bad> for Placed {
    fn from(b: Bad) -> Placed {
        Placed::Bad(b)
    }
}

/// The pax records skiff reads (others are ignored).
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pax {
    /// Records are `LEN KEY=VALUE\n`, LEN counting the whole record.
    fn parse(mut data: &[u8]) -> Result<Pax, Bad> {
        let mut pax = Pax::default();
        while !data.is_empty() {
            let sp = data
                .iter()
                .position(|&b| b == b' ')
                .ok_or(Bad("a pax record without a length".into()))?;
            let len: usize = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Bad("a pax record with a bad length".into()))?;
            if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
                return bad("a pax record of bad length");
            }
            let record = &data[sp + 1..len - 1];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or(Bad("a pax record without `=`".into()))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => {
                    pax.size = Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or(Bad("a bad pax size".into()))?,
                    )
                }
                _ => {}
            }
            data = &data[len..];
        }
        Ok(pax)
    }
}

fn open_path_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = sys(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstat_at(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    sys(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled the buffer.
    Ok(unsafe { st.assume_init() })
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

fn cstring(name: &[u8]) -> Result<CString, Bad> {
    CString::new(name).map_err(|_| Bad("a name with a NUL byte".into()))
}

fn sys(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An entry's name for a one-line message: lossy, at most 200 characters.
fn shown(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
