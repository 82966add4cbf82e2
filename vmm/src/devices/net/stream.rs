//! A [`FrameBackend`] over a Unix stream socket in QEMU's `-netdev stream` framing, which is
//! also what `passt --socket` speaks: every frame is a 4-byte big-endian length followed by
//! the Ethernet frame. Non-blocking both ways; reads are buffered so one `read` can bring many
//! frames, and a frame the socket took only in part is finished before the next one starts.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use super::backend::{BackendError, FrameBackend, Sent, MAX_FRAME_LEN};
use crate::devices::ratelimit::RateLimited;
use crate::devices::socket::{send_vectored, NoSigPipe};

/// Bytes of the length prefix.
const PREFIX_LEN: usize = 4;
/// Most pieces one `sendmsg` takes (Linux's `IOV_MAX`).
const MAX_IOV: usize = 1024;
/// Frames the peer announces up to this many bytes beyond [`MAX_FRAME_LEN`] are read and
/// dropped (QEMU's own receive buffer has this much room beyond 64 KiB); a longer length, or
/// 0, means the stream is not in this framing and ends the backend.
pub const PEER_FRAME_SLACK: usize = 4096;
const READ_BUF_LEN: usize = 256 * 1024;
const _: () = assert!(READ_BUF_LEN >= PREFIX_LEN + MAX_FRAME_LEN + PEER_FRAME_SLACK);

/// The `-netdev stream` peer of the device.
pub struct StreamBackend {
    stream: UnixStream,
    /// Bytes read and not yet handed out: `read_buf[read_start..read_end]`.
    read_buf: Box<[u8]>,
    read_start: usize,
    read_end: usize,
    /// The unwritten tail of the last accepted frame: `write_buf[write_pos..]`.
    write_buf: Vec<u8>,
    write_pos: usize,
    warnings: RateLimited,
}

impl StreamBackend {
    /// Uses an already connected stream (made non-blocking here).
    pub fn from_stream(stream: UnixStream) -> io::Result<StreamBackend> {
        stream.set_nonblocking(true)?;
        Ok(StreamBackend {
            stream,
            read_buf: vec![0; READ_BUF_LEN].into_boxed_slice(),
            read_start: 0,
            read_end: 0,
            write_buf: Vec::with_capacity(PREFIX_LEN + MAX_FRAME_LEN),
            write_pos: 0,
            warnings: RateLimited::new("net"),
        })
    }

    /// The next whole frame in the read buffer: `Some((start, len))`, consumed.
    fn next_buffered(&mut self) -> Result<Option<(usize, usize)>, BackendError> {
        loop {
            let have = &self.read_buf[self.read_start..self.read_end];
            let Some(prefix) = have.first_chunk::<PREFIX_LEN>() else {
                return Ok(None);
            };
            let announced = u32::from_be_bytes(*prefix);
            let len = announced as usize;
            if len == 0 || len > MAX_FRAME_LEN + PEER_FRAME_SLACK {
                return Err(BackendError::FrameLength(announced));
            }
            if have.len() < PREFIX_LEN + len {
                return Ok(None);
            }
            let start = self.read_start + PREFIX_LEN;
            self.read_start = start + len;
            if len <= MAX_FRAME_LEN {
                return Ok(Some((start, len)));
            }
            self.warnings.warn(format_args!(
                "net: dropped a {len}-byte frame from the backend (limit {MAX_FRAME_LEN})"
            ));
        }
    }

    /// Reads what the socket has into the buffer's free tail; `false` if it would block.
    fn fill(&mut self) -> Result<bool, BackendError> {
        if self.read_start == self.read_end {
            self.read_start = 0;
            self.read_end = 0;
        } else if self.read_start > 0 {
            self.read_buf.copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        loop {
            match self.stream.read(&mut self.read_buf[self.read_end..]) {
                Ok(0) => return Err(BackendError::Closed),
                Ok(n) => {
                    self.read_end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The send buffer [`large_send_buffer`] asks for.
const SEND_BUFFER: usize = 8 << 20;

/// Gives `end` of a frame stream a [`SEND_BUFFER`]-byte send buffer, so that a burst of large
/// frames does not fill it at once (a peer such as passt drops frames it cannot write at once).
/// Beyond the system's `wmem_max` only with CAP_NET_ADMIN; otherwise the system's limit
/// stays, which is all a failure here costs.
pub fn large_send_buffer(end: &UnixStream) {
    let size = SEND_BUFFER as libc::c_int;
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: setsockopt reads `size` (an int) for the length given.
        let r = unsafe {
            libc::setsockopt(
                end.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// `IoSlice`s as the `iovec`s they are on Unix (the standard library guarantees the layout).
fn as_iovecs<'a>(slices: &'a [IoSlice<'_>]) -> &'a [libc::iovec] {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; same length, same lifetime.
    unsafe { std::slice::from_raw_parts(slices.as_ptr().cast(), slices.len()) }
}

impl FrameBackend for StreamBackend {
    fn send_frame(&mut self, pieces: &[IoSlice<'_>]) -> Result<Sent, BackendError> {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let len = u32::try_from(total)
            .ok()
            .filter(|&l| l > 0 && l as usize <= MAX_FRAME_LEN)
            .ok_or_else(|| {
                io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("cannot send a frame of {total} bytes"),
                )
            })?;
        if !self.flush()? {
            return Ok(Sent::WouldBlock);
        }
        let prefix = len.to_be_bytes();
        let mut iov = Vec::with_capacity(pieces.len() + 1);
        iov.push(IoSlice::new(&prefix));
        iov.extend(pieces.iter().map(|p| IoSlice::new(p)));
        if iov.len() > MAX_IOV {
            // More pieces than one writev takes: send the frame from one buffer.
            self.write_buf.clear();
            self.write_pos = 0;
            for piece in &iov {
                self.write_buf.extend_from_slice(piece);
            }
            self.flush()?;
            return Ok(Sent::Accepted);
        }
        // SAFETY: every iovec describes a buffer borrowed for the whole call.
        let written = match unsafe { send_vectored(&self.stream, as_iovecs(&iov)) } {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Sent::WouldBlock),
            Err(e) => return Err(e.into()),
        };
        if written < PREFIX_LEN + total {
            // Keep the unwritten rest; `flush` finishes it before the next frame starts.
            self.write_buf.clear();
            self.write_pos = 0;
            let mut skip = written;
            for piece in &iov {
                let start = skip.min(piece.len());
                skip -= start;
                self.write_buf.extend_from_slice(&piece[start..]);
            }
        }
        Ok(Sent::Accepted)
    }

    fn recv_frame(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        loop {
            if let Some((start, len)) = self.next_buffered()? {
                let room = buf.len();
                let dest = buf.get_mut(..len).ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::InvalidInput,
                        format!("a {len}-byte frame does not fit in {room} bytes"),
                    )
                })?;
                dest.copy_from_slice(&self.read_buf[start..start + len]);
                return Ok(Some(len));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn flush(&mut self) -> Result<bool, BackendError> {
        while self.write_pos < self.write_buf.len() {
            match NoSigPipe(&self.stream).write(&self.write_buf[self.write_pos..]) {
                Ok(0) => return Err(BackendError::Closed),
                Ok(n) => self.write_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        self.write_buf.clear();
        self.write_pos = 0;
        Ok(true)
    }
}

impl AsRawFd for StreamBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (StreamBackend, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (StreamBackend::from_stream(a).unwrap(), b)
    }

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    #[test]
    fn a_frame_trickling_in_is_returned_once_whole() {
        let (mut backend, mut peer) = pair();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let bytes = framed(b"0123456789abcdef");
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(backend.recv_frame(&mut buf).unwrap(), None, "byte {i}");
            peer.write_all(&[*b]).unwrap();
        }
        assert_eq!(backend.recv_frame(&mut buf).unwrap(), Some(16));
        assert_eq!(&buf[..16], b"0123456789abcdef");
        assert_eq!(backend.recv_frame(&mut buf).unwrap(), None);
    }

    #[test]
    fn several_frames_in_one_read_come_out_one_by_one() {
        let (mut backend, mut peer) = pair();
        let mut all = Vec::new();
        for i in 1..=5u8 {
            all.extend(framed(&vec![i; usize::from(i) * 100]));
        }
        peer.write_all(&all).unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        for i in 1..=5u8 {
            let len = backend.recv_frame(&mut buf).unwrap().unwrap();
            assert_eq!(len, usize::from(i) * 100);
            assert!(buf[..len].iter().all(|&b| b == i));
        }
        assert_eq!(backend.recv_frame(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_frame_within_the_slack_is_skipped_and_the_next_one_arrives() {
        let (mut backend, mut peer) = pair();
        let mut bytes = framed(&vec![7u8; MAX_FRAME_LEN + 1]);
        bytes.extend(framed(b"after"));
        let writer = std::thread::spawn(move || peer.write_all(&bytes).map(|()| peer));
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let len = loop {
            if let Some(len) = backend.recv_frame(&mut buf).unwrap() {
                break len;
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(&buf[..len], b"after");
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn zero_or_huge_lengths_and_eof_end_the_stream() {
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let (mut backend, mut peer) = pair();
        peer.write_all(&0u32.to_be_bytes()).unwrap();
        assert!(matches!(
            backend.recv_frame(&mut buf),
            Err(BackendError::FrameLength(0))
        ));
        let (mut backend, mut peer) = pair();
        let huge = (MAX_FRAME_LEN + PEER_FRAME_SLACK + 1) as u32;
        peer.write_all(&huge.to_be_bytes()).unwrap();
        assert!(matches!(
            backend.recv_frame(&mut buf),
            Err(BackendError::FrameLength(n)) if n == huge
        ));
        let (mut backend, peer) = pair();
        drop(peer);
        assert!(matches!(
            backend.recv_frame(&mut buf),
            Err(BackendError::Closed)
        ));
    }

    #[test]
    fn partly_written_frames_are_finished_before_the_next_one_starts() {
        const FRAMES: usize = 2000;
        const SIZES: [usize; 5] = [MAX_FRAME_LEN, 40_000, 12_345, 777, 1];
        let frame = |i: usize| vec![i as u8; SIZES[i % SIZES.len()]];
        let (mut backend, mut peer) = pair();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut prefix = [0u8; PREFIX_LEN];
            for i in 0..FRAMES {
                peer.read_exact(&mut prefix).unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
                peer.read_exact(&mut body).unwrap();
                assert_eq!(body, frame(i), "frame {i}");
            }
        });
        let mut partial = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for i in 0..FRAMES {
            let f = frame(i);
            while backend.send_frame(&[IoSlice::new(&f)]).unwrap() == Sent::WouldBlock {
                assert!(std::time::Instant::now() < deadline, "stuck at frame {i}");
                std::thread::yield_now();
            }
            if backend.write_pos < backend.write_buf.len() {
                partial += 1;
            }
        }
        while !backend.flush().unwrap() {
            assert!(std::time::Instant::now() < deadline, "stuck flushing");
            std::thread::yield_now();
        }
        reader.join().unwrap();
        assert!(partial > 0, "no frame was ever written in part");
    }
}
