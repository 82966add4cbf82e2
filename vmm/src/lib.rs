//! skiff's virtual machine monitor library.
pub mod boot;
pub mod bus;
pub mod devices;
pub mod hypervisor;
pub mod memory;
