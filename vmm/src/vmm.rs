//! The entry point for running a Linux guest: [`VmConfig`] in, [`VmExit`] out, with errors the
//! CLI reports in one line.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use crate::boot::{self, BootError, KernelBoot};
use crate::devices::block::{BlockDevice, BlockError};
use crate::devices::console::{ConsoleWriter, PanicNote};
use crate::devices::net::{NetDevice, NetError, StreamBackend};
use crate::devices::vhost_user::fs::virtio_fs;
use crate::devices::vhost_user::VhostUserError;
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio_block::VirtioBlock;
use crate::devices::virtio_net::VirtioNet;
use crate::devices::virtio_vsock::VirtioVsock;
use crate::devices::vsock::{VsockDevice, VsockError};
use crate::hypervisor::kvm::KvmHypervisor;
use crate::hypervisor::HypervisorError;
use crate::stop::StopHandle;
use crate::vm::{Machine, MachineConfig, MachineError, Start, VmExit};

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutput {
    /// The terminal (this process's stdout).
    Stdout,
    /// A log file, created or truncated.
    File(PathBuf),
    /// Discarded.
    Sink,
}

/// Everything needed to boot one guest.
#[derive(Debug)]
pub struct VmConfig {
    pub vcpus: u8,
    pub memory_mib: u64,
    /// A `vmlinux` with a PVH entry note.
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    /// The command line; `virtio_mmio.device=` entries are appended for each device (vsock,
    /// net, then the disks).
    pub cmdline: String,
    pub serial: SerialOutput,
    /// The guest's vsock CID and the host Unix socket path of its hybrid-vsock endpoint.
    pub vsock: Option<(u64, PathBuf)>,
    /// A network card, if the guest gets one.
    pub net: Option<NetConfig>,
    /// The guest's disks, attached in this order after the other devices; a disk's serial
    /// tells the guest which one it is (`/sys/block/vd*/serial`).
    pub disks: Vec<DiskConfig>,
    /// Shared directories (virtio-fs), each served by a vhost-user backend; with any, guest
    /// memory is a shared memfd the backends map.
    pub shares: Vec<ShareConfig>,
}

/// A virtio-fs device: the tag the guest mounts, and the socket its vhost-user backend
/// (virtiofsd) listens on.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    pub tag: String,
    pub socket: PathBuf,
}

/// The guest's network card: its MAC and MTU, and the connected Unix stream socket of the host
/// side (QEMU `-netdev stream` framing, e.g. one end of a socket pair whose other end is passt's
/// `--fd`).
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub socket: Arc<UnixStream>,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// A disk of the guest: a virtio-blk device over `file` (a regular file or a block device,
/// its size rounded down to 512-byte sectors), which the guest may only read if `read_only`,
/// and whose serial (at most 20 bytes) the guest reads as its id.
#[derive(Debug)]
pub struct DiskConfig {
    pub file: File,
    pub read_only: bool,
    pub serial: String,
}

/// Errors starting a VM: each variant is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("/dev/kvm does not exist: KVM is not available on this host")]
    KvmMissing,
    #[error(
        "no permission to open /dev/kvm (owned by group `{group}`): add this user to that group"
    )]
    KvmPermission { group: String },
    #[error("kernel {} does not exist", path.display())]
    KernelMissing { path: PathBuf },
    #[error("kernel {} is not an ELF vmlinux: {reason}", path.display())]
    KernelNotElf { path: PathBuf, reason: String },
    #[error("kernel {} has no PVH entry note (build it with CONFIG_PVH=y)", path.display())]
    NoPvhNote { path: PathBuf },
    #[error(
        "{memory_mib} MiB of guest memory is too small for the kernel and initramfs \
         (need at least {needed_mib} MiB)"
    )]
    MemoryTooSmall { memory_mib: u64, needed_mib: u64 },
    #[error("cannot open console log {}: {source}", path.display())]
    ConsoleLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the vsock device on {}: {source}", path.display())]
    Vsock { path: PathBuf, source: VsockError },
    #[error("cannot create the network device: {0}")]
    Net(NetError),
    #[error("cannot create disk {index} (serial {serial:?}): {source}")]
    Disk {
        index: usize,
        serial: String,
        source: BlockError,
    },
    #[error("shared directory {tag}: {source}")]
    Share { tag: String, source: VhostUserError },
    #[error(transparent)]
    Hypervisor(HypervisorError),
    #[error(transparent)]
    Boot(BootError),
    #[error(transparent)]
    Machine(MachineError),
}

impl From<HypervisorError> for VmmError {
    fn from(e: HypervisorError) -> Self {
        match e {
            HypervisorError::DeviceMissing { .. } => VmmError::KvmMissing,
            HypervisorError::PermissionDenied { group, .. } => VmmError::KvmPermission { group },
            other => VmmError::Hypervisor(other),
        }
    }
}

impl From<BootError> for VmmError {
    fn from(e: BootError) -> Self {
        match e {
            BootError::KernelMissing { path } => VmmError::KernelMissing { path },
            BootError::NotElf { path, reason } => VmmError::KernelNotElf { path, reason },
            BootError::NoPvhNote { path } => VmmError::NoPvhNote { path },
            BootError::MemoryTooSmall {
                memory_mib,
                needed_mib,
            } => VmmError::MemoryTooSmall {
                memory_mib,
                needed_mib,
            },
            other => VmmError::Boot(other),
        }
    }
}

impl From<MachineError> for VmmError {
    fn from(e: MachineError) -> Self {
        match e {
            MachineError::Hypervisor(h) => h.into(),
            other => VmmError::Machine(other),
        }
    }
}

fn console(output: &SerialOutput) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match output {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::File(path) => {
            Box::new(File::create(path).map_err(|source| VmmError::ConsoleLog {
                path: path.clone(),
                source,
            })?)
        }
        SerialOutput::Sink => Box::new(std::io::sink()),
    })
}

fn net_device(socket: &UnixStream, mac: [u8; 6], mtu: u16) -> Result<NetDevice, NetError> {
    let stream = socket.try_clone().map_err(NetError::Socket)?;
    let backend = StreamBackend::from_stream(stream).map_err(NetError::Socket)?;
    NetDevice::new(mac, mtu, Box::new(backend))
}

fn block_device(disk: &DiskConfig) -> Result<BlockDevice, BlockError> {
    let file = disk.file.try_clone().map_err(BlockError::File)?;
    BlockDevice::new(file, disk.read_only, &disk.serial)
}

/// Puts `device` on the machine and announces it on `cmdline`.
fn attach(
    machine: &mut Machine,
    cmdline: &mut String,
    device: Box<dyn VirtioDevice>,
) -> Result<(), VmmError> {
    let entry = machine.add_virtio(device)?;
    cmdline.push(' ');
    cmdline.push_str(&entry);
    Ok(())
}

/// Boots `config.kernel` and runs the guest until it ends or `stop` is used.
///
/// A guest reset is the normal end. A kernel panic seen on the console, a guest-reported
/// crash or a hypervisor failure come back as [`VmExit::Error`] naming the cause and the
/// console log.
pub fn run_vm(config: &VmConfig, stop: &StopHandle) -> Result<VmExit, VmmError> {
    let hypervisor = KvmHypervisor::new()?;
    let mut machine = Machine::new(
        &hypervisor,
        MachineConfig {
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            shared_memory: !config.shares.is_empty(),
        },
    )?;
    let panic = PanicNote::default();
    machine.add_serial(Box::new(ConsoleWriter::new(
        console(&config.serial)?,
        panic.clone(),
    )))?;
    machine.add_i8042()?;
    machine.add_cmos()?;
    let mut cmdline = config.cmdline.clone();
    if let Some((cid, path)) = &config.vsock {
        let device = VsockDevice::new(*cid, path).map_err(|source| VmmError::Vsock {
            path: path.clone(),
            source,
        })?;
        attach(
            &mut machine,
            &mut cmdline,
            Box::new(VirtioVsock::new(device)),
        )?;
    }
    if let Some(net) = &config.net {
        let device = net_device(&net.socket, net.mac, net.mtu).map_err(VmmError::Net)?;
        attach(&mut machine, &mut cmdline, Box::new(VirtioNet::new(device)))?;
    }
    for (index, disk) in config.disks.iter().enumerate() {
        let device = block_device(disk).map_err(|source| VmmError::Disk {
            index,
            serial: disk.serial.clone(),
            source,
        })?;
        attach(
            &mut machine,
            &mut cmdline,
            Box::new(VirtioBlock::new(device)),
        )?;
    }
    for share in &config.shares {
        let device = virtio_fs(&share.socket, &share.tag).map_err(|source| VmmError::Share {
            tag: share.tag.clone(),
            source,
        })?;
        attach(&mut machine, &mut cmdline, Box::new(device))?;
    }
    let state = boot::load_kernel(
        machine.memory(),
        &KernelBoot {
            kernel: &config.kernel,
            initramfs: config.initramfs.as_deref(),
            cmdline: &cmdline,
            vcpus: config.vcpus,
        },
    )?;
    let exit = machine.run(Start::Bootstrap(state), stop)?;
    let console_log = match &config.serial {
        SerialOutput::File(path) => Some(path.clone()),
        _ => None,
    };
    Ok(match (exit, panic.get()) {
        (VmExit::Reset(_) | VmExit::Halted, Some(line)) => VmExit::Error {
            cause: format!("guest kernel panic: {line}"),
            console_log,
        },
        (VmExit::Error { cause, .. }, _) => VmExit::Error { cause, console_log },
        (exit, _) => exit,
    })
}
