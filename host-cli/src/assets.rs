//! The guest's boot assets: the kernel (`vmlinux` built by `kernel-config/build.sh`) and the
//! static guest-init binary. Each is found by an environment override first, then where the
//! project's build puts it; a missing asset is an error that says how to make it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The pinned kernel source and its config fragment: the kernel cache key is their hash, the
/// same key `kernel-config/build.sh` computes.
const KERNEL_VERSION: &[u8] = include_bytes!("../../kernel-config/VERSION");
const KERNEL_FRAGMENT: &[u8] = include_bytes!("../../kernel-config/skiff.config");

/// The cache key of the kernel this skiff was built for.
pub fn kernel_key() -> String {
    let mut h = Sha256::new();
    h.update(KERNEL_VERSION);
    h.update(KERNEL_FRAGMENT);
    hex::encode(h.finalize())[..16].to_string()
}

/// The guest kernel: `$SKIFF_KERNEL`, else the cached build for this skiff's kernel config.
pub fn kernel(cache: &Path) -> Result<PathBuf> {
    let path = match std::env::var_os("SKIFF_KERNEL").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => cache.join("kernel").join(kernel_key()).join("vmlinux"),
    };
    if !path.is_file() {
        bail!(
            "guest kernel not found at {}: build it with kernel-config/build.sh, or set SKIFF_KERNEL",
            path.display()
        );
    }
    Ok(path)
}

/// The static guest-init binary: `$SKIFF_GUEST_INIT`, else the first statically linked
/// `guest-init` beside the skiff executable or in the static build of this workspace
/// (`target/x86_64-unknown-linux-gnu/{<profile>,release}/guest-init`; scripts/build.sh always
/// builds it optimized, since it runs in the guest, often under a software CPU). A dynamically
/// linked one (a plain `cargo build` of the workspace leaves one beside skiff) is passed over.
pub fn guest_init() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_GUEST_INIT").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return check_static(&p).map(|()| p);
    }
    let exe = std::env::current_exe().context("cannot find the skiff executable")?;
    let mut tried = Vec::new();
    if let Some(dir) = exe.parent() {
        tried.push(dir.join("guest-init"));
        if let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) {
            let static_dir = target.join("x86_64-unknown-linux-gnu");
            tried.push(static_dir.join(profile).join("guest-init"));
            tried.push(static_dir.join("release").join("guest-init"));
        }
    }
    for p in tried.iter().filter(|p| p.is_file()) {
        match check_static(p) {
            Ok(()) => return Ok(p.clone()),
            Err(e) => tracing::debug!("passing over {}: {e:#}", p.display()),
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no statically linked guest-init found (looked in {}): build it with scripts/build.sh, or set SKIFF_GUEST_INIT",
        list.join(", ")
    )
}

/// How much of guest-init is read to check its ELF headers.
const HEAD: usize = 64 << 10;

/// Refuses a guest-init that is not a statically linked ELF executable: the initramfs holds no
/// dynamic loader.
fn check_static(path: &Path) -> Result<()> {
    // The ELF header and the program headers sit at the start of the file.
    let mut head = Vec::with_capacity(HEAD);
    fs::File::open(path)
        .and_then(|f| f.take(HEAD as u64).read_to_end(&mut head))
        .with_context(|| format!("cannot read guest-init at {}", path.display()))?;
    if !is_static_elf64(&head) {
        bail!(
            "{} is not a statically linked x86_64 ELF executable: rebuild guest-init with scripts/build.sh",
            path.display()
        );
    }
    Ok(())
}

/// True for a 64-bit little-endian x86_64 ELF with no `PT_INTERP` program header.
fn is_static_elf64(b: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    };
    if b.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) || u16_at(18) != Some(62) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..phnum as usize).all(|i| {
        let off = (phoff as usize).saturating_add(i * phentsize as usize);
        matches!(u32_at(off), Some(t) if t != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_key_matches_the_build_script() {
        let out = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../kernel-config/build.sh"
            ))
            .arg("--key")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), kernel_key());
    }

    #[test]
    fn dynamic_binaries_and_garbage_are_not_static_elf() {
        let ls = fs::read("/bin/ls").unwrap();
        assert!(!is_static_elf64(&ls), "/bin/ls is dynamically linked");
        let busybox = fs::read("/bin/busybox").expect("busybox-static (scripts/deps.sh)");
        assert!(is_static_elf64(&busybox));
        assert!(!is_static_elf64(b"\x7fELF"));
        assert!(!is_static_elf64(&busybox[..64]));
        assert!(!is_static_elf64(b"#!/bin/sh\n"));
    }
}
