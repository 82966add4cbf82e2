//! What a container's process may do, set on the way to its execve: its capability bounding
//! set cut to the spec's capabilities (docker's default set unless the flags change it), a
//! process running as root left with exactly those (others with none, as the kernel leaves a
//! user after setuid), no ambient capabilities, docker's seccomp profile ([`crate::seccomp`])
//! and `no_new_privs` when asked. Also docker's masks of `/proc` and `/sys` (unless
//! `--privileged`).

use std::path::Path;

use nix::mount::{mount, MsFlags};
use protocol::Security;

use crate::error::{Context, Error, Result};

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Files docker hides (a read-only empty file is bound over each that exists).
const MASKED: [&str; 9] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/sysrq-trigger",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Directories docker hides (an empty read-only tmpfs over each that exists).
const MASKED_DIRS: [&str; 3] = ["/proc/acpi", "/proc/asound", "/proc/scsi"];
/// What docker leaves readable but not writable.
const READ_ONLY: [&str; 4] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"];

/// A system call's result: 0, or the error of `what`.
fn check(r: i64, what: impl FnOnce() -> String) -> Result<()> {
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()).ctx(what),
    }
}

/// The highest capability number this kernel knows.
fn last_capability() -> Result<u32> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ctx(|| "read /proc/sys/kernel/cap_last_cap".into())?;
    text.trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("bad cap_last_cap {text:?}")))
}

/// Every capability this kernel has (`--privileged`).
fn all_capabilities() -> Result<u64> {
    let last = last_capability()?;
    Ok(if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    })
}

/// The capabilities `security` grants.
pub fn granted(security: &Security) -> Result<u64> {
    if security.privileged {
        all_capabilities()
    } else {
        Ok(security.capabilities)
    }
}

/// Before the change of user (it needs CAP_SETPCAP, and CAP_SYS_ADMIN for the filter):
/// drops from the bounding set every capability `security` does not grant, and applies
/// docker's seccomp profile when `security` asks for it.
pub fn limit_bounding_set(security: &Security) -> Result<()> {
    let keep = granted(security)?;
    if security.seccomp && !security.privileged {
        crate::seccomp::apply(keep)?;
    }
    for cap in 0..=last_capability()? {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            check(r.into(), || {
                format!("drop capability {cap} from the bounding set")
            })?;
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// After the change of user: a root process gets exactly the granted capabilities, effective
/// and permitted, none inheritable or ambient; then `no_new_privs` if asked.
pub fn apply(security: &Security, uid: u32) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(r.into(), || "clear the ambient capabilities".into())?;
    let caps = if uid == 0 { granted(security)? } else { 0 };
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |shift: u32| (caps >> shift) as u32;
    let data = [
        CapData {
            effective: word(0),
            permitted: word(0),
            inheritable: 0,
        },
        CapData {
            effective: word(32),
            permitted: word(32),
            inheritable: 0,
        },
    ];
    // SAFETY: a version-3 header and the two data words the kernel reads for it.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check(r, || "set the process's capabilities".into())?;
    if security.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        check(r.into(), || "set no_new_privs".into())?;
    }
    Ok(())
}

/// docker's masks over `/proc` and `/sys`, once both are mounted in the container (none with
/// `--privileged`).
pub fn mask_kernel_files(security: &Security) -> Result<()> {
    if security.privileged {
        return Ok(());
    }
    for path in MASKED.iter().map(Path::new).filter(|p| p.exists()) {
        if path.is_dir() {
            empty_dir_over(path)?;
        } else {
            bind_read_only(Path::new("/dev/null"), path)?;
        }
    }
    for path in MASKED_DIRS.iter().map(Path::new).filter(|p| p.exists()) {
        empty_dir_over(path)?;
    }
    for path in READ_ONLY.iter().map(Path::new).filter(|p| p.exists()) {
        bind_read_only(path, path)?;
    }
    Ok(())
}

fn empty_dir_over(path: &Path) -> Result<()> {
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=0"),
    )
    .ctx(|| format!("mask {}", path.display()))
}

fn bind_read_only(source: &Path, target: &Path) -> Result<()> {
    crate::shares::bind(source, target, Some(MsFlags::MS_NOSUID))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_set_is_dockers() {
        let names = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];
        let set = names.iter().fold(0u64, |s, c| s | 1 << c);
        assert_eq!(set, protocol::DEFAULT_CAPABILITIES);
        assert_eq!(format!("{set:016x}"), "00000000a80425fb");
    }
}
