//! Published ports, relayed over vsock: the host listens on each mapping's address, and every
//! connection (or UDP flow) becomes a stream to guest-init's [`protocol::PUBLISH_PORT`] through
//! the VM's hybrid-vsock socket, which guest-init connects to the container's port. It never
//! touches the network device, so it works the same with every engine and `--network none`.
//! One thread runs every connection of a VM (tokio, current-thread).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use protocol::{RelayHeader, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::PortMapping;

/// Largest UDP payload relayed.
const MAX_DATAGRAM: usize = 65507;
/// A UDP flow without traffic for this long is closed.
const UDP_IDLE: Duration = Duration::from_secs(120);
/// Most UDP flows at once per published port.
const MAX_UDP_FLOWS: usize = 256;
/// Buffer of each direction of a relayed TCP connection: large reads and writes make few
/// syscalls per gigabyte (tokio's default is 8 KiB).
const COPY_BUF: usize = 256 << 10;
/// Longest answer line of the VM's vsock device to `CONNECT`.
const MAX_REPLY: usize = 64;

/// Sockets bound for every mapping, before the VM boots: a port in use fails the run at once.
pub struct Bound {
    tcp: Vec<(std::net::TcpListener, u16)>,
    udp: Vec<(std::net::UdpSocket, u16)>,
}

/// Binds every mapping; the error names the address and what to do.
pub fn bind(mappings: &[PortMapping]) -> Result<Bound> {
    let mut bound = Bound {
        tcp: vec![],
        udp: vec![],
    };
    for m in mappings {
        let in_use = |e: std::io::Error| {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => "is already in use".to_string(),
                std::io::ErrorKind::AddrNotAvailable => "is not an address of this host".into(),
                _ => format!("cannot be bound: {e}"),
            };
            anyhow::anyhow!(
                "cannot publish {m}: host port {} {why}; choose another with -p",
                m.host
            )
        };
        match m.transport {
            Transport::Tcp => {
                let l = std::net::TcpListener::bind(m.host).map_err(in_use)?;
                l.set_nonblocking(true)
                    .context("cannot configure a listener")?;
                bound.tcp.push((l, m.container_port));
            }
            Transport::Udp => {
                let s = std::net::UdpSocket::bind(m.host).map_err(in_use)?;
                s.set_nonblocking(true)
                    .context("cannot configure a UDP socket")?;
                bound.udp.push((s, m.container_port));
            }
        }
    }
    Ok(bound)
}

/// The relay of one VM; dropping it closes every listener and connection.
pub struct Relay {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Relays `bound`'s sockets to the VM whose hybrid-vsock socket is `<vm_dir>/vsock`.
    pub fn start(bound: Bound, vm_dir: &Path) -> Result<Relay> {
        let vsock = Arc::new(vm_dir.join("vsock"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("cannot start the port relay")?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("port-relay".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (l, port) in bound.tcp {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(serve_tcp(l, port, vsock.clone()));
                            }
                            Err(e) => tracing::warn!("port relay: {e}"),
                        }
                    }
                    for (s, port) in bound.udp {
                        match UdpSocket::from_std(s) {
                            Ok(s) => {
                                tokio::spawn(serve_udp(Arc::new(s), port, vsock.clone()));
                            }
                            Err(e) => tracing::warn!("port relay: {e}"),
                        }
                    }
                    let _ = stopped.await;
                });
            })
            .context("cannot start the port relay thread")?;
        Ok(Relay {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_tcp(listener: TcpListener, port: u16, vsock: Arc<PathBuf>) {
    loop {
        let client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!("port relay: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let vsock = vsock.clone();
        tokio::spawn(async move {
            if let Err(e) = relay_tcp(client, port, &vsock).await {
                tracing::debug!(port, "relayed connection: {e:#}");
            }
        });
    }
}

async fn relay_tcp(mut client: TcpStream, port: u16, vsock: &Path) -> Result<()> {
    let _ = client.set_nodelay(true);
    let mut guest = open(vsock, Transport::Tcp, port).await?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut guest, COPY_BUF, COPY_BUF)
        .await
        .context("copy")?;
    Ok(())
}

/// A stream to the container's `port` through guest-init; an error when nothing listens.
async fn open(vsock: &Path, transport: Transport, port: u16) -> Result<UnixStream> {
    let mut s = UnixStream::connect(vsock)
        .await
        .with_context(|| format!("cannot reach the VM at {}", vsock.display()))?;
    s.write_all(format!("CONNECT {}\n", protocol::PUBLISH_PORT).as_bytes())
        .await?;
    let mut reply = Vec::new();
    loop {
        let b = s.read_u8().await.context("the VM refused the relay")?;
        if b == b'\n' {
            break;
        }
        reply.push(b);
        if reply.len() > MAX_REPLY {
            bail!("the VM's vsock device answered too long a line");
        }
    }
    if !reply.starts_with(b"OK ") {
        bail!("the VM's vsock device refused the relay");
    }
    s.write_all(&RelayHeader { transport, port }.encode())
        .await?;
    match s.read_u8().await.context("guest-init did not answer")? {
        RelayHeader::REACHED => Ok(s),
        _ => bail!("nothing listens on the container's port {port}"),
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, port: u16, vsock: Arc<PathBuf>) {
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("port relay: UDP receive: {e}");
                continue;
            }
        };
        flows.retain(|_, f| !f.is_closed());
        if !flows.contains_key(&peer) {
            if flows.len() >= MAX_UDP_FLOWS {
                tracing::debug!(%peer, "port relay: too many UDP flows; datagram dropped");
                continue;
            }
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(udp_flow(socket.clone(), peer, port, vsock.clone(), rx));
            flows.insert(peer, tx);
        }
        if let Some(f) = flows.get(&peer) {
            let _ = f.try_send(buf[..n].to_vec());
        }
    }
}

/// One UDP peer's flow: its datagrams to the container, the container's answers back to it.
async fn udp_flow(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    port: u16,
    vsock: Arc<PathBuf>,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
) {
    let guest = match open(&vsock, Transport::Udp, port).await {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(port, "UDP flow: {e:#}");
            return;
        }
    };
    let (mut from_guest, mut to_guest) = guest.into_split();
    let mut reply = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            d = datagrams.recv() => {
                let Some(d) = d else { return };
                let mut frame = (d.len() as u16).to_be_bytes().to_vec();
                frame.extend_from_slice(&d);
                if to_guest.write_all(&frame).await.is_err() {
                    return;
                }
            }
            len = from_guest.read_u16() => {
                let Ok(len) = len else { return };
                let n = usize::from(len);
                if n > MAX_DATAGRAM || from_guest.read_exact(&mut reply[..n]).await.is_err() {
                    return;
                }
                let _ = socket.send_to(&reply[..n], peer).await;
            }
            () = tokio::time::sleep(UDP_IDLE) => return,
        }
    }
}
