//! A stopped container's filesystem, reachable for a moment (`skiff cp` with a container that
//! does not run): its VM boots on its disks and shares, without a network, with a first process
//! that runs no command and only holds the container's namespaces open; a job runs against the
//! VM's directory (exec, cp and their ports reach guest-init there as with a running
//! container); then that process is killed and the VM powers off as after any end, its writable
//! disk clean. The container's recorded state does not change, and its lock keeps `start` out
//! meanwhile.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::state::Container;
use crate::launch::{self, Attach, Watcher};
use crate::session::SignalSender;

/// Runs `job` with the VM directory of container `c` booted to hold its filesystem; returns
/// what the job returned.
pub fn with_filesystem(c: &Container, job: impl FnOnce(&Path) -> Result<i32>) -> Result<i32> {
    let _lock = c
        .lock_monitor()
        .context("the container is starting or running: try again")?;
    let mut vm = super::monitor::vm_config(c);
    vm.net_mac = None;
    vm.publish.clear();
    let mut spec = c.config.spec.clone();
    spec.hold = true;
    spec.stdin = false;
    spec.tty = false;
    spec.term_size = None;
    spec.network = None;
    let attach = Attach {
        stdin: None,
        stdout: Box::new(std::io::sink()),
        stderr: Box::new(std::io::sink()),
    };
    let mut holder = Holder {
        vm_dir: None,
        job: Some(Box::new(job)),
        result: None,
    };
    let launched = launch::launch(&vm, spec, attach, &mut holder);
    match holder.result {
        Some(result) => result,
        None => {
            launched?;
            anyhow::bail!("the container's VM ended before its filesystem could be reached")
        }
    }
}

type Job<'a> = Box<dyn FnOnce(&Path) -> Result<i32> + 'a>;

struct Holder<'a> {
    vm_dir: Option<PathBuf>,
    job: Option<Job<'a>>,
    result: Option<Result<i32>>,
}

impl Watcher for Holder<'_> {
    fn vm_started(&mut self, vm_dir: &Path) -> Result<()> {
        self.vm_dir = Some(vm_dir.to_path_buf());
        Ok(())
    }

    fn tick(&mut self, signals: &SignalSender) -> bool {
        if !signals.is_running() {
            return false;
        }
        if let (Some(job), Some(dir)) = (self.job.take(), &self.vm_dir) {
            self.result = Some(job(dir));
            // the holding process ignores every other signal: it is the namespace's init
            if let Err(e) = signals.send(libc::SIGKILL) {
                tracing::warn!("cannot end the holding process: {e}");
            }
        }
        false
    }
}
