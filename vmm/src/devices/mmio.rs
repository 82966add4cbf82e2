//! The virtio-mmio transport, version 2 (virtio 1.x, section 4.2): the register file the
//! driver programs, feature negotiation, queue setup, device status and reset, interrupt
//! status/ack, and the device-specific configuration space, over any [`VirtioDevice`].

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::virtio::{VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::bus::{BusDevice, VmRequest};

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The non-legacy register layout.
pub const VERSION: u32 = 2;
/// Vendor id reported to the driver ("SKIF").
pub const VENDOR_ID: u32 = 0x4649_4b53;

/// Register offsets (virtio 1.x, 4.2.2).
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// What the driver programmed for one queue.
#[derive(Debug, Clone, Copy, Default)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            ..Default::default()
        }
    }

    fn build(&self, mem: &GuestMemoryMmap) -> Result<Queue, String> {
        let mut q = Queue::new(self.max_size).map_err(|e| e.to_string())?;
        q.set_size(self.size);
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(self.desc);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.driver);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.device);
        q.set_used_ring_address(lo, hi);
        q.set_ready(true);
        if q.is_valid(mem) {
            Ok(q)
        } else {
            Err(format!(
                "queue of size {} at desc {:#x} avail {:#x} used {:#x} is not valid",
                self.size, self.desc, self.driver, self.device
            ))
        }
    }
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

/// A virtio device behind the virtio-mmio register file.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<QueueConfig>,
    queue_events: Vec<EventFd>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    active: bool,
}

impl MmioTransport {
    /// Wraps `device`; its interrupt goes to `irqfd`. Creates one notification eventfd per queue.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irqfd: EventFd,
    ) -> std::io::Result<Self> {
        let queues: Vec<QueueConfig> = device
            .queue_max_sizes()
            .iter()
            .map(|m| QueueConfig::new(*m))
            .collect();
        let queue_events = queues
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<_>>()?;
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(VirtioInterrupt::new(irqfd)),
            queues,
            queue_events,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            active: false,
        })
    }

    /// The per-queue eventfds a guest write of the queue's index to `QueueNotify` signals
    /// (to register as ioeventfds with datamatch = index, and to poll).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The device's interrupt (its eventfd is to be registered as an irqfd).
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device's backend fd, polled by the event loop.
    pub fn backend_fd(&self) -> Option<std::os::unix::io::RawFd> {
        self.device.backend_fd()
    }

    /// Whether the driver has started the device.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Queue `index` was notified (through its eventfd or a trapped register write).
    pub fn notify(&mut self, index: u16) {
        if self.active && usize::from(index) < self.queues.len() {
            self.device.queue_notify(index);
        }
    }

    /// The backend fd became readable.
    pub fn backend_ready(&mut self) {
        if self.active {
            self.device.backend_ready();
        }
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.status = 0;
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt.clear();
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            // No shared memory regions: a length of all ones means "absent".
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                tracing::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let configurable = !self.active && self.status & status::FEATURES_OK != 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => set_low(&mut self.driver_features, value),
                    1 => set_high(&mut self.driver_features, value),
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM if configurable => {
                if let Some(q) = self.selected_queue() {
                    // A size must be a power of two no larger than the maximum.
                    if value.is_power_of_two() && value <= u32::from(q.max_size) {
                        q.size = value as u16;
                    }
                }
            }
            reg::QUEUE_READY if configurable => {
                if let Some(q) = self.selected_queue() {
                    q.ready = value == 1;
                }
            }
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
                if configurable =>
            {
                if let Some(q) = self.selected_queue() {
                    if !q.ready {
                        let field = match offset & !0xf {
                            reg::QUEUE_DESC_LOW => &mut q.desc,
                            reg::QUEUE_DRIVER_LOW => &mut q.driver,
                            _ => &mut q.device,
                        };
                        if offset & 0x4 == 0 {
                            set_low(field, value);
                        } else {
                            set_high(field, value);
                        }
                    }
                }
            }
            reg::QUEUE_NOTIFY => {
                if let Ok(index) = u16::try_from(value) {
                    self.notify(index);
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            _ => tracing::debug!("virtio-mmio: ignored write of {value:#x} to {offset:#x}"),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        let newly = value & !self.status;
        if newly & status::FEATURES_OK != 0 {
            let unsupported = self.driver_features & !self.device_features();
            if unsupported != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                tracing::debug!(
                    "virtio-mmio: refusing features {:#x} (unsupported {unsupported:#x})",
                    self.driver_features
                );
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value;
        if newly & status::DRIVER_OK != 0 && !self.active {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & status::FEATURES_OK == 0 {
            self.fail("DRIVER_OK without FEATURES_OK".to_string());
            return;
        }
        let queues: Result<Vec<Queue>, String> = self
            .queues
            .iter()
            .map(|q| {
                if q.ready {
                    q.build(&self.mem)
                } else {
                    Err("a queue is not ready".to_string())
                }
            })
            .collect();
        let result = queues.and_then(|queues| {
            self.device
                .activate(
                    self.mem.clone(),
                    self.driver_features,
                    queues,
                    self.interrupt.clone(),
                )
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => self.active = true,
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, why: String) {
        tracing::warn!(
            "virtio-mmio: device type {} cannot start: {why}",
            self.device.device_type()
        );
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt.signal_config_change();
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
        } else if data.len() == 4 {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmRequest> {
        if offset >= reg::CONFIG {
            tracing::debug!("virtio-mmio: ignored config write at {offset:#x}");
        } else if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        }
        None
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
