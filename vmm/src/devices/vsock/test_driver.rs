//! Test-only guest driver: owns guest memory and the RX/TX split queues (see
//! [`crate::devices::test_ring`]), runs the device, and reads packets back from the used ring.

use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::connection::CONN_BUF_ALLOC;
use super::device::VsockDevice;
use super::packet::{Header, Op, HDR_LEN, HOST_CID, TYPE_STREAM};
use crate::devices::test_ring::Ring;

pub const GUEST_CID: u64 = 3;
const MEM_SIZE: usize = 64 << 20;
const TX_RING: u64 = 0;
const RX_RING: u64 = 0x10000;
const RX_POOL: u64 = 0x10_0000;
const TX_POOL: u64 = 0x200_0000;
const TX_POOL_END: u64 = MEM_SIZE as u64;

/// A packet the device delivered to the guest.
#[derive(Debug, Clone)]
pub struct RxPacket {
    pub hdr: Header,
    pub data: Vec<u8>,
}

impl RxPacket {
    pub fn op(&self) -> Op {
        Op::from_raw(self.hdr.op).expect("device sent a valid op")
    }
}

pub struct TestGuest {
    pub mem: GuestMemoryMmap,
    pub rx: Queue,
    pub tx: Queue,
    pub rx_ring: Ring,
    pub tx_ring: Ring,
    pub device: VsockDevice,
    pub uds: PathBuf,
    /// Credit fields the guest puts into its packets.
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
    tx_next: u64,
    rx_next: u64,
    _dir: tempfile::TempDir,
}

impl TestGuest {
    pub fn new() -> TestGuest {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (tx_ring, tx) = Ring::new(&mem, TX_RING);
        let (rx_ring, rx) = Ring::new(&mem, RX_RING);
        let device = VsockDevice::new(GUEST_CID, &uds).unwrap();
        TestGuest {
            mem,
            rx,
            tx,
            rx_ring,
            tx_ring,
            device,
            uds,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
            tx_next: TX_POOL,
            rx_next: RX_POOL,
            _dir: dir,
        }
    }

    /// Path of the host socket a guest connection to `port` reaches.
    pub fn port_path(&self, port: u32) -> PathBuf {
        PathBuf::from(format!("{}_{port}", self.uds.display()))
    }

    /// A guest → host header with the guest's credit fields.
    pub fn header(&self, op: Op, src_port: u32, dst_port: u32, len: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt,
        }
    }

    fn tx_alloc(&mut self, len: usize) -> GuestAddress {
        let addr = self.tx_next;
        self.tx_next += (len as u64 + 63) & !63;
        assert!(self.tx_next <= TX_POOL_END, "TX pool exhausted");
        GuestAddress(addr)
    }

    /// Queues raw bytes on TX, split into descriptors of the given sizes (the last one takes
    /// the rest).
    pub fn send_bytes(&mut self, bytes: &[u8], split: &[usize]) {
        if self.tx_ring.in_flight() == 0 {
            self.tx_next = TX_POOL;
        }
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

    /// Queues a packet (header + payload) on TX, split as in [`TestGuest::send_bytes`].
    pub fn send(&mut self, hdr: &Header, payload: &[u8], split: &[usize]) {
        let mut bytes = hdr.to_bytes().to_vec();
        bytes.extend_from_slice(payload);
        self.send_bytes(&bytes, split);
    }

    pub fn send_op(&mut self, op: Op, src_port: u32, dst_port: u32) {
        let hdr = self.header(op, src_port, dst_port, 0);
        self.send(&hdr, &[], &[]);
    }

    pub fn send_data(&mut self, src_port: u32, dst_port: u32, data: &[u8]) {
        let hdr = self.header(Op::Rw, src_port, dst_port, data.len() as u32);
        self.send(&hdr, data, &[]);
    }

    /// Offers `count` RX buffers, each a chain of descriptors with the given sizes.
    pub fn offer_rx(&mut self, count: usize, sizes: &[u32]) {
        for _ in 0..count {
            let segs: Vec<_> = sizes
                .iter()
                .map(|&s| {
                    let a = GuestAddress(self.rx_next);
                    self.rx_next += u64::from(s + 63) & !63;
                    if self.rx_next >= TX_POOL {
                        self.rx_next = RX_POOL;
                    }
                    (a, s)
                })
                .collect();
            self.rx_ring.offer(&self.mem, &segs, true);
        }
    }

    /// Runs the device once: host socket events, then the queues.
    pub fn pump(&mut self) {
        self.device.handle_backend_events();
        self.device
            .process_queues(&self.mem, &mut self.rx, &mut self.tx)
            .unwrap();
    }

    /// TX chains the device returned since the last call.
    pub fn tx_completed(&mut self) -> usize {
        self.tx_ring.take_used(&self.mem).len()
    }

    /// Packets the device wrote into RX buffers since the last call, each replaced by a fresh
    /// single-descriptor 4 KiB buffer.
    pub fn received(&mut self) -> Vec<RxPacket> {
        let used = self.rx_ring.take_used(&self.mem);
        let mut out = Vec::new();
        for (segs, len) in used {
            let mut bytes = Vec::new();
            for (addr, l) in segs {
                let mut b = vec![0u8; l as usize];
                self.mem.read_slice(&mut b, addr).unwrap();
                bytes.extend_from_slice(&b);
            }
            let len = len as usize;
            assert!(len >= HDR_LEN && len <= bytes.len(), "used length {len}");
            let hdr = Header::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
            assert_eq!(hdr.len as usize, len - HDR_LEN, "header len vs used len");
            out.push(RxPacket {
                hdr,
                data: bytes[HDR_LEN..len].to_vec(),
            });
            self.offer_rx(1, &[4096]);
        }
        out
    }

    /// Pumps until `done` holds for the packets received so far (or panics after 5 s).
    pub fn pump_until(&mut self, mut done: impl FnMut(&[RxPacket]) -> bool) -> Vec<RxPacket> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        loop {
            self.pump();
            got.extend(self.received());
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; received so far: {got:?}"
            );
            self.wait_for_backend(Duration::from_millis(10));
        }
    }

    /// Opens a guest-initiated connection from `guest_port` to host port `host_port` (a
    /// listener on `U_<host_port>`), checks the `RESPONSE`, returns the listener and the
    /// accepted host end.
    pub fn connect_from_guest(
        &mut self,
        guest_port: u32,
        host_port: u32,
    ) -> (UnixListener, UnixStream) {
        let listener = UnixListener::bind(self.port_path(host_port)).unwrap();
        self.offer_rx(8, &[4096]);
        self.send_op(Op::Request, guest_port, host_port);
        let pkts = self.pump_until(|p| !p.is_empty());
        assert_eq!(pkts.len(), 1);
        let r = &pkts[0];
        assert_eq!(r.op(), Op::Response);
        assert_eq!((r.hdr.src_cid, r.hdr.dst_cid), (HOST_CID, GUEST_CID));
        assert_eq!((r.hdr.src_port, r.hdr.dst_port), (host_port, guest_port));
        assert_eq!(r.hdr.buf_alloc, CONN_BUF_ALLOC);
        let (host, _) = listener.accept().unwrap();
        (listener, host)
    }

    /// Blocks until the device fd is readable or `timeout` passes.
    pub fn wait_for_backend(&self, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.device.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    }
}
