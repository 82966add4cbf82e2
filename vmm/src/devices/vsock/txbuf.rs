//! Bounded buffer for guest → host bytes that a connection's Unix socket could not take yet.

use std::io::{self, ErrorKind, Write};

use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

/// Bytes accepted from the guest and still owed to the host socket, in order.
/// Capacity is the credit the device advertises, so a guest that honours credit never
/// overflows it.
#[derive(Debug)]
pub struct TxBuf {
    data: Vec<u8>,
    start: usize,
    capacity: usize,
}

/// The guest sent more than the advertised credit allows.
#[derive(Debug, thiserror::Error)]
#[error("host-side buffer full: {pending} bytes pending, {incoming} more would exceed {capacity}")]
pub struct Overflow {
    pub pending: usize,
    pub incoming: usize,
    pub capacity: usize,
}

impl TxBuf {
    pub fn new(capacity: usize) -> TxBuf {
        TxBuf {
            data: Vec::new(),
            start: 0,
            capacity,
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a copy of `slice`.
    pub fn push<B: BitmapSlice>(&mut self, slice: &VolatileSlice<'_, B>) -> Result<(), Overflow> {
        let incoming = slice.len();
        if self.len() + incoming > self.capacity {
            return Err(Overflow {
                pending: self.len(),
                incoming,
                capacity: self.capacity,
            });
        }
        if self.start > 0 && self.start >= self.data.len() / 2 {
            self.data.drain(..self.start);
            self.start = 0;
        }
        let old = self.data.len();
        self.data.resize(old + incoming, 0);
        slice.copy_to(&mut self.data[old..]);
        Ok(())
    }

    /// Writes as much as the socket takes without blocking; returns the bytes written.
    pub fn flush<W: Write>(&mut self, out: &mut W) -> io::Result<usize> {
        let mut written = 0;
        while !self.is_empty() {
            match out.write(&self.data[self.start..]) {
                Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero)),
                Ok(n) => {
                    self.start += n;
                    written += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.is_empty() {
            self.data.clear();
            self.start = 0;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes, then reports WouldBlock.
    struct Limited {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn keeps_order_and_refuses_overflow() {
        let mut a = *b"hello world";
        let mut b = *b"0123456789";
        let mut buf = TxBuf::new(16);
        buf.push(&VolatileSlice::from(&mut a[..])).unwrap();
        assert!(buf.push(&VolatileSlice::from(&mut b[..])).is_err());
        let mut out = Limited {
            got: vec![],
            room: 5,
        };
        assert_eq!(buf.flush(&mut out).unwrap(), 5);
        assert_eq!(buf.len(), 6);
        buf.push(&VolatileSlice::from(&mut b[..])).unwrap();
        out.room = 100;
        assert_eq!(buf.flush(&mut out).unwrap(), 16);
        assert!(buf.is_empty());
        assert_eq!(out.got, b"hello world0123456789");
    }
}
