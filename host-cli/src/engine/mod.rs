//! Engines: what boots the guest. Both boot the same kernel, initramfs and protocol; the
//! container session reaches guest-init through the VM's hybrid-vsock Unix socket either way.
//!
//! - [`qemu`]: `qemu-system-x86_64 -M microvm` with skiff's vsock device over vhost-user.
//! - [`kvm`]: skiff's own VMM, in-process.
//!
//! `--engine auto` picks kvm when guest code runs natively on this host, else qemu.

pub mod kvm;
pub mod qemu;
mod serial_log;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::EngineKind;

/// The guest's vsock context id (host is 2).
pub const GUEST_CID: u64 = 3;

/// The VM's network device: its MAC address and the connected stream socket that carries its
/// frames (4-byte big-endian length + Ethernet frame) to the backend.
#[derive(Debug)]
pub struct NetAttachment {
    pub mac: [u8; 6],
    pub socket: std::os::fd::OwnedFd,
}

/// A disk of the VM (virtio-blk), which the guest finds by its serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
    pub serial: &'static str,
}

/// A shared directory of the VM (virtio-fs): the tag the guest mounts, and the socket its
/// vhost-user backend listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDir {
    pub tag: String,
    pub socket: PathBuf,
}

/// What every engine boots.
#[derive(Debug)]
pub struct BootConfig {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Kernel command line; engines append their device entries.
    pub cmdline: String,
    pub cpus: u8,
    pub memory_mib: u32,
    /// Base path of the hybrid-vsock Unix sockets: a guest connection to host port P reaches
    /// `<vsock_uds>_P`.
    pub vsock_uds: PathBuf,
    /// Where the guest's serial console goes.
    pub console_log: PathBuf,
    /// The network device, if the VM has one.
    pub network: Option<NetAttachment>,
    /// The disks, in this order.
    pub disks: Vec<Disk>,
    /// The shared directories.
    pub shares: Vec<SharedDir>,
}

/// A running VM.
pub trait Machine {
    /// `Some(how it ended)` once the VM is gone.
    fn poll_exit(&mut self) -> Result<Option<String>>;
    /// Waits up to `grace` for the VM to end by itself, then forces it off.
    fn shutdown(&mut self, grace: Duration) -> Result<String>;
}

/// The engine `auto` resolves to on this host, with the reason when it is not kvm.
pub fn resolve(kind: EngineKind) -> EngineKind {
    match kind {
        EngineKind::Auto => match kvm::probe() {
            Ok(()) => EngineKind::Kvm,
            Err(why) => {
                eprintln!("skiff: using the qemu engine: {why}");
                EngineKind::Qemu
            }
        },
        k => k,
    }
}

/// Boots the VM with the chosen engine (never `Auto`: resolve it first).
pub fn start(kind: EngineKind, boot: &BootConfig) -> Result<Box<dyn Machine>> {
    match kind {
        EngineKind::Qemu => Ok(Box::new(qemu::Qemu::start(boot)?)),
        EngineKind::Kvm | EngineKind::Auto => kvm::start(boot),
    }
}
