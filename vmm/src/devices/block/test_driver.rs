//! Test-only guest driver for the block device: owns guest memory and the request queue (see
//! [`crate::devices::test_ring`]), runs the device on a temporary disk file, lays requests out
//! as a guest kernel does (or as a broken one might) and reads back what the device completed.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;

use tempfile::NamedTempFile;
use virtio_bindings::virtio_blk::VIRTIO_BLK_S_OK;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::device::BlockDevice;
use super::request::HEADER_LEN;
use crate::devices::test_ring::Ring;

pub const SERIAL: &str = "skiff-test-disk";
pub const MEM_SIZE: usize = 64 << 20;
const RING: u64 = 0;
const POOL: u64 = 0x10_0000;
/// What a status byte holds before the device writes it.
pub const UNWRITTEN: u8 = 0xff;

/// `len` bytes of the test disk's contents from `offset`: every byte derives from its offset,
/// so any read can be checked.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|o| (o ^ (o >> 9) ^ (o >> 17)) as u8)
        .collect()
}

/// A request's data as the driver offers it.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    None,
    /// Device-readable: what a write stores.
    Out(&'a [u8]),
    /// Device-writable: room for this many bytes.
    In(usize),
}

/// One request the device completed.
#[derive(Debug)]
pub struct Done {
    /// The used length.
    pub len: u32,
    /// The status byte ([`UNWRITTEN`] if the device left it), if the chain had one.
    pub status: Option<u8>,
    /// The device-writable data descriptors' contents, in order, if the request succeeded.
    pub data: Vec<u8>,
}

/// Where the driver looks for a request's results.
struct Pending {
    status: Option<GuestAddress>,
    data: Vec<(GuestAddress, u32)>,
}

pub struct TestGuest {
    pub mem: GuestMemoryMmap,
    pub queue: Queue,
    pub ring: Ring,
    pub device: BlockDevice,
    /// The disk file.
    pub file: NamedTempFile,
    next: u64,
    /// By the address of the chain's first descriptor.
    pending: HashMap<u64, Pending>,
}

impl TestGuest {
    /// A guest with a writable disk of `sectors` sectors filled with [`pattern`].
    pub fn new(sectors: u64) -> TestGuest {
        TestGuest::with_disk(&pattern(0, sectors as usize * 512), false, SERIAL)
    }

    /// A guest whose disk holds `contents`.
    pub fn with_disk(contents: &[u8], read_only: bool, serial: &str) -> TestGuest {
        let mut file = NamedTempFile::new().unwrap();
        file.write_all(contents).unwrap();
        let device = BlockDevice::new(file.reopen().unwrap(), read_only, serial).unwrap();
        TestGuest::on(file, device)
    }

    /// A guest whose `device` serves `file`.
    pub fn on(file: NamedTempFile, device: BlockDevice) -> TestGuest {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (ring, queue) = Ring::new(&mem, RING);
        TestGuest {
            mem,
            queue,
            ring,
            device,
            file,
            next: POOL,
            pending: HashMap::new(),
        }
    }

    /// A second handle on the disk file, read-write.
    pub fn disk(&self) -> File {
        self.file.reopen().unwrap()
    }

    /// Room for `len` bytes; the pool is reused from its start when it runs out (far more
    /// than the queue holds in flight).
    pub fn alloc(&mut self, len: usize) -> GuestAddress {
        let len = (len as u64 + 63) & !63;
        if self.next + len > MEM_SIZE as u64 {
            self.next = POOL;
        }
        let addr = self.next;
        self.next += len;
        GuestAddress(addr)
    }

    /// A request header in guest memory.
    pub fn header(&mut self, request_type: u32, sector: u64) -> GuestAddress {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&request_type.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        let addr = self.alloc(HEADER_LEN);
        self.mem.write_slice(&header, addr).unwrap();
        addr
    }

    /// Room for a status byte, holding [`UNWRITTEN`].
    pub fn status_byte(&mut self) -> GuestAddress {
        let addr = self.alloc(1);
        self.mem.write_obj(UNWRITTEN, addr).unwrap();
        addr
    }

    /// Data descriptors for `data`, `piece` bytes each (the last one takes the rest).
    pub fn data(&mut self, data: Data<'_>, piece: usize) -> Vec<(GuestAddress, u32, bool)> {
        let (len, writable) = match data {
            Data::None => return Vec::new(),
            Data::Out(bytes) => (bytes.len(), false),
            Data::In(len) => (len, true),
        };
        let mut descs = Vec::new();
        let mut off = 0;
        while off < len {
            let take = piece.min(len - off);
            let addr = self.alloc(take);
            match data {
                Data::Out(bytes) => self.mem.write_slice(&bytes[off..off + take], addr),
                _ => self.mem.write_slice(&vec![0xa5; take], addr),
            }
            .unwrap();
            descs.push((addr, take as u32, writable));
            off += take;
        }
        descs
    }

    /// Queues a request as Linux lays it out: the header, `data` in descriptors of `piece`
    /// bytes, the status byte.
    pub fn request(&mut self, request_type: u32, sector: u64, data: Data<'_>, piece: usize) {
        let header = self.header(request_type, sector);
        let mut descs = vec![(header, HEADER_LEN as u32, false)];
        descs.extend(self.data(data, piece));
        let status = self.status_byte();
        descs.push((status, 1, true));
        self.submit(&descs, Some(status));
    }

    /// Queues the chain `descs` (address, length, device-writable), whose status byte, if
    /// any, is at `status`.
    pub fn submit(&mut self, descs: &[(GuestAddress, u32, bool)], status: Option<GuestAddress>) {
        let data = descs
            .iter()
            .filter(|&&(addr, _, writable)| writable && Some(addr) != status)
            .map(|&(addr, len, _)| (addr, len))
            .collect();
        self.pending.insert(descs[0].0 .0, Pending { status, data });
        self.ring.offer_descriptors(&self.mem, descs);
    }

    /// Runs the device once, as a queue kick does; returns whether the used ring changed.
    pub fn pump(&mut self) -> bool {
        self.device
            .process_queue(&self.mem, &mut self.queue)
            .unwrap()
    }

    /// The requests the device completed since the last call, in order.
    pub fn completed(&mut self) -> Vec<Done> {
        let mut out = Vec::new();
        for (segs, len) in self.ring.take_used(&self.mem) {
            let pending = self
                .pending
                .remove(&segs[0].0 .0)
                .expect("an offered chain");
            let status = pending.status.map(|a| self.mem.read_obj(a).unwrap());
            let mut data = Vec::new();
            // Only a request that succeeded has data to show (and guest memory).
            let pieces = if status == Some(VIRTIO_BLK_S_OK as u8) {
                pending.data
            } else {
                Vec::new()
            };
            for (addr, l) in pieces {
                let mut b = vec![0u8; l as usize];
                self.mem.read_slice(&mut b, addr).unwrap();
                data.extend_from_slice(&b);
            }
            out.push(Done { len, status, data });
        }
        out
    }

    /// Pumps once and returns the one request that completed.
    pub fn run_one(&mut self) -> Done {
        assert!(self.pump(), "the used ring changed");
        let mut done = self.completed();
        assert_eq!(done.len(), 1, "{done:?}");
        done.remove(0)
    }
}
