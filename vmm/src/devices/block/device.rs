//! The virtio-blk device model: feature bits, config space, and the request queue's chains
//! executed against the [`DiskFile`], independent of the transport that owns the queue.

use std::fs::File;
use std::mem::offset_of;

use virtio_bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_OK,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestMemory, Permissions};

use super::error::BlockError;
use super::file::DiskFile;
use super::request::{Kind, Request, RequestError, HEADER_LEN, SECTOR_SIZE, SEG_MAX, SIZE_MAX};
use crate::devices::chain::SplitChain;
use crate::devices::ratelimit::RateLimited;
use crate::devices::virtio::read_config_space;

/// Virtio device type of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// The one request queue.
pub const REQUEST_QUEUE: usize = 0;
pub const NUM_QUEUES: usize = 1;
/// Largest queue size the device accepts.
pub const QUEUE_MAX_SIZE: u16 = 1024;
/// Length of the GET_ID reply: the serial, NUL-padded.
pub const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;
/// The block size announced (`blk_size`), which Linux takes as the disk's logical block size:
/// one sector, so that an image with blocks of any size (1 KiB ext4, FAT) mounts. The guest's
/// page cache reads and writes whole pages anyway.
pub const BLK_SIZE: u32 = SECTOR_SIZE as u32;
/// Length of the config space: `capacity`, `size_max`, `seg_max`, `geometry` (unused),
/// `blk_size`.
pub const CONFIG_LEN: usize = 24;
const CAPACITY_OFFSET: usize = offset_of!(virtio_blk_config, capacity);
const SIZE_MAX_OFFSET: usize = offset_of!(virtio_blk_config, size_max);
const SEG_MAX_OFFSET: usize = offset_of!(virtio_blk_config, seg_max);
const BLK_SIZE_OFFSET: usize = offset_of!(virtio_blk_config, blk_size);
const _: () = assert!(BLK_SIZE_OFFSET + 4 == CONFIG_LEN);

/// A virtio-blk device serving one disk.
pub struct BlockDevice {
    disk: DiskFile,
    read_only: bool,
    id: [u8; ID_LEN],
    chain: SplitChain,
    warnings: RateLimited,
}

impl BlockDevice {
    /// A device for the disk in `file` (read-only if `read_only`, whatever the file allows),
    /// answering GET_ID with `serial` (at most [`ID_LEN`] bytes).
    pub fn new(file: File, read_only: bool, serial: &str) -> Result<BlockDevice, BlockError> {
        let mut id = [0u8; ID_LEN];
        id.get_mut(..serial.len())
            .ok_or_else(|| BlockError::SerialTooLong(serial.to_string()))?
            .copy_from_slice(serial.as_bytes());
        Ok(BlockDevice {
            disk: DiskFile::new(file).map_err(BlockError::File)?,
            read_only,
            id,
            chain: SplitChain::default(),
            warnings: RateLimited::new("block"),
        })
    }

    /// The disk's size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.sectors()
    }

    /// The features the device offers: request limits, a block size, flushes, and whether the
    /// disk is read-only.
    pub fn features(&self) -> u64 {
        let ro = if self.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_SIZE_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH
            | ro
    }

    /// The config space, little endian.
    pub fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut config = [0u8; CONFIG_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(CAPACITY_OFFSET, &self.capacity().to_le_bytes());
        put(SIZE_MAX_OFFSET, &SIZE_MAX.to_le_bytes());
        put(SEG_MAX_OFFSET, &SEG_MAX.to_le_bytes());
        put(BLK_SIZE_OFFSET, &BLK_SIZE.to_le_bytes());
        config
    }

    /// Reads `data.len()` bytes of config space at `offset`; bytes past its end read as zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config_space(), offset, data);
    }

    /// Executes every request on the queue and returns its chains to the used ring; returns
    /// whether the used ring changed. An available ring whose index is further ahead than the
    /// queue has room for is left alone (with a warning) until the driver fixes it or resets
    /// the device.
    pub fn process_queue<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
    ) -> Result<bool, BlockError> {
        if !queue.ready() {
            return Ok(false);
        }
        let mut used = false;
        loop {
            queue.disable_notification(mem)?;
            loop {
                let next = match queue.iter(mem) {
                    Ok(mut chains) => chains.next(),
                    Err(e) => {
                        self.warnings
                            .warn(format_args!("block: request queue unusable: {e}"));
                        return Ok(used);
                    }
                };
                let Some(chain) = next else { break };
                let head = chain.head_index();
                let len = self.complete(mem, chain);
                queue.add_used(mem, head, len)?;
                used = true;
            }
            if !queue.enable_notification(mem)? {
                return Ok(used);
            }
        }
    }

    /// Executes the request of `chain` and writes its status; returns the used length (the
    /// bytes written into the chain).
    fn complete<M: GuestMemory>(&mut self, mem: &M, chain: DescriptorChain<&M>) -> u32 {
        let loaded = self.chain.load(chain);
        let Some(status_at) = self.chain.writable.len().checked_sub(1) else {
            self.warnings.warn(format_args!(
                "block: request dropped: no device-writable byte for its status"
            ));
            return 0;
        };
        let executed = loaded
            .map_err(RequestError::from)
            .and_then(|()| self.execute(mem));
        let (status, written) = match executed {
            Ok(written) => (VIRTIO_BLK_S_OK as u8, written),
            Err(e) => {
                if matches!(e, RequestError::Unsupported(_)) {
                    tracing::debug!("block: {e}");
                } else {
                    self.warnings
                        .warn(format_args!("block: request failed: {e}"));
                }
                (e.status(), 0)
            }
        };
        match self.chain.writable.write_at(mem, status_at, &[status]) {
            // At most MAX_REQUEST_LEN + 1.
            Ok(()) => (written + 1) as u32,
            Err(e) => {
                self.warnings.warn(format_args!(
                    "block: request dropped: cannot write its status: {e}"
                ));
                0
            }
        }
    }

    /// Runs the loaded request; returns the data bytes it wrote into the chain.
    fn execute<M: GuestMemory>(&self, mem: &M) -> Result<usize, RequestError> {
        let request = Request::parse(mem, &self.chain, self.capacity())?;
        match request.kind {
            Kind::Read => {
                let slices = self
                    .chain
                    .writable
                    .slices(mem, 0, request.len, Permissions::Write)?;
                self.disk.read_into(request.offset, &slices)?;
                Ok(request.len)
            }
            Kind::Write if self.read_only => Err(RequestError::ReadOnly),
            Kind::Write => {
                let slices =
                    self.chain
                        .readable
                        .slices(mem, HEADER_LEN, request.len, Permissions::Read)?;
                self.disk.write_from(request.offset, &slices)?;
                Ok(0)
            }
            Kind::Flush => {
                self.disk.flush()?;
                Ok(0)
            }
            Kind::GetId => {
                let len = request.len.min(ID_LEN);
                self.chain.writable.write_at(mem, 0, &self.id[..len])?;
                Ok(len)
            }
        }
    }
}
