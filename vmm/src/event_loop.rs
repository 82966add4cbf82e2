//! The device event loop: one thread polling the virtio queues' notification eventfds and the
//! devices' backend fds, calling into the transports.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::mmio::MmioTransport;

/// Errors starting the loop.
#[derive(Debug, thiserror::Error)]
#[error("device event loop: {what}: {source}")]
pub struct EventLoopError {
    what: &'static str,
    source: std::io::Error,
}

fn err(what: &'static str) -> impl FnOnce(std::io::Error) -> EventLoopError {
    move |source| EventLoopError { what, source }
}

/// What a token stands for.
enum Source {
    Exit,
    Queue { device: usize, queue: u16 },
    Backend { device: usize },
}

/// The running loop; dropping it without `stop` leaves the thread running until process end.
pub struct EventLoop {
    exit: EventFd,
    thread: JoinHandle<()>,
}

impl EventLoop {
    /// Starts polling the queues of `devices`.
    pub fn start(devices: Vec<Arc<Mutex<MmioTransport>>>) -> Result<Self, EventLoopError> {
        let epoll = Epoll::new().map_err(err("epoll_create"))?;
        let exit = EventFd::new(libc::EFD_NONBLOCK).map_err(err("eventfd"))?;
        let mut sources = vec![Source::Exit];
        let add = |fd: RawFd, token: usize| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token as u64),
            )
        };
        add(exit.as_raw_fd(), 0).map_err(err("epoll_ctl"))?;
        for (device, transport) in devices.iter().enumerate() {
            let t = transport.lock().map_err(|_| EventLoopError {
                what: "device lock",
                source: std::io::Error::other("poisoned"),
            })?;
            for (queue, evt) in t.queue_events().iter().enumerate() {
                add(evt.as_raw_fd(), sources.len()).map_err(err("epoll_ctl"))?;
                sources.push(Source::Queue {
                    device,
                    queue: queue as u16,
                });
            }
        }
        let thread = std::thread::Builder::new()
            .name("skiff-devices".into())
            .spawn(move || run(epoll, sources, devices))
            .map_err(err("spawn"))?;
        Ok(EventLoop { exit, thread })
    }

    /// Stops the loop and waits for its thread.
    pub fn stop(self) {
        if self.exit.write(1).is_ok() && self.thread.join().is_err() {
            tracing::warn!("device event loop panicked");
        }
    }
}

fn run(epoll: Epoll, mut sources: Vec<Source>, devices: Vec<Arc<Mutex<MmioTransport>>>) {
    // Backend fds are polled only while their device is active (registered lazily).
    let mut backend_token: Vec<Option<(RawFd, usize)>> = vec![None; devices.len()];
    let mut events = vec![EpollEvent::default(); 32];
    loop {
        for (device, transport) in devices.iter().enumerate() {
            let Ok(t) = transport.lock() else { continue };
            match (t.is_active(), t.backend_fd(), backend_token[device]) {
                (true, Some(fd), None) => {
                    let token = sources.len();
                    let ev = EpollEvent::new(EventSet::IN, token as u64);
                    if epoll.ctl(ControlOperation::Add, fd, ev).is_ok() {
                        sources.push(Source::Backend { device });
                        backend_token[device] = Some((fd, token));
                    }
                }
                (false, _, Some((fd, _))) => {
                    let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
                    backend_token[device] = None;
                }
                _ => {}
            }
        }
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("device event loop: epoll_wait: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            match sources.get(ev.data() as usize) {
                Some(Source::Exit) => return,
                Some(Source::Queue { device, queue }) => {
                    if let Ok(mut t) = devices[*device].lock() {
                        // Reading resets the counter; several notifications collapse into one.
                        let _ = t.queue_events()[usize::from(*queue)].read();
                        t.notify(*queue);
                    }
                }
                Some(Source::Backend { device })
                    if backend_token[*device].map(|(_, tok)| tok) == Some(ev.data() as usize) =>
                {
                    if let Ok(mut t) = devices[*device].lock() {
                        t.backend_ready();
                    }
                }
                Some(Source::Backend { .. }) => {}
                None => {}
            }
        }
    }
}
