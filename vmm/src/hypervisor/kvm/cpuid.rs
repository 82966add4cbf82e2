//! The guest's CPUID: the host's KVM-supported leaves, filtered for a guest vCPU (hypervisor bit
//! on, no nested virtualization, no PMU, APIC id and topology per vCPU).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;

const ECX_VMX: u32 = 1 << 5;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const EXT_ECX_SVM: u32 = 1 << 2;
/// AMD's core performance counters (the guest has no PMU, see pmu.rs).
const EXT_ECX_PERFCTR_CORE: u32 = 1 << 23;

/// Topology level types of leaves 0xb/0x1f (ecx bits 15:8).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Number of APIC-id bits needed to number `count` vCPUs.
fn id_bits(count: u8) -> u32 {
    u32::from(count.max(1)).next_power_of_two().trailing_zeros()
}

/// Adds the TSC-deadline timer to KVM's supported leaves. KVM's in-kernel local APIC emulates it
/// but leaves announcing it to user space (KVM_CAP_TSC_DEADLINE_TIMER). Without it the guest
/// must calibrate the APIC timer against a PIT, which skiff's machine does not have: the
/// calibration fails ("APIC timer disabled due to verification failure"), the guest is left with
/// no timer interrupts, and `sleep` never returns.
pub fn add_tsc_deadline_timer(supported: &mut CpuId) {
    for entry in supported.as_mut_slice() {
        if entry.function == LEAF_FEATURES {
            entry.ecx |= ECX_TSC_DEADLINE;
        }
    }
}

/// Filters `supported` for vCPU `index` of `count`: one socket, one thread per core,
/// `count` cores, APIC id = `index`.
pub fn guest_cpuid(supported: &CpuId, index: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    let apic_id = u32::from(index);
    let count32 = u32::from(count.max(1));
    for entry in cpuid.as_mut_slice() {
        filter_entry(entry, apic_id, count32, id_bits(count));
    }
    cpuid
}

fn filter_entry(entry: &mut kvm_cpuid_entry2, apic_id: u32, count: u32, bits: u32) {
    match entry.function {
        LEAF_FEATURES => {
            entry.ecx &= !ECX_VMX;
            entry.ecx |= ECX_HYPERVISOR;
            // ebx: 31:24 initial APIC id, 23:16 logical processors per package, 15:8 CLFLUSH.
            entry.ebx = (apic_id << 24) | (count << 16) | (entry.ebx & 0xffff);
            if count > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            // eax 31:26: cores per package - 1; 25:14: logical processors sharing the cache - 1
            // (one thread per core: private caches are per vCPU, the last level is shared).
            let cache_level = (entry.eax >> 5) & 0x7;
            let sharing = if cache_level >= 3 { count - 1 } else { 0 };
            entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
        }
        LEAF_PMU => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
            entry.edx = apic_id;
            match entry.index {
                0 => {
                    entry.eax = 0;
                    entry.ebx = 1;
                    entry.ecx = (LEVEL_SMT << 8) | entry.index;
                }
                1 => {
                    entry.eax = bits;
                    entry.ebx = count;
                    entry.ecx = (LEVEL_CORE << 8) | entry.index;
                }
                _ => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = entry.index;
                }
            }
        }
        LEAF_EXT_FEATURES => entry.ecx &= !(EXT_ECX_SVM | EXT_ECX_PERFCTR_CORE),
        _ => {}
    }
}

/// The registers (eax, ebx, ecx, edx) `cpuid` returns for `leaf`/`subleaf` per the table.
pub fn lookup(cpuid: &CpuId, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| {
            e.function == leaf
                && (e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0
                    || e.index == subleaf)
        })
        .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).unwrap()
    }

    fn leaf(function: u32, index: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if function == LEAF_TOPOLOGY {
                kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            ecx,
            ebx: 0x0800,
            ..Default::default()
        }
    }

    #[test]
    fn features_leaf_hides_vmx_sets_hypervisor_and_apic_id() {
        let host = table(&[leaf(LEAF_FEATURES, 0, ECX_VMX | 1)]);
        let guest = guest_cpuid(&host, 3, 4);
        let [_, ebx, ecx, edx] = lookup(&guest, LEAF_FEATURES, 0).unwrap();
        assert_eq!(ecx & ECX_VMX, 0);
        assert_ne!(ecx & ECX_HYPERVISOR, 0);
        assert_eq!(ecx & 1, 1, "other feature bits are kept");
        assert_eq!(ebx >> 24, 3);
        assert_eq!((ebx >> 16) & 0xff, 4);
        assert_eq!(ebx & 0xffff, 0x0800);
        assert_ne!(edx & EDX_HTT, 0);
    }

    #[test]
    fn tsc_deadline_timer_is_announced_and_kept() {
        let mut host = table(&[leaf(LEAF_FEATURES, 0, 1)]);
        add_tsc_deadline_timer(&mut host);
        let guest = guest_cpuid(&host, 0, 1);
        let ecx = lookup(&guest, LEAF_FEATURES, 0).unwrap()[2];
        assert_eq!(ecx & (ECX_TSC_DEADLINE | 1), ECX_TSC_DEADLINE | 1);
    }

    #[test]
    fn topology_leaf_numbers_cores_and_apic_ids() {
        let host = table(&[leaf(LEAF_TOPOLOGY, 0, 0), leaf(LEAF_TOPOLOGY, 1, 0)]);
        let guest = guest_cpuid(&host, 2, 3);
        assert_eq!(lookup(&guest, LEAF_TOPOLOGY, 0).unwrap(), [0, 1, 0x100, 2]);
        assert_eq!(lookup(&guest, LEAF_TOPOLOGY, 1).unwrap(), [2, 3, 0x201, 2]);
    }

    #[test]
    fn svm_and_amd_core_counters_are_hidden() {
        let host = table(&[leaf(
            LEAF_EXT_FEATURES,
            0,
            EXT_ECX_SVM | EXT_ECX_PERFCTR_CORE | 1,
        )]);
        let guest = guest_cpuid(&host, 0, 1);
        assert_eq!(lookup(&guest, LEAF_EXT_FEATURES, 0).unwrap()[2], 1);
    }
}
