//! The virtio-vsock device core ([`super::vsock`]) as a [`VirtioDevice`] behind skiff's own
//! virtio-mmio transport: queue kicks and backend readiness run the queues, and used rings
//! interrupt the guest when the ring's notification suppression allows it.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::virtio::{ActivateError, ActiveQueues, VirtioDevice, VirtioInterrupt};
use super::vsock::{
    VsockDevice, DEVICE_FEATURES, NUM_QUEUES, QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE, VIRTIO_ID_VSOCK,
};

// The queue order of the virtio spec (5.10.2), which `process` relies on.
const _: () = assert!(RX_QUEUE == 0 && TX_QUEUE == 1);

/// virtio-vsock for the in-process VMM.
pub struct VirtioVsock {
    device: VsockDevice,
    max_sizes: [u16; NUM_QUEUES],
    active: Option<ActiveQueues>,
}

impl VirtioVsock {
    pub fn new(device: VsockDevice) -> Self {
        VirtioVsock {
            device,
            max_sizes: [QUEUE_MAX_SIZE; NUM_QUEUES],
            active: None,
        }
    }

    fn process(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some((mem, rx, tx)) = active.rx_tx() else {
            return;
        };
        let activity = match self.device.process_queues(mem, rx, tx) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("vsock: queue processing failed: {e}");
                return;
            }
        };
        active.signal_used(&[activity.rx_used, activity.tx_used]);
    }
}

impl VirtioDevice for VirtioVsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn features(&self) -> u64 {
        DEVICE_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.device.read_config(offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.active = Some(ActiveQueues::new(
            "vsock", NUM_QUEUES, mem, features, queues, interrupt,
        )?);
        // Host connections may already be waiting.
        self.device.handle_backend_events();
        self.process();
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if matches!(usize::from(index), i if i == RX_QUEUE || i == TX_QUEUE) {
            self.process();
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.device.as_raw_fd())
    }

    fn backend_ready(&mut self) {
        self.device.handle_backend_events();
        self.process();
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
