//! docker's default seccomp profile, as an equivalent deny list applied to the container's
//! process before its execve: the system calls docker's profile refuses fail with EPERM —
//! kernel keyrings, module loading, reboot and kexec, clocks, accounting, swap, raw I/O ports,
//! memory policy, other processes' memory, mounts and namespaces (`unshare`, `setns`, `clone`
//! with a namespace flag) — except those a granted capability allows, as docker's profile
//! allows them (`--cap-add SYS_ADMIN` allows mounts and namespaces, say). `clone3` answers
//! ENOSYS, as under docker, so C libraries fall back to `clone`, whose flags a filter can see.
//! None with `--privileged` or `--security-opt seccomp=unconfined`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::error::{Context, Error, Result};

const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_PACCT: u32 = 20;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_TIME: u32 = 25;
const CAP_SYSLOG: u32 = 34;

/// Refused system calls, each with the capability that allows it (`None`: always refused).
fn denied() -> Vec<(i64, Option<u32>)> {
    let mut d = vec![
        (libc::SYS_add_key, None),
        (libc::SYS_keyctl, None),
        (libc::SYS_request_key, None),
        (libc::SYS_userfaultfd, None),
        (libc::SYS_init_module, Some(CAP_SYS_MODULE)),
        (libc::SYS_finit_module, Some(CAP_SYS_MODULE)),
        (libc::SYS_delete_module, Some(CAP_SYS_MODULE)),
        (libc::SYS_reboot, Some(CAP_SYS_BOOT)),
        (libc::SYS_kexec_load, Some(CAP_SYS_BOOT)),
        (libc::SYS_kexec_file_load, Some(CAP_SYS_BOOT)),
        (libc::SYS_settimeofday, Some(CAP_SYS_TIME)),
        (libc::SYS_clock_settime, Some(CAP_SYS_TIME)),
        (libc::SYS_clock_adjtime, Some(CAP_SYS_TIME)),
        (libc::SYS_acct, Some(CAP_SYS_PACCT)),
        (libc::SYS_process_vm_readv, Some(CAP_SYS_PTRACE)),
        (libc::SYS_process_vm_writev, Some(CAP_SYS_PTRACE)),
        (libc::SYS_kcmp, Some(CAP_SYS_PTRACE)),
        (libc::SYS_get_mempolicy, Some(CAP_SYS_NICE)),
        (libc::SYS_set_mempolicy, Some(CAP_SYS_NICE)),
        (libc::SYS_mbind, Some(CAP_SYS_NICE)),
        (libc::SYS_move_pages, Some(CAP_SYS_NICE)),
        (libc::SYS_syslog, Some(CAP_SYSLOG)),
        (libc::SYS_mount, Some(CAP_SYS_ADMIN)),
        (libc::SYS_umount2, Some(CAP_SYS_ADMIN)),
        (libc::SYS_pivot_root, Some(CAP_SYS_ADMIN)),
        (libc::SYS_swapon, Some(CAP_SYS_ADMIN)),
        (libc::SYS_swapoff, Some(CAP_SYS_ADMIN)),
        (libc::SYS_unshare, Some(CAP_SYS_ADMIN)),
        (libc::SYS_setns, Some(CAP_SYS_ADMIN)),
        (libc::SYS_quotactl, Some(CAP_SYS_ADMIN)),
        (libc::SYS_lookup_dcookie, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fanotify_init, Some(CAP_SYS_ADMIN)),
        (libc::SYS_open_by_handle_at, Some(CAP_SYS_ADMIN)),
        (libc::SYS_name_to_handle_at, Some(CAP_SYS_ADMIN)),
        (libc::SYS_perf_event_open, Some(CAP_SYS_ADMIN)),
        (libc::SYS_bpf, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fsopen, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fsconfig, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fsmount, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fspick, Some(CAP_SYS_ADMIN)),
        (libc::SYS_open_tree, Some(CAP_SYS_ADMIN)),
        (libc::SYS_move_mount, Some(CAP_SYS_ADMIN)),
    ];
    #[cfg(target_arch = "x86_64")]
    d.extend([
        (libc::SYS_iopl, Some(CAP_SYS_RAWIO)),
        (libc::SYS_ioperm, Some(CAP_SYS_RAWIO)),
        (libc::SYS_uselib, None),
        (libc::SYS_ustat, None),
        (libc::SYS_sysfs, None),
        (libc::SYS__sysctl, None),
        (libc::SYS_nfsservctl, None),
    ]);
    d
}

/// The namespace flags of `clone` that docker's profile refuses without CAP_SYS_ADMIN.
const NAMESPACE_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

fn arch() -> Result<seccompiler::TargetArch> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| Error::Invalid(format!("seccomp: {e}")))
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, action: SeccompAction) -> Result<BpfProgram> {
    SeccompFilter::new(rules, SeccompAction::Allow, action, arch()?)
        .and_then(BpfProgram::try_from)
        .map_err(|e| Error::Invalid(format!("seccomp: {e}")))
}

/// The filters for a process with `capabilities`: the EPERM deny list, and clone3's ENOSYS.
fn filters(capabilities: u64) -> Result<[BpfProgram; 2]> {
    let granted = |cap: u32| capabilities & (1u64 << cap) != 0;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied()
        .into_iter()
        .filter(|(_, cap)| !cap.is_some_and(granted))
        .map(|(nr, _)| (nr, Vec::new()))
        .collect();
    if !granted(CAP_SYS_ADMIN) {
        let clone = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let cond = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag as u64),
                    flag as u64,
                )?;
                SeccompRule::new(vec![cond])
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Invalid(format!("seccomp: {e}")))?;
        rules.insert(libc::SYS_clone, clone);
    }
    let deny = compile(rules, SeccompAction::Errno(libc::EPERM as u32))?;
    let clone3 = compile(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    Ok([deny, clone3])
}

/// Applies the profile to this thread (inherited by what it executes) for a process that
/// will have `capabilities`. Needs CAP_SYS_ADMIN now: unlike seccompiler's own `apply_filter`
/// it sets no `no_new_privs`, which docker leaves off (setuid programs keep working).
pub fn apply(capabilities: u64) -> Result<()> {
    for f in filters(capabilities)? {
        let prog = libc::sock_fprog {
            len: u16::try_from(f.len())
                .map_err(|_| Error::Invalid("seccomp: the filter is too long".into()))?,
            filter: f.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program in; `f` outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| "install the seccomp filter".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_lift_what_they_allow() {
        let default = protocol::DEFAULT_CAPABILITIES;
        assert!(filters(default).is_ok());
        let admin = default | 1 << CAP_SYS_ADMIN;
        let refused = |caps: u64| -> Vec<i64> {
            denied()
                .into_iter()
                .filter(|(_, c)| !c.is_some_and(|c| caps & (1 << c) != 0))
                .map(|(nr, _)| nr)
                .collect()
        };
        assert!(refused(default).contains(&libc::SYS_mount));
        assert!(!refused(admin).contains(&libc::SYS_mount));
        assert!(refused(admin).contains(&libc::SYS_keyctl));
        assert!(filters(admin).is_ok());
    }
}
