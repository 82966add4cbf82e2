//! The disk behind the device: a host file or block device, read and written with positioned
//! vectored I/O (`preadv`, `pwritev`) straight between it and guest memory, so that a request's
//! data is copied once, by the host kernel, and the file position is never used.

use std::fs::File;
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

use super::request::SECTOR_SIZE;

/// Most iovecs one `preadv`/`pwritev` takes (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = libc::UIO_MAXIOV as usize;

/// Which way [`transfer`] moves the bytes.
#[derive(Clone, Copy, Debug)]
enum Direction {
    FromFile,
    ToFile,
}

/// A disk file and its size in whole sectors.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    sectors: u64,
}

impl DiskFile {
    /// Takes `file`, sized by seeking to its end (which sizes block devices too, whose
    /// metadata says 0). A tail shorter than a sector is not part of the disk.
    pub fn new(file: File) -> io::Result<DiskFile> {
        let size = (&file).seek(SeekFrom::End(0))?;
        let tail = size % SECTOR_SIZE;
        if tail != 0 {
            tracing::warn!(
                "block: the disk file's last {tail} bytes are not a whole {SECTOR_SIZE}-byte \
                 sector and are left out of the disk"
            );
        }
        Ok(DiskFile {
            file,
            sectors: size / SECTOR_SIZE,
        })
    }

    /// The disk's size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Fills `slices` of guest memory, in order, with the file's bytes from `offset`.
    pub fn read_into<B: BitmapSlice>(
        &self,
        offset: u64,
        slices: &[VolatileSlice<'_, B>],
    ) -> io::Result<()> {
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
        let mut iovecs: Vec<libc::iovec> = guards
            .iter()
            .map(|g| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: g.len(),
            })
            .collect();
        // SAFETY: every iovec covers mapped, writable guest memory kept mapped by its guard
        // until the call returns. The guest may look at the bytes meanwhile; they are its own
        // read buffer's.
        let read = unsafe { transfer(&self.file, Direction::FromFile, offset, &mut iovecs) };
        // Writes through the raw pointers bypass the memory's dirty tracking (a failed read
        // may still have written some).
        for slice in slices {
            slice.bitmap().mark_dirty(0, slice.len());
        }
        read
    }

    /// Writes `slices` of guest memory, in order, to the file from `offset`.
    pub fn write_from<B: BitmapSlice>(
        &self,
        offset: u64,
        slices: &[VolatileSlice<'_, B>],
    ) -> io::Result<()> {
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
        let mut iovecs: Vec<libc::iovec> = guards
            .iter()
            .map(|g| libc::iovec {
                iov_base: g.as_ptr() as *mut libc::c_void,
                iov_len: g.len(),
            })
            .collect();
        // SAFETY: every iovec covers mapped guest memory kept mapped by its guard until the
        // call returns; the kernel only reads it.
        unsafe { transfer(&self.file, Direction::ToFile, offset, &mut iovecs) }
    }

    /// Makes what was written durable (`fdatasync`).
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Moves every byte `iovecs` describe between them and `file` at `offset`, resuming after
/// short transfers and interruptions; `iovecs` is consumed on the way.
///
/// # Safety
/// Every iovec must describe memory that stays mapped for the duration of the call, and
/// writable for [`Direction::FromFile`].
unsafe fn transfer(
    file: &File,
    direction: Direction,
    mut offset: u64,
    iovecs: &mut [libc::iovec],
) -> io::Result<()> {
    let mut first = 0;
    while first < iovecs.len() {
        if iovecs[first].iov_len == 0 {
            first += 1;
            continue;
        }
        let batch = &iovecs[first..iovecs.len().min(first + MAX_IOVECS)];
        let position = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "offset beyond off_t"))?;
        let (fd, iov, count) = (file.as_raw_fd(), batch.as_ptr(), batch.len() as libc::c_int);
        // SAFETY: `iov` points at `count` iovecs that the caller guarantees are mapped (and
        // writable for reads).
        let done = unsafe {
            match direction {
                Direction::FromFile => libc::preadv(fd, iov, count, position),
                Direction::ToFile => libc::pwritev(fd, iov, count, position),
            }
        };
        let mut done = match usize::try_from(done) {
            Ok(0) => {
                return Err(match direction {
                    Direction::FromFile => io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the disk file ended before the disk",
                    ),
                    Direction::ToFile => io::Error::from(ErrorKind::WriteZero),
                })
            }
            Ok(n) => n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
        };
        offset += done as u64;
        while done > 0 && first < iovecs.len() {
            let iov = &mut iovecs[first];
            let take = done.min(iov.iov_len);
            iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(take).cast();
            iov.iov_len -= take;
            done -= take;
            if iov.iov_len == 0 {
                first += 1;
            }
        }
    }
    Ok(())
}
