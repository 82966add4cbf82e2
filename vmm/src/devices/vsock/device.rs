//! The virtio-vsock device model: feature bits, config space and the processing of the RX
//! and TX virtqueues, independent of the transport that owns the queues.

use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;

use tracing::warn;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use super::error::VsockError;
use super::muxer::Muxer;
use super::packet::{Header, HDR_LEN};
use crate::devices::chain::{Access, ChainBuffer};
use crate::devices::virtio::read_config_space;

/// Virtio device type of vsock.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;
pub const NUM_QUEUES: usize = 3;
/// Largest queue size the device accepts.
pub const QUEUE_MAX_SIZE: u16 = 1024;
/// Features the device offers over any transport.
pub const DEVICE_FEATURES: u64 = 1 << VIRTIO_F_VERSION_1;

/// Which used rings changed in one round of queue processing; the caller interrupts the
/// guest for each (after `Queue::needs_notification` agrees).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueActivity {
    pub rx_used: bool,
    pub tx_used: bool,
}

/// A virtio-vsock device bridging the guest to Unix sockets (see the module docs).
pub struct VsockDevice {
    guest_cid: u64,
    muxer: Muxer,
    chain: ChainBuffer,
}

impl VsockDevice {
    /// Creates the device for a guest with CID `guest_cid`, listening on `uds_path` for host
    /// connections. The socket file is removed when the device is dropped.
    pub fn new(guest_cid: u64, uds_path: impl AsRef<Path>) -> Result<VsockDevice, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        Ok(VsockDevice {
            guest_cid,
            muxer: Muxer::new(guest_cid, uds_path.as_ref())?,
            chain: ChainBuffer::default(),
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The config space: `guest_cid` as u64 little endian.
    pub fn config_space(&self) -> [u8; 8] {
        self.guest_cid.to_le_bytes()
    }

    /// Reads `data.len()` bytes of config space at `offset`; bytes past its end read as zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config_space(), offset, data);
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.muxer.connections()
    }

    /// Services the host sockets that are ready (accepts, `CONNECT` lines, reads, writes)
    /// without blocking. Call when [`AsRawFd::as_raw_fd`] is readable, then
    /// [`VsockDevice::process_queues`].
    pub fn handle_backend_events(&mut self) {
        self.muxer.handle_events();
    }

    /// Runs TX, then RX, and TX again when RX freed room for TX replies.
    pub fn process_queues<M: GuestMemory>(
        &mut self,
        mem: &M,
        rx: &mut Queue,
        tx: &mut Queue,
    ) -> Result<QueueActivity, VsockError> {
        let mut activity = QueueActivity::default();
        loop {
            activity.tx_used |= self.process_tx(mem, tx)?;
            let paused = self.muxer.tx_paused();
            let rx_used = self.process_rx(mem, rx)?;
            activity.rx_used |= rx_used;
            if !(paused && rx_used && !self.muxer.tx_paused()) {
                return Ok(activity);
            }
        }
    }

    /// Consumes guest packets from the TX queue. Every chain goes back to the used ring.
    /// Returns whether the used ring changed.
    pub fn process_tx<M: GuestMemory>(
        &mut self,
        mem: &M,
        tx: &mut Queue,
    ) -> Result<bool, VsockError> {
        if !tx.ready() {
            return Ok(false);
        }
        let mut used = false;
        loop {
            tx.disable_notification(mem)
                .map_err(VsockError::queue("tx"))?;
            while !self.muxer.tx_paused() {
                let Some(chain) = tx.pop_descriptor_chain(mem) else {
                    break;
                };
                let head = chain.head_index();
                let loaded = self.chain.load(chain, Access::Read);
                self.handle_tx_packet(mem, loaded);
                tx.add_used(mem, head, 0).map_err(VsockError::queue("tx"))?;
                used = true;
            }
            let more = tx
                .enable_notification(mem)
                .map_err(VsockError::queue("tx"))?;
            if !more || self.muxer.tx_paused() {
                return Ok(used);
            }
        }
    }

    fn handle_tx_packet<M: GuestMemory>(
        &mut self,
        mem: &M,
        loaded: Result<(), crate::devices::chain::ChainError>,
    ) {
        let mut raw = [0u8; HDR_LEN];
        if let Err(e) = self.chain.read_at(mem, 0, &mut raw) {
            warn!("vsock: TX chain without a readable header dropped: {e}");
            return;
        }
        let hdr = Header::from_bytes(&raw);
        match loaded {
            Ok(()) => self.muxer.handle_guest_packet(mem, &hdr, &self.chain),
            Err(e) => self.muxer.reject(&hdr, e),
        }
    }

    /// Fills RX buffers with waiting packets. Returns whether the used ring changed.
    pub fn process_rx<M: GuestMemory>(
        &mut self,
        mem: &M,
        rx: &mut Queue,
    ) -> Result<bool, VsockError> {
        if !rx.ready() {
            return Ok(false);
        }
        let mut used = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = rx.pop_descriptor_chain(mem) else {
                // Out of buffers: ask for a kick when the guest adds some.
                if rx
                    .enable_notification(mem)
                    .map_err(VsockError::queue("rx"))?
                {
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            let len = match self.chain.load(chain, Access::Write) {
                Ok(()) if self.chain.len() >= HDR_LEN => self.muxer.fill_rx(mem, &self.chain),
                Ok(()) => {
                    warn!(
                        "vsock: RX buffer of {} bytes cannot hold a header",
                        self.chain.len()
                    );
                    Some(0)
                }
                Err(e) => {
                    warn!("vsock: unusable RX buffer: {e}");
                    Some(0)
                }
            };
            match len {
                Some(len) => {
                    rx.add_used(mem, head, len as u32)
                        .map_err(VsockError::queue("rx"))?;
                    used = true;
                }
                None => {
                    // Nothing was written: give the buffer back to the available ring.
                    rx.set_next_avail(rx.next_avail().wrapping_sub(1));
                    break;
                }
            }
        }
        Ok(used)
    }
}

impl AsRawFd for VsockDevice {
    /// One pollable fd covering every host socket of the device (level-triggered).
    fn as_raw_fd(&self) -> RawFd {
        self.muxer.epoll_fd()
    }
}
