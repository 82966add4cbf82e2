//! The kvm engine: skiff's own VMM (the `vmm` crate) running the guest in-process, and the
//! probe that tells whether guest code runs natively on this host.

use anyhow::{bail, Result};

use super::{BootConfig, Machine};

/// `Ok` when /dev/kvm runs guest code natively; otherwise why not.
pub fn probe() -> Result<(), String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm does not exist".into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw || std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return Err("guest code is emulated on this host (no hardware virtualization)".into());
    }
    Ok(())
}

/// Boots the guest with skiff's own VMM.
pub fn start(_boot: &BootConfig) -> Result<Box<dyn Machine>> {
    bail!("the kvm engine cannot boot a guest yet: use --engine qemu")
}
