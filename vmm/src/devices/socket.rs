//! Writes to host Unix sockets with `MSG_NOSIGNAL`: a host peer that went away yields
//! `EPIPE` (and a reset connection), never a `SIGPIPE` for the whole process, whatever the
//! embedding program did with that signal.

use std::io::{self, ErrorKind, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

/// Sends the buffers described by `iovecs` (at most `IOV_MAX`) in order with one syscall;
/// returns the bytes the socket took. `WouldBlock` is returned as an error.
///
/// # Safety
/// Every iovec must describe memory that stays readable for the duration of the call.
pub unsafe fn send_vectored(stream: &UnixStream, iovecs: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovecs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iovecs.len() as _;
    loop {
        // SAFETY: `msg` points at `iovecs`, which the caller guarantees readable.
        let r = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// [`Write`] over a Unix stream that never raises `SIGPIPE`.
pub struct NoSigPipe<'a>(pub &'a UnixStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let iov = [libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        }];
        // SAFETY: `buf` is borrowed for the whole call.
        unsafe { send_vectored(self.0, &iov) }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_peer_gives_epipe_not_a_signal() {
        // Restore the default disposition: a plain write() would now kill the process.
        // SAFETY: changing a signal disposition in a test process.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let err = NoSigPipe(&a).write(b"x").unwrap_err();
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGPIPE, old) };
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    }
}
