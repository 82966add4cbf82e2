//! The container's log: what its process wrote, one JSON record per line
//! (`{"time": RFC 3339, "stream": "stdout"|"stderr", "log": text}`, docker's json-file shape),
//! split at newlines; written by a detached container's monitor, read by `skiff logs`. A line
//! is recorded once it is complete, or in pieces of [`MAX_PARTIAL`] bytes when it runs longer
//! (cut between characters, as docker does), or when the stream ends.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub time: String,
    pub stream: String,
    pub log: String,
}

/// The longest piece of an unterminated line held back before it is recorded.
pub const MAX_PARTIAL: usize = 16 << 10;

/// Appends records for one stream to the shared log file.
pub struct LogWriter {
    file: Arc<Mutex<File>>,
    stream: &'static str,
    /// The start of a line whose end has not arrived yet.
    pending: Vec<u8>,
}

/// Opens (creates) the log at `path`; returns the writers for stdout and stderr.
pub fn open_writers(path: &Path) -> io::Result<(LogWriter, LogWriter)> {
    let file = Arc::new(Mutex::new(
        OpenOptions::new().create(true).append(true).open(path)?,
    ));
    Ok((
        LogWriter {
            file: file.clone(),
            stream: "stdout",
            pending: Vec::new(),
        },
        LogWriter {
            file,
            stream: "stderr",
            pending: Vec::new(),
        },
    ))
}

impl LogWriter {
    /// Records `pieces` as one append to the file.
    fn append<'a>(&self, pieces: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        let time = super::time::now();
        let mut out = Vec::new();
        for piece in pieces {
            let rec = Record {
                time: time.clone(),
                stream: self.stream.to_string(),
                log: String::from_utf8_lossy(piece).into_owned(),
            };
            serde_json::to_writer(&mut out, &rec)?;
            out.push(b'\n');
        }
        if out.is_empty() {
            return Ok(());
        }
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&out)
    }
}

/// Where to cut `b` so that no UTF-8 sequence is split: before a trailing, incomplete one.
fn char_boundary(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let byte = b[b.len() - back];
        let len = match byte {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            0x80..=0xbf => continue,
            _ => return b.len(),
        };
        return if len > back { b.len() - back } else { b.len() };
    }
    b.len()
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let mut pieces = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            pieces.push(start..start + nl + 1);
            start += nl + 1;
        }
        while self.pending.len() - start >= MAX_PARTIAL {
            let cut = char_boundary(&self.pending[start..start + MAX_PARTIAL]).max(1);
            pieces.push(start..start + cut);
            start += cut;
        }
        self.append(pieces.into_iter().map(|r| &self.pending[r]))?;
        self.pending.drain(..start);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    /// The stream ended: what is left of its last line is recorded as it is.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.append(std::iter::once(self.pending.as_slice()));
        }
    }
}

/// Reads records from a log file, remembering where it stopped (for following).
pub struct LogReader {
    reader: BufReader<File>,
    partial: String,
}

impl LogReader {
    pub fn open(path: &Path) -> io::Result<LogReader> {
        Ok(LogReader {
            reader: BufReader::new(File::open(path)?),
            partial: String::new(),
        })
    }

    /// The complete records written since the last call; a line still being written is kept
    /// for the next call. Lines that are not records are skipped.
    pub fn read_new(&mut self) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line)?;
            if n == 0 {
                return Ok(out);
            }
            self.partial.push_str(&line);
            if !self.partial.ends_with('\n') {
                return Ok(out);
            }
            if let Ok(rec) = serde_json::from_str::<Record>(&self.partial) {
                out.push(rec);
            }
            self.partial.clear();
        }
    }

    /// Positions at the end of the file (after a full read).
    pub fn seek_end(&mut self) -> io::Result<()> {
        self.reader.seek(SeekFrom::End(0)).map(drop)
    }
}

/// Writes `rec` to stdout or stderr, with its timestamp in front if asked.
pub fn print(rec: &Record, timestamps: bool) -> io::Result<()> {
    let text = if timestamps {
        format!("{} {}", rec.time, rec.log)
    } else {
        rec.log.clone()
    };
    if rec.stream == "stderr" {
        let mut e = io::stderr().lock();
        e.write_all(text.as_bytes())?;
        e.flush()
    } else {
        let mut o = io::stdout().lock();
        o.write_all(text.as_bytes())?;
        o.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_at_newlines_and_read_back_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut out, mut err) = open_writers(&path).unwrap();
        out.write_all(b"one\ntwo\npa").unwrap();
        out.write_all(b"rt").unwrap();
        err.write_all(b"oops\n").unwrap();
        drop(out);
        let mut r = LogReader::open(&path).unwrap();
        let recs = r.read_new().unwrap();
        let logs: Vec<_> = recs
            .iter()
            .map(|r| (r.stream.as_str(), r.log.as_str()))
            .collect();
        assert_eq!(
            logs,
            [
                ("stdout", "one\n"),
                ("stdout", "two\n"),
                ("stderr", "oops\n"),
                ("stdout", "part"),
            ]
        );
        assert!(r.read_new().unwrap().is_empty());
        err.write_all(b"more\n").unwrap();
        assert_eq!(r.read_new().unwrap()[0].log, "more\n");
    }

    #[test]
    fn characters_split_between_writes_stay_whole_and_long_lines_are_cut_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut out, _err) = open_writers(&path).unwrap();
        let text = "grüße\n".as_bytes();
        out.write_all(&text[..3]).unwrap();
        out.write_all(&text[3..]).unwrap();
        let long = "é".repeat(MAX_PARTIAL);
        out.write_all(long.as_bytes()).unwrap();
        drop(out);
        let recs = LogReader::open(&path).unwrap().read_new().unwrap();
        assert_eq!(recs[0].log, "grüße\n");
        let rest: String = recs[1..].iter().map(|r| r.log.as_str()).collect();
        assert_eq!(rest, long);
        assert!(recs[1..].iter().all(|r| r.log.len() <= MAX_PARTIAL));
        assert!(recs.iter().all(|r| !r.log.contains('\u{fffd}')));
    }
}
