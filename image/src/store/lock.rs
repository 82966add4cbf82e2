//! Advisory file locks (flock): released when the holder drops them or its process dies, so a
//! kill -9 never leaves the store locked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for the lock on `path` (created when missing).
    pub fn acquire(path: &Path, mode: Mode) -> io::Result<Lock> {
        Self::take(path, mode, true)?
            .ok_or_else(|| io::Error::other("flock returned without the lock"))
    }

    /// Takes the lock on `path` if nobody holds it in a conflicting mode; `None` otherwise.
    pub fn try_acquire(path: &Path, mode: Mode) -> io::Result<Option<Lock>> {
        Self::take(path, mode, false)
    }

    fn take(path: &Path, mode: Mode, wait: bool) -> io::Result<Option<Lock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        };
        if !wait {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Some(Lock { _file: file }));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
                _ => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = Lock::acquire(&p, Mode::Shared).unwrap();
        let b = Lock::try_acquire(&p, Mode::Shared).unwrap();
        assert!(b.is_some());
        assert!(Lock::try_acquire(&p, Mode::Exclusive).unwrap().is_none());
        drop((a, b));
        assert!(Lock::try_acquire(&p, Mode::Exclusive).unwrap().is_some());
    }
}
