//! The host side of a host-initiated connection before it reaches the guest: reading the
//! `CONNECT <port>\n` line byte by byte, so no data that follows it is consumed.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;

/// Longest accepted line, newline included (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_LINE: usize = 32;

/// Progress of reading the request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Pending,
    /// A complete, valid request for this guest port.
    Connect(u32),
    /// The peer closed, sent garbage or a line that is too long.
    Failed(String),
}

/// A freshly accepted host stream waiting for its request line.
#[derive(Debug)]
pub struct Handshake {
    pub stream: UnixStream,
    line: Vec<u8>,
}

impl Handshake {
    pub fn new(stream: UnixStream) -> Handshake {
        Handshake {
            stream,
            line: Vec::with_capacity(MAX_LINE),
        }
    }

    /// Reads what is available without blocking.
    pub fn advance(&mut self) -> Progress {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return Progress::Failed("closed before a complete request line".into()),
                Ok(_) if byte[0] == b'\n' => return parse_line(&self.line),
                Ok(_) if self.line.len() + 1 >= MAX_LINE => {
                    return Progress::Failed(format!("request line longer than {MAX_LINE} bytes"))
                }
                Ok(_) => self.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) => return Progress::Failed(format!("read failed: {e}")),
            }
        }
    }
}

/// Parses `CONNECT <port>` (without the newline).
pub fn parse_line(line: &[u8]) -> Progress {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t.trim_end_matches('\r'),
        Err(_) => return Progress::Failed("request line is not UTF-8".into()),
    };
    let Some(port) = text.strip_prefix("CONNECT ") else {
        return Progress::Failed(format!("unknown request {text:?}"));
    };
    match port.parse::<u32>() {
        Ok(p) => Progress::Connect(p),
        Err(_) => Progress::Failed(format!("bad port in request {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_valid_and_rejects_bad_lines() {
        assert_eq!(parse_line(b"CONNECT 1024"), Progress::Connect(1024));
        assert_eq!(parse_line(b"CONNECT 52\r"), Progress::Connect(52));
        assert!(matches!(parse_line(b"CONNECT -1"), Progress::Failed(_)));
        assert!(matches!(
            parse_line(b"CONNECT 99999999999"),
            Progress::Failed(_)
        ));
        assert!(matches!(parse_line(b"HELLO 5"), Progress::Failed(_)));
        assert!(matches!(parse_line(&[0xff, 0xfe]), Progress::Failed(_)));
    }

    #[test]
    fn stops_at_newline_and_leaves_following_data() {
        let (mut host, dev) = UnixStream::pair().unwrap();
        dev.set_nonblocking(true).unwrap();
        let mut hs = Handshake::new(dev);
        host.write_all(b"CONN").unwrap();
        assert_eq!(hs.advance(), Progress::Pending);
        host.write_all(b"ECT 7\npayload").unwrap();
        assert_eq!(hs.advance(), Progress::Connect(7));
        let mut rest = [0u8; 7];
        hs.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"payload");
    }

    #[test]
    fn overlong_line_fails() {
        let (mut host, dev) = UnixStream::pair().unwrap();
        dev.set_nonblocking(true).unwrap();
        let mut hs = Handshake::new(dev);
        host.write_all(&[b'A'; 40]).unwrap();
        assert!(matches!(hs.advance(), Progress::Failed(_)));
    }
}
