//! Boot: loads a `vmlinux` through its PVH entry, places the command line, the initramfs, the
//! PVH start info with its e820 memory map and the MP table, and returns the start state.

pub mod elf;
pub mod mptable;
pub mod pvh;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, ReadVolatile,
};

use crate::hypervisor::x86::GDT;
use crate::hypervisor::BootState;
use crate::memory::{
    ram_ranges, CMDLINE_ADDR, CMDLINE_MAX, EBDA_START, GDT_ADDR, HIGH_MEMORY_START, MEMMAP_ADDR,
    MMIO_GAP_START, MODLIST_ADDR, START_INFO_ADDR,
};
use pvh::{MemmapEntry, StartInfo, E820_RAM, E820_RESERVED};

const PAGE: u64 = 4096;

/// Errors booting a kernel, each naming the file or the limit involved.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel {path} does not exist")]
    KernelMissing { path: PathBuf },
    #[error("cannot read kernel {path}: {source}")]
    KernelRead { path: PathBuf, source: io::Error },
    #[error("kernel {path} is not an ELF vmlinux: {reason}")]
    NotElf { path: PathBuf, reason: String },
    #[error("kernel {path} has no PVH entry note (build it with CONFIG_PVH=y)")]
    NoPvhNote { path: PathBuf },
    #[error("cannot load kernel {path} into guest memory: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("cannot read initramfs {path}: {source}")]
    InitramfsRead { path: PathBuf, source: io::Error },
    #[error(
        "guest memory of {memory_mib} MiB is too small for the kernel and initramfs \
         (need at least {needed_mib} MiB)"
    )]
    MemoryTooSmall { memory_mib: u64, needed_mib: u64 },
    #[error("kernel command line is {len} bytes, the limit is {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("cannot write the {what} to guest memory")]
    GuestWrite { what: &'static str },
}

fn write(
    mem: &GuestMemoryMmap,
    addr: u64,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|_| BootError::GuestWrite { what })
}

/// Writes the flat GDT the start state refers to; returns its address.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<u64, BootError> {
    let bytes: Vec<u8> = GDT.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, GDT_ADDR, &bytes, "GDT")?;
    Ok(GDT_ADDR)
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct KernelBoot<'a> {
    pub kernel: &'a Path,
    pub initramfs: Option<&'a Path>,
    pub cmdline: &'a str,
    pub vcpus: u8,
}

fn open_kernel(path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => BootError::KernelMissing {
            path: path.to_path_buf(),
        },
        _ => BootError::KernelRead {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

/// The e820 map: base memory, the reserved EBDA/BIOS area, RAM above 1 MiB (split around the
/// MMIO gap when the guest is larger than it).
pub fn memory_map(mem_size: u64) -> Vec<MemmapEntry> {
    let mut map = vec![
        MemmapEntry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemmapEntry {
            addr: EBDA_START,
            size: HIGH_MEMORY_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for (start, len) in ram_ranges(mem_size) {
        let start = start.0.max(HIGH_MEMORY_START);
        let end = if start == HIGH_MEMORY_START {
            len
        } else {
            start + len
        };
        map.push(MemmapEntry {
            addr: start,
            size: end - start,
            kind: E820_RAM,
        });
    }
    map
}

/// Loads the kernel and initramfs and writes every boot structure; returns the BSP's state.
pub fn load_kernel(mem: &GuestMemoryMmap, boot: &KernelBoot) -> Result<BootState, BootError> {
    let mem_size: u64 = mem.iter().map(|r| r.len()).sum();
    let path = boot.kernel;
    if boot.cmdline.len() >= CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong {
            len: boot.cmdline.len(),
            max: CMDLINE_MAX - 1,
        });
    }
    if boot.cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }

    let mut kernel = open_kernel(path)?;
    let kernel_end = elf::image_end(&mut kernel).map_err(|reason| BootError::NotElf {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })?;
    let mut initramfs = match boot.initramfs {
        Some(p) => {
            let file = File::open(p).map_err(|source| BootError::InitramfsRead {
                path: p.to_path_buf(),
                source,
            })?;
            let size = file
                .metadata()
                .map_err(|source| BootError::InitramfsRead {
                    path: p.to_path_buf(),
                    source,
                })?
                .len();
            Some((p, file, size))
        }
        None => None,
    };
    let initramfs_size = initramfs.as_ref().map_or(0, |(_, _, size)| align_up(*size));
    let low_end = mem_size.min(MMIO_GAP_START);
    let needed = align_up(kernel_end) + initramfs_size;
    if needed > low_end {
        return Err(BootError::MemoryTooSmall {
            memory_mib: mem_size >> 20,
            needed_mib: needed.div_ceil(1 << 20),
        });
    }

    let loaded = Elf::load(
        mem,
        None,
        &mut kernel,
        Some(GuestAddress(HIGH_MEMORY_START)),
    )
    .map_err(|e| BootError::Load {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => {
            return Err(BootError::NoPvhNote {
                path: path.to_path_buf(),
            })
        }
    };

    let mut cmdline = boot.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    write(mem, CMDLINE_ADDR, &cmdline, "kernel command line")?;

    let module = match initramfs.as_mut() {
        Some((p, file, size)) => {
            let addr = GuestAddress(low_end - initramfs_size);
            let len = usize::try_from(*size).map_err(|_| BootError::MemoryTooSmall {
                memory_mib: mem_size >> 20,
                needed_mib: needed >> 20,
            })?;
            let mut slice = mem
                .get_slice(addr, len)
                .map_err(|_| BootError::GuestWrite { what: "initramfs" })?;
            file.read_exact_volatile(&mut slice)
                .map_err(|e| BootError::InitramfsRead {
                    path: p.to_path_buf(),
                    source: io::Error::other(e.to_string()),
                })?;
            write(
                mem,
                MODLIST_ADDR,
                &pvh::module_bytes(addr, *size),
                "PVH module list",
            )?;
            Some((GuestAddress(MODLIST_ADDR), addr, *size))
        }
        None => None,
    };

    let map = memory_map(mem_size);
    write(
        mem,
        MEMMAP_ADDR,
        &pvh::memmap_bytes(&map),
        "e820 memory map",
    )?;
    let info = StartInfo {
        cmdline: GuestAddress(CMDLINE_ADDR),
        memmap: GuestAddress(MEMMAP_ADDR),
        memmap_entries: map.len() as u32,
        initramfs: module,
    };
    write(
        mem,
        START_INFO_ADDR,
        &pvh::start_info_bytes(&info),
        "PVH start info",
    )?;
    write(
        mem,
        EBDA_START,
        &mptable::build(EBDA_START as u32, boot.vcpus),
        "MP table",
    )?;
    let gdt_addr = write_gdt(mem)?;
    Ok(BootState {
        entry,
        ebx: START_INFO_ADDR,
        gdt_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_covers_the_requested_size() {
        let map = memory_map(256 << 20);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (256 << 20) - (HIGH_MEMORY_START - EBDA_START));
        let last = map.last().unwrap();
        assert_eq!(last.addr + last.size, 256 << 20);
    }

    #[test]
    fn memory_map_skips_the_mmio_gap() {
        let map = memory_map(4 << 30);
        let last = map.last().unwrap();
        assert_eq!(last.addr, 1 << 32);
        assert_eq!(last.addr + last.size, (1 << 32) + (1 << 30));
    }

    #[test]
    fn missing_kernel_is_named() {
        let mem = crate::memory::create_guest_memory(16, false).unwrap();
        let err = load_kernel(
            &mem,
            &KernelBoot {
                kernel: Path::new("/nonexistent/vmlinux"),
                initramfs: None,
                cmdline: "console=ttyS0",
                vcpus: 1,
            },
        )
        .unwrap_err();
        assert!(matches!(err, BootError::KernelMissing { .. }), "{err}");
    }
}
