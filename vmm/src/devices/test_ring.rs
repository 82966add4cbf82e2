//! Test-only driver side of a split virtqueue: lays out the descriptor table and rings in guest
//! memory, offers descriptor chains the way a guest kernel would and reads the used ring back.
//! (virtio-queue 0.18's `MockSplitQueue` places the used ring inside the upper half of the
//! available ring — `SplitQueueRing::end` adds an element count, not bytes — so queues that
//! cycle through more than half their slots need this layout of their own.)

use std::collections::HashMap;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// Size of every test queue.
pub const QUEUE_SIZE: u16 = 256;

/// The driver side of one split queue.
pub struct Ring {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    avail_idx: u16,
    used_seen: u16,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<(u16, GuestAddress, u32)>>,
}

impl Ring {
    /// Lays the queue out at `base`: descriptor table, available ring, used ring (4-aligned).
    pub fn new(mem: &GuestMemoryMmap, base: u64) -> (Ring, Queue) {
        let size = u64::from(QUEUE_SIZE);
        let desc = base;
        let avail = desc + 16 * size;
        let used = (avail + 6 + 2 * size + 3) & !3;
        let zeros = vec![0u8; (used + 6 + 8 * size - base) as usize];
        mem.write_slice(&zeros, GuestAddress(base)).unwrap();
        let mut queue = Queue::new(QUEUE_SIZE).unwrap();
        queue.set_size(QUEUE_SIZE);
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(desc);
        queue.set_desc_table_address(lo, hi);
        let (lo, hi) = split(avail);
        queue.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(used);
        queue.set_used_ring_address(lo, hi);
        queue.set_ready(true);
        assert!(queue.is_valid(mem));
        let ring = Ring {
            desc: GuestAddress(desc),
            avail: GuestAddress(avail),
            used: GuestAddress(used),
            avail_idx: 0,
            used_seen: 0,
            free: (0..QUEUE_SIZE).rev().collect(),
            chains: HashMap::new(),
        };
        (ring, queue)
    }

    /// Writes a chain of descriptors over `segs`, all device-writable or all device-readable,
    /// and makes it available; returns the head.
    pub fn offer(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
        writable: bool,
    ) -> u16 {
        let descs: Vec<_> = segs.iter().map(|&(a, l)| (a, l, writable)).collect();
        self.offer_descriptors(mem, &descs)
    }

    /// Writes a chain of descriptors (address, length, device-writable) and makes it
    /// available; returns the head.
    pub fn offer_descriptors(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[(GuestAddress, u32, bool)],
    ) -> u16 {
        assert!(self.free.len() >= descs.len(), "descriptor table full");
        let idx: Vec<u16> = (0..descs.len()).map(|_| self.free.pop().unwrap()).collect();
        for (i, &(addr, len, writable)) in descs.iter().enumerate() {
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let next = if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
                idx[i + 1]
            } else {
                0
            };
            let d = RawDescriptor::from(SplitDescriptor::new(addr.0, len, flags, next));
            mem.write_obj(d, self.desc.unchecked_add(16 * u64::from(idx[i])))
                .unwrap();
        }
        let head = idx[0];
        self.chains.insert(
            head,
            idx.iter()
                .zip(descs)
                .map(|(&i, &(a, l, _))| (i, a, l))
                .collect(),
        );
        let slot = 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        mem.write_obj(head, self.avail.unchecked_add(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, self.avail.unchecked_add(2))
            .unwrap();
        head
    }

    /// Used entries since the last call: (segments of the chain, used length).
    pub fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(Vec<(GuestAddress, u32)>, u32)> {
        let used_idx: u16 = mem.read_obj(self.used.unchecked_add(2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != used_idx {
            let at = self
                .used
                .unchecked_add(4 + 8 * u64::from(self.used_seen % QUEUE_SIZE));
            let id: u32 = mem.read_obj(at).unwrap();
            let len: u32 = mem.read_obj(at.unchecked_add(4)).unwrap();
            let chain = self
                .chains
                .remove(&(id as u16))
                .unwrap_or_else(|| panic!("used id {id} (len {len}) is not an offered chain head"));
            self.free.extend(chain.iter().map(|c| c.0));
            out.push((chain.iter().map(|c| (c.1, c.2)).collect(), len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    /// The descriptor table, available ring and used ring, as a driver tells the transport.
    pub fn areas(&self) -> [GuestAddress; 3] {
        [self.desc, self.avail, self.used]
    }

    pub fn in_flight(&self) -> usize {
        self.chains.len()
    }
}

/// Reads a 32-bit register of a virtio-mmio transport, as a driver does.
pub fn reg_read(t: &mut crate::devices::mmio::MmioTransport, offset: u64) -> u32 {
    use crate::bus::BusDevice;
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Writes a 32-bit register of a virtio-mmio transport.
pub fn reg_write(t: &mut crate::devices::mmio::MmioTransport, offset: u64, v: u32) {
    use crate::bus::BusDevice;
    t.write(offset, &v.to_le_bytes());
}
