//! Signals of the skiff process that belong to the container (docker's `--sig-proxy`):
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the container's process, SIGWINCH
//! becomes a resize of its terminal. They are blocked in every thread (call [`block`] before
//! any thread starts) and taken by one thread with `sigwait`, so the skiff process itself
//! never dies of them and always gets to restore the terminal.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::session::SignalSender;

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
    /// Forwards from now on, from a thread of its own (it lives as long as the process);
    /// `tty`: resizes follow the user's terminal.
    pub fn forward(&self, signals: SignalSender, tty: bool) -> Result<()> {
        let set = self.set;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let Ok(sig) = set.wait() else { continue };
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
            })
            .map(drop)
            .context("cannot start the signal thread")
    }
}
