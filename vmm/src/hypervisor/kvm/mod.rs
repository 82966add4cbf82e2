//! The KVM backend: the only code in skiff that calls kvm-ioctls.

mod cpuid;
mod pmu;
mod regs;
mod vcpu;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use kvm_bindings::{kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::{Hypervisor, HypervisorError, IoEventAddress, Result, Vcpu, Vm};

pub use vcpu::KvmVcpu;

const KVM_DEVICE: &str = "/dev/kvm";
/// Three pages below the IOAPIC that KVM needs for its TSS on Intel hosts.
const TSS_ADDRESS: usize = 0xfffb_d000;

fn call_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |e| HypervisorError::Call {
        op,
        source: io::Error::from_raw_os_error(e.errno()),
    }
}

/// KVM, opened once; holds the host's supported CPUID, filtered per vCPU later.
pub struct KvmHypervisor {
    kvm: Kvm,
    supported_cpuid: CpuId,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm`, telling apart "missing" and "no permission" (with the owning group).
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| open_error(io::Error::from_raw_os_error(e.errno())))?;
        let mut supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(call_err("KVM_GET_SUPPORTED_CPUID"))?;
        if kvm.check_extension(Cap::TscDeadlineTimer) {
            cpuid::add_tsc_deadline_timer(&mut supported_cpuid);
        }
        Ok(KvmHypervisor {
            kvm,
            supported_cpuid,
        })
    }
}

fn open_error(source: io::Error) -> HypervisorError {
    match source.kind() {
        io::ErrorKind::NotFound => HypervisorError::DeviceMissing { device: KVM_DEVICE },
        io::ErrorKind::PermissionDenied => HypervisorError::PermissionDenied {
            device: KVM_DEVICE,
            group: device_group(KVM_DEVICE),
        },
        _ => HypervisorError::Open {
            device: KVM_DEVICE,
            source,
        },
    }
}

/// The name of the group owning `path` (its number if /etc/group does not list it).
fn device_group(path: &str) -> String {
    let Ok(meta) = std::fs::metadata(path) else {
        return "unknown".to_string();
    };
    let gid = meta.gid();
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|groups| {
            groups.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?.parse::<u32>().ok()?;
                (id == gid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| gid.to_string())
}

impl Hypervisor for KvmHypervisor {
    fn create_vm(&self) -> Result<Box<dyn Vm>> {
        let fd = self.kvm.create_vm().map_err(call_err("KVM_CREATE_VM"))?;
        fd.set_tss_address(TSS_ADDRESS)
            .map_err(call_err("KVM_SET_TSS_ADDR"))?;
        pmu::deny_pmu_msrs(&self.kvm, &fd)?;
        Ok(Box::new(KvmVm {
            fd,
            supported_cpuid: self.supported_cpuid.clone(),
            memory: Mutex::new(None),
        }))
    }
}

/// A KVM VM.
pub struct KvmVm {
    fd: VmFd,
    supported_cpuid: CpuId,
    /// Keeps the host mappings alive for as long as the guest can reach them.
    memory: Mutex<Option<GuestMemoryMmap>>,
}

impl Vm for KvmVm {
    fn set_memory(&self, memory: &GuestMemoryMmap) -> Result<()> {
        for (slot, region) in memory.iter().enumerate() {
            let host = memory.get_host_address(region.start_addr()).map_err(|_| {
                HypervisorError::Call {
                    op: "KVM_SET_USER_MEMORY_REGION",
                    source: io::Error::from(io::ErrorKind::InvalidInput),
                }
            })?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping of `region.len()` bytes owned by `memory`;
            // a clone of `memory` is stored in `self` below, so it outlives the VM's use of it.
            unsafe { self.fd.set_user_memory_region(desc) }
                .map_err(call_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        if let Ok(mut held) = self.memory.lock() {
            *held = Some(memory.clone());
        }
        Ok(())
    }

    fn create_irqchip(&self) -> Result<()> {
        // No PIT: the guest kernel is a KVM guest (kvm-clock, `no_timer_check`), so it needs
        // neither the 8254 for calibration nor for the IOAPIC timer check.
        self.fd
            .create_irq_chip()
            .map_err(call_err("KVM_CREATE_IRQCHIP"))
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(call_err("KVM_IRQFD"))
    }

    fn register_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<()> {
        let addr = match addr {
            IoEventAddress::Pio(port) => kvm_ioctls::IoEventAddress::Pio(u64::from(port)),
            IoEventAddress::Mmio(a) => kvm_ioctls::IoEventAddress::Mmio(a),
        };
        let res = match datamatch {
            Some(value) => self.fd.register_ioevent(fd, &addr, value),
            None => self.fd.register_ioevent(fd, &addr, NoDatamatch),
        };
        res.map_err(call_err("KVM_IOEVENTFD"))
    }

    fn create_vcpu(&self, index: u8, vcpu_count: u8) -> Result<Box<dyn Vcpu>> {
        let fd = self
            .fd
            .create_vcpu(u64::from(index))
            .map_err(call_err("KVM_CREATE_VCPU"))?;
        let vcpu = KvmVcpu::new(fd, index, vcpu_count, &self.supported_cpuid)?;
        Ok(Box::new(vcpu))
    }
}
