//! The guest has no PMU. On Intel, CPUID leaf 0xa says so (cpuid.rs); AMD has no CPUID bit for
//! its legacy counters, so a Linux guest on an AMD CPU always probes them by writing a counter
//! and reading it back. Where the host's KVM has no vPMU (nested clouds, the nested test VM),
//! KVM ignores those writes and logs `Unhandled WRMSR(0xc0010007)` on the host, for every guest
//! boot. An MSR filter denies the AMD counter MSRs instead, so the guest's probe takes a #GP
//! from KVM at once ("PMU not available due to virtualization, using software events only")
//! and the host's log stays quiet, with or without a vPMU.

use kvm_ioctls::{Cap, Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};

use super::call_err;
use crate::hypervisor::Result;

/// AMD's performance-counter MSRs: the legacy K7 counters (PERF_CTL0–3, PERF_CTR0–3) and the
/// core counters of family 15h on (PERF_CTL0–5 / PERF_CTR0–5 interleaved).
const AMD_PMU_MSRS: [(u32, u32); 2] = [(0xc001_0000, 8), (0xc001_0200, 12)];

/// Denies reads and writes of the AMD PMU MSRs (a #GP in the guest). Hosts whose KVM lacks MSR
/// filters (before Linux 5.10) keep KVM's default behaviour.
pub fn deny_pmu_msrs(kvm: &Kvm, vm: &VmFd) -> Result<()> {
    if !kvm.check_extension(Cap::X86MsrFilter) {
        tracing::debug!("KVM has no MSR filter: the guest's PMU probe reaches KVM");
        return Ok(());
    }
    // A clear bit denies the access; one bitmap covers the longest range.
    let denied = [0u8; 2];
    let ranges: Vec<MsrFilterRange> = AMD_PMU_MSRS
        .iter()
        .map(|&(base, msr_count)| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count,
            bitmap: &denied,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
        .map_err(call_err("KVM_X86_SET_MSR_FILTER"))
}
