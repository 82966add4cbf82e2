//! User-space virtio-blk device: one disk (a host file or block device) behind the guest's
//! request queue, read and written with positioned vectored I/O straight between the disk and
//! guest memory.
//!
//! # Driving the device (any transport)
//! - One request queue (0). [`BlockDevice::features`] is `VIRTIO_F_VERSION_1`,
//!   `VIRTIO_BLK_F_SEG_MAX`, `VIRTIO_BLK_F_SIZE_MAX`, `VIRTIO_BLK_F_BLK_SIZE`,
//!   `VIRTIO_BLK_F_FLUSH` and, for a read-only disk, `VIRTIO_BLK_F_RO`; the config space is
//!   the capacity (512-byte sectors), `size_max`, `seg_max` and `blk_size`
//!   ([`BlockDevice::read_config`]).
//! - On a guest kick call [`BlockDevice::process_queue`]; when it reports that the used ring
//!   changed, interrupt the guest if `queue.needs_notification(mem)` says so.
//!
//! Requests run synchronously, one after the other, on the caller's thread; the page cache
//! makes most of them memory copies.
//!
//! # Requests
//! IN (read), OUT (write), FLUSH (`fdatasync`) and GET_ID (the disk's serial, NUL-padded to
//! 20 bytes); any other type completes with `VIRTIO_BLK_S_UNSUPP`. The chain is read as the
//! spec frames it, not by descriptor: a 16-byte header and the data of a write in its
//! device-readable part, then the data of a read or GET_ID and the status byte (its last
//! byte) in its device-writable part, split into descriptors at any byte boundary.
//!
//! # Limits
//! Read and write data is at most [`MAX_REQUEST_LEN`] bytes (1 MiB) in at most [`SEG_MAX`]
//! pieces: the most a driver honouring `seg_max` × `size_max` can send. Larger requests, data
//! that is not whole sectors, sectors beyond the capacity (or whose byte offset overflows),
//! writes to a read-only disk, data in the wrong direction for the type, a header shorter than
//! 16 bytes, a device-readable descriptor after a device-writable one, memory the guest does
//! not have, and failed host I/O all complete with `VIRTIO_BLK_S_IOERR`. A chain with no
//! device-writable byte for the status, or whose status byte is not guest memory, completes
//! with used length 0. Warnings about any of these are rate-limited.

mod device;
mod error;
mod file;
mod request;

#[cfg(test)]
mod test_driver;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throughput;

pub use device::{
    BlockDevice, BLK_SIZE, CONFIG_LEN, ID_LEN, NUM_QUEUES, QUEUE_MAX_SIZE, REQUEST_QUEUE,
    VIRTIO_ID_BLOCK,
};
pub use error::BlockError;
pub use request::{HEADER_LEN, MAX_REQUEST_LEN, SECTOR_SIZE, SEG_MAX, SIZE_MAX};
