//! The errors of opening and resolving an image; each message names the cause and the way out.

use std::io;
use std::path::PathBuf;

/// Why an image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference {0:?} is not supported: use oci:DIR[:TAG], oci:DIR@sha256:DIGEST or oci-archive:FILE[:TAG]")]
    UnsupportedReference(String),
    #[error("image reference {reference:?} is invalid: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("image path {0} does not exist")]
    NotFound(PathBuf),
    #[error(
        "{path} is not an OCI image layout ({reason}); build one with `skopeo copy … oci:DIR:TAG`"
    )]
    NotALayout { path: String, reason: String },
    #[error("cannot read {what} of {image}: {source}")]
    Io {
        what: String,
        image: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} in {image} is not valid: {reason}")]
    Invalid {
        what: String,
        image: String,
        reason: String,
    },
    #[error("{what} in {image} is {size} bytes, more than the limit of {limit}: refusing it")]
    TooLarge {
        what: String,
        image: String,
        size: u64,
        limit: u64,
    },
    #[error("digest {digest:?} in {image} is invalid: only sha256:<64 lowercase hex digits> is supported")]
    BadDigest { digest: String, image: String },
    #[error(
        "no image tagged {tag:?} in {image} (tags: {tags}); name one as {transport}:{image}:TAG"
    )]
    TagNotFound {
        tag: String,
        image: String,
        tags: String,
        transport: &'static str,
    },
    #[error("{image} holds {count} images; name one as {transport}:{image}:TAG (tags: {tags})")]
    Ambiguous {
        image: String,
        count: usize,
        tags: String,
        transport: &'static str,
    },
    #[error("no image with digest {digest} in {image}")]
    DigestNotFound { digest: String, image: String },
    #[error("image index {digest} in {image} has no linux/amd64 image (platforms: {platforms})")]
    NoPlatform {
        digest: String,
        image: String,
        platforms: String,
    },
    #[error("image {image} is for {platform}; skiff runs linux/amd64 images")]
    WrongPlatform { image: String, platform: String },
    #[error(
        "{what} {digest} in {image} has media type {media_type:?}, which skiff does not support"
    )]
    UnsupportedMediaType {
        what: &'static str,
        digest: String,
        image: String,
        media_type: String,
    },
    #[error("layer {digest} in {image} is non-distributable ({media_type}): its content is not in the image, skiff cannot run it")]
    ForeignLayer {
        digest: String,
        image: String,
        media_type: String,
    },
    #[error("blob {digest} is missing from {image}: the image is incomplete, copy it again")]
    MissingBlob { digest: String, image: String },
    #[error("blob {digest} in {image} is {actual} bytes, its descriptor says {expected}: the image is corrupt")]
    SizeMismatch {
        digest: String,
        image: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} in {image} does not match its digest: the image is corrupt")]
    DigestMismatch { digest: String, image: String },
    #[error("image indexes in {image} nest deeper than {limit} levels: refusing it")]
    TooDeep { image: String, limit: usize },
    #[error("oci-archive {path} is corrupt: {reason}")]
    CorruptArchive { path: PathBuf, reason: String },
    #[error("{0} is a docker-archive, not an oci-archive; convert it with `skopeo copy docker-archive:{0} oci-archive:NEW.tar`")]
    DockerArchive(PathBuf),
    #[error("cannot unpack oci-archive {path} into {dir}: {source}")]
    Unpack {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Result with [`ImageError`].
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
