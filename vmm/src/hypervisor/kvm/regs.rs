//! Register layouts for KVM: the PVH start state (32-bit protected mode, flat segments),
//! the FPU's reset state, boot MSRs and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};

use crate::hypervisor::x86::{CODE_SELECTOR, DATA_SELECTOR, GDT};
use crate::hypervisor::BootState;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const RFLAGS_RESERVED: u64 = 1 << 1;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// General registers at the PVH entry: `rip` = entry, `rbx` = start info.
pub fn boot_regs(state: &BootState) -> kvm_regs {
    kvm_regs {
        rip: state.entry,
        rbx: state.ebx,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Segment and control registers at the PVH entry, applied over the vCPU's current `sregs`.
pub fn boot_sregs(mut sregs: kvm_sregs, state: &BootState) -> kvm_sregs {
    // Code: execute/read, accessed. Data: read/write, accessed.
    let code = flat_segment(CODE_SELECTOR, 0xb);
    let data = flat_segment(DATA_SELECTOR, 0x3);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    // A busy 32-bit TSS, as the architecture requires TR to be usable.
    sregs.tr = kvm_segment {
        limit: 0x67,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = state.gdt_addr;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// The x87/SSE state after reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSRs a booting kernel expects in a defined state.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| lapic.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as _;
    }
}

/// Wires LINT0 to ExtINT and LINT1 to NMI, as a PC's firmware leaves them.
pub fn configure_lint(lapic: &mut kvm_lapic_state) {
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let value = lapic_reg(lapic, reg);
        // Delivery mode is bits 10:8.
        set_lapic_reg(lapic, reg, (value & !0x700) | (mode << 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_pins_get_extint_and_nmi() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0000);
        configure_lint(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x0000_0400);
    }

    #[test]
    fn pvh_state_is_flat_protected_mode() {
        let state = BootState {
            entry: 0x100_0000,
            ebx: 0x6000,
            gdt_addr: 0x500,
        };
        let sregs = boot_sregs(kvm_sregs::default(), &state);
        assert_eq!(sregs.cr0 & CR0_PE, CR0_PE);
        assert_eq!(sregs.cs.selector, CODE_SELECTOR);
        assert_eq!(sregs.cs.limit, 0xffff_ffff);
        assert_eq!(sregs.gdt.base, 0x500);
        let regs = boot_regs(&state);
        assert_eq!((regs.rip, regs.rbx), (0x100_0000, 0x6000));
    }
}
