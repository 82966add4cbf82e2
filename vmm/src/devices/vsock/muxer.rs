//! The host side in Firecracker's hybrid-vsock convention: one listening Unix socket `U` per
//! VM (host processes connect and write `CONNECT <port>\n`), guest connections to port `P`
//! reach `U_P`. Owns the connection table, one epoll instance covering every host socket,
//! and the queue of packets waiting for the guest's RX queue.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt::Display;
use std::io::ErrorKind;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{ConnError, ConnKey, Connection, Lifecycle};
use super::error::VsockError;
use super::handshake::{Handshake, Progress};
use super::packet::{Header, Op, HDR_LEN, HOST_CID, TYPE_STREAM};
use crate::devices::chain::ChainBuffer;

/// Largest payload accepted in one guest → host packet: Linux never sends more than
/// `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE` (64 KiB) per packet.
pub const MAX_TX_PAYLOAD: u32 = 64 * 1024;
/// Open connections per device; more are refused with `RST`.
pub const MAX_CONNECTIONS: usize = 1024;
/// Host connections still writing their `CONNECT` line; more are closed at once.
pub const MAX_HANDSHAKES: usize = 64;
/// Connection-less packets (`RST` replies) waiting for RX buffers. While this many wait,
/// the device stops taking TX packets, so a guest cannot make it queue without bound.
pub const MAX_CONTROL_BACKLOG: usize = 256;

const LISTENER_TOKEN: u64 = 0;
const FIRST_LOCAL_PORT: u32 = 1 << 30;
const EVENT_BATCH: usize = 64;

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    epoll: Epoll,
    listener: UnixListener,
    handshakes: HashMap<u64, Handshake>,
    conns: HashMap<ConnKey, Connection>,
    tokens: HashMap<u64, ConnKey>,
    rx_queue: VecDeque<ConnKey>,
    control: VecDeque<Header>,
    next_token: u64,
    next_local_port: u32,
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Muxer, VsockError> {
        let listen_err = |source| VsockError::Listen {
            path: uds_path.to_owned(),
            source,
        };
        let listener = UnixListener::bind(uds_path).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
            )
            .map_err(VsockError::Epoll)?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_owned(),
            epoll,
            listener,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            rx_queue: VecDeque::new(),
            control: VecDeque::new(),
            next_token: LISTENER_TOKEN + 1,
            next_local_port: FIRST_LOCAL_PORT,
        })
    }

    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether a packet waits for an RX buffer.
    pub fn has_rx_work(&self) -> bool {
        !self.control.is_empty() || !self.rx_queue.is_empty()
    }

    /// Whether TX processing must wait for the guest to take queued replies.
    pub fn tx_paused(&self) -> bool {
        self.control.len() >= MAX_CONTROL_BACKLOG
    }

    /// Handles one batch of ready host sockets without blocking.
    pub fn handle_events(&mut self) {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => return,
            Err(e) => {
                warn!("vsock: epoll_wait failed: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            let set = ev.event_set();
            if token == LISTENER_TOKEN {
                self.accept_host_connections();
            } else if self.handshakes.contains_key(&token) {
                self.advance_handshake(token);
            } else if let Some(&key) = self.tokens.get(&token) {
                self.host_socket_event(key, set);
            }
        }
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn accept_host_connections(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("vsock: accept on {} failed: {e}", self.uds_path.display());
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES {
                warn!("vsock: {MAX_HANDSHAKES} host connections pending, refusing another");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("vsock: cannot make host connection non-blocking: {e}");
                continue;
            }
            let token = self.token();
            let ev = EpollEvent::new(EventSet::IN, token);
            if let Err(e) = self
                .epoll
                .ctl(ControlOperation::Add, stream.as_raw_fd(), ev)
            {
                warn!("vsock: cannot watch host connection: {e}");
                continue;
            }
            self.handshakes.insert(token, Handshake::new(stream));
        }
    }

    fn advance_handshake(&mut self, token: u64) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let port = match hs.advance() {
            Progress::Pending => return,
            Progress::Connect(port) => port,
            Progress::Failed(why) => {
                warn!(
                    "vsock: host connection on {} dropped: {why}",
                    self.uds_path.display()
                );
                self.drop_handshake(token);
                return;
            }
        };
        let Some(hs) = self.drop_handshake(token) else {
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            warn!("vsock: {MAX_CONNECTIONS} connections open, refusing host CONNECT {port}");
            return;
        }
        let local_port = self.alloc_local_port(port);
        let key = ConnKey {
            local_port,
            peer_port: port,
        };
        debug!("vsock: host connects to guest port {port} from local port {local_port}");
        self.insert(Connection::host_initiated(key, hs.stream, token));
    }

    fn drop_handshake(&mut self, token: u64) -> Option<Handshake> {
        let hs = self.handshakes.remove(&token)?;
        let ev = EpollEvent::new(EventSet::empty(), token);
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, hs.stream.as_raw_fd(), ev);
        Some(hs)
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let local_port = self.next_local_port;
            self.next_local_port = local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&ConnKey {
                local_port,
                peer_port,
            }) {
                return local_port;
            }
        }
    }

    fn insert(&mut self, conn: Connection) {
        let key = conn.key;
        self.tokens.insert(conn.token, key);
        self.conns.insert(key, conn);
        self.sync(key);
    }

    fn host_socket_event(&mut self, key: ConnKey, set: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let hangup = set.intersects(EventSet::HANG_UP | EventSet::ERROR);
        if set.contains(EventSet::IN) || hangup {
            conn.mark_readable(hangup);
        }
        if set.contains(EventSet::OUT) || (hangup && conn.registered.contains(EventSet::OUT)) {
            match conn.flush() {
                Ok(Lifecycle::Open) => {}
                Ok(Lifecycle::Finished) => return self.close(key, "closed by the guest"),
                Err(e) => return self.reset(key, e),
            }
        }
        self.sync(key);
    }

    /// Re-registers the connection's socket interest and queues it for RX if it has work.
    fn sync(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let want = conn.wanted_events();
        if want != conn.registered {
            let op = if conn.registered.is_empty() {
                ControlOperation::Add
            } else if want.is_empty() {
                ControlOperation::Delete
            } else {
                ControlOperation::Modify
            };
            let ev = EpollEvent::new(want, conn.token);
            if let Err(e) = self.epoll.ctl(op, conn.stream.as_raw_fd(), ev) {
                return self.reset(key, format!("cannot watch host socket: {e}"));
            }
            conn.registered = want;
        }
        if !conn.queued && conn.has_rx_work() {
            conn.queued = true;
            self.rx_queue.push_back(key);
        }
    }

    /// Removes a connection, closing its host socket.
    fn remove(&mut self, key: ConnKey) -> Option<Connection> {
        let conn = self.conns.remove(&key)?;
        self.tokens.remove(&conn.token);
        if !conn.registered.is_empty() {
            let ev = EpollEvent::new(EventSet::empty(), conn.token);
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, conn.stream.as_raw_fd(), ev);
        }
        Some(conn)
    }

    /// Ends a connection normally: `RST` to the guest, host socket closed.
    fn close(&mut self, key: ConnKey, why: &str) {
        if let Some(conn) = self.remove(key) {
            debug!("vsock: connection {key:?} {why}");
            self.control.push_back(conn.rst_header(self.guest_cid));
        }
    }

    /// Ends a connection after an error: `RST` to the guest, host socket closed.
    fn reset(&mut self, key: ConnKey, why: impl Display) {
        if let Some(conn) = self.remove(key) {
            warn!("vsock: resetting connection {key:?}: {why}");
            self.control.push_back(conn.rst_header(self.guest_cid));
        }
    }

    fn rst_reply(&mut self, hdr: &Header) {
        if hdr.op != Op::Rst as u16 {
            let rst = Header::to_guest(self.guest_cid, hdr.dst_port, hdr.src_port, Op::Rst);
            self.control.push_back(rst);
        }
    }

    fn validate(&self, hdr: &Header, chain_len: usize) -> Result<Op, String> {
        let op = Op::from_raw(hdr.op).ok_or_else(|| format!("unknown op {}", hdr.op))?;
        if hdr.type_ != TYPE_STREAM {
            return Err(format!("unsupported socket type {}", hdr.type_));
        }
        if hdr.src_cid != self.guest_cid {
            return Err(format!("source CID {} is not the guest's", hdr.src_cid));
        }
        if hdr.dst_cid != HOST_CID {
            return Err(format!("destination CID {} is not the host", hdr.dst_cid));
        }
        if hdr.len > MAX_TX_PAYLOAD {
            return Err(format!("payload length {} above {MAX_TX_PAYLOAD}", hdr.len));
        }
        let room = chain_len.saturating_sub(HDR_LEN);
        if hdr.len as usize > room {
            return Err(format!(
                "payload length {} exceeds the {} bytes the descriptors hold",
                hdr.len, room
            ));
        }
        if op != Op::Rw && hdr.len != 0 {
            return Err(format!("{op:?} carries {} payload bytes", hdr.len));
        }
        Ok(op)
    }

    /// Handles a packet whose chain was unusable: resets the named connection, or answers
    /// with `RST`.
    pub fn reject(&mut self, hdr: &Header, why: impl Display) {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if self.conns.contains_key(&key) {
            self.reset(key, format!("malformed packet: {why}"));
        } else {
            warn!("vsock: malformed packet {hdr:?}: {why}");
            self.rst_reply(hdr);
        }
    }

    /// Handles one guest → host packet; `chain` holds the header at offset 0 and the payload.
    pub fn handle_guest_packet<M: GuestMemory>(
        &mut self,
        mem: &M,
        hdr: &Header,
        chain: &ChainBuffer,
    ) {
        let op = match self.validate(hdr, chain.len()) {
            Ok(op) => op,
            Err(why) => return self.reject(hdr, why),
        };
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return match op {
                Op::Request => self.connect_to_host(hdr, key),
                Op::Rst => {}
                _ => {
                    debug!("vsock: {op:?} for unknown connection {key:?}");
                    self.rst_reply(hdr)
                }
            };
        };
        conn.update_peer_credit(hdr);
        let result = match op {
            Op::Request => Err(ConnError::Protocol("REQUEST on an existing connection")),
            Op::Response => conn.on_response().map(|()| Lifecycle::Open),
            Op::Rst => {
                debug!("vsock: guest reset connection {key:?}");
                self.remove(key);
                return;
            }
            Op::Shutdown => conn.on_shutdown(hdr.flags),
            Op::Rw => conn
                .forward_from_guest(mem, chain, HDR_LEN, hdr.len as usize)
                .map(|()| Lifecycle::Open),
            Op::CreditUpdate => Ok(Lifecycle::Open),
            Op::CreditRequest => {
                conn.on_credit_request();
                Ok(Lifecycle::Open)
            }
        };
        match result {
            Ok(Lifecycle::Open) => self.sync(key),
            Ok(Lifecycle::Finished) => self.close(key, "closed by the guest"),
            Err(e) => self.reset(key, e),
        }
    }

    /// A guest connects to host port `P`: connect to `U_P`, answer `RESPONSE` or `RST`.
    fn connect_to_host(&mut self, hdr: &Header, key: ConnKey) {
        if self.conns.len() >= MAX_CONNECTIONS {
            warn!(
                "vsock: {MAX_CONNECTIONS} connections open, refusing guest port {}",
                key.peer_port
            );
            return self.rst_reply(hdr);
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", key.local_port));
        let stream = match UnixStream::connect(&path).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                debug!(
                    "vsock: guest connect to {}: {e}",
                    Path::new(&path).display()
                );
                return self.rst_reply(hdr);
            }
        };
        info!(
            "vsock: guest port {} connected to {}",
            key.peer_port,
            Path::new(&path).display()
        );
        let token = self.token();
        self.insert(Connection::guest_initiated(key, stream, token, hdr));
    }

    /// Writes the next waiting packet into `chain`; returns the bytes used, or `None` (and
    /// leaves `chain` untouched) when no connection produced anything.
    pub fn fill_rx<M: GuestMemory>(&mut self, mem: &M, chain: &ChainBuffer) -> Option<usize> {
        let mut candidates = self.rx_queue.len();
        loop {
            if let Some(hdr) = self.control.pop_front() {
                if let Err(e) = chain.write_at(mem, 0, &hdr.to_bytes()) {
                    warn!("vsock: cannot write RST into the RX buffer: {e}");
                    return Some(0);
                }
                return Some(HDR_LEN);
            }
            if candidates == 0 {
                return None;
            }
            candidates -= 1;
            let key = self.rx_queue.pop_front()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.queued = false;
            match conn.fill_rx(mem, chain, self.guest_cid) {
                Ok(Some(n)) => {
                    self.sync(key);
                    return Some(n);
                }
                Ok(None) => self.sync(key),
                Err(e) => self.reset(key, e),
            }
        }
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.uds_path) {
            debug!("vsock: removing {}: {e}", self.uds_path.display());
        }
    }
}
