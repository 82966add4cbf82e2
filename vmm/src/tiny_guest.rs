//! Tiny hand-assembled guests (32-bit protected mode, flat segments): the probe's timing loop,
//! the start-up benchmark's guest, and a PVH ELF wrapper so the same guest boots in any VMM
//! that loads a PVH kernel (skiff's, QEMU's `-kernel`).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::{write_gdt, BootError};
use crate::hypervisor::BootState;

/// Where raw guest code is placed.
pub const CODE_ADDR: u64 = 0x1_0000;
/// Where the probe loop counts its iterations.
pub const COUNTER_ADDR: u64 = 0x9000;
/// Where a PVH ELF's code is loaded (and entered).
pub const ELF_LOAD_ADDR: u64 = 0x10_0000;

/// Writes the GDT and `code` at [`CODE_ADDR`]; returns the state that starts it.
pub fn load(mem: &GuestMemoryMmap, code: &[u8]) -> Result<BootState, BootError> {
    let gdt_addr = write_gdt(mem)?;
    mem.write_slice(code, GuestAddress(CODE_ADDR))
        .map_err(|_| BootError::GuestWrite { what: "guest code" })?;
    Ok(BootState {
        entry: CODE_ADDR,
        ebx: 0,
        gdt_addr,
    })
}

/// `mov al, 0xfe; out 0x64, al`: the i8042 reset command.
pub const I8042_RESET: [u8; 4] = [0xb0, 0xfe, 0xe6, 0x64];

/// Counts `iterations` times in memory (`inc dword [COUNTER_ADDR]`), then resets via the i8042.
pub fn probe_loop(iterations: u32) -> Vec<u8> {
    let mut code = vec![0xb9]; // mov ecx, imm32
    code.extend_from_slice(&iterations.to_le_bytes());
    code.extend_from_slice(&[0xff, 0x05]); // inc dword [disp32]
    code.extend_from_slice(&(COUNTER_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[0x49, 0x75, 0xf7]); // dec ecx; jnz back to the inc
    code.extend_from_slice(&I8042_RESET);
    code
}

/// Writes `!` to COM1, then executes `ud2` with no IDT: a triple fault, which every x86 VMM
/// turns into a reset (and QEMU with `-no-reboot` into an exit).
pub const SERIAL_THEN_TRIPLE_FAULT: [u8; 9] = [
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'!', // mov al, '!'
    0xee, // out dx, al
    0x0f, 0x0b, // ud2
];

/// Wraps `code` in a minimal 64-bit ELF with a PVH entry note; the code is loaded at and
/// entered at [`ELF_LOAD_ADDR`] in 32-bit protected mode.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const CODE_OFFSET: usize = 0x1000;
    let note_offset = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&8u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&ELF_LOAD_ADDR.to_le_bytes());

    let mut elf = Vec::with_capacity(CODE_OFFSET + code.len());
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&ELF_LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [EHDR as u16, PHDR as u16, 2, 64, 0, 0] {
        elf.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let phdr = |elf: &mut Vec<u8>, kind: u32, flags: u32, offset: usize, addr: u64, size: usize| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        for v in [offset as u64, addr, addr, size as u64, size as u64] {
            elf.extend_from_slice(&v.to_le_bytes());
        }
        elf.extend_from_slice(&(if kind == 1 { 0x1000u64 } else { 4 }).to_le_bytes());
    };
    phdr(&mut elf, 1, 5, CODE_OFFSET, ELF_LOAD_ADDR, code.len()); // PT_LOAD, R+X
    phdr(&mut elf, 4, 4, note_offset, 0, note.len()); // PT_NOTE
    elf.extend_from_slice(&note);
    elf.resize(CODE_OFFSET, 0);
    elf.extend_from_slice(code);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn probe_loop_jumps_back_to_the_increment() {
        let code = probe_loop(5);
        let jnz = code.iter().position(|b| *b == 0x75).unwrap();
        let target = (jnz + 2) as i64 + i64::from(code[jnz + 1] as i8);
        assert_eq!(&code[target as usize..target as usize + 2], &[0xff, 0x05]);
    }

    #[test]
    fn pvh_elf_is_accepted_by_the_kernel_inspection() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&pvh_elf(&SERIAL_THEN_TRIPLE_FAULT)).unwrap();
        let end = crate::boot::elf::image_end(&mut f).unwrap();
        assert_eq!(end, ELF_LOAD_ADDR + SERIAL_THEN_TRIPLE_FAULT.len() as u64);
    }
}
