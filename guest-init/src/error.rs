//! guest-init's error type: what failed, on which path, and how it is reported to the host.

use std::io;

use protocol::{FailureKind, ProtocolError};

/// Everything that can go wrong in guest-init.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Input from the host or the image broke a rule (a bad spec, an image path that is not a
    /// directory to mount on).
    #[error("{0}")]
    Invalid(String),
    /// The session stream failed.
    #[error("session: {0}")]
    Protocol(#[from] ProtocolError),
    /// The container's process could not be executed.
    #[error("{message}")]
    Exec { kind: FailureKind, message: String },
}

impl Error {
    /// The failure kind the host sees for this error.
    pub fn kind(&self) -> FailureKind {
        match self {
            Error::Exec { kind, .. } => *kind,
            _ => FailureKind::Setup,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "what was being done" to low-level errors.
pub trait Context<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: what(),
            source: io::Error::from(errno),
        })
    }
}
