//! A machine: guest memory, vCPUs, the port and MMIO buses with their devices, and the run
//! loop (one thread per vCPU, plus the device event loop) that ends in one [`VmExit`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Bus, BusError, SharedDevice, VmRequest};
use crate::devices::cmos::{Cmos, CMOS_LEN, CMOS_PORT};
use crate::devices::i8042::{I8042, I8042_LEN, I8042_PORT};
use crate::devices::mmio::MmioTransport;
use crate::devices::serial::{Serial, COM1_IRQ, COM1_LEN, COM1_PORT};
use crate::devices::virtio::VirtioDevice;
use crate::event_loop::{EventLoop, EventLoopError};
use crate::hypervisor::{
    BootState, Hypervisor, HypervisorError, IoEventAddress, Vcpu, VcpuExit, Vm,
};
use crate::memory::{create_guest_memory, MemoryError, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use crate::stop::{install_kick_handler, unblock_kick_signal, StopHandle};

/// First interrupt line of virtio-mmio devices (COM1 has 4).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Interrupt lines available to virtio devices (IOAPIC pins 5..=23).
const VIRTIO_IRQ_COUNT: u32 = 19;
/// `queue_notify` offset in the virtio-mmio window.
const QUEUE_NOTIFY: u64 = 0x50;
/// Most vCPUs: APIC ids are 8 bits and the IOAPIC takes the id after the last vCPU.
pub const MAX_VCPUS: u8 = 254;

/// Why a platform reset happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// The guest wrote the reset command to the i8042 (`reboot=k`).
    Keyboard,
    /// A vCPU triple-faulted (also `reboot=t`).
    TripleFault,
    /// The hypervisor reported a platform reset request.
    Platform,
}

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset the machine: its normal way to end.
    Reset(ResetCause),
    /// The guest powered off.
    PowerOff,
    /// A vCPU halted with nothing to wake it.
    Halted,
    /// The VM was stopped from outside through its [`StopHandle`].
    Stopped,
    /// The guest or the hypervisor failed.
    Error {
        cause: String,
        console_log: Option<PathBuf>,
    },
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Reset(cause) => write!(f, "guest reset ({cause:?})"),
            VmExit::PowerOff => f.write_str("guest powered off"),
            VmExit::Halted => f.write_str("guest halted"),
            VmExit::Stopped => f.write_str("stopped"),
            VmExit::Error { cause, console_log } => match console_log {
                Some(log) => write!(f, "VM failed: {cause} (console log: {})", log.display()),
                None => write!(f, "VM failed: {cause}"),
            },
        }
    }
}

/// Errors building or running a machine.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    EventLoop(#[from] EventLoopError),
    #[error("{vcpus} vCPUs requested; 1 to {MAX_VCPUS} are supported")]
    VcpuCount { vcpus: u8 },
    #[error("no interrupt line left for another virtio device (at most {VIRTIO_IRQ_COUNT})")]
    TooManyDevices,
    #[error("cannot create an eventfd for {what}: {source}")]
    EventFd {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot install the vCPU kick signal handler")]
    SignalHandler,
    #[error("cannot start vCPU thread {index}: {source}")]
    Thread { index: u8, source: std::io::Error },
}

/// Sizes of a machine.
#[derive(Debug, Clone, Copy)]
pub struct MachineConfig {
    pub vcpus: u8,
    pub memory_mib: u64,
    /// Guest memory in a shared memfd (for vhost-user backends), not anonymous.
    pub shared_memory: bool,
}

/// Which vCPUs start running at once.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// vCPU 0 starts in `BootState`; the others wait for the guest's INIT/SIPI (a kernel).
    Bootstrap(BootState),
    /// Every vCPU starts in `BootState` (test guests).
    AllVcpus(BootState),
}

/// A VM being assembled; `run` consumes it.
pub struct Machine {
    vm: Box<dyn Vm>,
    vcpus: Vec<Box<dyn Vcpu>>,
    memory: GuestMemoryMmap,
    pio: Bus,
    mmio: Bus,
    virtio: Vec<Arc<Mutex<MmioTransport>>>,
}

fn eventfd(what: &'static str) -> Result<EventFd, MachineError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(|source| MachineError::EventFd { what, source })
}

impl Machine {
    /// Creates the VM, its memory, interrupt controllers and vCPUs.
    pub fn new(hypervisor: &dyn Hypervisor, config: MachineConfig) -> Result<Self, MachineError> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(MachineError::VcpuCount {
                vcpus: config.vcpus,
            });
        }
        let vm = hypervisor.create_vm()?;
        let memory = create_guest_memory(config.memory_mib, config.shared_memory)?;
        vm.set_memory(&memory)?;
        vm.create_irqchip()?;
        let vcpus = (0..config.vcpus)
            .map(|i| vm.create_vcpu(i, config.vcpus))
            .collect::<Result<_, _>>()?;
        Ok(Machine {
            vm,
            vcpus,
            memory,
            pio: Bus::default(),
            mmio: Bus::default(),
            virtio: Vec::new(),
        })
    }

    /// Guest memory, to load code or a kernel into.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The registers the guest's `cpuid` returns on vCPU `vcpu` for `leaf`/`subleaf`.
    pub fn cpuid(&self, vcpu: u8, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        self.vcpus.get(usize::from(vcpu))?.cpuid(leaf, subleaf)
    }

    /// Puts `device` on the I/O port bus at `port..port + len`.
    pub fn add_pio_device(
        &mut self,
        port: u16,
        len: u16,
        device: SharedDevice,
    ) -> Result<(), MachineError> {
        Ok(self.pio.insert(u64::from(port), u64::from(len), device)?)
    }

    /// Puts `device` on the MMIO bus at `addr..addr + len`.
    pub fn add_mmio_device(
        &mut self,
        addr: u64,
        len: u64,
        device: SharedDevice,
    ) -> Result<(), MachineError> {
        Ok(self.mmio.insert(addr, len, device)?)
    }

    /// COM1 (16550) writing to `out`, interrupting on IRQ 4.
    pub fn add_serial(&mut self, out: Box<dyn Write + Send>) -> Result<(), MachineError> {
        let irq = eventfd("serial interrupt")?;
        self.vm.register_irqfd(&irq, COM1_IRQ)?;
        let serial = Serial::new(irq, out);
        self.add_pio_device(COM1_PORT, COM1_LEN as u16, Arc::new(Mutex::new(serial)))
    }

    /// The i8042 controller whose reset command ends the VM.
    pub fn add_i8042(&mut self) -> Result<(), MachineError> {
        self.add_pio_device(I8042_PORT, I8042_LEN as u16, Arc::new(Mutex::new(I8042)))
    }

    /// The CMOS clock, so the guest reads its wall clock at once.
    pub fn add_cmos(&mut self) -> Result<(), MachineError> {
        self.add_pio_device(
            CMOS_PORT,
            CMOS_LEN as u16,
            Arc::new(Mutex::new(Cmos::default())),
        )
    }

    /// Puts `device` behind a virtio-mmio window with its own interrupt line; returns the
    /// kernel command line entry that announces it.
    pub fn add_virtio(&mut self, device: Box<dyn VirtioDevice>) -> Result<String, MachineError> {
        let index = self.virtio.len() as u32;
        if index >= VIRTIO_IRQ_COUNT {
            return Err(MachineError::TooManyDevices);
        }
        let irq = VIRTIO_IRQ_BASE + index;
        let addr = VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SIZE;
        let irqfd = eventfd("virtio interrupt")?;
        self.vm.register_irqfd(&irqfd, irq)?;
        let transport =
            MmioTransport::new(device, self.memory.clone(), irqfd).map_err(|source| {
                MachineError::EventFd {
                    what: "virtio queue notification",
                    source,
                }
            })?;
        for (queue, evt) in transport.queue_events().iter().enumerate() {
            self.vm.register_ioeventfd(
                evt,
                IoEventAddress::Mmio(addr + QUEUE_NOTIFY),
                Some(queue as u32),
            )?;
        }
        let transport = Arc::new(Mutex::new(transport));
        self.add_mmio_device(addr, VIRTIO_MMIO_SIZE, transport.clone())?;
        self.virtio.push(transport);
        Ok(format!(
            "virtio_mmio.device={}K@{addr:#x}:{irq}",
            VIRTIO_MMIO_SIZE >> 10
        ))
    }

    /// Runs the guest until it resets, powers off, fails, or `stop` is used.
    pub fn run(mut self, start: Start, stop: &StopHandle) -> Result<VmExit, MachineError> {
        if !install_kick_handler() {
            return Err(MachineError::SignalHandler);
        }
        match start {
            Start::Bootstrap(state) => {
                if let Some(bsp) = self.vcpus.first_mut() {
                    bsp.set_boot_state(&state)?;
                }
            }
            Start::AllVcpus(state) => {
                for vcpu in &mut self.vcpus {
                    vcpu.set_boot_state(&state)?;
                }
            }
        }
        let event_loop = if self.virtio.is_empty() {
            None
        } else {
            Some(EventLoop::start(self.virtio.clone())?)
        };

        let pio = Arc::new(self.pio);
        let mmio = Arc::new(self.mmio);
        let (tx, rx) = mpsc::channel::<Option<VmExit>>();
        let mut threads = Vec::new();
        for (index, vcpu) in self.vcpus.into_iter().enumerate() {
            let (pio, mmio, tx, handle) = (pio.clone(), mmio.clone(), tx.clone(), stop.clone());
            let index = index as u8;
            let thread = std::thread::Builder::new()
                .name(format!("skiff-vcpu{index}"))
                .spawn(move || {
                    unblock_kick_signal();
                    // SAFETY: pthread_self has no preconditions.
                    let me = unsafe { libc::pthread_self() };
                    handle.register(me);
                    let exit = run_vcpu(index, vcpu, &pio, &mmio, &handle);
                    handle.unregister(me);
                    let _ = tx.send(exit);
                });
            match thread {
                Ok(t) => threads.push(t),
                Err(source) => {
                    stop.stop();
                    return Err(MachineError::Thread { index, source });
                }
            }
        }
        drop(tx);

        let mut first = None;
        let mut running = threads.len();
        while running > 0 {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(exit) => {
                    running -= 1;
                    if first.is_none() && exit.is_some() {
                        first = exit;
                        stop.stop();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if stop.is_stopped() {
                        stop.kick();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for t in threads {
            if t.join().is_err() {
                tracing::warn!("a vCPU thread panicked");
            }
        }
        if let Some(event_loop) = event_loop {
            event_loop.stop();
        }
        drop(self.vm);
        Ok(first.unwrap_or(VmExit::Stopped))
    }
}

fn error(cause: String) -> Option<VmExit> {
    Some(VmExit::Error {
        cause,
        console_log: None,
    })
}

/// One vCPU's loop; `None` when stopped from outside, else how the VM ends.
fn run_vcpu(
    index: u8,
    mut vcpu: Box<dyn Vcpu>,
    pio: &Bus,
    mmio: &Bus,
    stop: &StopHandle,
) -> Option<VmExit> {
    loop {
        if stop.is_stopped() {
            return None;
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) => return error(format!("vCPU {index}: {e}")),
        };
        match exit {
            VcpuExit::IoIn { port, data } => {
                if !pio.read(u64::from(port), data) {
                    data.fill(0xff);
                }
            }
            VcpuExit::IoOut { port, data } => {
                if let Some(Some(VmRequest::Reset)) = pio.write(u64::from(port), data) {
                    return Some(VmExit::Reset(ResetCause::Keyboard));
                }
            }
            VcpuExit::MmioRead { addr, data } => {
                if !mmio.read(addr, data) {
                    tracing::debug!("vCPU {index}: read of unmapped MMIO {addr:#x}");
                    data.fill(0xff);
                }
            }
            VcpuExit::MmioWrite { addr, data } => {
                if mmio.write(addr, data).is_none() {
                    tracing::debug!("vCPU {index}: write to unmapped MMIO {addr:#x}");
                }
            }
            VcpuExit::Hlt => return Some(VmExit::Halted),
            VcpuExit::Shutdown => return Some(VmExit::Reset(ResetCause::TripleFault)),
            VcpuExit::SystemReset => return Some(VmExit::Reset(ResetCause::Platform)),
            VcpuExit::SystemShutdown => return Some(VmExit::PowerOff),
            VcpuExit::SystemCrash => return error(format!("vCPU {index}: guest reported a crash")),
            VcpuExit::Interrupted => {}
            VcpuExit::InternalError { detail } => return error(format!("vCPU {index}: {detail}")),
            VcpuExit::Unexpected { detail } => {
                return error(format!("vCPU {index}: unexpected exit {detail}"))
            }
        }
    }
}
