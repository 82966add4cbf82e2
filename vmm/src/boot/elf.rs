//! A first look at the kernel file before loading it: is it a 64-bit little-endian ELF, and
//! where does its image end in guest memory (to check the memory size up front).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
/// More program headers than any kernel has; bounds the work on a hostile file.
const MAX_PHDRS: u16 = 64;
const PT_LOAD: u32 = 1;

/// Why a file is not a kernel this VMM can load.
#[derive(Debug, PartialEq, Eq)]
pub enum NotElf {
    TooShort,
    BadMagic,
    Not64BitLittleEndian,
    BadProgramHeaders,
}

impl std::fmt::Display for NotElf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotElf::TooShort => "file is shorter than an ELF header",
            NotElf::BadMagic => {
                "no ELF magic (a bzImage or compressed kernel? skiff needs vmlinux)"
            }
            NotElf::Not64BitLittleEndian => "not a 64-bit little-endian ELF",
            NotElf::BadProgramHeaders => "program headers are missing or malformed",
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The highest guest physical address a kernel segment may end at.
const MAX_LOAD_END: u64 = 1 << 48;

/// Returns the end (exclusive) of the highest loadable segment in guest physical memory.
pub fn image_end(file: &mut File) -> Result<u64, NotElf> {
    let mut ehdr = [0u8; EHDR_LEN];
    file.rewind().map_err(|_| NotElf::TooShort)?;
    file.read_exact(&mut ehdr).map_err(|_| NotElf::TooShort)?;
    if &ehdr[..4] != b"\x7fELF" {
        return Err(NotElf::BadMagic);
    }
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian.
    if ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(NotElf::Not64BitLittleEndian);
    }
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u16_at(&ehdr, 54);
    let phnum = u16_at(&ehdr, 56);
    if usize::from(phentsize) != PHDR_LEN || phnum == 0 || phnum > MAX_PHDRS {
        return Err(NotElf::BadProgramHeaders);
    }
    let mut phdrs = vec![0u8; PHDR_LEN * usize::from(phnum)];
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut phdrs))
        .map_err(|_| NotElf::BadProgramHeaders)?;
    let end = phdrs
        .chunks(PHDR_LEN)
        .filter(|p| u32_at(p, 0) == PT_LOAD)
        .map(|p| u64_at(p, 24).checked_add(u64_at(p, 40)))
        .try_fold(0u64, |max, end| end.map(|e| max.max(e)))
        .ok_or(NotElf::BadProgramHeaders)?;
    // Nothing loads beyond a 48-bit guest physical address; refusing it here also keeps the
    // layout arithmetic that follows free of overflow.
    if end == 0 || end > MAX_LOAD_END {
        return Err(NotElf::BadProgramHeaders);
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn rejects_non_elf_and_short_files() {
        assert_eq!(image_end(&mut file_with(b"MZ")), Err(NotElf::TooShort));
        assert_eq!(
            image_end(&mut file_with(&[0u8; 128])),
            Err(NotElf::BadMagic)
        );
    }

    /// An ELF header with two PT_LOAD segments (paddr, memsz).
    fn elf_with_loads(loads: [(u64, u64); 2]) -> Vec<u8> {
        let mut elf = vec![0u8; EHDR_LEN + 2 * PHDR_LEN];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[32..40].copy_from_slice(&(EHDR_LEN as u64).to_le_bytes());
        elf[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        elf[56..58].copy_from_slice(&2u16.to_le_bytes());
        for (i, (paddr, memsz)) in loads.into_iter().enumerate() {
            let p = EHDR_LEN + i * PHDR_LEN;
            elf[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            elf[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
            elf[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        elf
    }

    #[test]
    fn finds_the_end_of_the_highest_load_segment() {
        let elf = elf_with_loads([(0x100_0000, 0x1000), (0x200_0000, 0x3000)]);
        assert_eq!(image_end(&mut file_with(&elf)), Ok(0x200_3000));
    }

    #[test]
    fn segments_ending_out_of_reach_are_refused() {
        for far in [(u64::MAX - 0x10, 0x8), (1 << 48, 0x1000), (u64::MAX, 2)] {
            let elf = elf_with_loads([(0x100_0000, 0x1000), far]);
            assert_eq!(
                image_end(&mut file_with(&elf)),
                Err(NotElf::BadProgramHeaders),
                "{far:x?}"
            );
        }
    }
}
