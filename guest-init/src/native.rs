//! Native mode (`--connect-unix PATH [--exec-unix EXEC]`): the same session as in the VM, run
//! as a root process on a Linux host over a Unix socket — how guest-init is tested without a
//! VM; exec sessions come on a Unix socket it listens on at `EXEC`. It works in its own mount
//! namespace on a private tmpfs, which it removes at the end; the spec's image is a directory
//! of the host (`ImageRoot::Directory`) and its writable layer memory.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{Context, Result};
use crate::session;

/// Serves one session over the Unix socket at `socket`, exec sessions on `exec` if given.
pub fn run(socket: &Path, exec: Option<&Path>) -> Result<()> {
    let exec_listener = exec
        .map(|p| {
            UnixListener::bind(p)
                .map(OwnedFd::from)
                .ctx(|| format!("listen on {}", p.display()))
        })
        .transpose()?;
    unshare(CloneFlags::CLONE_NEWNS).ctx(|| "unshare the mount namespace".into())?;
    crate::container::make_mounts_private()?;
    let tmp = std::env::temp_dir().join("skiff-guest-XXXXXX");
    let base: PathBuf = nix::unistd::mkdtemp(&tmp).ctx(|| format!("mkdtemp {}", tmp.display()))?;
    let result = mount(
        Some("tmpfs"),
        &base,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .ctx(|| format!("mount tmpfs on {}", base.display()))
    .and_then(|()| {
        let (root, scratch) = (base.join("root"), base.join("scratch"));
        for d in [&root, &scratch] {
            std::fs::create_dir(d).ctx(|| format!("mkdir {}", d.display()))?;
        }
        let stream =
            UnixStream::connect(socket).ctx(|| format!("connect to {}", socket.display()))?;
        let served = session::serve(
            File::from(OwnedFd::from(stream)),
            &root,
            &scratch,
            exec_listener,
            None,
            false,
        );
        let _ = umount2(&base, MntFlags::MNT_DETACH);
        served
    });
    let _ = std::fs::remove_dir(&base);
    result
}
