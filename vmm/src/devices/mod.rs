//! Emulated devices of skiff's VMM.
pub mod vsock;
pub mod console;
pub mod i8042;
pub mod mmio;
pub mod serial;
pub mod virtio;
