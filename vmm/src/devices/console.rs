//! The console writer behind the serial port: forwards the guest's output, up to a limit so a
//! chatty or hostile guest cannot fill the host's disk, and notices a kernel panic line, so the
//! VMM can report the panic as the cause when the guest resets.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// The marker Linux prints first when it panics.
const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";
/// Longest line kept for inspection; the rest of a longer line is forwarded but not kept.
const MAX_LINE: usize = 512;
/// How much console output is forwarded; later output is only watched for a panic.
pub const MAX_OUTPUT: u64 = 16 << 20;
/// Written once when the limit is reached.
const TRUNCATED: &[u8] = b"\n[skiff: console output truncated]\n";

/// The first panic line seen, shared with whoever reports the VM's end.
#[derive(Clone, Default)]
pub struct PanicNote(Arc<Mutex<Option<String>>>);

impl PanicNote {
    /// The panic line, if the guest printed one.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|p| p.clone())
    }

    fn set(&self, line: &[u8]) {
        if let Ok(mut p) = self.0.lock() {
            if p.is_none() {
                *p = Some(String::from_utf8_lossy(line).trim_end().to_string());
            }
        }
    }
}

/// Forwards bytes to `W` and watches the lines for a panic.
pub struct ConsoleWriter<W: Write> {
    out: W,
    line: Vec<u8>,
    note: PanicNote,
    /// Bytes still to forward before the output is cut.
    budget: u64,
}

impl<W: Write> ConsoleWriter<W> {
    pub fn new(out: W, note: PanicNote) -> Self {
        Self::with_limit(out, note, MAX_OUTPUT)
    }

    fn with_limit(out: W, note: PanicNote, limit: u64) -> Self {
        ConsoleWriter {
            out,
            line: Vec::with_capacity(MAX_LINE),
            note,
            budget: limit,
        }
    }

    fn watch(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if self
                    .line
                    .windows(PANIC_MARKER.len())
                    .any(|w| w == PANIC_MARKER)
                {
                    self.note.set(&self.line);
                }
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }
}

impl<W: Write> Write for ConsoleWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.watch(buf);
        if self.budget == 0 {
            return Ok(buf.len());
        }
        let take = buf
            .len()
            .min(usize::try_from(self.budget).unwrap_or(usize::MAX));
        self.budget -= take as u64;
        // The guest cannot retry: a failing console must not stop it, so errors are dropped.
        let mut written = self.out.write_all(&buf[..take]);
        if self.budget == 0 {
            written = written.and_then(|()| self.out.write_all(TRUNCATED));
        }
        if let Err(e) = written {
            tracing::debug!("console output: {e}");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_the_first_panic_line_and_forwards_everything() {
        let note = PanicNote::default();
        let mut w = ConsoleWriter::new(Vec::new(), note.clone());
        w.write_all(b"Linux version 6.12\n[ 1.0] Kernel panic - not syn")
            .unwrap();
        assert_eq!(note.get(), None);
        w.write_all(b"cing: VFS: Unable to mount root fs\r\nKernel panic - not syncing: again\n")
            .unwrap();
        assert_eq!(
            note.get().as_deref(),
            Some("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs")
        );
        assert!(w.out.starts_with(b"Linux version"));
    }

    #[test]
    fn output_stops_at_the_limit_but_panics_are_still_noticed() {
        let note = PanicNote::default();
        let mut w = ConsoleWriter::with_limit(Vec::new(), note.clone(), 10);
        w.write_all(b"0123456").unwrap();
        w.write_all(b"789abc").unwrap();
        w.write_all(b"\nKernel panic - not syncing: late\n")
            .unwrap();
        let mut want = b"0123456789".to_vec();
        want.extend_from_slice(TRUNCATED);
        assert_eq!(w.out, want);
        assert_eq!(
            note.get().as_deref(),
            Some("Kernel panic - not syncing: late")
        );
    }
}
