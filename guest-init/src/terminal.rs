//! Terminals for `tty` processes. The process opens its terminal itself, inside the container's
//! own devpts instance (so `tty` names it and it shows up under the container's /dev/pts), and
//! hands the master side back to guest-init over a Unix socket, as runc's console socket does.

use std::fs::{File, OpenOptions};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use protocol::TermSize;

use crate::error::{Context, Error, Result};

/// In the process, inside the container: opens a terminal of `size`, sends its master over
/// `socket`, returns the slave.
pub fn open_in_container(socket: &OwnedFd, size: Option<TermSize>) -> Result<OwnedFd> {
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/pts/ptmx")
        .ctx(|| "open /dev/pts/ptmx".into())?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "unlock the terminal".into());
    }
    if let Some(s) = size {
        resize(&master, s.rows, s.cols)?;
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor or -1.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "open the terminal's slave".into());
    }
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(b"t")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "hand the terminal to guest-init".into())?;
    Ok(slave)
}

/// Makes the terminal on `fd` the controlling terminal of this (new) session.
pub fn make_controlling(fd: RawFd) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument; 0 means "do not steal".
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "take the controlling terminal".into());
    }
    Ok(())
}

/// In guest-init: receives the master side the process sent over `socket`.
pub fn receive_master(socket: &OwnedFd) -> Result<File> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx(|| "receive the process's terminal".into())?;
    let mut master = None;
    for cmsg in msg.cmsgs().ctx(|| "read the terminal message".into())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: SCM_RIGHTS delivered new descriptors that nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if master.is_none() {
                    master = Some(File::from(owned));
                }
            }
        }
    }
    master.ok_or_else(|| Error::Invalid("the process sent no terminal".into()))
}

/// Sets the terminal's size; the kernel sends SIGWINCH to its foreground process group.
pub fn resize(terminal: &File, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "resize the terminal".into());
    }
    Ok(())
}
