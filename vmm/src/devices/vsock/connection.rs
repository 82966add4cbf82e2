//! One vsock stream between a guest port and a host Unix stream: its state, credit accounting
//! in both directions, shutdown, and moving payload between guest memory and the socket.

use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    GuestMemory, GuestMemoryError, Permissions, ReadVolatile, VolatileMemoryError, VolatileSlice,
};
use vmm_sys_util::epoll::EventSet;

use super::packet::{Header, Op, HDR_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::txbuf::{Overflow, TxBuf};
use crate::devices::chain::ChainBuffer;
use crate::devices::socket::{send_vectored, NoSigPipe};

/// Receive buffer the device advertises to the guest per connection (`buf_alloc`); also the
/// bound of the host-side buffer kept when the Unix socket would block.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;

/// Forwarded bytes not yet announced to the guest that trigger a `CREDIT_UPDATE`.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_ALLOC / 2;

/// Largest payload the device puts into one host → guest packet.
pub const MAX_RX_PAYLOAD: usize = 64 * 1024;

/// A connection is named by the host-side port and the guest-side port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated: `REQUEST` sent (or queued), waiting for the guest's `RESPONSE`.
    AwaitingResponse,
    Established,
}

/// Why a connection has to be reset.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("writing to the host socket failed: {0}")]
    HostWrite(io::Error),
    #[error("reading from the host socket failed: {0}")]
    HostRead(io::Error),
    #[error("guest memory: {0}")]
    GuestMemory(String),
    #[error("guest exceeded its credit: {0}")]
    Credit(#[from] Overflow),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
}

#[derive(Debug, Default)]
struct Pending {
    request: bool,
    response: bool,
    credit_update: bool,
    credit_request: bool,
}

impl Pending {
    fn any(&self) -> bool {
        self.request || self.response || self.credit_update || self.credit_request
    }
}

/// What a drained-or-not connection should do after guest `SHUTDOWN` handling.
#[derive(Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Open,
    /// The guest shut down both directions and every byte reached the host: send `RST` and close.
    Finished,
}

#[derive(Debug)]
pub struct Connection {
    pub key: ConnKey,
    pub stream: UnixStream,
    pub token: u64,
    state: State,
    // Guest → host.
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    txbuf: TxBuf,
    // Host → guest.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    tx_cnt: Wrapping<u32>,
    credit_requested: bool,
    // Shutdown.
    peer_shutdown: u32,
    host_eof: bool,
    host_hup: bool,
    host_write_shut: bool,
    // Work for the RX queue.
    pending: Pending,
    host_readable: bool,
    /// Set while the connection sits in the muxer's RX work queue.
    pub queued: bool,
    /// Events currently registered with the muxer's epoll (empty: not registered).
    pub registered: EventSet,
}

impl Connection {
    fn new(key: ConnKey, stream: UnixStream, token: u64, state: State) -> Connection {
        Connection {
            key,
            stream,
            token,
            state,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            txbuf: TxBuf::new(CONN_BUF_ALLOC as usize),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            credit_requested: false,
            peer_shutdown: 0,
            host_eof: false,
            host_hup: false,
            host_write_shut: false,
            pending: Pending::default(),
            host_readable: false,
            queued: false,
            registered: EventSet::empty(),
        }
    }

    /// The guest asked to connect and the host endpoint accepted: answer with `RESPONSE`.
    pub fn guest_initiated(key: ConnKey, stream: UnixStream, token: u64, req: &Header) -> Self {
        let mut c = Connection::new(key, stream, token, State::Established);
        c.update_peer_credit(req);
        c.pending.response = true;
        c
    }

    /// A host process asked to connect: send `REQUEST` to the guest.
    pub fn host_initiated(key: ConnKey, stream: UnixStream, token: u64) -> Self {
        let mut c = Connection::new(key, stream, token, State::AwaitingResponse);
        c.pending.request = true;
        c
    }

    /// Takes the guest's credit fields, carried by every packet.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Bytes the guest can still take.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// The guest accepted a host-initiated connection: tell the host process.
    pub fn on_response(&mut self) -> Result<(), ConnError> {
        if self.state != State::AwaitingResponse {
            return Err(ConnError::Protocol("RESPONSE on an established connection"));
        }
        // A freshly accepted socket has an empty send buffer: this short line cannot block.
        let line = format!("OK {}\n", self.key.local_port);
        match NoSigPipe(&self.stream).write(line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            Ok(_) => return Err(ConnError::HostWrite(ErrorKind::WriteZero.into())),
            Err(e) => return Err(ConnError::HostWrite(e)),
        }
        self.state = State::Established;
        Ok(())
    }

    pub fn on_credit_request(&mut self) {
        self.pending.credit_update = true;
    }

    /// Applies a guest `SHUTDOWN`.
    pub fn on_shutdown(&mut self, flags: u32) -> Result<Lifecycle, ConnError> {
        self.peer_shutdown |= flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if self.peer_shutdown & SHUTDOWN_RCV != 0 {
            // The guest takes no more data: make host writers fail instead of block.
            let _ = self.stream.shutdown(Shutdown::Read);
        }
        self.after_flush()
    }

    /// Forwards `len` payload bytes at stream offset `offset` of `chain` to the host socket,
    /// buffering what the socket does not take now.
    pub fn forward_from_guest<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &ChainBuffer,
        offset: usize,
        len: usize,
    ) -> Result<(), ConnError> {
        if self.state != State::Established {
            return Err(ConnError::Protocol(
                "data before the connection was established",
            ));
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            return Err(ConnError::Protocol(
                "data after the guest shut down sending",
            ));
        }
        let mut slices = Vec::new();
        for (addr, seg_len) in chain.ranges(offset, len) {
            let at = |e: GuestMemoryError| {
                ConnError::GuestMemory(format!("TX payload at {:#x}: {e}", addr.0))
            };
            for slice in mem
                .get_slices(addr, seg_len, Permissions::Read)
                .map_err(at)?
            {
                slices.push(slice.map_err(at)?);
            }
        }
        let mut written = 0;
        if self.txbuf.is_empty() {
            written = write_gathered(&self.stream, &slices)?;
            self.fwd_cnt += written as u32;
        }
        for slice in &slices {
            if written >= slice.len() {
                written -= slice.len();
                continue;
            }
            let rest = slice
                .offset(written)
                .map_err(|e| ConnError::GuestMemory(e.to_string()))?;
            self.txbuf.push(&rest)?;
            written = 0;
        }
        self.rx_cnt += len as u32;
        self.note_forwarded();
        Ok(())
    }

    /// Writes buffered bytes after the socket became writable.
    pub fn flush(&mut self) -> Result<Lifecycle, ConnError> {
        let n = self
            .txbuf
            .flush(&mut self.stream)
            .map_err(ConnError::HostWrite)?;
        self.fwd_cnt += n as u32;
        self.note_forwarded();
        if n > 0 && self.txbuf.is_empty() && self.fwd_cnt != self.last_fwd_cnt_sent {
            // The host caught up after a stall: the guest may be waiting for this credit.
            self.pending.credit_update = true;
        }
        self.after_flush()
    }

    fn note_forwarded(&mut self) {
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending.credit_update = true;
        }
    }

    /// Completes guest shutdowns whose data has all reached the host.
    fn after_flush(&mut self) -> Result<Lifecycle, ConnError> {
        if !self.txbuf.is_empty() {
            return Ok(Lifecycle::Open);
        }
        if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
            return Ok(Lifecycle::Finished);
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            if let Err(e) = self.stream.shutdown(Shutdown::Write) {
                if e.kind() != ErrorKind::NotConnected {
                    return Err(ConnError::HostWrite(e));
                }
            }
        }
        Ok(Lifecycle::Open)
    }

    /// The host socket reported readiness for reading (or a hang-up).
    pub fn mark_readable(&mut self, hup: bool) {
        self.host_readable = true;
        self.host_hup |= hup;
    }

    fn may_read_host(&self) -> bool {
        self.state == State::Established && !self.host_eof && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Whether the connection has a packet for the RX queue. Asks the guest for credit once
    /// when host data waits on it.
    pub fn has_rx_work(&mut self) -> bool {
        if self.host_readable
            && self.may_read_host()
            && self.peer_credit() == 0
            && !self.credit_requested
        {
            self.credit_requested = true;
            self.pending.credit_request = true;
        }
        self.pending.any() || (self.host_readable && self.may_read_host() && self.peer_credit() > 0)
    }

    /// Events to watch on the host socket.
    pub fn wanted_events(&self) -> EventSet {
        let mut ev = EventSet::empty();
        if !self.host_readable && self.may_read_host() && self.peer_credit() > 0 {
            ev |= EventSet::IN;
        }
        if !self.txbuf.is_empty() {
            ev |= EventSet::OUT;
        }
        ev
    }

    /// Writes the next packet of this connection into `chain`; returns the bytes used, or
    /// `None` when there was nothing to send after all (or `chain` cannot hold any payload).
    pub fn fill_rx<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &ChainBuffer,
        guest_cid: u64,
    ) -> Result<Option<usize>, ConnError> {
        let (op, len, flags) = if std::mem::take(&mut self.pending.request) {
            (Op::Request, 0, 0)
        } else if std::mem::take(&mut self.pending.response) {
            (Op::Response, 0, 0)
        } else if std::mem::take(&mut self.pending.credit_request) {
            (Op::CreditRequest, 0, 0)
        } else if self.host_readable && self.may_read_host() && self.peer_credit() > 0 {
            let room = chain.len().saturating_sub(HDR_LEN);
            let max = (self.peer_credit() as usize).min(room).min(MAX_RX_PAYLOAD);
            if max == 0 {
                return Ok(None);
            }
            match self.read_into_guest(mem, chain, max) {
                Ok(0) => {
                    self.host_eof = true;
                    self.host_readable = false;
                    let rcv = if self.host_hup { SHUTDOWN_RCV } else { 0 };
                    (Op::Shutdown, 0, SHUTDOWN_SEND | rcv)
                }
                Ok(n) => {
                    self.tx_cnt += n as u32;
                    (Op::Rw, n, 0)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.host_readable = false;
                    if !std::mem::take(&mut self.pending.credit_update) {
                        return Ok(None);
                    }
                    (Op::CreditUpdate, 0, 0)
                }
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    return Err(ConnError::GuestMemory(e.to_string()))
                }
                Err(e) => return Err(ConnError::HostRead(e)),
            }
        } else if std::mem::take(&mut self.pending.credit_update) {
            (Op::CreditUpdate, 0, 0)
        } else {
            return Ok(None);
        };
        let mut hdr = Header::to_guest(guest_cid, self.key.local_port, self.key.peer_port, op);
        hdr.len = len as u32;
        hdr.flags = flags;
        self.stamp_credit(&mut hdr);
        chain
            .write_at(mem, 0, &hdr.to_bytes())
            .map_err(|e| ConnError::GuestMemory(e.to_string()))?;
        Ok(Some(HDR_LEN + len))
    }

    /// Puts our credit into an outgoing header; it counts as a credit update.
    fn stamp_credit(&mut self, hdr: &mut Header) {
        hdr.buf_alloc = CONN_BUF_ALLOC;
        hdr.fwd_cnt = self.fwd_cnt.0;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending.credit_update = false;
    }

    /// Reads up to `max` bytes from the host socket straight into the payload area of `chain`.
    /// `Ok(0)` is end of stream; guest memory faults come back as `InvalidData`.
    fn read_into_guest<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &ChainBuffer,
        max: usize,
    ) -> io::Result<usize> {
        let mut total = 0;
        for (addr, len) in chain.ranges(HDR_LEN, max) {
            let slices = mem
                .get_slices(addr, len, Permissions::Write)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
            for slice in slices {
                let mut slice =
                    slice.map_err(|e| io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
                let n = loop {
                    match self.stream.read_volatile(&mut slice) {
                        Ok(n) => break n,
                        Err(VolatileMemoryError::IOError(e))
                            if e.kind() == ErrorKind::Interrupted => {}
                        Err(VolatileMemoryError::IOError(e))
                            if e.kind() == ErrorKind::WouldBlock && total > 0 =>
                        {
                            return Ok(total)
                        }
                        Err(VolatileMemoryError::IOError(e)) => return Err(e),
                        Err(e) => {
                            return Err(io::Error::new(ErrorKind::InvalidData, e.to_string()))
                        }
                    }
                };
                total += n;
                if n < slice.len() {
                    return Ok(total);
                }
            }
        }
        Ok(total)
    }

    /// Builds an `RST` for this connection.
    pub fn rst_header(&self, guest_cid: u64) -> Header {
        Header::to_guest(guest_cid, self.key.local_port, self.key.peer_port, Op::Rst)
    }
}

/// Most guest memory slices handed to one send; any beyond go through the buffer.
const MAX_IOVECS: usize = 16;

/// Sends what the socket takes now from `slices`, in order, with one syscall;
/// `WouldBlock` counts as nothing written.
fn write_gathered<B: BitmapSlice>(
    stream: &UnixStream,
    slices: &[VolatileSlice<'_, B>],
) -> Result<usize, ConnError> {
    let slices = &slices[..slices.len().min(MAX_IOVECS)];
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
    let iovecs: Vec<libc::iovec> = guards
        .iter()
        .zip(slices)
        .map(|(g, s)| libc::iovec {
            iov_base: g.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        })
        .collect();
    // SAFETY: every iovec covers a mapped guest memory range kept alive by its guard until
    // the call returns.
    match unsafe { send_vectored(stream, &iovecs) } {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(ConnError::HostWrite(e)),
    }
}
