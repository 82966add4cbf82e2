//! Test-only guest driver for the network device: owns guest memory and the RX/TX split
//! queues (see [`crate::devices::test_ring`]), runs the device against a [`StreamBackend`]
//! on one end of a Unix socket pair, and plays the backend's peer on the other end.

use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::device::{NetActivity, NetDevice, NET_HDR_LEN};
use super::stream::StreamBackend;
use crate::devices::test_ring::Ring;

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const MTU: u16 = 65520;
const MEM_SIZE: usize = 64 << 20;
const TX_RING: u64 = 0;
const RX_RING: u64 = 0x10000;
const RX_POOL: u64 = 0x10_0000;
const TX_POOL: u64 = 0x200_0000;
const TX_POOL_END: u64 = MEM_SIZE as u64;

/// An Ethernet frame of `len` bytes whose every byte derives from `seed`, so a frame that
/// arrives can be checked against the one sent.
pub fn frame(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// What the device put into one RX buffer.
#[derive(Debug)]
pub struct RxUsed {
    /// The used length.
    pub len: u32,
    /// The header and frame as written (empty when `len` is 0).
    pub bytes: Vec<u8>,
}

impl RxUsed {
    /// The frame after the header.
    pub fn frame(&self) -> &[u8] {
        &self.bytes[NET_HDR_LEN..]
    }
}

pub struct TestGuest {
    pub mem: GuestMemoryMmap,
    pub rx: Queue,
    pub tx: Queue,
    pub rx_ring: Ring,
    pub tx_ring: Ring,
    pub device: NetDevice,
    /// The backend's peer, blocking with a 5 s timeout.
    pub peer: UnixStream,
    tx_next: u64,
    rx_next: u64,
}

impl TestGuest {
    pub fn new() -> TestGuest {
        let (ours, peer) = UnixStream::pair().unwrap();
        TestGuest::on(ours, peer)
    }

    /// A guest whose device's backend is `ours`, its peer `peer` (e.g. a pair configured as
    /// the host CLI configures it).
    pub fn on(ours: UnixStream, peer: UnixStream) -> TestGuest {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let backend = StreamBackend::from_stream(ours).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (tx_ring, tx) = Ring::new(&mem, TX_RING);
        let (rx_ring, rx) = Ring::new(&mem, RX_RING);
        TestGuest {
            mem,
            rx,
            tx,
            rx_ring,
            tx_ring,
            device: NetDevice::new(MAC, MTU, Box::new(backend)).unwrap(),
            peer,
            tx_next: TX_POOL,
            rx_next: RX_POOL,
        }
    }

    /// Room for a TX descriptor of `len` bytes; the pool is reused from its start when it
    /// runs out (far more than the queue can hold in flight).
    fn tx_alloc(&mut self, len: usize) -> GuestAddress {
        let len = (len as u64 + 63) & !63;
        if self.tx_next + len > TX_POOL_END {
            self.tx_next = TX_POOL;
        }
        let addr = self.tx_next;
        self.tx_next += len;
        GuestAddress(addr)
    }

    /// Queues raw bytes on TX, split into descriptors of the given sizes (the last one takes
    /// the rest).
    pub fn send_bytes(&mut self, bytes: &[u8], split: &[usize]) {
        let mut segs = Vec::new();
        let mut off = 0;
        for &size in split.iter().chain(std::iter::once(&usize::MAX)) {
            let len = size.min(bytes.len() - off);
            if len == 0 && off == bytes.len() {
                break;
            }
            let addr = self.tx_alloc(len);
            self.mem.write_slice(&bytes[off..off + len], addr).unwrap();
            segs.push((addr, len as u32));
            off += len;
        }
        self.tx_ring.offer(&self.mem, &segs, false);
    }

    /// Queues `frame` behind a zero header on TX, split as in [`TestGuest::send_bytes`].
    pub fn send_frame(&mut self, frame: &[u8], split: &[usize]) {
        let mut bytes = vec![0u8; NET_HDR_LEN];
        bytes.extend_from_slice(frame);
        self.send_bytes(&bytes, split);
    }

    /// Offers `count` RX buffers, each a chain of writable descriptors with the given sizes.
    pub fn offer_rx(&mut self, count: usize, sizes: &[u32]) {
        for _ in 0..count {
            let segs: Vec<_> = sizes.iter().map(|&s| (self.rx_alloc(s), s)).collect();
            self.rx_ring.offer(&self.mem, &segs, true);
        }
    }

    /// Room for an RX descriptor of `len` bytes.
    pub fn rx_alloc(&mut self, len: u32) -> GuestAddress {
        if self.rx_next + u64::from(len) >= TX_POOL {
            self.rx_next = RX_POOL;
        }
        let a = GuestAddress(self.rx_next);
        self.rx_next += u64::from(len + 63) & !63;
        a
    }

    /// Runs the device once, as the event loop does: backend events, then the queues.
    pub fn pump(&mut self) -> NetActivity {
        let link_changed = self.device.handle_backend_events();
        let mut activity = self
            .device
            .process_queues(&self.mem, &mut self.rx, &mut self.tx)
            .unwrap();
        activity.link_changed |= link_changed;
        activity
    }

    /// Used lengths of the TX chains the device returned since the last call.
    pub fn tx_completed(&mut self) -> Vec<u32> {
        self.tx_ring
            .take_used(&self.mem)
            .into_iter()
            .map(|(_, len)| len)
            .collect()
    }

    /// What the device wrote into RX buffers since the last call. Checks the header of
    /// every filled buffer: all zero, `num_buffers` 1.
    pub fn received(&mut self) -> Vec<RxUsed> {
        let mut out = Vec::new();
        for (segs, len) in self.rx_ring.take_used(&self.mem) {
            let mut bytes = Vec::new();
            if len > 0 {
                for (addr, l) in segs {
                    let mut b = vec![0u8; l as usize];
                    self.mem.read_slice(&mut b, addr).unwrap();
                    bytes.extend_from_slice(&b);
                }
                assert!(len as usize > NET_HDR_LEN && len as usize <= bytes.len());
                bytes.truncate(len as usize);
                assert_eq!(
                    bytes[..NET_HDR_LEN],
                    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
                    "RX header"
                );
            }
            out.push(RxUsed { len, bytes });
        }
        out
    }

    /// Frames delivered into RX buffers since the last call (buffers completed empty are
    /// left out).
    pub fn received_frames(&mut self) -> Vec<Vec<u8>> {
        self.received()
            .into_iter()
            .filter(|u| u.len > 0)
            .map(|u| u.frame().to_vec())
            .collect()
    }

    /// The peer sends `frame` in the stream framing.
    pub fn peer_send(&mut self, frame: &[u8]) {
        self.peer
            .write_all(&(frame.len() as u32).to_be_bytes())
            .unwrap();
        self.peer.write_all(frame).unwrap();
    }

    /// The peer reads one frame.
    pub fn peer_recv(&mut self) -> Vec<u8> {
        read_frame(&mut self.peer)
    }

    /// Pumps until `done` holds for the frames received so far (or panics after 5 s).
    pub fn pump_until(&mut self, mut done: impl FnMut(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        loop {
            self.pump();
            got.extend(self.received_frames());
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {} frames",
                got.len()
            );
            self.wait_for_backend(Duration::from_millis(10));
        }
    }

    /// Blocks until the device fd is readable or `timeout` passes; returns whether it is.
    pub fn wait_for_backend(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.device.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) > 0 }
    }
}

/// Reads one frame in the stream framing from `peer`.
pub fn read_frame(peer: &mut impl Read) -> Vec<u8> {
    let mut prefix = [0u8; 4];
    peer.read_exact(&mut prefix).unwrap();
    let mut frame = vec![0u8; u32::from_be_bytes(prefix) as usize];
    peer.read_exact(&mut frame).unwrap();
    frame
}
