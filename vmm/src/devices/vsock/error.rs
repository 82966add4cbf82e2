//! Errors of the vsock device that reach its caller. Problems caused by the guest or by host
//! peers never surface here: they reset the affected connection instead.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is invalid (allowed: 3 ..= 4294967294)")]
    InvalidCid(u64),
    #[error("cannot listen on the vsock Unix socket {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("vsock event polling failed: {0}")]
    Epoll(io::Error),
    #[error("virtqueue {queue} access failed: {source}")]
    Queue {
        queue: &'static str,
        source: virtio_queue::Error,
    },
}

impl VsockError {
    pub(crate) fn queue(queue: &'static str) -> impl FnOnce(virtio_queue::Error) -> VsockError {
        move |source| VsockError::Queue { queue, source }
    }
}
