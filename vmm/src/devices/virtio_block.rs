//! The virtio-blk device core ([`super::block`]) as a [`VirtioDevice`] behind skiff's own
//! virtio-mmio transport: a kick of the request queue runs its requests, and the used ring
//! interrupts the guest when the ring's notification suppression allows it.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::block::{BlockDevice, NUM_QUEUES, QUEUE_MAX_SIZE, REQUEST_QUEUE, VIRTIO_ID_BLOCK};
use super::virtio::{ActivateError, ActiveQueues, VirtioDevice, VirtioInterrupt};

// `process` runs the first queue.
const _: () = assert!(REQUEST_QUEUE == 0);

/// virtio-blk for the in-process VMM.
pub struct VirtioBlock {
    device: BlockDevice,
    max_sizes: [u16; NUM_QUEUES],
    active: Option<ActiveQueues>,
}

impl VirtioBlock {
    pub fn new(device: BlockDevice) -> Self {
        VirtioBlock {
            device,
            max_sizes: [QUEUE_MAX_SIZE; NUM_QUEUES],
            active: None,
        }
    }

    fn process(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some((mem, queue)) = active.first() else {
            return;
        };
        match self.device.process_queue(mem, queue) {
            Ok(used) => active.signal_used(&[used]),
            Err(e) => tracing::warn!("block: queue processing failed: {e}"),
        }
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn features(&self) -> u64 {
        self.device.features()
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
            "block", NUM_QUEUES, mem, features, queues, interrupt,
        )?);
        // Requests may already be waiting.
        self.process();
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if usize::from(index) == REQUEST_QUEUE {
            self.process();
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
