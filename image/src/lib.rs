//! OCI images for skiff: image arguments (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`), OCI image
//! layouts and archives opened into a verified config + layer list, docker-style image names,
//! the content-addressed image store, the registry client and `pull`, and docker's rules for
//! merging an image's config with `skiff run`'s flags.

mod archive;
mod digest;
mod envfile;
pub mod erofs;
mod error;
mod layout;
mod merge;
mod name;
pub mod pull;
mod reference;
pub mod registry;
mod resolved;
mod spec;
pub mod store;
mod tarcheck;
mod tarpath;
pub mod transfer;

pub use digest::Digest;
pub use envfile::{parse_env_file, read_env_file, EnvEntry, EnvError};
pub use error::{ImageError, Result};
pub use layout::{MAX_DEPTH, MAX_JSON, MAX_LAYERS};
pub use merge::{merge, merge_with, Process, RunConfigError, RunOverrides, DEFAULT_PATH};
pub use name::{ImageName, DEFAULT_REGISTRY, DEFAULT_TAG};
pub use pull::{pull, Platform, PullOptions, PullReport};
pub use reference::{ImageRef, Selector, Transport};
pub use resolved::{Compression, ImageConfig, Layer, ResolvedImage};
pub use store::{Store, StoreError, StoreResult};

use layout::Layout;
use tracing::info;

/// Parses an image argument and opens it (see [`resolve`]).
pub fn open(reference: &str) -> Result<ResolvedImage> {
    resolve(&reference.parse()?)
}

/// Opens the image `reference` names: selects the manifest (by tag, digest, or the layout's only
/// or `latest` image), follows an image index to linux/amd64, and verifies the manifest and the
/// config against their digests and sizes, and each layer blob's size (its bytes are verified
/// by whoever reads them). An oci-archive is unpacked into a
/// temporary directory that lives as long as the returned image.
pub fn resolve(reference: &ImageRef) -> Result<ResolvedImage> {
    let started = std::time::Instant::now();
    let mut image = match reference.transport {
        Transport::Oci => Layout::open(&reference.path, &reference.path, Transport::Oci)?
            .resolve(&reference.selector)?,
        Transport::OciArchive => {
            let dir = archive::unpack(&reference.path)?;
            let layout = Layout::open(dir.path(), &reference.path, Transport::OciArchive)?;
            let mut image = layout.resolve(&reference.selector)?;
            image._keep = Some(Box::new(dir));
            image
        }
    };
    image.reference = reference.to_string();
    info!(
        image = %image.reference,
        manifest = %image.manifest_digest,
        layers = image.layers.len(),
        elapsed = ?started.elapsed(),
        "opened image"
    );
    Ok(image)
}
