//! The container's log: what its process wrote, one JSON record per line
//! (`{"time": RFC 3339, "stream": "stdout"|"stderr", "log": text}`, docker's json-file shape),
//! split at newlines; written by a detached container's monitor, read by `skiff logs`.

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

/// Appends records for one stream to the shared log file.
pub struct LogWriter {
    file: Arc<Mutex<File>>,
    stream: &'static str,
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
        },
        LogWriter {
            file,
            stream: "stderr",
        },
    ))
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let time = super::time::now();
        let mut out = Vec::with_capacity(buf.len() + 80);
        for piece in buf.split_inclusive(|&b| b == b'\n') {
            let rec = Record {
                time: time.clone(),
                stream: self.stream.to_string(),
                log: String::from_utf8_lossy(piece).into_owned(),
            };
            serde_json::to_writer(&mut out, &rec)?;
            out.push(b'\n');
        }
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
        out.write_all(b"one\ntwo\npart").unwrap();
        err.write_all(b"oops\n").unwrap();
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
                ("stdout", "part"),
                ("stderr", "oops\n")
            ]
        );
        assert!(r.read_new().unwrap().is_empty());
        out.write_all(b"more\n").unwrap();
        assert_eq!(r.read_new().unwrap()[0].log, "more\n");
    }
}
