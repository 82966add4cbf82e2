//! Errors of the block device that reach its caller. A request that fails (malformed by the
//! guest, or refused by the host's file) never surfaces here: it completes with an error
//! status.

use std::io;

use super::device::ID_LEN;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk serial {0:?} is longer than {ID_LEN} bytes")]
    SerialTooLong(String),
    #[error("cannot use the disk file: {0}")]
    File(io::Error),
    #[error("virtqueue access failed: {0}")]
    Queue(#[from] virtio_queue::Error),
}
