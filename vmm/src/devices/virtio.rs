//! The interface between the virtio-mmio transport and a virtio device model, and the
//! interrupt a device raises through the transport.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// `VIRTIO_F_VERSION_1`: the only feature the transport itself requires.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Interrupt status bit: a used ring was updated.
pub const INT_USED_RING: u32 = 1;
/// Interrupt status bit: the configuration space changed.
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt line: the status bits the driver reads and acks, and the irqfd
/// that raises the line.
pub struct VirtioInterrupt {
    status: AtomicU32,
    config_generation: AtomicU32,
    irqfd: EventFd,
}

impl VirtioInterrupt {
    pub fn new(irqfd: EventFd) -> Self {
        VirtioInterrupt {
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            irqfd,
        }
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            tracing::warn!("cannot raise virtio interrupt: {e}");
        }
    }

    /// Tells the driver that a used ring has new entries.
    pub fn signal_used_queue(&self) {
        self.raise(INT_USED_RING);
    }

    /// Tells the driver that the configuration space (or the device status) changed; a new
    /// configuration generation lets it notice a torn read.
    pub fn signal_config_change(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(INT_CONFIG);
    }

    /// The configuration generation the driver reads around config space accesses.
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// The pending status bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears every bit (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The eventfd behind the line, to register as an irqfd.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// Copies `data.len()` bytes of the config space `config` from `offset`; bytes past its end
/// read as zero (a driver may read any width anywhere).
pub fn read_config_space(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o).copied())
            .unwrap_or(0);
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
#[error("virtio device activation failed: {0}")]
pub struct ActivateError(pub String);

/// A virtio device model behind the virtio-mmio transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (e.g. 19 for vsock).
    fn device_type(&self) -> u32;
    /// The maximum size of each of the device's queues; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers (the transport adds `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space at `offset`; bytes beyond it read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Starts the device with the driver-accepted `features` and its ready queues.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError>;
    /// The driver notified queue `index` (after activation).
    fn queue_notify(&mut self, index: u16);
    /// A file descriptor the event loop polls for readability once the device is active;
    /// `backend_ready` runs when it fires.
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }
    /// The backend file descriptor is ready.
    fn backend_ready(&mut self) {}
    /// The driver reset the device: drop the queues and every connection.
    fn reset(&mut self);
}

/// The queues, memory and interrupt of a started device, in the spec's queue order.
pub struct ActiveQueues {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub interrupt: Arc<VirtioInterrupt>,
}

impl ActiveQueues {
    /// Takes what `activate` got, checking the device `name` got the `want` queues it has.
    pub fn new(
        name: &str,
        want: usize,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<ActiveQueues, ActivateError> {
        if queues.len() != want {
            return Err(ActivateError(format!(
                "{name} needs {want} queues, got {}",
                queues.len()
            )));
        }
        tracing::debug!("{name}: activated with features {features:#x}");
        Ok(ActiveQueues {
            mem,
            queues,
            interrupt,
        })
    }

    /// The RX and TX queues of a device with one RX/TX pair (vsock, net): queues 0 and 1.
    pub fn rx_tx(&mut self) -> Option<(&GuestMemoryMmap, &mut Queue, &mut Queue)> {
        match self.queues.as_mut_slice() {
            [rx, tx, ..] => Some((&self.mem, rx, tx)),
            _ => None,
        }
    }

    /// The first queue, for a device with one (block).
    pub fn first(&mut self) -> Option<(&GuestMemoryMmap, &mut Queue)> {
        let queue = self.queues.first_mut()?;
        Some((&self.mem, queue))
    }

    /// Interrupts the guest once if a used ring that changed (`used[i]` for queue `i`) asks
    /// for it, as the ring's notification suppression allows.
    pub fn signal_used(&mut self, used: &[bool]) {
        let mut notify = false;
        for (&used, queue) in used.iter().zip(&mut self.queues) {
            // Every changed ring is asked (with event-idx, asking records what was signalled).
            if used {
                notify |= queue.needs_notification(&self.mem).unwrap_or(true);
            }
        }
        if notify {
            self.interrupt.signal_used_queue();
        }
    }
}
