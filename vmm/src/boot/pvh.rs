//! The PVH boot structures: `hvm_start_info`, its module list (the initramfs) and the memory
//! map (e820 types), serialized in their documented little-endian layouts.

use vm_memory::GuestAddress;

const START_INFO_MAGIC: u32 = 0x336e_c578;
const START_INFO_VERSION: u32 = 1;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One memory map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Where the pieces of the start info live in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct StartInfo {
    pub cmdline: GuestAddress,
    pub memmap: GuestAddress,
    pub memmap_entries: u32,
    /// The module list's address and the one module (initramfs: address, size), if any.
    pub initramfs: Option<(GuestAddress, GuestAddress, u64)>,
}

/// `struct hvm_start_info` (56 bytes).
pub fn start_info_bytes(info: &StartInfo) -> Vec<u8> {
    let (nr_modules, modlist) = match info.initramfs {
        Some((list, _, _)) => (1u32, list.0),
        None => (0, 0),
    };
    let mut b = Vec::with_capacity(56);
    b.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
    b.extend_from_slice(&START_INFO_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // flags
    b.extend_from_slice(&nr_modules.to_le_bytes());
    b.extend_from_slice(&modlist.to_le_bytes());
    b.extend_from_slice(&info.cmdline.0.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // no ACPI RSDP
    b.extend_from_slice(&info.memmap.0.to_le_bytes());
    b.extend_from_slice(&info.memmap_entries.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

/// `struct hvm_modlist_entry` for the initramfs (32 bytes).
pub fn module_bytes(addr: GuestAddress, size: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&addr.0.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0u8; 16]); // no module command line, reserved
    b
}

/// `struct hvm_memmap_table_entry` array (24 bytes each).
pub fn memmap_bytes(entries: &[MemmapEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(entries.len() * 24);
    for e in entries {
        b.extend_from_slice(&e.addr.to_le_bytes());
        b.extend_from_slice(&e.size.to_le_bytes());
        b.extend_from_slice(&e.kind.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_has_the_documented_layout() {
        let b = start_info_bytes(&StartInfo {
            cmdline: GuestAddress(0x20000),
            memmap: GuestAddress(0x7000),
            memmap_entries: 3,
            initramfs: Some((GuestAddress(0x6100), GuestAddress(0x3000000), 4096)),
        });
        assert_eq!(b.len(), 56);
        assert_eq!(&b[0..4], &START_INFO_MAGIC.to_le_bytes());
        assert_eq!(&b[12..16], &1u32.to_le_bytes());
        assert_eq!(&b[16..24], &0x6100u64.to_le_bytes());
        assert_eq!(&b[24..32], &0x20000u64.to_le_bytes());
        assert_eq!(&b[40..48], &0x7000u64.to_le_bytes());
        assert_eq!(&b[48..52], &3u32.to_le_bytes());
    }

    #[test]
    fn memmap_entries_are_24_bytes() {
        let b = memmap_bytes(&[MemmapEntry {
            addr: 0x100000,
            size: 0x1000,
            kind: E820_RAM,
        }]);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[16..20], &E820_RAM.to_le_bytes());
    }
}
