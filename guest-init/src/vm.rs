//! VM mode: guest-init as PID 1 of the guest, /init of an initramfs that holds only itself.
//!
//! pivot_root(2) refuses to work while the root is the initramfs `rootfs`, so the first step
//! is the switch_root dance: mount a tmpfs, move it over `/` and chroot into it (the running
//! binary stays mapped; its initramfs copy is unlinked to give the memory back). Then the
//! usual mounts, the console as stdio, the vsock session to the host (CID 2,
//! `protocol::SESSION_PORT`), listeners for exec sessions, copies and published ports, and finally
//! sync + reboot, which the VMM turns into its exit.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sys::socket::{
    bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
use nix::unistd;
use tracing::debug;

use crate::error::{Context, Result};
use crate::session;

/// Where the container's root filesystem is assembled.
const ROOTFS: &str = "/rootfs";
/// Where its parts (the image disk, the writable layer) are mounted.
const SCRATCH: &str = "/run/skiff";
/// The host's vsock context id.
const HOST_CID: u32 = 2;
/// statfs type of the initramfs when it is a ramfs.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
/// How long to keep trying to reach the host while the vsock device comes up.
const CONNECT_ATTEMPTS: u32 = 100;
const CONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Runs the guest and powers it off; never returns.
pub fn run() -> ! {
    let start = Instant::now();
    let result = boot().and_then(|conn| {
        debug!(
            boot_us = start.elapsed().as_micros() as u64,
            "connected to the host"
        );
        let exec = vsock_listener(protocol::EXEC_PORT)?;
        let copy = vsock_listener(protocol::COPY_PORT)?;
        crate::publish::spawn(vsock_listener(protocol::PUBLISH_PORT)?)?;
        let linger = conn
            .try_clone()
            .ctx(|| "duplicate the session socket".into())?;
        let served = session::serve(
            conn,
            Path::new(ROOTFS),
            Path::new(SCRATCH),
            Some(exec),
            Some(copy),
            true,
        );
        wait_for_host_close(linger);
        served
    });
    if let Err(e) = result {
        console_line(&format!("guest-init: fatal: {e}"));
    }
    unistd::sync();
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    console_line(&format!("guest-init: reboot failed: {err:?}"));
    // Exiting PID 1 panics the kernel, which `panic=-1` turns into a reset.
    std::process::exit(1)
}

/// How long the host may take to close the session after the last message.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Waits until the host has closed the session: the vsock device may still hold the last
/// messages (the exit status) in its queue, and a reset now would lose them.
fn wait_for_host_close(conn: File) {
    use std::io::Read;
    let _ = nix::sys::socket::shutdown(conn.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut conn = conn;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if ms == 0 {
            debug!("the host did not close the session in time");
            return;
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&conn),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// One line on the console, whatever state the guest is in.
fn console_line(msg: &str) {
    let line = format!("{msg}\n");
    if std::io::stderr().write_all(line.as_bytes()).is_err() {
        if let Ok(mut c) = OpenOptions::new().write(true).open("/dev/console") {
            let _ = c.write_all(line.as_bytes());
        }
    }
}

fn boot() -> Result<File> {
    leave_initramfs()?;
    mkdir("/dev", 0o755)?;
    mount_fs("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    console_stdio()?;
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (fstype, target, mode, flags, data) in [
        ("proc", "/proc", 0o555, hardened, None),
        ("sysfs", "/sys", 0o555, hardened, None),
        ("cgroup2", "/sys/fs/cgroup", 0o555, hardened, None),
        (
            "devpts",
            "/dev/pts",
            0o755,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0620,ptmxmode=0666"),
        ),
        ("tmpfs", "/dev/shm", 0o1777, hardened, Some("mode=1777")),
        (
            "tmpfs",
            "/run",
            0o755,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
    ] {
        mkdir(target, mode)?;
        mount_fs(fstype, target, flags, data)?;
    }
    mkdir(ROOTFS, 0o755)?;
    mkdir(SCRATCH, 0o755)?;
    connect_host()
}

fn mkdir(path: &str, mode: u32) -> Result<()> {
    match DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).ctx(|| format!("mkdir {path}"))
        }
        _ => Ok(()),
    }
}

fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Result<()> {
    mount(Some(fstype), target, Some(fstype), flags, data)
        .ctx(|| format!("mount {fstype} on {target}"))
}

/// Moves a fresh tmpfs over the initramfs root and enters it (what switch_root does).
fn leave_initramfs() -> Result<()> {
    let root = statfs("/").ctx(|| "statfs /".into())?;
    if root.filesystem_type() != RAMFS_MAGIC && root.filesystem_type() != TMPFS_MAGIC {
        return Ok(());
    }
    mkdir("/newroot", 0o755)?;
    mount_fs("tmpfs", "/newroot", MsFlags::empty(), Some("mode=0755"))?;
    // The binary keeps running from its mapping; the initramfs copy is no longer needed.
    let _ = std::fs::remove_file("/init");
    unistd::chdir("/newroot").ctx(|| "chdir /newroot".into())?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .ctx(|| "move the new root over /".into())?;
    unistd::chroot(".").ctx(|| "chroot into the new root".into())?;
    unistd::chdir("/").ctx(|| "chdir /".into())
}

/// Makes fds 0, 1 and 2 the console if the kernel did not open them.
fn console_stdio() -> Result<()> {
    for fd in 0..3 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok() {
            continue;
        }
        let console = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .ctx(|| "open /dev/console".into())?;
        if console.as_raw_fd() == fd {
            let _ = console.into_raw_fd();
        } else {
            unistd::dup2(console.as_raw_fd(), fd).ctx(|| format!("dup2 the console onto {fd}"))?;
        }
    }
    Ok(())
}

/// A new close-on-exec vsock stream socket.
fn vsock_socket() -> Result<OwnedFd> {
    socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx(|| "create a vsock socket".into())
}

/// Listens for the host's connections on vsock `port`.
fn vsock_listener(port: u32) -> Result<OwnedFd> {
    let fd = vsock_socket()?;
    bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))
        .ctx(|| format!("bind vsock port {port}"))?;
    listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN))
        .ctx(|| format!("listen on vsock port {port}"))?;
    Ok(fd)
}

fn connect_host() -> Result<File> {
    let addr = VsockAddr::new(HOST_CID, protocol::SESSION_PORT);
    let mut attempt = 0;
    loop {
        let fd = vsock_socket()?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(File::from(fd)),
            Err(e) if attempt + 1 < CONNECT_ATTEMPTS => {
                debug!(error = %e, attempt, "vsock connect failed; retrying");
                attempt += 1;
                std::thread::sleep(CONNECT_PAUSE);
            }
            Err(e) => {
                return Err(e).ctx(|| {
                    format!(
                        "connect to the host at vsock {HOST_CID}:{}",
                        protocol::SESSION_PORT
                    )
                })
            }
        }
    }
}
