//! User-space virtio-net device: Ethernet frames between the guest's RX/TX virtqueues and a
//! [`FrameBackend`], the first of which is a Unix stream socket in QEMU's `-netdev stream`
//! framing ([`StreamBackend`], what `passt --socket` speaks).
//!
//! # Driving the device (any transport)
//! - Queues: 0 RX, 1 TX, no control queue; [`DEVICE_FEATURES`] is `VIRTIO_F_VERSION_1`,
//!   `VIRTIO_NET_F_MAC`, `VIRTIO_NET_F_MTU` and `VIRTIO_NET_F_STATUS`, no offloads, so the
//!   12-byte `virtio_net_hdr_v1` is ignored on TX and all zero on RX but `num_buffers` = 1;
//!   config space is the MAC, the link status, one queue pair and the MTU
//!   ([`NetDevice::read_config`]).
//! - Register `device.as_raw_fd()` (one level-triggered epoll fd, armed for what the device
//!   waits for) for readability in the outer event loop; when it fires call
//!   [`NetDevice::handle_backend_events`], then [`NetDevice::process_queues`].
//! - On a guest kick of RX or TX call [`NetDevice::process_queues`].
//! - For each used ring reported changed in [`NetActivity`], interrupt the guest when
//!   `queue.needs_notification(mem)` says so; for `link_changed`, signal a config change.
//!
//! # Limits
//! Frames are 14 ..= [`MAX_FRAME_LEN`] bytes. A malformed TX chain (a device-writable
//! descriptor, shorter than the header, a frame out of bounds, memory the guest does not
//! have) is completed with length 0 and dropped; an RX chain that is not device-writable or
//! too small for the frame is completed with length 0 and the frame dropped. Warnings about
//! either are rate-limited.

mod backend;
mod device;
mod error;
mod stream;

#[cfg(test)]
mod test_driver;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throughput;

pub use backend::{BackendError, FrameBackend, Sent, MAX_FRAME_LEN};
pub use device::{
    NetActivity, NetDevice, CONFIG_LEN, DEVICE_FEATURES, MAX_MTU, MIN_MTU, NET_HDR_LEN, NUM_QUEUES,
    QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE, VIRTIO_ID_NET,
};
pub use error::NetError;
pub use stream::{large_send_buffer, StreamBackend, PEER_FRAME_SLACK};
