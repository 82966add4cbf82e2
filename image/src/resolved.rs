//! What an opened image hands to `skiff run`: its runtime config and its layer blobs.

use std::any::Any;
use std::path::PathBuf;

pub use crate::spec::Compression;

/// The parts of the image configuration that decide how the container's process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `amd64`, … (empty when the config does not say).
    pub architecture: String,
    /// `linux`, … (empty when the config does not say).
    pub os: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries, as the image lists them.
    pub env: Vec<String>,
    /// Empty when the image sets none.
    pub working_dir: String,
    /// `USER[:GROUP]`; empty when the image sets none.
    pub user: String,
    /// The ports the image declares (`EXPOSE`), as `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
}

/// One layer blob, checked for its size; its bytes are verified against the digest by whoever
/// reads them (the image disk writer, `load`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The layer's media type as the manifest gives it.
    pub media_type: String,
    pub compression: Compression,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// The blob file; valid as long as the [`ResolvedImage`] lives.
    pub path: PathBuf,
}

/// An image ready to run: config plus layers, bottom layer first.
#[derive(Debug)]
pub struct ResolvedImage {
    /// The image argument it was opened from, for messages.
    pub reference: String,
    /// Digest of the image manifest (after platform selection).
    pub manifest_digest: String,
    /// Digest of the image configuration blob (the image ID in docker's terms).
    pub config_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    /// What keeps the layer paths valid until the image is dropped: the unpacked oci-archive
    /// they point into, or the store's pin on the manifest.
    pub(crate) _keep: Option<Box<dyn Any + Send + Sync>>,
}
