//! skiff's virtual machine monitor library.
pub mod boot;
pub mod bus;
pub mod devices;
pub mod event_loop;
pub mod hypervisor;
pub mod memory;
pub mod probe;
pub mod stop;
pub mod tiny_guest;
pub mod vm;
pub mod vmm;

pub use probe::{guest_code_runs_natively, ProbeResult};
pub use stop::StopHandle;
pub use vm::{ResetCause, VmExit};
pub use vmm::{run_vm, DiskConfig, NetConfig, SerialOutput, ShareConfig, VmConfig, VmmError};
