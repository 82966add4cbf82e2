//! A KVM vCPU: setup (CPUID, MSRs, FPU, LAPIC), the PVH start state, and `KVM_RUN` exits
//! translated into the backend-free [`VcpuExit`].

use kvm_bindings::{
    kvm_mp_state, kvm_run, CpuId, Msrs, KVM_INTERNAL_ERROR_DELIVERY_EV,
    KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_SIMUL_EX, KVM_MP_STATE_RUNNABLE,
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::VcpuFd;

use super::{call_err, cpuid, regs};
use crate::hypervisor::{BootState, HypervisorError, Result, Vcpu, VcpuExit};

/// A KVM vCPU with its CPUID table.
pub struct KvmVcpu {
    fd: VcpuFd,
    cpuid: CpuId,
    /// The mmap'd `kvm_run` area, read for exit details the exit enum of kvm-ioctls omits.
    run_area: *const kvm_run,
}

// SAFETY: `run_area` points into the vCPU's own `kvm_run` mapping, which lives as long as `fd`
// and is only read by the thread that owns this vCPU.
unsafe impl Send for KvmVcpu {}

impl KvmVcpu {
    /// Configures vCPU `index` of `count`: CPUID, boot MSRs, FPU and LAPIC LINT pins.
    pub fn new(mut fd: VcpuFd, index: u8, count: u8, supported: &CpuId) -> Result<Self> {
        let cpuid = cpuid::guest_cpuid(supported, index, count);
        fd.set_cpuid2(&cpuid).map_err(call_err("KVM_SET_CPUID2"))?;

        let entries = regs::boot_msrs();
        let msrs = Msrs::from_entries(&entries).map_err(|_| HypervisorError::Partial {
            op: "KVM_SET_MSRS",
            applied: 0,
            wanted: entries.len(),
        })?;
        let applied = fd.set_msrs(&msrs).map_err(call_err("KVM_SET_MSRS"))?;
        if applied != entries.len() {
            return Err(HypervisorError::Partial {
                op: "KVM_SET_MSRS",
                applied,
                wanted: entries.len(),
            });
        }

        fd.set_fpu(&regs::boot_fpu())
            .map_err(call_err("KVM_SET_FPU"))?;
        let mut lapic = fd.get_lapic().map_err(call_err("KVM_GET_LAPIC"))?;
        regs::configure_lint(&mut lapic);
        fd.set_lapic(&lapic).map_err(call_err("KVM_SET_LAPIC"))?;

        let run_area: *const kvm_run = fd.get_kvm_run();
        Ok(KvmVcpu {
            fd,
            cpuid,
            run_area,
        })
    }
}

/// Describes the internal error of the last exit.
///
/// # Safety
/// `run_area` must be the live `kvm_run` mapping of a vCPU whose last exit was
/// KVM_EXIT_INTERNAL_ERROR.
unsafe fn internal_error_detail(run_area: *const kvm_run) -> String {
    // SAFETY: guaranteed by the caller: the `internal` member of the union is the valid one.
    let internal = unsafe { (*run_area).__bindgen_anon_1.internal };
    let what = match internal.suberror {
        KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
        KVM_INTERNAL_ERROR_SIMUL_EX => "exception raised while delivering another event",
        KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        _ => "unexpected exit",
    };
    format!("KVM internal error {} ({what})", internal.suberror)
}

impl Vcpu for KvmVcpu {
    fn set_boot_state(&mut self, state: &BootState) -> Result<()> {
        let sregs = self.fd.get_sregs().map_err(call_err("KVM_GET_SREGS"))?;
        self.fd
            .set_sregs(&regs::boot_sregs(sregs, state))
            .map_err(call_err("KVM_SET_SREGS"))?;
        self.fd
            .set_regs(&regs::boot_regs(state))
            .map_err(call_err("KVM_SET_REGS"))?;
        self.fd
            .set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(call_err("KVM_SET_MP_STATE"))
    }

    fn run(&mut self) -> Result<VcpuExit<'_>> {
        use kvm_ioctls::VcpuExit as K;
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(VcpuExit::Interrupted)
            }
            Err(e) => return Err(call_err("KVM_RUN")(e)),
        };
        Ok(match exit {
            K::IoIn(port, data) => VcpuExit::IoIn { port, data },
            K::IoOut(port, data) => VcpuExit::IoOut { port, data },
            K::MmioRead(addr, data) => VcpuExit::MmioRead { addr, data },
            K::MmioWrite(addr, data) => VcpuExit::MmioWrite { addr, data },
            K::Hlt => VcpuExit::Hlt,
            K::Shutdown => VcpuExit::Shutdown,
            K::Intr => VcpuExit::Interrupted,
            K::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => VcpuExit::SystemReset,
            K::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => VcpuExit::SystemShutdown,
            K::SystemEvent(KVM_SYSTEM_EVENT_CRASH, _) => VcpuExit::SystemCrash,
            K::InternalError => VcpuExit::InternalError {
                // SAFETY: `run_area` belongs to `self.fd`, whose last exit was an internal error.
                detail: unsafe { internal_error_detail(self.run_area) },
            },
            K::FailEntry(reason, cpu) => VcpuExit::InternalError {
                detail: format!("KVM entry failed: hardware reason {reason:#x} on host cpu {cpu}"),
            },
            other => VcpuExit::Unexpected {
                detail: format!("{other:?}"),
            },
        })
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        cpuid::lookup(&self.cpuid, leaf, subleaf)
    }
}
