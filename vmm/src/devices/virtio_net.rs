//! The virtio-net device core ([`super::net`]) as a [`VirtioDevice`] behind skiff's own
//! virtio-mmio transport: queue kicks and backend readiness run the queues, used rings
//! interrupt the guest when the ring's notification suppression allows it, and a link that
//! went down is announced as a config change.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::net::{
    NetDevice, DEVICE_FEATURES, NUM_QUEUES, QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE, VIRTIO_ID_NET,
};
use super::virtio::{ActivateError, ActiveQueues, VirtioDevice, VirtioInterrupt};

// The queue order of the virtio spec (5.1.2), which `process` relies on.
const _: () = assert!(RX_QUEUE == 0 && TX_QUEUE == 1);

/// virtio-net for the in-process VMM.
pub struct VirtioNet {
    device: NetDevice,
    max_sizes: [u16; NUM_QUEUES],
    active: Option<ActiveQueues>,
}

impl VirtioNet {
    pub fn new(device: NetDevice) -> Self {
        VirtioNet {
            device,
            max_sizes: [QUEUE_MAX_SIZE; NUM_QUEUES],
            active: None,
        }
    }

    fn process(&mut self, link_changed: bool) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some((mem, rx, tx)) = active.rx_tx() else {
            return;
        };
        let activity = match self.device.process_queues(mem, rx, tx) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("net: queue processing failed: {e}");
                return;
            }
        };
        active.signal_used(&[activity.rx_used, activity.tx_used]);
        if link_changed || activity.link_changed {
            active.interrupt.signal_config_change();
        }
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
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
            "net", NUM_QUEUES, mem, features, queues, interrupt,
        )?);
        // Frames may already be waiting.
        let link_changed = self.device.handle_backend_events();
        self.process(link_changed);
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if matches!(usize::from(index), i if i == RX_QUEUE || i == TX_QUEUE) {
            self.process(false);
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.device.as_raw_fd())
    }

    fn backend_ready(&mut self) {
        let link_changed = self.device.handle_backend_events();
        self.process(link_changed);
    }

    fn reset(&mut self) {
        self.active = None;
        self.device.reset();
    }
}
