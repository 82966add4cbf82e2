//! The container's cgroup in the VM, for `--pids-limit`: cgroup v2 is mounted at boot at
//! `/sys/fs/cgroup` (guest-init's own view; the container does not see it); with a limit the
//! container gets the cgroup `container` with that `pids.max`, which its first process and
//! every exec'd one join before anything of theirs runs.

use std::path::Path;

use crate::error::{Context, Result};

const ROOT: &str = "/sys/fs/cgroup";
const CONTAINER: &str = "/sys/fs/cgroup/container";

/// Makes the container's cgroup with at most `pids` tasks (before the container starts).
pub fn create(pids: u64) -> Result<()> {
    let write = |file: &str, text: &str| {
        std::fs::write(file, text).ctx(|| format!("write {text:?} to {file}"))
    };
    write(&format!("{ROOT}/cgroup.subtree_control"), "+pids")?;
    if !Path::new(CONTAINER).exists() {
        std::fs::create_dir(CONTAINER).ctx(|| format!("mkdir {CONTAINER}"))?;
    }
    write(&format!("{CONTAINER}/pids.max"), &pids.to_string())
}

/// Moves this process into the container's cgroup, when the container has one.
pub fn join() -> Result<()> {
    if !Path::new(CONTAINER).exists() {
        return Ok(());
    }
    let procs = format!("{CONTAINER}/cgroup.procs");
    std::fs::write(&procs, "0").ctx(|| format!("join {CONTAINER}"))
}
