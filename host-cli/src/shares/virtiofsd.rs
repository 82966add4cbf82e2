//! virtiofsd, the vhost-user backend of a shared directory: one process per share of a VM,
//! started before the VM on a listening socket skiff made (so the VM can connect at once and
//! no path race exists), tied to skiff's life, and stopped at the VM's end. It also ends by
//! itself when its one frontend (qemu or skiff's own VMM) disconnects.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::HostShare;
use crate::programs::Helper;

const HINT: &str = "install it with scripts/deps.sh (it builds virtiofsd into skiff's cache), \
     put virtiofsd on PATH or set SKIFF_VIRTIOFSD";

/// The virtiofsd release scripts/deps.sh builds into the cache.
const VERSION: &str = include_str!("../../../scripts/virtiofsd.version");

/// virtiofsd: `$SKIFF_VIRTIOFSD`, else the cached build of the pinned release, else on `PATH`
/// or where distributions put it (`/usr/libexec`, `/usr/lib/qemu`).
pub fn binary() -> Result<PathBuf> {
    let cached = crate::dirs::cache_dir()
        .join("virtiofsd")
        .join(VERSION.trim())
        .join("bin/virtiofsd");
    let found = match std::env::var_os("SKIFF_VIRTIOFSD").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => [cached]
            .into_iter()
            .chain(crate::programs::find("SKIFF_VIRTIOFSD", "virtiofsd"))
            .chain(["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"].map(PathBuf::from))
            .find(|p| p.is_file()),
    };
    let p = found.with_context(|| {
        format!("virtiofsd is not installed (needed for -v and --mount): {HINT}")
    })?;
    anyhow::ensure!(
        p.is_file(),
        "virtiofsd is not at {} (SKIFF_VIRTIOFSD): {HINT}",
        p.display()
    );
    Ok(p)
}

/// A running virtiofsd.
pub struct Virtiofsd {
    helper: Helper,
    share: HostShare,
}

/// virtiofsd's command line for `share`, listening on descriptor `fd`. As root it sandboxes
/// itself in namespaces and passes the guest's owners through; as an ordinary user it cannot
/// change owners or make namespaces of its own, so files land as that user.
fn arguments(share: &HostShare, fd: i32, root: bool) -> Vec<String> {
    let mut a = vec![
        format!("--fd={fd}"),
        format!("--shared-dir={}", share.dir.display()),
        "--cache=auto".into(),
        format!("--sandbox={}", if root { "namespace" } else { "none" }),
        "--log-level=error".into(),
    ];
    if share.read_only {
        a.push("--readonly".into());
    }
    a
}

impl Virtiofsd {
    /// Starts virtiofsd for `share` with its socket at `socket` (in the VM's directory).
    pub fn start(share: &HostShare, socket: &Path) -> Result<Virtiofsd> {
        let bin = binary()?;
        // a bind source removed since the container was made (virtiofsd would only log it)
        anyhow::ensure!(
            share.dir.is_dir(),
            "bind source path does not exist: {}: create it again or remove the container",
            share.dir.display()
        );
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let fd = listener.as_raw_fd();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let helper = Helper::spawn(
            &bin,
            &arguments(share, fd, root),
            fd,
            format!("virtiofsd of {}", share.dir.display()),
            socket.with_extension("log"),
        )?;
        Ok(Virtiofsd {
            helper,
            share: share.clone(),
        })
    }

    /// The directory it serves.
    pub fn share(&self) -> &HostShare {
        &self.share
    }

    /// `Some(why)` the first time this virtiofsd is found gone while the VM runs.
    pub fn poll_gone(&mut self) -> Option<String> {
        self.helper.poll_gone(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtiofsd_serves_the_directory_with_its_access() {
        let share = HostShare {
            tag: "skiff-0".into(),
            dir: "/home/u/src".into(),
            read_only: true,
        };
        let a = arguments(&share, 5, true).join(" ");
        for want in [
            "--fd=5",
            "--shared-dir=/home/u/src",
            "--cache=auto",
            "--sandbox=namespace",
            "--readonly",
        ] {
            assert!(a.contains(want), "{want:?} in {a}");
        }
        let share = HostShare {
            read_only: false,
            ..share
        };
        let a = arguments(&share, 5, false).join(" ");
        assert!(
            a.contains("--sandbox=none") && !a.contains("--readonly"),
            "{a}"
        );
    }
}
