//! `--init`: a minimal init as the container's first process (PID 1 of its pid namespace). It
//! starts the command as its child, passes on every signal it gets, reaps every orphan, and
//! ends with the command's status (128+N when signal N ended it). A command without a SIGTERM
//! handler thus still stops: PID 1 of a namespace ignores signals it has no handler for, its
//! children do not.

use std::convert::Infallible;
use std::os::fd::RawFd;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::error::{Context, Error, Result};

/// Runs `command` (which ends in execve, or returns why it could not) as this process's child
/// and serves as its init; `report` tells the host, through the report pipe whose write end is
/// `report_fd`, why the command could not start.
pub fn run(
    command: impl FnOnce() -> Result<Infallible>,
    report: impl FnOnce(&Error),
    report_fd: RawFd,
) -> ! {
    let all = SigSet::all();
    // Blocked before the fork, so that no signal is lost before the wait loop; the command
    // resets its mask before its execve.
    if let Err(e) = all.thread_set_mask() {
        report(&Error::Io {
            context: "block signals".into(),
            source: e.into(),
        });
        exit(127);
    }
    // SAFETY: this process is single-threaded (a fresh clone of guest-init).
    let child = match unsafe { fork() }.ctx(|| "fork the command".into()) {
        Ok(ForkResult::Child) => {
            let error = match command() {
                Err(e) => e,
                Ok(never) => match never {},
            };
            report(&error);
            exit(127);
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            report(&e);
            exit(127);
        }
    };
    // the command holds the report pipe until its execve closes it: the init lets go of it
    // SAFETY: this process's copy of the pipe's write end; nothing here uses it again.
    unsafe { libc::close(report_fd) };
    loop {
        let Ok(signal) = all.wait() else {
            continue;
        };
        if signal != Signal::SIGCHLD {
            let _ = kill(child, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => exit(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => exit(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                // an orphan, reaped
                Ok(_) => {}
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: ends this process at once; nothing of it needs unwinding.
    unsafe { libc::_exit(code) }
}
