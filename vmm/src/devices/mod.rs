//! Emulated devices of skiff's VMM.
pub mod block;
pub(crate) mod chain;
pub mod cmos;
pub mod console;
pub mod i8042;
pub mod mmio;
pub mod net;
pub(crate) mod ratelimit;
pub mod serial;
pub(crate) mod socket;
#[cfg(test)]
pub(crate) mod test_drain;
#[cfg(test)]
pub(crate) mod test_ring;
pub mod vhost_user;
pub mod virtio;
pub mod virtio_block;
pub mod virtio_net;
pub mod virtio_vsock;
pub mod vsock;
