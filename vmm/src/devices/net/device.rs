//! The virtio-net device model: feature bits, config space and the processing of the RX and
//! TX virtqueues against a [`FrameBackend`], independent of the transport that owns the queues.

use std::io::IoSlice;
use std::os::unix::io::{AsRawFd, RawFd};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    virtio_net_hdr_v1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestMemory, Permissions};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::backend::{BackendError, FrameBackend, Sent, MAX_FRAME_LEN};
use super::error::NetError;
use crate::devices::chain::{Access, ChainBuffer, ChainError};
use crate::devices::ratelimit::RateLimited;
use crate::devices::virtio::read_config_space;

/// Virtio device type of a network card.
pub const VIRTIO_ID_NET: u32 = 1;
/// Queue indices: one RX/TX pair, no control queue.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const NUM_QUEUES: usize = 2;
/// Largest queue size the device accepts.
pub const QUEUE_MAX_SIZE: u16 = 1024;
/// Features the device offers: a fixed MAC, an MTU, a link status; no offloads.
pub const DEVICE_FEATURES: u64 = 1 << VIRTIO_F_VERSION_1
    | 1 << VIRTIO_NET_F_MAC
    | 1 << VIRTIO_NET_F_MTU
    | 1 << VIRTIO_NET_F_STATUS;
/// The header before every frame in both queues (`virtio_net_hdr_v1`: with
/// `VIRTIO_F_VERSION_1` it always has `num_buffers`).
pub const NET_HDR_LEN: usize = 12;
const _: () = assert!(std::mem::size_of::<virtio_net_hdr_v1>() == NET_HDR_LEN);
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS_OFFSET: usize = 10;
/// An Ethernet header: destination, source, EtherType.
const ETH_HLEN: usize = 14;
/// The smallest MTU the virtio spec allows, and the largest whose frames fit
/// [`MAX_FRAME_LEN`].
pub const MIN_MTU: u16 = 68;
pub const MAX_MTU: u16 = (MAX_FRAME_LEN - ETH_HLEN) as u16;
/// Length of the config space: `mac`, `status`, `max_virtqueue_pairs`, `mtu`.
pub const CONFIG_LEN: usize = 12;

/// Which used rings changed in one round of processing, and whether the link went down;
/// the caller interrupts the guest for each used ring (after `Queue::needs_notification`
/// agrees) and signals a config change for the link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetActivity {
    pub rx_used: bool,
    pub tx_used: bool,
    pub link_changed: bool,
}

/// Why a TX chain was dropped.
#[derive(Debug, thiserror::Error)]
enum TxError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("frame of {0} bytes is outside {ETH_HLEN} ..= {MAX_FRAME_LEN}")]
    FrameLength(usize),
}

/// The backend and what the device asked its fd to be polled for.
struct Link {
    backend: Box<dyn FrameBackend>,
    interest: EventSet,
}

/// A virtio-net device moving frames between the guest and a [`FrameBackend`].
///
/// Back-pressure both ways: a TX frame the backend cannot take stays at the head of the TX
/// queue, untouched, until the backend is writable (the fd is polled for that meanwhile); a received frame
/// the guest has no RX buffer for is kept, and the backend is not read until the guest posts
/// buffers (its RX kick). A backend that fails is dropped: the link goes down, TX chains are
/// completed without being sent, nothing more is received.
pub struct NetDevice {
    mac: [u8; 6],
    mtu: u16,
    link: Option<Link>,
    epoll: Epoll,
    chain: ChainBuffer,
    /// Where a TX frame is gathered when its buffers are not plain host memory.
    tx_frame: Box<[u8]>,
    /// The backend could not take the frame at the head of the TX queue: it stays there
    /// until the backend is writable.
    tx_blocked: bool,
    /// Output the backend still holds from accepted frames.
    tx_unflushed: bool,
    /// A received frame waiting for an RX buffer: `rx_frame[..len]`.
    rx_frame: Box<[u8]>,
    rx_pending: Option<usize>,
    warnings: RateLimited,
}

impl NetDevice {
    /// Creates the device with its `mac`, announcing `mtu`, in front of `backend`.
    pub fn new(
        mac: [u8; 6],
        mtu: u16,
        backend: Box<dyn FrameBackend>,
    ) -> Result<NetDevice, NetError> {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(NetError::InvalidMtu(mtu));
        }
        let epoll = Epoll::new().map_err(NetError::Epoll)?;
        let interest = EventSet::IN;
        epoll
            .ctl(
                ControlOperation::Add,
                backend.as_raw_fd(),
                EpollEvent::new(interest, 0),
            )
            .map_err(NetError::Epoll)?;
        Ok(NetDevice {
            mac,
            mtu,
            link: Some(Link { backend, interest }),
            epoll,
            chain: ChainBuffer::default(),
            tx_frame: vec![0; MAX_FRAME_LEN].into_boxed_slice(),
            tx_blocked: false,
            tx_unflushed: false,
            rx_frame: vec![0; MAX_FRAME_LEN].into_boxed_slice(),
            rx_pending: None,
            warnings: RateLimited::new("net"),
        })
    }

    /// Whether the backend still works (the link status the guest sees).
    pub fn link_up(&self) -> bool {
        self.link.is_some()
    }

    /// The config space: `mac`, `status` (link up), `max_virtqueue_pairs` (1) and `mtu`,
    /// little endian.
    pub fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&self.mac);
        let status = if self.link_up() {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        config
    }

    /// Reads `data.len()` bytes of config space at `offset`; bytes past its end read as zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config_space(), offset, data);
    }

    /// Looks at what the backend fd reported without blocking. A hang-up or error while the
    /// device is not reading (so it would never see the end) drops the backend; returns
    /// whether the link went down. Call when [`AsRawFd::as_raw_fd`] is readable, then
    /// [`NetDevice::process_queues`].
    pub fn handle_backend_events(&mut self) -> bool {
        let mut events = [EpollEvent::default(); 1];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("net: polling the backend failed: {e}");
                return false;
            }
        };
        let Some(link) = &self.link else {
            return false;
        };
        let hung_up = events[..n].iter().any(|e| {
            e.event_set()
                .intersects(EventSet::HANG_UP | EventSet::ERROR)
        });
        if hung_up && !link.interest.contains(EventSet::IN) {
            self.fail(BackendError::Closed);
            return true;
        }
        false
    }

    /// Drops the frames in flight (the driver reset the device).
    pub fn reset(&mut self) {
        self.tx_blocked = false;
        self.rx_pending = None;
        if let Err(e) = self.update_interest() {
            tracing::warn!("net: {e}");
        }
    }

    /// Runs TX, then RX, then re-arms the backend fd for what the device now waits for.
    pub fn process_queues<M: GuestMemory>(
        &mut self,
        mem: &M,
        rx: &mut Queue,
        tx: &mut Queue,
    ) -> Result<NetActivity, NetError> {
        let was_up = self.link_up();
        let tx_used = self.process_tx(mem, tx)?;
        self.flush();
        let rx_used = self.process_rx(mem, rx)?;
        self.update_interest()?;
        Ok(NetActivity {
            rx_used,
            tx_used,
            link_changed: was_up != self.link_up(),
        })
    }

    /// Sends guest frames from the TX queue until the queue is empty or the backend would
    /// block; a frame the backend cannot take stays at the head of the queue (nothing is
    /// copied to wait). Every chain taken goes back to the used ring. Returns whether it
    /// changed.
    fn process_tx<M: GuestMemory>(&mut self, mem: &M, tx: &mut Queue) -> Result<bool, NetError> {
        if !tx.ready() {
            return Ok(false);
        }
        self.tx_blocked = false;
        let mut used = false;
        loop {
            tx.disable_notification(mem)
                .map_err(NetError::queue("tx"))?;
            while let Some(chain) = tx.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let loaded = self.chain.load(chain, Access::Read);
                match loaded
                    .map_err(TxError::from)
                    .and_then(|()| self.take_tx_frame(mem))
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tx.go_to_previous_position();
                        self.tx_blocked = true;
                        break;
                    }
                    Err(e) => {
                        self.warnings
                            .warn(format_args!("net: TX chain dropped: {e}"));
                    }
                }
                tx.add_used(mem, head, 0).map_err(NetError::queue("tx"))?;
                used = true;
            }
            let more = tx.enable_notification(mem).map_err(NetError::queue("tx"))?;
            if !more || self.tx_blocked {
                return Ok(used);
            }
        }
    }

    /// The length of the loaded TX chain's frame (after its header), if it is one.
    fn tx_frame_len(&self) -> Result<usize, TxError> {
        let len = self.chain.len();
        if len < NET_HDR_LEN {
            return Err(ChainError::TooShort {
                have: len,
                need: NET_HDR_LEN,
            }
            .into());
        }
        let frame_len = len - NET_HDR_LEN;
        if !(ETH_HLEN..=MAX_FRAME_LEN).contains(&frame_len) {
            return Err(TxError::FrameLength(frame_len));
        }
        Ok(frame_len)
    }

    /// Sends the loaded TX chain's frame straight from the guest's buffers (gathered into
    /// `tx_frame` first only when they are not plain host memory); returns whether it is gone
    /// (sent, or dropped with a dead backend), `false` when the backend would block.
    fn take_tx_frame<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, TxError> {
        let frame_len = self.tx_frame_len()?;
        if let Some(gone) = self.send_from_guest(mem, frame_len) {
            return Ok(gone);
        }
        self.chain
            .read_at(mem, NET_HDR_LEN, &mut self.tx_frame[..frame_len])?;
        let Some(link) = &mut self.link else {
            return Ok(true);
        };
        let sent = link
            .backend
            .send_frame(&[IoSlice::new(&self.tx_frame[..frame_len])]);
        Ok(self.gone(sent))
    }

    /// Whether a frame offered to the backend is gone: sent, or dropped with a backend that
    /// failed (and is dropped now).
    fn gone(&mut self, sent: Result<Sent, BackendError>) -> bool {
        match sent {
            Ok(Sent::Accepted) => true,
            Ok(Sent::WouldBlock) => false,
            Err(e) => {
                self.fail(e);
                true
            }
        }
    }

    /// Offers the loaded TX chain's frame to the backend from guest memory itself: whether it
    /// is gone (see [`NetDevice::gone`]), or `None` when a piece is not plain host memory (the
    /// caller then copies the frame).
    fn send_from_guest<M: GuestMemory>(&mut self, mem: &M, frame_len: usize) -> Option<bool> {
        let Some(link) = &mut self.link else {
            return Some(true);
        };
        let slices = self
            .chain
            .slices(mem, NET_HDR_LEN, frame_len, Permissions::Read)
            .ok()?;
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
        let pieces: Vec<IoSlice<'_>> = guards
            .iter()
            .zip(&slices)
            // SAFETY: each pointer and length come from a VolatileSlice of mapped guest
            // memory, kept mapped by its guard for as long as `pieces` lives. The guest may
            // change the bytes meanwhile (they are its own frame's); they are only read, by
            // the kernel, as the socket's data.
            .map(|(g, s)| IoSlice::new(unsafe { std::slice::from_raw_parts(g.as_ptr(), s.len()) }))
            .collect();
        let sent = link.backend.send_frame(&pieces);
        drop(pieces);
        drop(guards);
        Some(self.gone(sent))
    }

    /// Lets the backend write out what it holds of accepted frames.
    fn flush(&mut self) {
        if let Some(link) = &mut self.link {
            match link.backend.flush() {
                Ok(done) => self.tx_unflushed = !done,
                Err(e) => self.fail(e),
            }
        }
    }

    /// Delivers backend frames into RX buffers until the backend has none or the guest has
    /// no buffer left. Returns whether the used ring changed.
    fn process_rx<M: GuestMemory>(&mut self, mem: &M, rx: &mut Queue) -> Result<bool, NetError> {
        if !rx.ready() {
            return Ok(false);
        }
        let mut used = false;
        rx.disable_notification(mem)
            .map_err(NetError::queue("rx"))?;
        while let Some(len) = self.rx_pending.or_else(|| self.recv()) {
            self.rx_pending = Some(len);
            let Some(chain) = rx.pop_descriptor_chain(mem) else {
                // Out of buffers: keep the frame and ask for a kick when the guest adds some.
                if rx.enable_notification(mem).map_err(NetError::queue("rx"))? {
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            let loaded = self.chain.load(chain, Access::Write);
            let written = match loaded.and_then(|()| self.write_rx_frame(mem, len)) {
                Ok(n) => n,
                Err(e) => {
                    self.warnings
                        .warn(format_args!("net: {len}-byte frame dropped: RX buffer {e}"));
                    0
                }
            };
            self.rx_pending = None;
            rx.add_used(mem, head, written as u32)
                .map_err(NetError::queue("rx"))?;
            used = true;
        }
        Ok(used)
    }

    /// The next frame from the backend into `rx_frame`, if one has arrived.
    fn recv(&mut self) -> Option<usize> {
        let link = self.link.as_mut()?;
        match link.backend.recv_frame(&mut self.rx_frame) {
            Ok(len) => len,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Writes the header and the pending frame of `len` bytes into the loaded RX chain;
    /// returns the bytes written.
    fn write_rx_frame<M: GuestMemory>(&self, mem: &M, len: usize) -> Result<usize, ChainError> {
        let need = NET_HDR_LEN + len;
        if self.chain.len() < need {
            return Err(ChainError::TooShort {
                have: self.chain.len(),
                need,
            });
        }
        // No offloads: every field is zero but `num_buffers`, which must be 1 without
        // VIRTIO_NET_F_MRG_RXBUF.
        let mut hdr = [0u8; NET_HDR_LEN];
        hdr[NUM_BUFFERS_OFFSET..].copy_from_slice(&1u16.to_le_bytes());
        self.chain.write_at(mem, 0, &hdr)?;
        self.chain
            .write_at(mem, NET_HDR_LEN, &self.rx_frame[..len])?;
        Ok(need)
    }

    /// Drops the backend after `e`: the link is down from now on.
    fn fail(&mut self, e: BackendError) {
        if self.link.take().is_some() {
            tracing::warn!("net: backend stopped ({e}); the guest's link is down");
        }
        self.tx_blocked = false;
        self.tx_unflushed = false;
        self.rx_pending = None;
    }

    /// Polls the backend fd for reading while no received frame waits for a buffer, and for
    /// writing while output waits.
    fn update_interest(&mut self) -> Result<(), NetError> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let mut want = EventSet::empty();
        if self.rx_pending.is_none() {
            want |= EventSet::IN;
        }
        if self.tx_blocked || self.tx_unflushed {
            want |= EventSet::OUT;
        }
        if want != link.interest {
            self.epoll
                .ctl(
                    ControlOperation::Modify,
                    link.backend.as_raw_fd(),
                    EpollEvent::new(want, 0),
                )
                .map_err(NetError::Epoll)?;
            link.interest = want;
        }
        Ok(())
    }
}

impl AsRawFd for NetDevice {
    /// One level-triggered fd that is readable when the backend is ready for what the device
    /// waits for.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}
