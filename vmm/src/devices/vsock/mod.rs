//! User-space virtio-vsock device, bridging guest stream sockets to host Unix sockets in
//! Firecracker's hybrid-vsock convention, written once and served two ways: in-process by
//! skiff's VMM through a virtio-mmio transport, and as a vhost-user backend (see
//! [`vhost_user`]) for QEMU's `vhost-user-vsock-device`.
//!
//! # Host side
//! One Unix socket path `U` per VM (given to [`VsockDevice::new`]):
//! - host-initiated: a process connects to `U` and writes `CONNECT <port>\n`; the device sends
//!   `REQUEST` to the guest and answers `OK <local_port>\n` once the guest accepts, or closes
//!   the stream if the guest resets;
//! - guest-initiated: a guest connection to CID 2 port `P` connects to `U_P`
//!   (e.g. `/run/x/vsock.sock_1024`); if that fails the guest gets `RST`.
//!
//! # Driving the device (any transport)
//! - Queues: 0 RX, 1 TX, 2 event (never used by this device); [`DEVICE_FEATURES`] is
//!   `VIRTIO_F_VERSION_1`; config space is the guest CID, u64 little endian
//!   ([`VsockDevice::config_space`] / [`VsockDevice::read_config`]).
//! - Register `device.as_raw_fd()` (one level-triggered epoll fd covering the listener and
//!   every connection) for readability in the outer event loop; when it fires call
//!   [`VsockDevice::handle_backend_events`], then [`VsockDevice::process_queues`].
//! - On a guest kick of RX or TX call [`VsockDevice::process_queues`].
//! - For each used ring reported changed in [`QueueActivity`], interrupt the guest when
//!   `queue.needs_notification(mem)` says so.
//!
//! # Limits
//! Guest packets carry at most [`MAX_TX_PAYLOAD`] bytes; the device advertises
//! [`CONN_BUF_ALLOC`] bytes of credit per connection and buffers at most that much per
//! connection when the host socket would block, so a guest that honours credit is slowed,
//! never dropped. Anything malformed (bad header fields, a length beyond the descriptors,
//! credit overrun) resets the connection it names (`RST` to the guest, host stream closed);
//! every descriptor chain goes back to the used ring.

mod connection;
mod device;
mod error;
mod handshake;
mod muxer;
mod packet;
mod txbuf;
pub mod vhost_user;

#[cfg(test)]
mod test_driver;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throughput;

pub use connection::{CONN_BUF_ALLOC, MAX_RX_PAYLOAD};
pub use device::{
    QueueActivity, VsockDevice, DEVICE_FEATURES, EVENT_QUEUE, NUM_QUEUES, QUEUE_MAX_SIZE, RX_QUEUE,
    TX_QUEUE, VIRTIO_ID_VSOCK,
};
pub use error::VsockError;
pub use muxer::{MAX_CONNECTIONS, MAX_TX_PAYLOAD};
