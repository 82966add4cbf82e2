//! The process's stdin as the host sends it, under credit (see the protocol's flow control):
//! the session's reading thread only queues the bytes, within the credit granted; a thread of
//! its own writes them into the process's stdin and grants the credit back as they drain. A
//! process that never reads its stdin thus blocks that thread alone, never the signals and
//! resizes that follow on the session.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use tracing::debug;

use crate::error::{Context, Error, Result};

/// Bytes of stdin guest-init buffers for the host: its first grant, and the most it holds.
pub const WINDOW: u32 = 2 << 20;

/// Credit is given back once this many bytes have drained (fewer, larger grants).
const GRANT_BATCH: usize = 256 << 10;

/// Sends a grant of credit to the host.
pub type Grant = Box<dyn FnMut(u32) -> Result<()> + Send>;

/// Buffers the host's stdin for the process; see the module documentation.
pub struct StdinFeed {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    more: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Bytes taken from the host and not yet granted back.
    outstanding: usize,
    /// No more bytes come: the pipe is closed once the queue is written.
    end: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StdinFeed {
    /// Grants the first window, then writes what arrives into `pipe` from a new thread.
    pub fn start<W: Write + Send + 'static>(pipe: W, mut grant: Grant) -> Result<StdinFeed> {
        let shared = Arc::new(Shared::default());
        grant(WINDOW)?;
        let drain = shared.clone();
        thread::Builder::new()
            .name("stdin".into())
            .spawn(move || feed(&drain, pipe, grant))
            .ctx(|| "start the stdin thread".into())?;
        Ok(StdinFeed { shared })
    }

    /// Queues bytes from the host; an error when they exceed the credit granted.
    pub fn push(&self, bytes: Vec<u8>) -> Result<()> {
        let mut st = self.shared.lock();
        if st.outstanding + bytes.len() > WINDOW as usize {
            return Err(Error::Invalid(format!(
                "the host sent {} bytes of stdin with {} bytes of credit left",
                bytes.len(),
                WINDOW as usize - st.outstanding
            )));
        }
        st.outstanding += bytes.len();
        st.queue.push_back(bytes);
        self.shared.more.notify_one();
        Ok(())
    }

    /// No more bytes: the process sees the end of its stdin after every queued byte.
    pub fn finish(&self) {
        self.shared.lock().end = true;
        self.shared.more.notify_one();
    }
}

/// Writes the queue into `pipe` until the end, granting credit back in batches. Once the
/// process closed its stdin the rest is dropped, still granted back, so the host's source
/// drains as before.
fn feed<W: Write>(shared: &Shared, pipe: W, mut grant: Grant) {
    let mut pipe = Some(pipe);
    let mut drained = 0usize;
    loop {
        let chunk = {
            let mut st = shared.lock();
            loop {
                if let Some(c) = st.queue.pop_front() {
                    break c;
                }
                if st.end {
                    debug!("stdin ended; closing the process's stdin");
                    return;
                }
                st = shared.more.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        // In pieces of a batch: credit flows back while a large chunk is still being written.
        for piece in chunk.chunks(GRANT_BATCH) {
            if let Some(w) = pipe.as_mut() {
                if let Err(e) = w.write_all(piece) {
                    debug!(error = %e, "the process closed its stdin; the rest is dropped");
                    pipe = None;
                }
            }
            drained += piece.len();
            if drained >= GRANT_BATCH {
                // Counted back before the host hears of it: it cannot send against it earlier.
                shared.lock().outstanding -= drained;
                if grant(drained as u32).is_err() {
                    return;
                }
                drained = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::mpsc;
    use std::time::Duration;

    fn pipe() -> (std::fs::File, std::fs::File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (r.into(), w.into())
    }

    fn grants() -> (Grant, mpsc::Receiver<u32>) {
        let (tx, rx) = mpsc::channel();
        let grant: Grant = Box::new(move |n| {
            let _ = tx.send(n);
            Ok(())
        });
        (grant, rx)
    }

    #[test]
    fn bytes_arrive_in_order_then_eof_and_credit_comes_back() {
        let (r, w) = pipe();
        let (grant, rx) = grants();
        let feed = StdinFeed::start(w, grant).unwrap();
        assert_eq!(rx.recv().unwrap(), WINDOW);
        let reader = thread::spawn(move || {
            let mut r = r;
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            all
        });
        let mut want = Vec::new();
        for i in 0..64u32 {
            let chunk = vec![i as u8; 16 << 10];
            want.extend_from_slice(&chunk);
            feed.push(chunk).unwrap();
        }
        feed.finish();
        assert_eq!(reader.join().unwrap(), want);
        let back: u32 = rx.try_iter().sum();
        assert_eq!(back, 1 << 20);
    }

    #[test]
    fn more_than_the_credit_is_refused_while_the_process_reads_nothing() {
        let (_r, w) = pipe();
        let (grant, rx) = grants();
        let feed = StdinFeed::start(w, grant).unwrap();
        assert_eq!(rx.recv().unwrap(), WINDOW);
        // The whole window is accepted at once, whatever the process does with it.
        for _ in 0..4 {
            feed.push(vec![b'y'; WINDOW as usize / 4]).unwrap();
        }
        // The pipe holds less than the window: nothing drains past it, no credit comes back.
        std::thread::sleep(Duration::from_millis(100));
        let err = feed.push(vec![b'y'; 1]).unwrap_err();
        assert!(err.to_string().contains("credit"), "{err}");
    }

    #[test]
    fn a_closed_stdin_still_gives_the_credit_back() {
        let (r, w) = pipe();
        drop(r);
        let (grant, rx) = grants();
        let feed = StdinFeed::start(w, grant).unwrap();
        assert_eq!(rx.recv().unwrap(), WINDOW);
        for _ in 0..3 {
            feed.push(vec![0; WINDOW as usize]).unwrap();
            let mut back = 0;
            while back < WINDOW {
                back += rx.recv_timeout(Duration::from_secs(5)).unwrap();
            }
        }
    }
}
