//! virtio-fs through the vhost-user frontend: a shared host directory the guest mounts by its
//! tag (`mount -t virtiofs TAG DIR`), served by virtiofsd. The VMM owns the device's config
//! space (the tag and one request queue); virtiofsd serves the FUSE requests.

use std::path::Path;

use super::{DeviceShape, VhostUserDevice, VhostUserError};

/// virtio device id of a file system device.
pub const VIRTIO_ID_FS: u32 = 26;
/// Longest tag the config space holds.
pub const TAG_MAX: usize = 36;
/// Entries per queue (the high-priority queue and one request queue).
const QUEUE_SIZE: u16 = 1024;

/// The config space: the tag, NUL-padded, then the number of request queues.
fn config(tag: &str) -> Result<Vec<u8>, VhostUserError> {
    if tag.is_empty() || tag.len() > TAG_MAX || tag.bytes().any(|b| b == 0) {
        return Err(VhostUserError::Invalid(format!(
            "virtio-fs tag {tag:?} must be 1 to {TAG_MAX} bytes without NUL"
        )));
    }
    let mut config = vec![0u8; TAG_MAX];
    config[..tag.len()].copy_from_slice(tag.as_bytes());
    config.extend_from_slice(&1u32.to_le_bytes());
    Ok(config)
}

/// A virtio-fs device with `tag`, whose backend listens at `socket`.
pub fn virtio_fs(socket: &Path, tag: &str) -> Result<VhostUserDevice, VhostUserError> {
    VhostUserDevice::connect(
        socket,
        DeviceShape {
            device_type: VIRTIO_ID_FS,
            queue_sizes: vec![QUEUE_SIZE, QUEUE_SIZE],
            config: config(tag)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_space_holds_the_tag_and_one_request_queue() {
        let c = config("skiff-0").unwrap();
        assert_eq!(c.len(), TAG_MAX + 4);
        assert_eq!(&c[..7], b"skiff-0");
        assert!(c[7..TAG_MAX].iter().all(|&b| b == 0));
        assert_eq!(&c[TAG_MAX..], &1u32.to_le_bytes());
        for bad in ["", "a\0b", &"x".repeat(37)] {
            assert!(config(bad).is_err(), "{bad:?}");
        }
    }
}
