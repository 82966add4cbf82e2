//! Emulated devices of skiff's VMM.
pub mod cmos;
pub mod console;
pub mod i8042;
pub mod mmio;
pub mod serial;
pub mod virtio;
pub mod virtio_vsock;
pub mod vsock;
