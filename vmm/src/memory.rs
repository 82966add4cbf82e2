//! Guest memory (lazily backed: untouched pages cost nothing; anonymous, or one shared memfd
//! when a vhost-user backend must map it too) and the guest physical address layout.

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

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
    #[error("cannot create a shared memory file of {mib} MiB for guest memory: {source}")]
    Memfd { mib: u64, source: std::io::Error },
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

/// Reserves `mib` MiB of guest memory. Nothing is touched or zeroed up front: the kernel hands
/// out zero pages on first access. `shared` memory is one memfd mapped `MAP_SHARED`, each RAM
/// range at its own offset, so another process (a vhost-user backend) can map the same pages
/// from the file descriptor the region carries.
pub fn create_guest_memory(mib: u64, shared: bool) -> Result<GuestMemoryMmap, MemoryError> {
    if mib < 2 {
        return Err(MemoryError::TooSmall { mib });
    }
    let file = if shared {
        Some(memfd(mib).map_err(|source| MemoryError::Memfd { mib, source })?)
    } else {
        None
    };
    let mut offset = 0;
    let ranges: Vec<(GuestAddress, usize, Option<FileOffset>)> = ram_ranges(mib << 20)
        .into_iter()
        .map(|(start, len)| {
            let at = file
                .as_ref()
                .map(|f| FileOffset::from_arc(f.clone(), offset));
            offset += len;
            (start, len as usize, at)
        })
        .collect();
    GuestMemoryMmap::from_ranges_with_files(&ranges)
        .map_err(|source| MemoryError::Map { mib, source })
}

/// A sparse memfd of `mib` MiB.
fn memfd(mib: u64) -> std::io::Result<std::sync::Arc<File>> {
    // SAFETY: the name is a NUL-terminated literal; the result is checked.
    let fd = unsafe { libc::memfd_create(c"skiff-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(mib << 20)?;
    Ok(std::sync::Arc::new(file))
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
        for shared in [false, true] {
            let mem = create_guest_memory(8, shared).unwrap();
            assert_eq!(mem.last_addr(), GuestAddress((8 << 20) - 1));
            assert_eq!(mem.read_obj::<u64>(GuestAddress(0x1000)).unwrap(), 0);
        }
    }

    #[test]
    fn shared_memory_is_one_file_at_consecutive_offsets() {
        use std::os::fd::AsRawFd;
        use vm_memory::GuestMemoryRegion;
        let mem = create_guest_memory((MMIO_GAP_START >> 20) + 16, true).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        assert_eq!(regions.len(), 2);
        let files: Vec<_> = regions
            .iter()
            .map(|r| r.file_offset().expect("a file-backed region"))
            .collect();
        assert_eq!(files[0].start(), 0);
        assert_eq!(files[1].start(), MMIO_GAP_START);
        assert_eq!(files[0].file().as_raw_fd(), files[1].file().as_raw_fd());
        // A write through the mapping is visible through the file.
        mem.write_obj(0xabcdu32, GuestAddress(MMIO_GAP_END))
            .unwrap();
        let mut b = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(files[1].file(), &mut b, MMIO_GAP_START).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xabcd);
    }
}
