//! The vsock device served as a vhost-user backend, for QEMU's `vhost-user-vsock-device`:
//! [`serve_vhost_user`] listens on the vhost-user socket on a background thread and handles
//! one front end until it disconnects or [`VhostUserServer::stop`] is called.
//!
//! Offered: `VIRTIO_F_VERSION_1`, `VIRTIO_RING_F_EVENT_IDX`, `VIRTIO_RING_F_INDIRECT_DESC`,
//! `VHOST_USER_F_PROTOCOL_FEATURES` with the `CONFIG` protocol feature (QEMU reads the guest
//! CID from the backend's config space). The device's epoll fd joins the backend's worker
//! loop through `VringEpollHandler::register_listener`.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tracing::{debug, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Error as VhostError, Listener};
use vhost_user_backend::{
    ShutdownHandle, VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{
    VsockDevice, DEVICE_FEATURES, EVENT_QUEUE, NUM_QUEUES, QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE,
};
use super::error::VsockError;

/// Epoll token of the device's own fd in the backend's worker loop (tokens up to
/// `NUM_QUEUES` belong to the vrings and the exit event).
const BACKEND_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// Errors starting or running a vhost-user server.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserServerError {
    #[error(transparent)]
    Device(#[from] VsockError),
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    #[error("cannot listen on vhost-user socket {path}: {source}")]
    Listen { path: PathBuf, source: VhostError },
    #[error("cannot watch the vsock device fd: {0}")]
    Register(io::Error),
    #[error("vhost-user server thread: {0}")]
    Thread(io::Error),
    #[error("vhost-user server thread panicked")]
    Panicked,
}

/// The device plus what vhost-user tells it about guest memory.
struct VsockBackend {
    device: VsockDevice,
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
}

impl VsockBackend {
    fn process(&mut self, vrings: &[VringRwLock]) -> io::Result<()> {
        let (Some(rx_vring), Some(tx_vring)) = (vrings.get(RX_QUEUE), vrings.get(TX_QUEUE)) else {
            return Ok(());
        };
        let mut rx = rx_vring.get_mut();
        let mut tx = tx_vring.get_mut();
        if !rx.is_enabled() || !tx.is_enabled() {
            return Ok(());
        }
        let mem = self.mem.memory();
        let activity = self
            .device
            .process_queues(&*mem, rx.get_queue_mut(), tx.get_queue_mut())
            .map_err(io::Error::other)?;
        for (used, state) in [(activity.rx_used, &mut rx), (activity.tx_used, &mut tx)] {
            if used && state.needs_notification().map_err(io::Error::other)? {
                state.signal_used_queue()?;
            }
        }
        Ok(())
    }
}

impl VhostUserBackendMut for VsockBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        usize::from(QUEUE_MAX_SIZE)
    }

    fn features(&self) -> u64 {
        DEVICE_FEATURES
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
    }

    // Queues get EVENT_IDX from the vhost-user handler; the device's notification handling
    // goes through `Queue` and works either way.
    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut data = vec![0u8; size.min(256) as usize];
        self.device.read_config(u64::from(offset), &mut data);
        data
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = mem;
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(e) => {
                warn!("vsock vhost-user: cannot create exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        match device_event {
            BACKEND_EVENT => self.device.handle_backend_events(),
            e if usize::from(e) == EVENT_QUEUE => return Ok(()),
            e if usize::from(e) == RX_QUEUE || usize::from(e) == TX_QUEUE => {}
            other => {
                warn!("vsock vhost-user: unexpected event {other}");
                return Ok(());
            }
        }
        self.process(vrings)
    }
}

/// Shared between the server thread and its controller.
struct StopSignal {
    requested: AtomicBool,
    wake: EventFd,
    connection: Mutex<Option<ShutdownHandle>>,
}

impl StopSignal {
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Err(e) = self.wake.write(1) {
            warn!("vsock vhost-user: cannot wake the server thread: {e}");
        }
        if let Ok(guard) = self.connection.lock() {
            if let Some(handle) = guard.as_ref() {
                handle.shutdown();
            }
        }
    }
}

/// A running vhost-user vsock server. Dropping it stops it too.
pub struct VhostUserServer {
    thread: Option<JoinHandle<Result<(), VhostUserServerError>>>,
    stop: Arc<StopSignal>,
}

/// Starts serving a vsock device for guest `guest_cid` with host Unix socket `uds_path` (see
/// the module docs of `vsock`) as a vhost-user backend listening on `socket_path`.
///
/// The socket exists when this returns, so the front end (QEMU with
/// `-chardev socket,path=<socket_path> -device vhost-user-vsock-device,chardev=…`) can be
/// started right after. The server handles one front-end connection and ends when it
/// disconnects (QEMU exited) or on [`VhostUserServer::stop`].
pub fn serve_vhost_user(
    socket_path: &Path,
    guest_cid: u64,
    uds_path: &Path,
) -> Result<VhostUserServer, VhostUserServerError> {
    let device = VsockDevice::new(guest_cid, uds_path)?;
    let device_fd = device.as_raw_fd();
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(RwLock::new(VsockBackend {
        device,
        mem: mem.clone(),
    }));
    let daemon = VhostUserDaemon::new("skiff-vsock".into(), backend, mem)
        .map_err(|e| VhostUserServerError::Daemon(e.to_string()))?;
    for handler in daemon.get_epoll_handlers().iter().take(1) {
        handler
            .register_listener(device_fd, EventSet::IN, u64::from(BACKEND_EVENT))
            .map_err(VhostUserServerError::Register)?;
    }
    let listener =
        Listener::new(socket_path, true).map_err(|source| VhostUserServerError::Listen {
            path: socket_path.to_owned(),
            source,
        })?;
    let stop = Arc::new(StopSignal {
        requested: AtomicBool::new(false),
        wake: EventFd::new(EFD_NONBLOCK).map_err(VhostUserServerError::Thread)?,
        connection: Mutex::new(None),
    });
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("skiff-vsock-vhost-user".into())
        .spawn(move || run(daemon, listener, &thread_stop))
        .map_err(VhostUserServerError::Thread)?;
    info!(
        "vsock vhost-user backend listening on {}",
        socket_path.display()
    );
    Ok(VhostUserServer {
        thread: Some(thread),
        stop,
    })
}

/// Body of the server thread.
fn run(
    mut daemon: VhostUserDaemon<Arc<RwLock<VsockBackend>>>,
    mut listener: Listener,
    stop: &StopSignal,
) -> Result<(), VhostUserServerError> {
    if !wait_readable(listener.as_raw_fd(), stop.wake.as_raw_fd())
        || stop.requested.load(Ordering::SeqCst)
    {
        debug!("vsock vhost-user: stopped before a front end connected");
        return Ok(());
    }
    daemon
        .start(&mut listener)
        .map_err(|e| VhostUserServerError::Daemon(e.to_string()))?;
    if let Ok(mut guard) = stop.connection.lock() {
        *guard = daemon.shutdown_handle();
    }
    if stop.requested.load(Ordering::SeqCst) {
        daemon.request_shutdown();
    }
    let result = match daemon.wait() {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            VhostError::Disconnected | VhostError::PartialMessage,
        )) => Ok(()),
        Err(_) if stop.requested.load(Ordering::SeqCst) => Ok(()),
        Err(e) => Err(VhostUserServerError::Daemon(e.to_string())),
    };
    debug!("vsock vhost-user: front end gone, stopping workers");
    // Dropping the daemon stops and joins its worker thread and drops the device.
    drop(daemon);
    result
}

/// Blocks until `fd` is readable; false if `wake` fired first (or polling failed).
fn wait_readable(fd: RawFd, wake: RawFd) -> bool {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd structs for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r >= 0 {
            return fds[1].revents == 0 && fds[0].revents & libc::POLLIN != 0;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            warn!("vsock vhost-user: poll failed: {e}");
            return false;
        }
    }
}

impl VhostUserServer {
    /// Whether the server thread has ended (front end disconnected, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops serving (disconnecting the front end if one is attached) and joins the thread.
    pub fn stop(mut self) -> Result<(), VhostUserServerError> {
        self.stop.request();
        self.join()
    }

    /// Waits until the front end disconnects, then joins the thread.
    pub fn wait(mut self) -> Result<(), VhostUserServerError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), VhostUserServerError> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| VhostUserServerError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for VhostUserServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.request();
            if let Err(e) = self.join() {
                warn!("vsock vhost-user server: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn wait_finished(server: &VhostUserServer, within: Duration) {
        let deadline = Instant::now() + within;
        while !server.is_finished() {
            assert!(Instant::now() < deadline, "server still running");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn stops_cleanly_before_a_front_end_connects() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, uds) = (dir.path().join("vhost.sock"), dir.path().join("vsock.sock"));
        let server = serve_vhost_user(&sock, 3, &uds).unwrap();
        assert!(sock.exists() && uds.exists());
        assert!(!server.is_finished());
        server.stop().unwrap();
        assert!(!sock.exists(), "vhost-user socket removed");
        assert!(!uds.exists(), "vsock socket removed");
    }

    #[test]
    fn ends_by_itself_when_the_front_end_disconnects() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, uds) = (dir.path().join("vhost.sock"), dir.path().join("vsock.sock"));
        let server = serve_vhost_user(&sock, 3, &uds).unwrap();
        let front_end = UnixStream::connect(&sock).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!server.is_finished());
        drop(front_end);
        wait_finished(&server, Duration::from_secs(5));
        server.wait().unwrap();
        assert!(!uds.exists());
    }

    #[test]
    fn stop_disconnects_an_attached_front_end() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, uds) = (dir.path().join("vhost.sock"), dir.path().join("vsock.sock"));
        let server = serve_vhost_user(&sock, 3, &uds).unwrap();
        let mut front_end = UnixStream::connect(&sock).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        server.stop().unwrap();
        let mut b = [0u8; 1];
        front_end
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(std::io::Read::read(&mut front_end, &mut b).unwrap(), 0);
    }

    /// QEMU negotiates with the backend at start-up (features, protocol features, config);
    /// the guest stays paused (`-S`). Killing QEMU ends the server.
    #[test]
    fn qemu_attaches_and_its_exit_ends_the_server() {
        let qemu = "qemu-system-x86_64";
        let dir = tempfile::tempdir().unwrap();
        let (sock, uds) = (dir.path().join("vhost.sock"), dir.path().join("vsock.sock"));
        let server = serve_vhost_user(&sock, 3, &uds).unwrap();
        let mut child = Command::new(qemu)
            .args([
                "-M",
                "microvm,x-option-roms=off,isa-serial=off,rtc=off,acpi=off,memory-backend=mem",
                "-accel",
                "tcg",
                "-m",
                "64",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-S",
                "-object",
                "memory-backend-memfd,id=mem,size=64M,share=on",
                "-chardev",
            ])
            .arg(format!("socket,id=char0,path={}", sock.display()))
            .args([
                "-device",
                "vhost-user-vsock-device,chardev=char0",
                "-global",
                "virtio-mmio.force-legacy=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{qemu} is required for this test (apt-get install qemu-system-x86): {e}")
            });
        std::thread::sleep(Duration::from_millis(1500));
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("qemu exited early ({status}): {err}");
        }
        assert!(!server.is_finished(), "backend serves the attached QEMU");
        child.kill().unwrap();
        child.wait().unwrap();
        wait_finished(&server, Duration::from_secs(5));
        server.wait().unwrap();
        assert!(!uds.exists());
    }
}
