//! Frames on the wire: `[u32 LE length][u8 tag][payload]`, decoded without trusting the peer.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::spec::{ChangedFile, ExecSpec, ExitStatus, FailureKind, RunSpec};
use crate::MAX_FRAME;

/// One of the container's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

impl Stream {
    fn to_byte(self) -> u8 {
        match self {
            Stream::Stdin => 0,
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            0 => Ok(Stream::Stdin),
            1 => Ok(Stream::Stdout),
            2 => Ok(Stream::Stderr),
            _ => Err(ProtocolError::Malformed("unknown stream")),
        }
    }
}

/// A message of the session (see the crate documentation for the order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Guest → host, first: the protocol version the guest speaks.
    Hello { version: u32 },
    /// Host → guest: what to run (boxed: the spec is much larger than the other messages).
    Run(Box<RunSpec>),
    /// Guest → host: the container's process was executed.
    Started,
    /// Guest → host: the container could not be started.
    Failed { kind: FailureKind, message: String },
    /// Bytes of one standard stream (stdin host → guest; stdout and stderr guest → host).
    Data { stream: Stream, bytes: Vec<u8> },
    /// The stream has ended; no more `Data` for it follows.
    Eof(Stream),
    /// Host → guest: deliver this signal to the container's process.
    Signal(i32),
    /// Host → guest: the terminal's new size.
    Resize { rows: u16, cols: u16 },
    /// Guest → host, last: how the container's process ended.
    Exit(ExitStatus),
    /// Host → guest, on an exec connection: what to run in the container.
    Exec(ExecSpec),
    /// Guest → host: room for this many more bytes of stdin (see the crate documentation's
    /// flow control).
    StdinCredit(u32),
    /// Host → guest: files of shared directories changed on the host; guest-init makes the
    /// guest kernel tell the container's watchers (version 6).
    FilesChanged(Vec<ChangedFile>),
}

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("i/o error on the session stream: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("the peer closed the session in the middle of a frame")]
    Truncated,
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("malformed message body: {0}")]
    Json(#[from] serde_json::Error),
}

const TAG_HELLO: u8 = 1;
const TAG_RUN: u8 = 2;
// 3 and 4 carried layer bytes up to version 4; they are not reused.
const TAG_STARTED: u8 = 5;
const TAG_FAILED: u8 = 6;
const TAG_DATA: u8 = 7;
const TAG_EOF: u8 = 8;
const TAG_SIGNAL: u8 = 9;
const TAG_RESIZE: u8 = 10;
const TAG_EXIT: u8 = 11;
const TAG_EXEC: u8 = 12;
const TAG_STDIN_CREDIT: u8 = 13;
const TAG_FILES_CHANGED: u8 = 14;

#[derive(Serialize, Deserialize)]
struct HelloBody {
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct FailedBody {
    kind: FailureKind,
    message: String,
}

impl Message {
    /// The frame for this message, header included.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = vec![0u8; 4];
        match self {
            Message::Hello { version } => {
                out.push(TAG_HELLO);
                serde_json::to_writer(&mut out, &HelloBody { version: *version })?;
            }
            Message::Run(spec) => {
                out.push(TAG_RUN);
                serde_json::to_writer(&mut out, spec)?;
            }
            Message::Started => out.push(TAG_STARTED),
            Message::Failed { kind, message } => {
                out.push(TAG_FAILED);
                let body = FailedBody {
                    kind: *kind,
                    message: message.clone(),
                };
                serde_json::to_writer(&mut out, &body)?;
            }
            Message::Data { stream, bytes } => {
                out.reserve(2 + bytes.len());
                out.push(TAG_DATA);
                out.push(stream.to_byte());
                out.extend_from_slice(bytes);
            }
            Message::Eof(stream) => {
                out.push(TAG_EOF);
                out.push(stream.to_byte());
            }
            Message::Signal(signo) => {
                out.push(TAG_SIGNAL);
                out.extend_from_slice(&signo.to_le_bytes());
            }
            Message::Resize { rows, cols } => {
                out.push(TAG_RESIZE);
                out.extend_from_slice(&rows.to_le_bytes());
                out.extend_from_slice(&cols.to_le_bytes());
            }
            Message::Exit(status) => {
                out.push(TAG_EXIT);
                serde_json::to_writer(&mut out, status)?;
            }
            Message::Exec(spec) => {
                out.push(TAG_EXEC);
                serde_json::to_writer(&mut out, spec)?;
            }
            Message::StdinCredit(bytes) => {
                out.push(TAG_STDIN_CREDIT);
                out.extend_from_slice(&bytes.to_le_bytes());
            }
            Message::FilesChanged(files) => {
                out.push(TAG_FILES_CHANGED);
                serde_json::to_writer(&mut out, files)?;
            }
        }
        let len = out.len() - 4;
        if len > MAX_FRAME {
            return Err(ProtocolError::TooLarge(len));
        }
        out[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(out)
    }

    /// Decodes one frame body (tag + payload, without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Message, ProtocolError> {
        let (&tag, payload) = body
            .split_first()
            .ok_or(ProtocolError::Malformed("empty frame"))?;
        let msg = match tag {
            TAG_HELLO => {
                let h: HelloBody = serde_json::from_slice(payload)?;
                Message::Hello { version: h.version }
            }
            TAG_RUN => Message::Run(serde_json::from_slice(payload)?),
            TAG_STARTED => {
                expect_empty(payload)?;
                Message::Started
            }
            TAG_FAILED => {
                let f: FailedBody = serde_json::from_slice(payload)?;
                Message::Failed {
                    kind: f.kind,
                    message: f.message,
                }
            }
            TAG_DATA => {
                let (&s, bytes) = payload
                    .split_first()
                    .ok_or(ProtocolError::Malformed("data frame without a stream"))?;
                Message::Data {
                    stream: Stream::from_byte(s)?,
                    bytes: bytes.to_vec(),
                }
            }
            TAG_EOF => match payload {
                [s] => Message::Eof(Stream::from_byte(*s)?),
                _ => return Err(ProtocolError::Malformed("eof frame must name one stream")),
            },
            TAG_SIGNAL => {
                let b: [u8; 4] = payload
                    .try_into()
                    .map_err(|_| ProtocolError::Malformed("signal frame must hold 4 bytes"))?;
                Message::Signal(i32::from_le_bytes(b))
            }
            TAG_RESIZE => match payload {
                [r0, r1, c0, c1] => Message::Resize {
                    rows: u16::from_le_bytes([*r0, *r1]),
                    cols: u16::from_le_bytes([*c0, *c1]),
                },
                _ => return Err(ProtocolError::Malformed("resize frame must hold 4 bytes")),
            },
            TAG_EXIT => Message::Exit(serde_json::from_slice(payload)?),
            TAG_EXEC => Message::Exec(serde_json::from_slice(payload)?),
            TAG_STDIN_CREDIT => {
                let b: [u8; 4] = payload.try_into().map_err(|_| {
                    ProtocolError::Malformed("stdin credit frame must hold 4 bytes")
                })?;
                Message::StdinCredit(u32::from_le_bytes(b))
            }
            TAG_FILES_CHANGED => Message::FilesChanged(serde_json::from_slice(payload)?),
            other => return Err(ProtocolError::UnknownTag(other)),
        };
        Ok(msg)
    }
}

fn expect_empty(payload: &[u8]) -> Result<(), ProtocolError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(ProtocolError::Malformed("unexpected payload"))
    }
}

/// Writes one message as a single `write_all` of the whole frame.
pub fn write_message<W: Write + ?Sized>(w: &mut W, msg: &Message) -> Result<(), ProtocolError> {
    let frame = msg.encode()?;
    w.write_all(&frame)?;
    Ok(())
}

/// Writes `Message::Data { stream, bytes }` straight from a borrowed buffer: the same frame as
/// [`write_message`] gives, without copying the bytes into a message first (the stdio hot path).
pub fn write_data<W: Write + ?Sized>(
    w: &mut W,
    stream: Stream,
    bytes: &[u8],
) -> Result<(), ProtocolError> {
    let len = 2 + bytes.len();
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut header = [0u8; 6];
    header[..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4] = TAG_DATA;
    header[5] = stream.to_byte();
    // One writev for the whole frame in the common case; finish with write_all if it was short.
    let mut done = loop {
        match w.write_vectored(&[io::IoSlice::new(&header), io::IoSlice::new(bytes)]) {
            Ok(0) => return Err(ProtocolError::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    };
    if done < header.len() {
        w.write_all(&header[done..])?;
        done = header.len();
    }
    w.write_all(&bytes[done - header.len()..])?;
    Ok(())
}

/// Reads one message; `Ok(None)` when the peer closed the stream cleanly between frames.
pub fn read_message<R: Read + ?Sized>(r: &mut R) -> Result<Option<Message>, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    })?;
    Message::decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ImageRoot, RootSpec, ShareMount, TermSize, TmpfsMount, WritableLayer};

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Hello { version: 1 },
            Message::Run(Box::new(RunSpec {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                user: "1000:1000".into(),
                hostname: "box".into(),
                tty: false,
                term_size: None,
                stdin: true,
                root: RootSpec {
                    image: ImageRoot::Disk {
                        serial: "image".into(),
                    },
                    writable: WritableLayer::Disk {
                        serial: "rw".into(),
                    },
                },
                tmpfs: vec![TmpfsMount {
                    path: "/tmp".into(),
                    options: vec!["size=65536k".into()],
                }],
                shares: vec![ShareMount {
                    tag: "skiff-0".into(),
                    entry: "app.conf".into(),
                    target: "/etc/app.conf".into(),
                    read_only: true,
                    populate: false,
                }],
                security: crate::Security {
                    capabilities: 1 << 12,
                    no_new_privileges: true,
                    privileged: false,
                    seccomp: false,
                },
                rlimits: vec![],
                pids_limit: None,
                init: false,
                hold: false,
                host_time_ns: 1_700_000_000_000_000_000,
                network: None,
                etc_files: vec![],
            })),
            Message::Started,
            Message::FilesChanged(vec![ChangedFile {
                tag: "skiff-0".into(),
                path: "src/main.rs".into(),
            }]),
            Message::Failed {
                kind: FailureKind::NotFound,
                message: "nope: not found".into(),
            },
            Message::Data {
                stream: Stream::Stderr,
                bytes: b"err".to_vec(),
            },
            Message::Data {
                stream: Stream::Stdout,
                bytes: Vec::new(),
            },
            Message::Eof(Stream::Stdin),
            Message::Signal(15),
            Message::Resize { rows: 24, cols: 80 },
            Message::Exit(ExitStatus::Signal(9)),
            Message::Exit(ExitStatus::Code(3)),
            Message::Exec(ExecSpec {
                argv: vec!["ls".into()],
                env: vec!["TERM=xterm".into()],
                cwd: "/tmp".into(),
                user: "alice".into(),
                tty: true,
                term_size: Some(TermSize {
                    rows: 50,
                    cols: 132,
                }),
                stdin: true,
                security: crate::Security::default(),
                rlimits: vec![crate::Rlimit {
                    resource: "nofile".into(),
                    soft: 1024,
                    hard: u64::MAX,
                }],
            }),
            Message::StdinCredit(1 << 20),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let mut wire = Vec::new();
        let msgs = all_messages();
        for m in &msgs {
            write_message(&mut wire, m).unwrap();
        }
        let mut r = wire.as_slice();
        for m in &msgs {
            assert_eq!(read_message(&mut r).unwrap().as_ref(), Some(m));
        }
        assert!(read_message(&mut r).unwrap().is_none());
    }

    #[test]
    fn borrowed_data_frames_match_encoded_messages() {
        for bytes in [Vec::new(), b"abc".to_vec(), vec![7u8; 100_000]] {
            let mut wire = Vec::new();
            write_data(&mut wire, Stream::Stdout, &bytes).unwrap();
            let msg = Message::Data {
                stream: Stream::Stdout,
                bytes,
            };
            assert_eq!(wire, msg.encode().unwrap());
        }
        let too_big = vec![0u8; MAX_FRAME];
        assert!(matches!(
            write_data(&mut Vec::new(), Stream::Stderr, &too_big),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let big = Message::Data {
            stream: Stream::Stdout,
            bytes: vec![0; MAX_FRAME],
        };
        assert!(matches!(big.encode(), Err(ProtocolError::TooLarge(_))));
        let mut wire = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
        wire.push(TAG_STARTED);
        assert!(matches!(
            read_message(&mut wire.as_slice()),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_frames_are_errors() {
        let frame = Message::Signal(2).encode().unwrap();
        for cut in 1..frame.len() {
            let r = read_message(&mut &frame[..cut]);
            assert!(matches!(r, Err(ProtocolError::Truncated)), "cut at {cut}");
        }
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            &[],
            &[0],
            &[200],
            &[TAG_HELLO, b'{'],
            &[TAG_RUN, b'[', b']'],
            &[3],
            &[4],
            &[TAG_STARTED, 1],
            &[TAG_DATA],
            &[TAG_DATA, 9, 1],
            &[TAG_EOF],
            &[TAG_EOF, 1, 2],
            &[TAG_SIGNAL, 1, 2, 3],
            &[TAG_RESIZE, 1],
            &[TAG_EXIT, b'"', b'x', b'"'],
            &[TAG_EXEC, b'{', b'}'],
            &[TAG_STDIN_CREDIT, 1, 2, 3],
            &[TAG_STDIN_CREDIT, 1, 2, 3, 4, 5],
        ];
        for c in cases {
            assert!(Message::decode(c).is_err(), "{c:?} decoded");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small xorshift generator: deterministic garbage of every length up to 64 bytes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..64 {
            for _ in 0..200 {
                let body: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                let _ = Message::decode(&body);
                let _ = read_message(&mut body.as_slice());
            }
        }
    }
}
