//! The guest's end of published ports: the host relays each connection to a published host
//! port over vsock [`protocol::PUBLISH_PORT`]; this connects it to the container's port on
//! `127.0.0.1` (the container shares the guest's network namespace) and copies both ways.
//! TCP bytes flow as they are; UDP datagrams are framed as a `u16` big-endian length and the
//! payload, one connected UDP socket per relayed flow.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::socket::{accept4, SockFlag};
use protocol::{RelayHeader, Transport};
use tracing::{debug, warn};

/// Largest UDP payload relayed.
const MAX_DATAGRAM: usize = 65507;
/// Buffer of each direction of a relayed TCP connection.
const COPY_BUF: usize = 256 << 10;
/// How often a UDP flow's receiver looks whether the host side has gone.
const UDP_POLL: Duration = Duration::from_millis(500);

/// Accepts relayed connections on `listener` for as long as guest-init runs.
pub fn spawn(listener: OwnedFd) -> crate::error::Result<()> {
    use crate::error::Context;
    thread::Builder::new()
        .name("publish".into())
        .spawn(move || loop {
            let conn = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
                Err(e) => {
                    warn!(error = %e, "the publish listener failed; no more relayed connections");
                    return;
                }
            };
            if let Err(e) = thread::Builder::new()
                .name("relay".into())
                .spawn(move || relay(conn))
            {
                warn!(error = %e, "cannot start a relay thread");
            }
        })
        .map(drop)
        .ctx(|| "start the publish listener thread".into())
}

/// One relayed connection: its header, the answer, then the copy.
fn relay(mut host: File) {
    let mut header = [0u8; RelayHeader::LEN];
    if host.read_exact(&mut header).is_err() {
        return;
    }
    let Some(header) = RelayHeader::decode(header) else {
        warn!(?header, "a relay header with an unknown transport");
        return;
    };
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, header.port));
    let result = match header.transport {
        Transport::Tcp => match TcpStream::connect(target) {
            Ok(c) => answer(&mut host, RelayHeader::REACHED).map(|()| tcp(host, c)),
            Err(e) => {
                debug!(port = header.port, error = %e, "nothing listens on a published port");
                answer(&mut host, RelayHeader::REFUSED)
            }
        },
        Transport::Udp => match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.connect(target).map(|()| s))
        {
            Ok(s) => answer(&mut host, RelayHeader::REACHED).and_then(|()| udp(host, s)),
            Err(e) => answer(&mut host, RelayHeader::REFUSED).and(Err(e)),
        },
    };
    if let Err(e) = result {
        debug!(port = header.port, error = %e, "relayed connection ended");
    }
}

fn answer(host: &mut File, code: u8) -> std::io::Result<()> {
    host.write_all(&[code])
}

/// Copies `from` to `to` until `from` ends, in large pieces: every syscall counts in a guest.
fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies both ways until each side has closed its direction.
fn tcp(host: File, container: TcpStream) {
    let (Ok(host2), Ok(container2)) = (host.try_clone(), container.try_clone()) else {
        return;
    };
    let inbound = thread::spawn(move || {
        copy(&host2, &container2);
        let _ = container2.shutdown(Shutdown::Write);
    });
    copy(&container, &host);
    let _ = nix::sys::socket::shutdown(host.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    let _ = inbound.join();
}

/// Datagrams host → container from the framed stream, container → host into it.
fn udp(host: File, socket: UdpSocket) -> std::io::Result<()> {
    let done = Arc::new(AtomicBool::new(false));
    socket.set_read_timeout(Some(UDP_POLL))?;
    let (mut out, back) = (host.try_clone()?, socket.try_clone()?);
    let stop = done.clone();
    let replies = thread::spawn(move || {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !stop.load(Ordering::Relaxed) {
            match back.recv(&mut buf) {
                Ok(n) => {
                    let mut frame = (n as u16).to_be_bytes().to_vec();
                    frame.extend_from_slice(&buf[..n]);
                    if out.write_all(&frame).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // Nothing listens yet (ICMP port unreachable): later datagrams may reach it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => return,
            }
        }
    });
    let mut host = host;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let result = loop {
        let mut len = [0u8; 2];
        if host.read_exact(&mut len).is_err() {
            break Ok(());
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n > MAX_DATAGRAM {
            break Err(std::io::Error::other(format!("a datagram of {n} bytes")));
        }
        if let Err(e) = host.read_exact(&mut buf[..n]) {
            break Err(e);
        }
        match socket.send(&buf[..n]) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => break Err(e),
        }
    };
    done.store(true, Ordering::Relaxed);
    let _ = replies.join();
    result
}
