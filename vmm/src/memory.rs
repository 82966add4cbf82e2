//! Guest memory (anonymous, lazily backed: untouched pages cost nothing) and the guest
//! physical address layout.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Start of the hole below 4 GiB that holds device MMIO (virtio-mmio, IOAPIC, LAPIC).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO hole.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// First virtio-mmio device window; device `i` sits at `VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IOAPIC's register window.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs' register window.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;

/// The flat GDT of the start state.
pub const GDT_ADDR: u64 = 0x500;
/// PVH `hvm_start_info`.
pub const START_INFO_ADDR: u64 = 0x6000;
/// PVH module list (the initramfs), right after the start info.
pub const MODLIST_ADDR: u64 = 0x6100;
/// PVH memory map (e820 entries).
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Largest command line (with its NUL) the x86 kernel accepts.
pub const CMDLINE_MAX: usize = 2048;
/// End of usable base memory; the MP table lives above it, in the EBDA.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of memory above the legacy hole (VGA, BIOS).
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {mib} MiB is too small (at least 2 MiB)")]
    TooSmall { mib: u64 },
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Map {
        mib: u64,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The RAM ranges (start, length) of a guest with `size` bytes: below the MMIO gap, and the
/// rest above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}

/// Reserves `mib` MiB of anonymous guest memory. Nothing is touched or zeroed up front: the
/// kernel hands out zero pages on first access.
pub fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if mib < 2 {
        return Err(MemoryError::TooSmall { mib });
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(mib << 20)
        .into_iter()
        .map(|(start, len)| (start, len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { mib, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_guest_is_one_range_below_the_gap() {
        assert_eq!(ram_ranges(64 << 20), vec![(GuestAddress(0), 64 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(ranges[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(
            ranges[1],
            (GuestAddress(MMIO_GAP_END), (4 << 30) - MMIO_GAP_START)
        );
    }

    #[test]
    fn memory_is_readable_and_zero_without_setup() {
        let mem = create_guest_memory(8).unwrap();
        assert_eq!(mem.last_addr(), GuestAddress((8 << 20) - 1));
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x1000)).unwrap(), 0);
    }
}
