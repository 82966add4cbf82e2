//! `skiff cp` on [`crate::COPY_PORT`]: the request and replies, the chunked byte stream that
//! carries the tar archive, docker's rules for where a copy lands, and the archive writer and
//! (symlink-proof) extractor both sides use.
//!
//! On the wire every piece is `[u32 LE length][bytes]`: control messages are JSON in such a
//! frame (at most [`MAX_CONTROL`] bytes), the archive is a run of chunks of at most
//! [`crate::MAX_CHUNK`] bytes ended by an empty one.

pub mod archive;
pub mod extract;

use std::io::{self, Read, Write};
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{ProtocolError, MAX_CHUNK};

/// Largest control message of a copy connection.
pub const MAX_CONTROL: usize = 64 * 1024;

/// Host → guest, first on a copy connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    /// [`crate::VERSION`] of the host.
    pub version: u32,
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Host → container: the guest answers [`CopyReply::Ready`] (or `Failed`), the host sends
    /// the archive, the guest extracts it at `path` by docker's rules and answers `Done`.
    In {
        /// The destination in the container.
        path: String,
        source: Source,
        /// Keep the archive's owners (`-a`); else everything belongs to root.
        archive: bool,
    },
    /// Container → host: the guest answers [`CopyReply::Source`] (or `Failed`), sends the
    /// archive of `path`, then `Done` (or `Failed`).
    Out {
        path: String,
        /// Follow `path` itself when it is a symlink (`-L`).
        follow_link: bool,
        /// The archive's top entry name (`None`: the directory's content at the archive's root,
        /// docker's `SRC/.`).
        name: Option<String>,
    },
}

/// What the archive of a copy into the container holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// One file, symlink or directory of the host, its top entry named `name` (`None`: a
    /// directory's content at the archive's root).
    Entry { name: Option<String>, is_dir: bool },
    /// The user's own tar stream (`skiff cp - CONTAINER:DIR`): extracted as it is into a
    /// directory that must exist.
    Stream,
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyReply {
    /// The destination is fine: send the archive.
    Ready,
    /// What the source is; its archive follows.
    Source { is_dir: bool },
    /// The copy is complete.
    Done,
    /// One line saying why not.
    Failed { kind: FailKind, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The path does not exist in the container.
    NotFound,
    /// Anything else: a rule of docker's broken, a bad archive, an i/o error.
    Other,
}

/// Writes one control message.
pub fn write_control<W: Write + ?Sized, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_CONTROL {
        return Err(ProtocolError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one control message; the peer closing first is [`ProtocolError::Truncated`].
pub fn read_control<R: Read + ?Sized, T: DeserializeOwned>(r: &mut R) -> Result<T, ProtocolError> {
    let len = read_len(r)?;
    if len > MAX_CONTROL {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(truncated)?;
    Ok(serde_json::from_slice(&body)?)
}

fn read_len<R: Read + ?Sized>(r: &mut R) -> Result<usize, ProtocolError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(truncated)?;
    Ok(u32::from_le_bytes(len) as usize)
}

fn truncated(e: io::Error) -> ProtocolError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    }
}

/// Buffers what is written into chunks of [`CHUNK`] bytes; [`ChunkWriter::finish`] sends the
/// rest and the empty chunk that ends the stream.
pub struct ChunkWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

/// Bytes per chunk a [`ChunkWriter`] sends.
pub const CHUNK: usize = 256 * 1024;

impl<W: Write> ChunkWriter<W> {
    pub fn new(inner: W) -> ChunkWriter<W> {
        ChunkWriter {
            inner,
            buf: Vec::with_capacity(4 + CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = (self.buf.len() as u32).to_le_bytes();
        self.inner.write_all(&len)?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Sends what is buffered and the end of the stream; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.inner.write_all(&0u32.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        self.inner.flush()
    }
}

/// Reads the bytes of a chunked stream until its empty chunk (then end of file); a chunk over
/// [`MAX_CHUNK`] or a cut stream is an error.
pub struct ChunkReader<R: Read> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(inner: R) -> ChunkReader<R> {
        ChunkReader {
            inner,
            left: 0,
            done: false,
        }
    }

    /// Reads and drops the rest of the stream (a tar reader stops at its end marker, which may
    /// come before the end of the stream); returns the inner reader.
    pub fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.inner)
    }

    /// As [`ChunkReader::finish`], but more than `max` bytes left is an error (a peer that is
    /// not trusted cannot keep the reader busy forever).
    pub fn finish_within(mut self, max: u64) -> io::Result<R> {
        let left = io::copy(&mut (&mut self).take(max + 1), &mut io::sink())?;
        if left > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {max} bytes after the end of the archive"),
            ));
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.left == 0 {
            if self.done {
                return Ok(0);
            }
            let len = read_len(&mut self.inner).map_err(|e| match e {
                ProtocolError::Io(e) => e,
                other => io::Error::new(io::ErrorKind::UnexpectedEof, other.to_string()),
            })?;
            if len > MAX_CHUNK {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a chunk of {len} bytes exceeds the limit of {MAX_CHUNK}"),
                ));
            }
            self.left = len;
            self.done = len == 0;
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the copy stream was cut in the middle of a chunk",
            ));
        }
        self.left -= n;
        Ok(n)
    }
}

/// What the destination of a copy is, as its side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A directory (or a symlink to one).
    Dir,
    /// Something else that exists.
    Other,
    /// Nothing; whether its parent is a directory.
    Missing { parent_is_dir: bool },
}

/// Where a copy lands: the archive's top is extracted into `dir`, renamed to `name` (`None`:
/// its content is merged into `dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub dir: String,
    pub name: Option<String>,
}

/// docker's rules (`docker cp --help`): the source is a directory or not, `src_name` its name
/// (`None` for `SRC/.`: its content); `dst` the destination path as the user wrote it and
/// `target` what is there. The error is one line.
pub fn place(
    src_is_dir: bool,
    src_name: Option<&str>,
    dst: &str,
    target: Target,
) -> Result<Placement, String> {
    let trailing = dst.ends_with('/') || dst.ends_with("/.") || dst == ".";
    match target {
        Target::Other if src_is_dir => Err(format!("cannot copy a directory to a file: {dst}")),
        Target::Other if trailing => Err(format!("not a directory: {dst}")),
        Target::Other => {
            let (dir, name) = split(dst)?;
            Ok(Placement {
                dir,
                name: Some(name),
            })
        }
        Target::Dir => Ok(Placement {
            dir: dst.to_string(),
            name: match (src_is_dir, src_name) {
                (true, None) => None,
                (_, Some(n)) => Some(n.to_string()),
                // A non-directory always has a name.
                (false, None) => return Err(format!("not a directory: {dst}")),
            },
        }),
        Target::Missing { .. } if trailing && !src_is_dir => {
            Err(format!("destination directory {dst} must exist"))
        }
        Target::Missing {
            parent_is_dir: false,
        } => Err(format!("no such directory: {}", parent_of(dst))),
        Target::Missing {
            parent_is_dir: true,
        } => {
            let (dir, name) = split(dst)?;
            Ok(Placement {
                dir,
                name: Some(name),
            })
        }
    }
}

/// The directory part of `path` (`.` for a bare name).
pub fn parent_of(path: &str) -> String {
    match Path::new(path).parent() {
        Some(p) if p.as_os_str().is_empty() => ".".into(),
        Some(p) => p.to_string_lossy().into_owned(),
        None => "/".into(),
    }
}

/// `path` as its parent and last name; `.`/`..`/`/` have no name to create.
fn split(path: &str) -> Result<(String, String), String> {
    let trimmed = path.trim_end_matches('/');
    match Path::new(trimmed).file_name() {
        Some(n) if !trimmed.ends_with("/..") && trimmed != ".." => {
            Ok((parent_of(trimmed), n.to_string_lossy().into_owned()))
        }
        _ => Err(format!("cannot create {path}")),
    }
}

/// The name a source path gives the archive's top entry: its last component, `None` for
/// `DIR/.` (docker: the directory's content) and for `/`.
pub fn source_name(path: &str) -> Option<String> {
    if path.ends_with("/.") || path == "." {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    Path::new(trimmed)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|_| !trimmed.ends_with("/..") && trimmed != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        let mut w = ChunkWriter::new(Vec::new());
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        let mut wire = w.finish().unwrap();
        write_control(&mut wire, &CopyReply::Done).unwrap();
        let copy = wire.clone();
        let mut cursor = io::Cursor::new(wire);
        let mut r = ChunkReader::new(&mut cursor);
        let mut back = vec![0u8; CHUNK];
        r.read_exact(&mut back).unwrap();
        assert!(ChunkReader::new(&copy[..]).finish_within(1000).is_err());
        assert!(ChunkReader::new(&copy[..])
            .finish_within(data.len() as u64)
            .is_ok());
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let reply: CopyReply = read_control(&mut cursor).unwrap();
        assert_eq!(reply, CopyReply::Done);
    }

    #[test]
    fn oversized_and_cut_streams_are_errors() {
        let mut wire = ((MAX_CHUNK + 1) as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&[0; 8]);
        let mut out = Vec::new();
        assert!(ChunkReader::new(&wire[..]).read_to_end(&mut out).is_err());
        let mut cut = 10u32.to_le_bytes().to_vec();
        cut.extend_from_slice(&[1, 2, 3]);
        assert!(ChunkReader::new(&cut[..]).read_to_end(&mut out).is_err());
        assert!(read_control::<_, CopyReply>(&mut &[1u8, 2][..]).is_err());
        let big = ((MAX_CONTROL + 1) as u32).to_le_bytes();
        assert!(matches!(
            read_control::<_, CopyReply>(&mut &big[..]),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn docker_placement_rules() {
        let p = |dir: &str, name: Option<&str>| {
            Ok(Placement {
                dir: dir.into(),
                name: name.map(Into::into),
            })
        };
        let parent = Target::Missing {
            parent_is_dir: true,
        };
        // A file.
        assert_eq!(
            place(false, Some("f"), "/d", Target::Dir),
            p("/d", Some("f"))
        );
        assert_eq!(
            place(false, Some("f"), "/d/g", Target::Other),
            p("/d", Some("g"))
        );
        assert_eq!(place(false, Some("f"), "/d/g", parent), p("/d", Some("g")));
        assert_eq!(place(false, Some("f"), "g", parent), p(".", Some("g")));
        assert!(place(false, Some("f"), "/d/g/", parent).is_err());
        assert!(place(false, Some("f"), "/d/g/", Target::Other).is_err());
        assert!(place(
            false,
            Some("f"),
            "/x/g",
            Target::Missing {
                parent_is_dir: false
            }
        )
        .is_err());
        // A directory.
        assert_eq!(
            place(true, Some("s"), "/d", Target::Dir),
            p("/d", Some("s"))
        );
        assert_eq!(place(true, None, "/d", Target::Dir), p("/d", None));
        assert_eq!(place(true, Some("s"), "/d/n", parent), p("/d", Some("n")));
        assert_eq!(place(true, None, "/d/n/", parent), p("/d", Some("n")));
        assert!(place(true, Some("s"), "/d/f", Target::Other).is_err());
        // Names of sources.
        assert_eq!(source_name("/a/b"), Some("b".into()));
        assert_eq!(source_name("/a/b/"), Some("b".into()));
        assert_eq!(source_name("/a/b/."), None);
        assert_eq!(source_name("/"), None);
    }
}
