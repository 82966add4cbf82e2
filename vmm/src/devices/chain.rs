//! A descriptor chain seen as one byte stream: the guest may split a packet (header included)
//! over any number of descriptors, at any byte boundary. A chain with both directions (a
//! request and its reply) is two streams: the device-readable part, then the device-writable
//! one ([`SplitChain`]).

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::bitmap::BS;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError, Permissions, VolatileSlice};

/// Which descriptors a chain must consist of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Device reads: the TX queue (all descriptors device-readable).
    Read,
    /// Device writes: the RX queue (all descriptors device-writable).
    Write,
}

/// Why a chain cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("descriptor {index} of the chain has the wrong direction for this queue")]
    WrongDirection { index: usize },
    #[error("descriptor {index} of the chain is device-readable after a device-writable one")]
    ReadableAfterWritable { index: usize },
    #[error("chain is {have} bytes long, {need} needed")]
    TooShort { have: usize, need: usize },
    #[error("guest memory access at {addr:#x} (+{len}) failed: {reason}")]
    Memory {
        addr: u64,
        len: usize,
        reason: String,
    },
}

impl ChainError {
    fn memory(addr: GuestAddress, len: usize, e: GuestMemoryError) -> ChainError {
        ChainError::Memory {
            addr: addr.0,
            len,
            reason: e.to_string(),
        }
    }
}

/// The guest memory ranges of one descriptor chain, in chain order. Reused across chains so
/// the hot path does not allocate.
#[derive(Debug, Default)]
pub struct ChainBuffer {
    segments: Vec<(GuestAddress, usize)>,
    len: usize,
}

impl ChainBuffer {
    /// Collects the ranges of `chain`; every descriptor must allow `access`.
    pub fn load<M>(&mut self, chain: DescriptorChain<M>, access: Access) -> Result<(), ChainError>
    where
        M: Deref,
        M::Target: GuestMemory,
    {
        self.clear();
        for (index, desc) in chain.enumerate() {
            if desc.is_write_only() != (access == Access::Write) {
                return Err(ChainError::WrongDirection { index });
            }
            self.push(desc.addr(), desc.len());
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.segments.clear();
        self.len = 0;
    }

    fn push(&mut self, addr: GuestAddress, len: u32) {
        let len = len as usize;
        if len > 0 {
            self.segments.push((addr, len));
            self.len += len;
        }
    }

    /// Total number of bytes the chain covers.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The guest ranges holding bytes `offset..offset + len` of the stream, clipped to the
    /// chain's end.
    pub fn ranges(
        &self,
        offset: usize,
        len: usize,
    ) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
        let mut skip = offset;
        let mut left = len;
        self.segments.iter().filter_map(move |&(addr, seg_len)| {
            if left == 0 {
                return None;
            }
            if skip >= seg_len {
                skip -= seg_len;
                return None;
            }
            let start = skip;
            skip = 0;
            let take = (seg_len - start).min(left);
            left -= take;
            Some((GuestAddress(addr.0.wrapping_add(start as u64)), take))
        })
    }

    fn check_bounds(&self, offset: usize, len: usize) -> Result<(), ChainError> {
        let need = offset.saturating_add(len);
        if need > self.len {
            return Err(ChainError::TooShort {
                have: self.len,
                need,
            });
        }
        Ok(())
    }

    /// Bytes `offset..offset + len` of the stream as slices of mapped guest memory, in order
    /// (a guest range over two memory regions gives two).
    pub fn slices<'m, M: GuestMemory>(
        &self,
        mem: &'m M,
        offset: usize,
        len: usize,
        access: Permissions,
    ) -> Result<Vec<VolatileSlice<'m, BS<'m, M::Bitmap>>>, ChainError> {
        self.check_bounds(offset, len)?;
        let mut slices = Vec::with_capacity(self.segments.len());
        for (addr, len) in self.ranges(offset, len) {
            let memory = |e| ChainError::memory(addr, len, e);
            for slice in mem.get_slices(addr, len, access).map_err(memory)? {
                slices.push(slice.map_err(memory)?);
            }
        }
        Ok(slices)
    }

    /// Reads `buf.len()` bytes starting at stream offset `offset`.
    pub fn read_at<M: GuestMemory>(
        &self,
        mem: &M,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        self.check_bounds(offset, buf.len())?;
        let mut done = 0;
        for (addr, len) in self.ranges(offset, buf.len()) {
            mem.read_slice(&mut buf[done..done + len], addr)
                .map_err(|e| ChainError::memory(addr, len, e))?;
            done += len;
        }
        Ok(())
    }

    /// Writes `buf` starting at stream offset `offset`.
    pub fn write_at<M: GuestMemory>(
        &self,
        mem: &M,
        offset: usize,
        buf: &[u8],
    ) -> Result<(), ChainError> {
        self.check_bounds(offset, buf.len())?;
        let mut done = 0;
        for (addr, len) in self.ranges(offset, buf.len()) {
            mem.write_slice(&buf[done..done + len], addr)
                .map_err(|e| ChainError::memory(addr, len, e))?;
            done += len;
        }
        Ok(())
    }
}

/// A chain of device-readable descriptors followed by device-writable ones (the order the
/// virtio spec prescribes, 2.7.4.2), as two streams. Reused across chains.
#[derive(Debug, Default)]
pub struct SplitChain {
    pub readable: ChainBuffer,
    pub writable: ChainBuffer,
}

impl SplitChain {
    /// Collects the ranges of `chain` into its two parts. A device-readable descriptor after a
    /// device-writable one is refused, but only once the whole chain is collected, so the
    /// caller still finds the end of the writable part (where a reply's status goes).
    pub fn load<M>(&mut self, chain: DescriptorChain<M>) -> Result<(), ChainError>
    where
        M: Deref,
        M::Target: GuestMemory,
    {
        self.readable.clear();
        self.writable.clear();
        let mut writable_seen = false;
        let mut misplaced = None;
        for (index, desc) in chain.enumerate() {
            if desc.is_write_only() {
                writable_seen = true;
                self.writable.push(desc.addr(), desc.len());
            } else {
                if writable_seen {
                    misplaced.get_or_insert(index);
                }
                self.readable.push(desc.addr(), desc.len());
            }
        }
        match misplaced {
            Some(index) => Err(ChainError::ReadableAfterWritable { index }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(segments: &[(u64, usize)]) -> ChainBuffer {
        ChainBuffer {
            segments: segments
                .iter()
                .map(|&(a, l)| (GuestAddress(a), l))
                .collect(),
            len: segments.iter().map(|s| s.1).sum(),
        }
    }

    #[test]
    fn ranges_cross_segment_boundaries() {
        let b = buffer(&[(0x1000, 10), (0x2000, 30), (0x3000, 5)]);
        let r: Vec<_> = b.ranges(8, 30).collect();
        assert_eq!(
            r,
            vec![(GuestAddress(0x1008), 2), (GuestAddress(0x2000), 28)]
        );
        let r: Vec<_> = b.ranges(40, 100).collect();
        assert_eq!(r, vec![(GuestAddress(0x3000), 5)]);
        assert_eq!(b.ranges(45, 1).count(), 0);
    }

    #[test]
    fn reads_past_the_end_are_refused() {
        let mem =
            vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        let b = buffer(&[(0x1000, 10), (0x2000, 4)]);
        b.write_at(&mem, 8, &[1, 2, 3, 4]).unwrap();
        let mut out = [0u8; 4];
        b.read_at(&mem, 8, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x2000)).unwrap(), 0x0403);
        let mut big = [0u8; 8];
        assert_eq!(
            b.read_at(&mem, 8, &mut big),
            Err(ChainError::TooShort { have: 14, need: 16 })
        );
    }
}
