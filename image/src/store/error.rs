//! The errors of the image store, the registry client, and image archives; every message is one
//! line that names what failed and where.

use std::io;
use std::path::PathBuf;

use crate::error::ImageError;

/// Why a store, pull, load or save operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("no image {0} in the store; pull it with `skiff pull {0}`")]
    NoSuchImage(String),
    #[error("image {name} is used by a running container; stop it first or use -f")]
    InUse { name: String },
    #[error("blob {digest} from {source_name} does not match its digest: refusing it")]
    DigestMismatch { digest: String, source_name: String },
    #[error("blob {digest} from {source_name} is {actual} bytes or more, its descriptor says {expected}: refusing it")]
    SizeMismatch {
        digest: String,
        source_name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} is {size} bytes or more, more than the limit of {limit}: refusing it")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("{what} is not valid: {reason}")]
    Invalid { what: String, reason: String },
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} refused the credentials for {repository}{hint}")]
    Unauthorized {
        registry: String,
        repository: String,
        hint: &'static str,
    },
    #[error("{name}: not found in registry {registry} (no such repository, tag or digest)")]
    ManifestUnknown { name: String, registry: String },
    #[error("registry {registry} answered {status} to {what}: {message}")]
    Registry {
        registry: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("{name} is a Docker schema 1 image, which skiff does not support (it is deprecated): push it again with a current docker or skopeo")]
    Schema1 { name: String },
    #[error("{what} of {name} has media type {media_type:?}, which skiff does not support")]
    UnsupportedMediaType {
        what: &'static str,
        name: String,
        media_type: String,
    },
    #[error("{name} has no image for {platform} (platforms: {platforms})")]
    NoPlatform {
        name: String,
        platform: String,
        platforms: String,
    },
    #[error("{name} is for {actual}, not {wanted}")]
    WrongPlatform {
        name: String,
        actual: String,
        wanted: String,
    },
    #[error("archive {}: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result with [`StoreError`].
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// Text from outside (a registry's error body, a file name) made fit for a one-line message:
/// control characters become spaces and it is cut to `max` characters.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.trim().to_owned()
}
