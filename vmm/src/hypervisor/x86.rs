//! x86 architecture facts shared by every backend: the flat GDT of the PVH start state.

/// Selector of the flat 32-bit code segment (GDT entry 1).
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the flat data segment (GDT entry 2).
pub const DATA_SELECTOR: u16 = 0x10;

/// The GDT written to guest memory at boot: null, flat 4 GiB code (access 0x9b) and data
/// (access 0x93), 4 KiB granularity, 32-bit.
pub const GDT: [u64; 3] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
