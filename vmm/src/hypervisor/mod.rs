//! The hypervisor abstraction: traits for a hypervisor, a VM and a vCPU, and the one exit enum.
//!
//! Everything above this module (boot, devices, the run loop) is written against these traits;
//! only a backend (today `kvm`) talks to a concrete hypervisor API.

pub mod kvm;
pub mod x86;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Errors of a hypervisor backend, each naming the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("{device} does not exist: KVM is not available on this host")]
    DeviceMissing { device: &'static str },
    #[error(
        "no permission to open {device} (owned by group `{group}`): add this user to that group"
    )]
    PermissionDenied { device: &'static str, group: String },
    #[error("cannot open {device}: {source}")]
    Open {
        device: &'static str,
        source: std::io::Error,
    },
    #[error("hypervisor call `{op}` failed: {source}")]
    Call {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("hypervisor call `{op}` applied {applied} of {wanted} entries")]
    Partial {
        op: &'static str,
        applied: usize,
        wanted: usize,
    },
}

pub type Result<T> = std::result::Result<T, HypervisorError>;

/// A hypervisor able to create VMs.
pub trait Hypervisor: Send + Sync {
    /// Creates an empty VM (no memory, no vCPUs).
    fn create_vm(&self) -> Result<Box<dyn Vm>>;
}

/// An address the guest writes to that should signal an eventfd without a vCPU exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEventAddress {
    Pio(u16),
    Mmio(u64),
}

/// A virtual machine: its memory map, interrupt controller and vCPUs.
pub trait Vm: Send + Sync {
    /// Maps every region of `memory` into the guest physical address space. The VM keeps a
    /// reference to the mapping, so the host memory outlives the guest's view of it.
    fn set_memory(&self, memory: &GuestMemoryMmap) -> Result<()>;
    /// Creates the in-kernel interrupt controllers (local APICs and an IOAPIC with 24 pins).
    fn create_irqchip(&self) -> Result<()>;
    /// Makes a write to `fd` raise interrupt line `gsi`.
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()>;
    /// Makes a guest write to `addr` (with value `datamatch`, if given) signal `fd`.
    fn register_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<()>;
    /// Creates vCPU `index` configured for a guest with `vcpu_count` vCPUs.
    fn create_vcpu(&self, index: u8, vcpu_count: u8) -> Result<Box<dyn Vcpu>>;
}

/// The register state a vCPU starts in: 32-bit protected mode, paging off, flat segments,
/// as the PVH boot protocol specifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootState {
    /// Guest physical address of the first instruction.
    pub entry: u64,
    /// Value of `ebx` (PVH: the address of `hvm_start_info`).
    pub ebx: u64,
    /// Guest physical address of a flat GDT (null, code 0x08.., data) the segments refer to.
    pub gdt_addr: u64,
}

/// Why a vCPU stopped running guest code.
#[derive(Debug, PartialEq, Eq)]
pub enum VcpuExit<'a> {
    /// The guest read from an I/O port; fill `data`.
    IoIn { port: u16, data: &'a mut [u8] },
    /// The guest wrote `data` to an I/O port.
    IoOut { port: u16, data: &'a [u8] },
    /// The guest read unmapped guest-physical memory; fill `data`.
    MmioRead { addr: u64, data: &'a mut [u8] },
    /// The guest wrote `data` to unmapped guest-physical memory.
    MmioWrite { addr: u64, data: &'a [u8] },
    /// The guest halted and nothing (no in-kernel irqchip) will wake it.
    Hlt,
    /// The guest triple-faulted (or otherwise shut the CPU down).
    Shutdown,
    /// The guest asked the platform to reset.
    SystemReset,
    /// The guest asked the platform to power off.
    SystemShutdown,
    /// The guest signalled a crash to the platform.
    SystemCrash,
    /// The run was interrupted by a signal before or while running guest code.
    Interrupted,
    /// The hypervisor could not run or emulate the guest; `detail` says why.
    InternalError { detail: String },
    /// Any other exit the VMM does not handle.
    Unexpected { detail: String },
}

/// One virtual CPU.
pub trait Vcpu: Send {
    /// Sets the register state to start executing at `state.entry`, and makes the vCPU runnable
    /// at once (without waiting for an INIT/SIPI from another vCPU).
    fn set_boot_state(&mut self, state: &BootState) -> Result<()>;
    /// Runs guest code until the next exit.
    fn run(&mut self) -> Result<VcpuExit<'_>>;
    /// The registers (eax, ebx, ecx, edx) the guest's `cpuid` returns for `leaf`/`subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]>;
}
