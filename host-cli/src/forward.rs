//! Signals of the skiff process that belong to the container (docker's `--sig-proxy`):
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the container's process, SIGWINCH
//! becomes a resize of its terminal. They are blocked in every thread (call [`block`] before
//! any thread starts) and taken by one thread with `sigwait`, so the skiff process itself
//! never dies of them and always gets to restore the terminal.
//!
//! A process may ignore SIGINT and SIGTERM, or a guest stop answering: the third of them cuts
//! the session off instead (guest-init kills the process; a VM that is gone or stuck is then
//! stopped by skiff), as docker forces its way out at the third interrupt.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::session::SignalSender;

/// The SIGINT or SIGTERM that cuts the session off instead of being forwarded.
const FORCE_AT: usize = 3;

const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Blocked signals, waiting to be forwarded.
pub struct Blocked {
    set: SigSet,
}

/// Blocks the forwarded signals and SIGWINCH in this thread and the threads it starts later.
pub fn block() -> Result<Blocked> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGWINCH);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("cannot block signals")?;
    Ok(Blocked { set })
}

impl Blocked {
    /// A SIGINT, SIGTERM, SIGHUP or SIGQUIT that arrived while nothing was forwarded yet (the
    /// user gave up while the container was being made), taken off the pending set.
    pub fn take_pending(&self) -> Option<Signal> {
        let mut raw = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given; it is read only when that succeeded.
        let pending = unsafe {
            if libc::sigpending(raw.as_mut_ptr()) != 0 {
                return None;
            }
            raw.assume_init()
        };
        // SAFETY: sigismember reads the initialised set.
        let sig = FORWARDED
            .into_iter()
            .find(|&s| unsafe { libc::sigismember(&pending, s as i32) } == 1)?;
        let mut one = SigSet::empty();
        one.add(sig);
        one.wait().ok()
    }

    /// Forwards from now on, from a thread of its own (it lives as long as the process);
    /// `tty`: resizes follow the user's terminal.
    pub fn forward(&self, signals: SignalSender, tty: bool) -> Result<()> {
        let set = self.set;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut interrupts = 0;
                loop {
                    let Ok(sig) = set.wait() else { continue };
                    if matches!(sig, Signal::SIGINT | Signal::SIGTERM) {
                        interrupts += 1;
                        if interrupts >= FORCE_AT && signals.cut_off() {
                            // The terminal may still be raw: end the line by hand.
                            let end = if tty { "\r\n" } else { "\n" };
                            eprint!(
                                "skiff: got {interrupts} SIGINT/SIGTERM: \
                                 forcibly killing the process{end}"
                            );
                            continue;
                        }
                    }
                    let sent = if sig == Signal::SIGWINCH {
                        match crate::terminal::current_size().filter(|_| tty) {
                            Some(size) => signals.resize(size.rows, size.cols),
                            None => Ok(()),
                        }
                    } else {
                        tracing::debug!(?sig, "forwarding a signal to the container");
                        signals.send(sig as i32)
                    };
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "cannot forward a signal");
                    }
                }
            })
            .map(drop)
            .context("cannot start the signal thread")
    }
}
