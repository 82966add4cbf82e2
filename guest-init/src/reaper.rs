//! The one place where guest-init waits for children: the container's first process, exec'd
//! processes, helpers and orphans (guest-init may be PID 1) all end up here.
//!
//! Watched processes are registered while the reaper's lock is held across their creation, so
//! an exit can never be reaped before its watcher knows the pid; signals go out under the same
//! lock and only to a watched process not yet reaped, so a recycled pid is never hit.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::ExitStatus;
use tracing::debug;

use crate::error::{Context, Result};

/// Children of guest-init and how the watched ones ended.
#[derive(Default)]
pub struct Reaper {
    watched: Mutex<HashMap<Pid, Option<ExitStatus>>>,
    ended: Condvar,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, Option<ExitStatus>>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `create` (which returns a new child's pid) and watches that child.
    pub fn spawn(&self, create: impl FnOnce() -> Result<Pid>) -> Result<Pid> {
        let mut watched = self.lock();
        let pid = create()?;
        watched.insert(pid, None);
        Ok(pid)
    }

    /// Sends `sig` to a watched process unless it has already ended.
    pub fn signal(&self, pid: Pid, sig: Signal) {
        let watched = self.lock();
        if let Some(None) = watched.get(&pid) {
            let _ = kill(pid, sig);
        }
    }

    /// Waits until `reap` (running on another thread) has seen `pid` end; forgets it.
    pub fn wait(&self, pid: Pid) -> ExitStatus {
        let mut watched = self.lock();
        loop {
            if let Some(Some(status)) = watched.get(&pid) {
                let status = *status;
                watched.remove(&pid);
                return status;
            }
            watched = self.ended.wait(watched).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Reaps every child until `pid` has ended; returns its status.
    pub fn reap_until(&self, pid: Pid) -> Result<ExitStatus> {
        loop {
            let status = match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).ctx(|| "wait for the container".into()),
            };
            let Some(child) = status.pid() else { continue };
            let mut watched = self.lock();
            let status = match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signal(sig as i32),
                // Reaped by its creator meanwhile (a failed start), or not an exit: nothing to
                // record.
                Ok(_) | Err(Errno::ECHILD) => continue,
                Err(e) => return Err(e).ctx(|| format!("reap pid {child}")),
            };
            if let Some(slot) = watched.get_mut(&child) {
                debug!(pid = child.as_raw(), ?status, "watched process ended");
                *slot = Some(status);
                self.ended.notify_all();
            }
            if child == pid {
                watched.remove(&pid);
                return Ok(status);
            }
        }
    }
}
