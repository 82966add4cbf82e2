//! The host side of the network device: anything that moves whole Ethernet frames without
//! blocking and offers one pollable fd ([`FrameBackend`]).

use std::io::{self, IoSlice};
use std::os::unix::io::AsRawFd;

/// Largest Ethernet frame (without the virtio header) the device moves in either direction.
pub const MAX_FRAME_LEN: usize = 65535;

/// What became of a frame handed to [`FrameBackend::send_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The backend took the whole frame (it may still hold part of it: see
    /// [`FrameBackend::flush`]).
    Accepted,
    /// The backend cannot take a frame now; nothing of it was taken. Offer it again once the
    /// fd is writable.
    WouldBlock,
}

/// Why a backend stopped working. The device stops using a backend that returned one.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer announced a frame of {0} bytes")]
    FrameLength(u32),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A source and sink of Ethernet frames, driven by the device without blocking.
///
/// The device polls [`AsRawFd::as_raw_fd`] for readability while it wants frames and for
/// writability while a frame waits for [`Sent::Accepted`] or [`FrameBackend::flush`] has
/// output left; readiness is level-triggered: each method must be called until it reports
/// that it would block.
pub trait FrameBackend: AsRawFd + Send {
    /// Offers one frame of 1 ..= [`MAX_FRAME_LEN`] bytes, gathered from `pieces` in order
    /// (the device hands over its guest buffers as they are, without copying them first).
    fn send_frame(&mut self, pieces: &[IoSlice<'_>]) -> Result<Sent, BackendError>;
    /// Copies the next frame into `buf` (at least [`MAX_FRAME_LEN`] bytes) and returns its
    /// length, or `None` when no whole frame has arrived yet.
    fn recv_frame(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError>;
    /// Writes out what accepted frames left buffered, without blocking; returns whether
    /// nothing is left.
    fn flush(&mut self) -> Result<bool, BackendError>;
}
