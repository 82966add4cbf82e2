//! Register-level tests of the virtio-mmio transport against the virtio 1.x specification
//! (section 4.2.2 registers, 3.1 device initialization, 2.1 status, 2.5 config generation).

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{reg, status, MmioTransport, MAGIC, VENDOR_ID, VERSION};
use crate::bus::BusDevice;
use crate::devices::virtio::{ActivateError, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};

const DEVICE_TYPE: u32 = 19;
const FEATURE_A: u64 = 1 << 0;
const FEATURE_B: u64 = 1 << 3;
const CONFIG: [u8; 8] = [3, 0, 0, 0, 0, 0, 0, 0];

/// A queue as the device received it: size, descriptor table, driver area, device area.
type QueueSeen = (u16, u64, u64, u64);

/// What the transport did to the device.
#[derive(Default)]
struct Record {
    activated: Option<(u64, Vec<QueueSeen>)>,
    notified: Vec<u16>,
    resets: u32,
    interrupt: Option<Arc<VirtioInterrupt>>,
}

struct TestDevice(Arc<Mutex<Record>>);

impl VirtioDevice for TestDevice {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 128]
    }
    fn features(&self) -> u64 {
        FEATURE_A | FEATURE_B
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = CONFIG.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        let mut r = self.0.lock().unwrap();
        let qs = queues
            .iter()
            .map(|q| (q.size(), q.desc_table(), q.avail_ring(), q.used_ring()))
            .collect();
        r.activated = Some((features, qs));
        r.interrupt = Some(interrupt);
        Ok(())
    }
    fn queue_notify(&mut self, index: u16) {
        self.0.lock().unwrap().notified.push(index);
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().resets += 1;
    }
}

fn transport() -> (MmioTransport, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(Box::new(TestDevice(record.clone())), mem, irq).unwrap();
    (t, record)
}

fn read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn write(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
    write(t, reg::STATUS, status::ACKNOWLEDGE);
    write(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write(t, reg::DRIVER_FEATURES_SEL, 0);
    write(t, reg::DRIVER_FEATURES, features as u32);
    write(t, reg::DRIVER_FEATURES_SEL, 1);
    write(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    write(
        t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    read(t, reg::STATUS)
}

/// Programs queue `sel` with distinct addresses in guest memory and marks it ready.
fn setup_queue(t: &mut MmioTransport, sel: u32, size: u32) {
    let base = 0x1_0000 * u64::from(sel + 1);
    write(t, reg::QUEUE_SEL, sel);
    write(t, reg::QUEUE_NUM, size);
    write(t, reg::QUEUE_DESC_LOW, base as u32);
    write(t, reg::QUEUE_DESC_HIGH, 0);
    write(t, reg::QUEUE_DRIVER_LOW, (base + 0x4000) as u32);
    write(t, reg::QUEUE_DRIVER_HIGH, 0);
    write(t, reg::QUEUE_DEVICE_LOW, (base + 0x8000) as u32);
    write(t, reg::QUEUE_DEVICE_HIGH, 0);
    write(t, reg::QUEUE_READY, 1);
}

fn start(t: &mut MmioTransport) {
    assert_ne!(
        negotiate(t, VIRTIO_F_VERSION_1 | FEATURE_A) & status::FEATURES_OK,
        0
    );
    setup_queue(t, 0, 64);
    setup_queue(t, 1, 128);
    let s = read(t, reg::STATUS);
    write(t, reg::STATUS, s | status::DRIVER_OK);
}

#[test]
fn identity_registers() {
    let (mut t, _) = transport();
    assert_eq!(read(&mut t, reg::MAGIC), MAGIC);
    assert_eq!(read(&mut t, reg::MAGIC).to_le_bytes(), *b"virt");
    assert_eq!(read(&mut t, reg::VERSION), VERSION);
    assert_eq!(read(&mut t, reg::VERSION), 2);
    assert_eq!(read(&mut t, reg::DEVICE_ID), DEVICE_TYPE);
    assert_eq!(read(&mut t, reg::VENDOR_ID), VENDOR_ID);
    assert_eq!(read(&mut t, reg::SHM_LEN_LOW), u32::MAX, "no shared memory");
}

#[test]
fn device_features_are_paged_by_select_and_include_version_1() {
    let (mut t, _) = transport();
    write(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(
        read(&mut t, reg::DEVICE_FEATURES),
        (FEATURE_A | FEATURE_B) as u32
    );
    write(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        read(&mut t, reg::DEVICE_FEATURES),
        1,
        "VIRTIO_F_VERSION_1 is bit 32"
    );
    write(&mut t, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(read(&mut t, reg::DEVICE_FEATURES), 0);
}

#[test]
fn a_subset_of_offered_features_is_accepted() {
    let (mut t, _) = transport();
    let s = negotiate(&mut t, VIRTIO_F_VERSION_1 | FEATURE_B);
    assert_ne!(s & status::FEATURES_OK, 0);
}

#[test]
fn unsupported_feature_bits_are_refused() {
    let (mut t, _) = transport();
    let s = negotiate(&mut t, VIRTIO_F_VERSION_1 | FEATURE_A | (1 << 5));
    assert_eq!(s & status::FEATURES_OK, 0, "FEATURES_OK must not stick");
    assert_ne!(s & status::DRIVER, 0);
}

#[test]
fn a_legacy_driver_without_version_1_is_refused() {
    let (mut t, _) = transport();
    let s = negotiate(&mut t, FEATURE_A);
    assert_eq!(s & status::FEATURES_OK, 0);
}

#[test]
fn driver_features_are_frozen_after_features_ok() {
    let (mut t, record) = transport();
    start(&mut t);
    write(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    write(&mut t, reg::DRIVER_FEATURES, (FEATURE_A | FEATURE_B) as u32);
    let (features, _) = record.lock().unwrap().activated.clone().unwrap();
    assert_eq!(features, VIRTIO_F_VERSION_1 | FEATURE_A);
}

#[test]
fn queue_setup_reaches_the_device_on_driver_ok() {
    let (mut t, record) = transport();
    write(&mut t, reg::QUEUE_SEL, 0);
    assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 256);
    write(&mut t, reg::QUEUE_SEL, 1);
    assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 128);
    write(&mut t, reg::QUEUE_SEL, 2);
    assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 0, "no such queue");

    start(&mut t);
    assert!(t.is_active());
    assert_eq!(
        read(&mut t, reg::STATUS) & status::DRIVER_OK,
        status::DRIVER_OK
    );
    let (_, queues) = record.lock().unwrap().activated.clone().unwrap();
    assert_eq!(
        queues,
        vec![
            (64, 0x1_0000, 0x1_4000, 0x1_8000),
            (128, 0x2_0000, 0x2_4000, 0x2_8000)
        ]
    );
    write(&mut t, reg::QUEUE_SEL, 0);
    assert_eq!(read(&mut t, reg::QUEUE_READY), 1);
}

#[test]
fn invalid_queue_sizes_are_ignored() {
    let (mut t, record) = transport();
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    setup_queue(&mut t, 0, 100); // not a power of two
    setup_queue(&mut t, 1, 512); // above the maximum
    let s = read(&mut t, reg::STATUS);
    write(&mut t, reg::STATUS, s | status::DRIVER_OK);
    let (_, queues) = record.lock().unwrap().activated.clone().unwrap();
    assert_eq!(
        (queues[0].0, queues[1].0),
        (256, 128),
        "sizes stay at the maximum"
    );
}

#[test]
fn driver_ok_with_a_queue_not_ready_needs_reset() {
    let (mut t, record) = transport();
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    setup_queue(&mut t, 0, 64);
    let s = read(&mut t, reg::STATUS);
    write(&mut t, reg::STATUS, s | status::DRIVER_OK);
    assert!(!t.is_active());
    assert!(record.lock().unwrap().activated.is_none());
    assert_ne!(read(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(
        read(&mut t, reg::INTERRUPT_STATUS) & 2,
        2,
        "config change raised"
    );
}

#[test]
fn writing_zero_to_status_resets_the_device() {
    let (mut t, record) = transport();
    start(&mut t);
    write(&mut t, reg::STATUS, 0);
    assert_eq!(read(&mut t, reg::STATUS), 0);
    assert!(!t.is_active());
    assert_eq!(record.lock().unwrap().resets, 1);
    write(&mut t, reg::QUEUE_SEL, 0);
    assert_eq!(read(&mut t, reg::QUEUE_READY), 0);
    // The device can be started again after a reset.
    start(&mut t);
    assert!(t.is_active());
}

#[test]
fn interrupt_status_and_ack() {
    let (mut t, record) = transport();
    start(&mut t);
    let interrupt = record.lock().unwrap().interrupt.clone().unwrap();
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 0);
    interrupt.signal_used_queue();
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 1);
    assert_eq!(t.interrupt().irqfd().read().unwrap(), 1, "irqfd raised");
    write(&mut t, reg::INTERRUPT_ACK, 1);
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 0);
}

#[test]
fn config_space_and_generation() {
    let (mut t, _) = transport();
    let mut b = [0u8; 1];
    t.read(reg::CONFIG, &mut b);
    assert_eq!(b[0], 3);
    let mut wide = [0xffu8; 8];
    t.read(reg::CONFIG, &mut wide);
    assert_eq!(wide, CONFIG);
    let g1 = read(&mut t, reg::CONFIG_GENERATION);
    assert_eq!(
        read(&mut t, reg::CONFIG_GENERATION),
        g1,
        "stable while unchanged"
    );
    t.interrupt().signal_config_change();
    assert_ne!(read(&mut t, reg::CONFIG_GENERATION), g1);
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 2);
}

#[test]
fn queue_notify_reaches_an_active_device_only() {
    let (mut t, record) = transport();
    write(&mut t, reg::QUEUE_NOTIFY, 0);
    assert!(record.lock().unwrap().notified.is_empty());
    start(&mut t);
    write(&mut t, reg::QUEUE_NOTIFY, 1);
    write(&mut t, reg::QUEUE_NOTIFY, 7); // no such queue
    assert_eq!(record.lock().unwrap().notified, vec![1]);
    assert_eq!(t.queue_events().len(), 2);
}

#[test]
fn queue_registers_are_read_only_once_running() {
    let (mut t, record) = transport();
    start(&mut t);
    write(&mut t, reg::QUEUE_SEL, 0);
    write(&mut t, reg::QUEUE_READY, 0);
    assert_eq!(read(&mut t, reg::QUEUE_READY), 1);
    assert!(record.lock().unwrap().activated.is_some());
}
