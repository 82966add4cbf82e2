//! The vhost-user frontend: a virtio device whose queues another process (the backend, e.g.
//! virtiofsd) serves from the guest's memory, which it maps from the memfd this VMM shares.
//! The VMM keeps the transport, the configuration space and the interrupt line: a driver's
//! queue kick is passed on to the backend's kick eventfd, and the backend's call eventfd
//! raises the device's interrupt. Generic over the device: [`fs`] is the first user.

pub mod fs;
#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::virtio::{ActivateError, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};

/// Ring features a backend may offer the guest through this frontend (the transport has split
/// rings only): indirect descriptors, event-idx suppression, virtio 1.
const RING_FEATURES: u64 = (1 << 28) | (1 << 29) | VIRTIO_F_VERSION_1;
/// Device-specific feature bits (0–23) pass as the backend offers them.
const DEVICE_FEATURES: u64 = (1 << 24) - 1;

/// Errors talking to a vhost-user backend.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error("cannot connect to the vhost-user backend at {path}: {source}")]
    Connect { path: PathBuf, source: vhost::Error },
    #[error("the vhost-user backend at {path} failed {what}: {source}")]
    Request {
        path: PathBuf,
        what: &'static str,
        source: vhost::Error,
    },
    #[error("cannot create an eventfd for a vhost-user device: {0}")]
    EventFd(std::io::Error),
    #[error("invalid vhost-user device: {0}")]
    Invalid(String),
}

/// What makes one kind of vhost-user device: its virtio id, queue sizes and config space.
pub struct DeviceShape {
    pub device_type: u32,
    pub queue_sizes: Vec<u16>,
    pub config: Vec<u8>,
}

/// A virtio device served by a vhost-user backend.
pub struct VhostUserDevice {
    path: PathBuf,
    frontend: Frontend,
    shape: DeviceShape,
    backend_features: u64,
    /// The backend signals used buffers of every queue here.
    call: EventFd,
    /// One per queue: written when the driver notifies it.
    kicks: Vec<EventFd>,
    interrupt: Option<Arc<VirtioInterrupt>>,
    started: usize,
}

fn eventfd() -> Result<EventFd, VhostUserError> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(VhostUserError::EventFd)
}

impl VhostUserDevice {
    /// Connects to the backend listening at `path` and reads the features it offers.
    pub fn connect(path: &Path, shape: DeviceShape) -> Result<Self, VhostUserError> {
        let queues = shape.queue_sizes.len();
        if queues == 0 {
            return Err(VhostUserError::Invalid("a device needs a queue".into()));
        }
        let frontend =
            Frontend::connect(path, queues as u64).map_err(|source| VhostUserError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let mut device = VhostUserDevice {
            path: path.to_path_buf(),
            frontend,
            shape,
            backend_features: 0,
            call: eventfd()?,
            kicks: (0..queues).map(|_| eventfd()).collect::<Result<_, _>>()?,
            interrupt: None,
            started: 0,
        };
        device.request("SET_OWNER", |f| f.set_owner())?;
        device.backend_features = device.request("GET_FEATURES", |f| f.get_features())?;
        tracing::debug!(
            backend = %path.display(),
            features = format_args!("{:#x}", device.backend_features),
            "vhost-user: connected"
        );
        Ok(device)
    }

    fn request<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, VhostUserError> {
        f(&mut self.frontend).map_err(|source| VhostUserError::Request {
            path: self.path.clone(),
            what,
            source,
        })
    }

    fn protocol_bit() -> u64 {
        VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    /// Hands the backend the guest's memory, the acked features and every queue.
    fn start(
        &mut self,
        mem: &GuestMemoryMmap,
        features: u64,
        queues: &[Queue],
    ) -> Result<(), VhostUserError> {
        let protocol = self.backend_features & Self::protocol_bit() != 0;
        let acked =
            (features & self.backend_features) | (self.backend_features & Self::protocol_bit());
        self.request("SET_FEATURES", |f| f.set_features(acked))?;
        if protocol {
            let offered = self.request("GET_PROTOCOL_FEATURES", |f| f.get_protocol_features())?;
            let wanted = offered & VhostUserProtocolFeatures::REPLY_ACK;
            self.request("SET_PROTOCOL_FEATURES", |f| f.set_protocol_features(wanted))?;
        }
        let regions = mem
            .iter()
            .map(|r| {
                VhostUserMemoryRegionInfo::from_guest_region(r).map_err(|_| {
                    VhostUserError::Invalid(
                        "guest memory is not shared (vhost-user needs memfd memory)".into(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.request("SET_MEM_TABLE", |f| f.set_mem_table(&regions).map(drop))?;
        for (index, queue) in queues.iter().enumerate() {
            let host = |gpa: u64, what: &str| {
                mem.get_host_address(GuestAddress(gpa))
                    .map(|p| p as u64)
                    .map_err(|_| {
                        VhostUserError::Invalid(format!(
                            "queue {index}: {what} {gpa:#x} is outside guest memory"
                        ))
                    })
            };
            let config = VringConfigData {
                queue_max_size: self.shape.queue_sizes[index],
                queue_size: queue.size(),
                flags: 0,
                desc_table_addr: host(queue.desc_table(), "descriptor table")?,
                used_ring_addr: host(queue.used_ring(), "used ring")?,
                avail_ring_addr: host(queue.avail_ring(), "available ring")?,
                log_addr: None,
            };
            self.request("SET_VRING_NUM", |f| f.set_vring_num(index, queue.size()))?;
            self.request("SET_VRING_ADDR", |f| f.set_vring_addr(index, &config))?;
            self.request("SET_VRING_BASE", |f| {
                f.set_vring_base(index, queue.next_avail())
            })?;
            let call = self.call.try_clone().map_err(VhostUserError::EventFd)?;
            self.request("SET_VRING_CALL", |f| f.set_vring_call(index, &call))?;
            let kick = self.kicks[index]
                .try_clone()
                .map_err(VhostUserError::EventFd)?;
            self.request("SET_VRING_KICK", |f| f.set_vring_kick(index, &kick))?;
        }
        if protocol {
            // With protocol features negotiated, rings start disabled.
            for index in 0..queues.len() {
                self.request("SET_VRING_ENABLE", |f| f.set_vring_enable(index, true))?;
            }
        }
        self.started = queues.len();
        // The driver may have queued buffers before the backend had the rings.
        for kick in &self.kicks[..queues.len()] {
            kick.write(1).map_err(VhostUserError::EventFd)?;
        }
        Ok(())
    }
}

impl VirtioDevice for VhostUserDevice {
    fn device_type(&self) -> u32 {
        self.shape.device_type
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.shape.queue_sizes
    }

    fn features(&self) -> u64 {
        self.backend_features & (RING_FEATURES | DEVICE_FEATURES)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::virtio::read_config_space(&self.shape.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        if queues.len() > self.shape.queue_sizes.len() {
            return Err(ActivateError(format!(
                "vhost-user: {} queues, the device has {}",
                queues.len(),
                self.shape.queue_sizes.len()
            )));
        }
        self.start(&mem, features, &queues)
            .map_err(|e| ActivateError(e.to_string()))?;
        tracing::debug!(backend = %self.path.display(), "vhost-user: activated with features {features:#x}");
        self.interrupt = Some(interrupt);
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if let Some(kick) = self.kicks.get(usize::from(index)) {
            if let Err(e) = kick.write(1) {
                tracing::warn!("vhost-user: cannot kick queue {index}: {e}");
            }
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.call.as_raw_fd())
    }

    fn backend_ready(&mut self) {
        // Reading clears the eventfd; the backend wrote it because a used ring changed and
        // its notification suppression asked for an interrupt.
        if self.call.read().is_ok() {
            if let Some(interrupt) = &self.interrupt {
                interrupt.signal_used_queue();
            }
        }
    }

    fn reset(&mut self) {
        // GET_VRING_BASE stops a ring; the backend keeps the connection for a new start.
        for index in 0..self.started {
            if let Err(e) = self.request("GET_VRING_BASE", |f| f.get_vring_base(index)) {
                tracing::warn!("{e}");
            }
        }
        self.started = 0;
        self.interrupt = None;
    }
}
