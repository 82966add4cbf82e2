//! Stopping a running VM from outside: a flag the vCPU threads check, and a signal that
//! kicks them out of `KVM_RUN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// The real-time signal (offset from SIGRTMIN) used to interrupt vCPU threads.
pub const KICK_SIGNAL_OFFSET: i32 = 0;

fn kick_signal() -> i32 {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivering the signal is what makes KVM_RUN return EINTR.
}

/// Installs the kick handler once per process; returns false if that failed.
pub(crate) fn install_kick_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| register_signal_handler(kick_signal(), on_kick).is_ok())
}

/// Unblocks the kick signal in the calling (vCPU) thread.
pub(crate) fn unblock_kick_signal() {
    // SAFETY: plain signal-mask manipulation on a local, initialized sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

#[derive(Default)]
struct Inner {
    stopped: AtomicBool,
    /// vCPU threads still running guest code.
    threads: Mutex<Vec<libc::pthread_t>>,
}

/// Ends a running VM from another thread (`VmExit::Stopped`). Cheap to clone.
#[derive(Clone, Default)]
pub struct StopHandle {
    inner: Arc<Inner>,
}

impl StopHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every vCPU to stop; returns at once (the run returns when they have stopped).
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Interrupts every registered vCPU thread.
    pub(crate) fn kick(&self) {
        if let Ok(threads) = self.inner.threads.lock() {
            for t in threads.iter() {
                // SAFETY: every registered thread is joined only after `unregister`, so the
                // handle is valid; the signal has a handler installed.
                unsafe { libc::pthread_kill(*t, kick_signal()) };
            }
        }
    }

    pub(crate) fn register(&self, thread: libc::pthread_t) {
        if let Ok(mut threads) = self.inner.threads.lock() {
            threads.push(thread);
        }
    }

    pub(crate) fn unregister(&self, thread: libc::pthread_t) {
        if let Ok(mut threads) = self.inner.threads.lock() {
            threads.retain(|t| *t != thread);
        }
    }
}
