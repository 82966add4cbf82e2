//! The helper programs skiff starts (qemu, passt, mke2fs): `$SKIFF_<NAME>` when set, else the
//! first match on `PATH`, then the system directories an ordinary user's `PATH` may lack
//! (`/usr/sbin`, `/sbin`). What a missing one means is each caller's to say.

use std::path::PathBuf;

/// The program `name`: the path in environment variable `var` when it is set and not empty,
/// else `name` in the first directory of `PATH` that has it.
pub fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Makes the child `cmd` starts die with the thread that starts it (`PR_SET_PDEATHSIG`), so a
/// skiff killed with SIGKILL leaves no helper behind, and keeps the descriptors `inherit` open
/// across its exec (every other descriptor of skiff's is close-on-exec). A skiff that died
/// before the child's prctl took effect is caught by the parent check.
pub fn tie_to_parent(cmd: &mut std::process::Command, inherit: Vec<std::os::fd::RawFd>) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: fcntl, prctl and getppid are async-signal-safe; they change only the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other(
                    "skiff exited while starting a helper",
                ));
            }
            Ok(())
        });
    }
}
