//! The Intel MultiProcessor table (spec 1.4), so an SMP guest without ACPI finds its vCPUs,
//! the IOAPIC and how ISA interrupts are routed.

use crate::memory::{IOAPIC_ADDR, LAPIC_ADDR};

/// IOAPIC input pins; ISA IRQ `n` is wired to pin `n`.
pub const IOAPIC_PINS: u8 = 24;

const SPEC_REV: u8 = 4;
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6, as a generic signature; the kernel reads the real one from CPUID.
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and on-chip APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const ALL_LOCAL_APICS: u8 = 0xff;

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer followed by the configuration table, to be placed at `addr`.
pub fn build(addr: u32, vcpus: u8) -> Vec<u8> {
    let table_addr = addr + FLOATING_POINTER_LEN as u32;
    let ioapic_id = vcpus;

    let mut entries = Vec::new();
    for id in 0..vcpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for pin in 0..IOAPIC_PINS {
        // Polarity and trigger "conform to the bus": active high, edge, as ISA.
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            0,
            pin,
            ioapic_id,
            pin,
        ]);
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        entries.extend_from_slice(&[
            ENTRY_LOCAL_INTERRUPT,
            kind,
            0,
            0,
            0,
            0,
            ALL_LOCAL_APICS,
            lint,
        ]);
    }
    let entry_count = u16::from(vcpus) + 2 + u16::from(IOAPIC_PINS) + 2;

    let mut table = Vec::with_capacity(HEADER_LEN + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    table.extend_from_slice(&[SPEC_REV, 0]);
    table.extend_from_slice(b"SKIFF   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // no extended table
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&table_addr.to_le_bytes());
    out.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_valid_and_every_cpu_is_listed() {
        let bytes = build(0x9fc00, 3);
        let (fp, table) = bytes.split_at(FLOATING_POINTER_LEN);
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(checksum(fp), 0);
        assert_eq!(u32::from_le_bytes(fp[4..8].try_into().unwrap()), 0x9fc10);
        assert_eq!(&table[..4], b"PCMP");
        assert_eq!(checksum(table), 0);
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        let processors: Vec<(u8, u8)> = table[HEADER_LEN..]
            .chunks(20)
            .take(3)
            .map(|e| (e[0], e[1]))
            .collect();
        assert_eq!(processors, vec![(0, 0), (0, 1), (0, 2)]);
        assert_eq!(table[HEADER_LEN + 3] & CPU_BOOTSTRAP, CPU_BOOTSTRAP);
        assert_eq!(table[HEADER_LEN + 20 + 3] & CPU_BOOTSTRAP, 0);
    }
}
