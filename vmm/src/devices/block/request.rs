//! One virtio-blk request read off its loaded chain (virtio 1.x, 5.2.6): the header's type and
//! sector, the length of its data, and every check that comes before the disk is touched.

use std::io;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::GuestMemory;

use crate::devices::chain::{ChainError, SplitChain};

/// The unit of the header's `sector` and of the capacity, whatever the block size.
pub const SECTOR_SIZE: u64 = 512;
/// `virtio_blk_outhdr`: type, reserved (ioprio), sector.
pub const HEADER_LEN: usize = 16;
/// Most data pieces (`seg_max`) in one request.
pub const SEG_MAX: u32 = 64;
/// Largest data piece (`size_max`).
pub const SIZE_MAX: u32 = 16 << 10;
/// Most data bytes in one read or write: all that `seg_max` pieces of `size_max` hold, 1 MiB.
///
/// Linux splits its requests to these limits (it sets no sector limit of its own beyond
/// `max_sectors_kb`, 1280 KiB by default): 256 KiB of page cache in 4 KiB pages fits in one
/// request, 1 MiB of contiguous memory does. A request of `SEG_MAX` pieces takes
/// `SEG_MAX + 2` descriptors with its header and status (no indirect descriptors are offered),
/// so a 1024-entry queue still holds 15 of the largest. One request takes well under a
/// millisecond from the page cache, which keeps the device thread responsive.
pub const MAX_REQUEST_LEN: usize = SEG_MAX as usize * SIZE_MAX as usize;

/// What the guest asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Flush,
    GetId,
}

/// Which part of the chain holds a request's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Readable,
    Writable,
}

impl Kind {
    fn from_type(request_type: u32) -> Result<Kind, RequestError> {
        match request_type {
            VIRTIO_BLK_T_IN => Ok(Kind::Read),
            VIRTIO_BLK_T_OUT => Ok(Kind::Write),
            VIRTIO_BLK_T_FLUSH => Ok(Kind::Flush),
            VIRTIO_BLK_T_GET_ID => Ok(Kind::GetId),
            other => Err(RequestError::Unsupported(other)),
        }
    }

    fn data_part(self) -> Option<Part> {
        match self {
            Kind::Read | Kind::GetId => Some(Part::Writable),
            Kind::Write => Some(Part::Readable),
            Kind::Flush => None,
        }
    }
}

/// Why a request fails; it completes with [`RequestError::status`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("{kind:?} request with {len} bytes of data in the wrong direction")]
    StrayData { kind: Kind, len: usize },
    #[error("{0} bytes of data are not whole {SECTOR_SIZE}-byte sectors")]
    PartialSector(usize),
    #[error("{0} bytes of data exceed the {MAX_REQUEST_LEN}-byte limit")]
    TooLarge(usize),
    #[error("data in {0} pieces, at most {SEG_MAX}")]
    TooManyPieces(usize),
    #[error("{len} bytes at sector {sector} are beyond the disk's {capacity} sectors")]
    OutOfRange {
        sector: u64,
        len: usize,
        capacity: u64,
    },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("disk I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl RequestError {
    /// The status byte the request completes with.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A request whose data fits its type, the limits and the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    /// Byte offset on the disk (reads and writes).
    pub offset: u64,
    /// Data bytes: after the header in the readable part (writes), at the start of the
    /// writable part (reads, GET_ID).
    pub len: usize,
}

impl Request {
    /// Reads the header of the loaded `chain`, whose writable part ends with the status byte,
    /// and checks the request against a disk of `capacity` sectors.
    pub fn parse<M: GuestMemory>(
        mem: &M,
        chain: &SplitChain,
        capacity: u64,
    ) -> Result<Request, RequestError> {
        let mut header = [0u8; HEADER_LEN];
        chain.readable.read_at(mem, 0, &mut header)?;
        let [t0, t1, t2, t3, _, _, _, _, sector @ ..] = header;
        let kind = Kind::from_type(u32::from_le_bytes([t0, t1, t2, t3]))?;
        let sector = u64::from_le_bytes(sector);
        let readable = chain.readable.len() - HEADER_LEN;
        let writable = chain.writable.len().saturating_sub(1);
        let (len, stray) = match kind.data_part() {
            Some(Part::Readable) => (readable, writable),
            Some(Part::Writable) => (writable, readable),
            None => (0, readable + writable),
        };
        if stray > 0 {
            return Err(RequestError::StrayData { kind, len: stray });
        }
        if !matches!(kind, Kind::Read | Kind::Write) {
            return Ok(Request {
                kind,
                offset: 0,
                len,
            });
        }
        if !(len as u64).is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::PartialSector(len));
        }
        if len > MAX_REQUEST_LEN {
            return Err(RequestError::TooLarge(len));
        }
        let pieces = match kind {
            Kind::Write => chain.readable.ranges(HEADER_LEN, len).count(),
            _ => chain.writable.ranges(0, len).count(),
        };
        if pieces > SEG_MAX as usize {
            return Err(RequestError::TooManyPieces(pieces));
        }
        let offset = sector.checked_mul(SECTOR_SIZE);
        let end = offset.and_then(|o| o.checked_add(len as u64));
        match (offset, end) {
            (Some(offset), Some(end)) if end <= capacity * SECTOR_SIZE => {
                Ok(Request { kind, offset, len })
            }
            _ => Err(RequestError::OutOfRange {
                sector,
                len,
                capacity,
            }),
        }
    }
}
