//! The guest's end of published ports: the host relays each connection to a published host
//! port over vsock [`protocol::PUBLISH_PORT`]; this connects it to the container's port on
//! `127.0.0.1` (the container shares the guest's network namespace) and copies both ways.
//! TCP bytes flow as they are; UDP datagrams are framed as a `u16` big-endian length and the
//! payload, one connected UDP socket per relayed flow.
//!
//! One thread serves every relayed connection: non-blocking sockets on one edge-triggered
//! epoll, each connection driven until none of its sockets can make progress.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::thread;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, SockFlag};
use protocol::{RelayHeader, Transport};
use tracing::{debug, warn};

use crate::error::{Context, Result};

/// Largest UDP payload relayed.
const MAX_DATAGRAM: usize = 65507;
/// Buffer of each direction of a relayed connection (room for a framed datagram).
const PIPE_BUF: usize = 256 << 10;
const _: () = assert!(PIPE_BUF >= 2 + MAX_DATAGRAM);
/// The epoll token of the listener; connections use `slot << 1 | side`.
const LISTENER: u64 = u64::MAX;

/// Accepts and relays connections on `listener` for as long as guest-init runs.
pub fn spawn(listener: OwnedFd) -> Result<()> {
    set_nonblocking(listener.as_fd())?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ctx(|| "create an epoll".into())?;
    epoll
        .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
        .ctx(|| "poll the publish listener".into())?;
    thread::Builder::new()
        .name("publish".into())
        .spawn(move || Relay::new(listener, epoll).run())
        .map(drop)
        .ctx(|| "start the publish relay thread".into())
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).ctx(|| "read socket flags".into())?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map(drop)
    .ctx(|| "make a socket non-blocking".into())
}

/// Bytes on their way from one socket to another.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source ended (or the relay stops reading it).
    src_done: bool,
    /// The destination's write side was shut down after the last byte.
    dst_shut: bool,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0; PIPE_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            src_done: false,
            dst_shut: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn room(&self) -> usize {
        self.buf.len() - self.end
    }

    /// Appends `bytes` (the caller checked the room).
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Moves what is left to the front, so that the room is all of the rest.
    fn compact(&mut self) {
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads from `src` once if there is room; returns whether anything changed.
    fn fill(&mut self, mut src: impl Read) -> std::io::Result<bool> {
        self.compact();
        if self.src_done || self.room() == 0 {
            return Ok(false);
        }
        match src.read(&mut self.buf[self.end..]) {
            Ok(0) => self.src_done = true,
            Ok(n) => self.end += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Writes to `dst` once if there is something; returns whether anything changed.
    fn drain(&mut self, mut dst: impl Write) -> std::io::Result<bool> {
        if self.is_empty() {
            return Ok(false);
        }
        match dst.write(&self.buf[self.start..self.end]) {
            Ok(n) => self.start += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// The source ended and everything went out: shuts the destination's write side once.
    fn finish(&mut self, shutdown: impl FnOnce()) -> bool {
        if self.src_done && self.is_empty() && !self.dst_shut {
            shutdown();
            self.dst_shut = true;
            return true;
        }
        false
    }
}

/// The container's side of a relayed connection.
enum Container {
    /// Until the host's 3-byte header has arrived.
    Unknown {
        header: Vec<u8>,
    },
    /// A TCP connect in progress.
    Connecting(TcpStream),
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// One relayed connection: the host's vsock stream and the container's socket.
struct Conn {
    host: File,
    container: Container,
    /// host → container
    up: Pipe,
    /// container → host (guest-init's answer byte first)
    down: Pipe,
}

impl Conn {
    fn container_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.container {
            Container::Unknown { .. } => None,
            Container::Connecting(s) | Container::Tcp(s) => Some(s.as_fd()),
            Container::Udp(s) => Some(s.as_fd()),
        }
    }
}

/// What happened to a connection in one round of driving it.
enum Step {
    Progress,
    Idle,
    Done,
}

struct Relay {
    listener: OwnedFd,
    epoll: Epoll,
    conns: Vec<Option<Conn>>,
}

impl Relay {
    fn new(listener: OwnedFd, epoll: Epoll) -> Relay {
        Relay {
            listener,
            epoll,
            conns: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "the publish relay failed; no more relayed connections");
                    return;
                }
            };
            for e in &events[..n] {
                match e.data() {
                    LISTENER => self.accept_all(),
                    token => self.drive((token >> 1) as usize),
                }
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            let fd = match accept4(self.listener.as_raw_fd(), flags) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => {
                    warn!(error = %e, "accepting a relayed connection failed");
                    return;
                }
            };
            let slot = match self.conns.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
            if let Err(e) = self
                .epoll
                .add(&fd, EpollEvent::new(interest, (slot as u64) << 1))
            {
                warn!(error = %e, "cannot poll a relayed connection");
                continue;
            }
            self.conns[slot] = Some(Conn {
                host: File::from(fd),
                container: Container::Unknown { header: Vec::new() },
                up: Pipe::new(),
                down: Pipe::new(),
            });
            self.drive(slot);
        }
    }

    /// Drives connection `slot` until it can make no progress; closes it when it is done.
    fn drive(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let done = loop {
            match self.step(slot, &mut conn) {
                Ok(Step::Progress) => {}
                Ok(Step::Idle) => break false,
                Ok(Step::Done) => break true,
                Err(e) => {
                    debug!(error = %e, "relayed connection ended");
                    break true;
                }
            }
        };
        if done {
            let _ = self.epoll.delete(&conn.host);
            if let Some(fd) = conn.container_fd() {
                let _ = self.epoll.delete(fd);
            }
        } else {
            self.conns[slot] = Some(conn);
        }
    }

    fn step(&mut self, slot: usize, conn: &mut Conn) -> std::io::Result<Step> {
        if let Container::Unknown { header } = &mut conn.container {
            let mut b = [0u8; RelayHeader::LEN];
            let want = RelayHeader::LEN - header.len();
            match (&conn.host).read(&mut b[..want]) {
                Ok(0) => return Ok(Step::Done),
                Ok(n) => header.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Idle),
                Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(Step::Progress),
                Err(e) => return Err(e),
            }
            let Ok(h) = <[u8; RelayHeader::LEN]>::try_from(header.as_slice()) else {
                return Ok(Step::Progress);
            };
            return match self.open(slot, conn, h) {
                Ok(()) => Ok(Step::Progress),
                Err(e) => Ok(refuse(conn, &e)),
            };
        }
        if let Container::Connecting(s) = &conn.container {
            if let Some(e) = s.take_error()? {
                return Ok(refuse(conn, &e));
            }
            if s.peer_addr().is_err() {
                return Ok(Step::Idle);
            }
            let connected =
                std::mem::replace(&mut conn.container, Container::Unknown { header: vec![] });
            if let Container::Connecting(s) = connected {
                conn.container = Container::Tcp(s);
            }
            conn.down.push(&[RelayHeader::REACHED]);
            return Ok(Step::Progress);
        }
        match &conn.container {
            Container::Unknown { .. } | Container::Connecting(_) => Ok(Step::Idle),
            Container::Tcp(s) => {
                let mut progress = conn.up.fill(&conn.host)?;
                progress |= conn.up.drain(s)?;
                progress |= conn.up.finish(|| drop(s.shutdown(Shutdown::Write)));
                progress |= conn.down.fill(s)?;
                progress |= conn.down.drain(&conn.host)?;
                progress |= conn.down.finish(|| {
                    let _ = nix::sys::socket::shutdown(
                        conn.host.as_raw_fd(),
                        nix::sys::socket::Shutdown::Write,
                    );
                });
                if conn.up.dst_shut && conn.down.dst_shut {
                    return Ok(Step::Done);
                }
                Ok(if progress { Step::Progress } else { Step::Idle })
            }
            Container::Udp(s) => {
                let mut progress = conn.up.fill(&conn.host)?;
                progress |= send_datagrams(&mut conn.up, s)?;
                progress |= recv_datagrams(&mut conn.down, s)?;
                progress |= conn.down.drain(&conn.host)?;
                // The host closes the flow when it is idle or its peer is gone.
                if conn.up.src_done {
                    return Ok(Step::Done);
                }
                Ok(if progress { Step::Progress } else { Step::Idle })
            }
        }
    }

    /// Opens the container's side as the host's `header` asks.
    fn open(&mut self, slot: usize, conn: &mut Conn, header: [u8; 3]) -> std::io::Result<()> {
        let Some(h) = RelayHeader::decode(header) else {
            return Err(std::io::Error::other(format!(
                "a relay header with an unknown transport: {header:?}"
            )));
        };
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, h.port));
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        let token = (slot as u64) << 1 | 1;
        match h.transport {
            Transport::Tcp => {
                let s = connect_nonblocking(target)?;
                self.epoll
                    .add(&s, EpollEvent::new(interest, token))
                    .map_err(std::io::Error::from)?;
                conn.container = Container::Connecting(s);
            }
            Transport::Udp => {
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
                s.connect(target)?;
                s.set_nonblocking(true)?;
                self.epoll
                    .add(&s, EpollEvent::new(interest, token))
                    .map_err(std::io::Error::from)?;
                conn.container = Container::Udp(s);
                conn.down.push(&[RelayHeader::REACHED]);
            }
        }
        Ok(())
    }
}

/// Tells the host nothing listens on the container's port (`why`); the connection is done.
fn refuse(conn: &Conn, why: &std::io::Error) -> Step {
    debug!(error = %why, "nothing listens on a published port");
    let _ = (&conn.host).write(&[RelayHeader::REFUSED]);
    Step::Done
}

/// A TCP connection to `addr` being made without blocking.
fn connect_nonblocking(addr: SocketAddr) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = nix::sys::socket::SockaddrIn::from(match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => return Err(std::io::Error::other("only IPv4 is relayed")),
    });
    match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}

/// Sends every whole framed datagram the pipe holds; returns whether any went.
fn send_datagrams(pipe: &mut Pipe, socket: &UdpSocket) -> std::io::Result<bool> {
    let mut progress = false;
    loop {
        let have = &pipe.buf[pipe.start..pipe.end];
        let Some(len) = have
            .get(..2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return Ok(progress);
        };
        if len > MAX_DATAGRAM {
            return Err(std::io::Error::other(format!("a datagram of {len} bytes")));
        }
        let Some(datagram) = have.get(2..2 + len) else {
            return Ok(progress);
        };
        match socket.send(datagram) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(progress),
            // Nothing listens (yet): the datagram is lost, as UDP allows.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
        pipe.start += 2 + len;
        progress = true;
    }
}

/// Receives datagrams from the container into the pipe, framed, while it has room for one.
fn recv_datagrams(pipe: &mut Pipe, socket: &UdpSocket) -> std::io::Result<bool> {
    let mut progress = false;
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        pipe.compact();
        if pipe.room() < 2 + MAX_DATAGRAM {
            return Ok(progress);
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                pipe.push(&(n as u16).to_be_bytes());
                pipe.push(&buf[..n]);
                progress = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(progress),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => progress = true,
            Err(e) => return Err(e),
        }
    }
}
