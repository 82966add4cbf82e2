//! Errors of the network device that reach its caller. Malformed guest chains and a failing
//! backend never surface here: the chain is dropped, or the link goes down.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("MTU {0} is outside {min} ..= {max}", min = super::MIN_MTU, max = super::MAX_MTU)]
    InvalidMtu(u16),
    #[error("cannot use the network backend's socket: {0}")]
    Socket(io::Error),
    #[error("network backend polling failed: {0}")]
    Epoll(io::Error),
    #[error("virtqueue {queue} access failed: {source}")]
    Queue {
        queue: &'static str,
        source: virtio_queue::Error,
    },
}

impl NetError {
    pub(crate) fn queue(queue: &'static str) -> impl FnOnce(virtio_queue::Error) -> NetError {
        move |source| NetError::Queue { queue, source }
    }
}
