//! What the host asks the guest to run, and how it ended.

use serde::{Deserialize, Serialize};

/// Everything guest-init needs to build and start the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The command and its arguments; `argv[0]` is looked up in `PATH` of `env` when it has no `/`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries, in order; later entries win.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    pub cwd: String,
    /// `USER[:GROUP]`, names or numbers, resolved against the image's /etc/passwd and /etc/group;
    /// empty means root.
    pub user: String,
    /// The container's hostname.
    pub hostname: String,
    /// Whether the process gets a terminal.
    pub tty: bool,
    /// The terminal's size at the start, when `tty` (later changes come as `Resize`).
    #[serde(default)]
    pub term_size: Option<TermSize>,
    /// Whether the host sends stdin; without it the container's stdin is /dev/null.
    pub stdin: bool,
    /// The image layers, bottom first; their bytes follow the spec on the wire in this order.
    pub layers: Vec<LayerSpec>,
    /// The host's wall clock when the spec was sent, in nanoseconds since the Unix epoch (0:
    /// unknown). A guest without a clock of its own starts from it.
    #[serde(default)]
    pub host_time_ns: u64,
}

/// A second process to run inside the running container (`skiff exec`): it joins the
/// container's namespaces and root; nothing of the image travels again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The command and its arguments; `argv[0]` is looked up in `PATH` of `env` when it has no `/`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries, in order; later entries win.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    pub cwd: String,
    /// `USER[:GROUP]`, resolved against the container's /etc/passwd and /etc/group; empty: root.
    pub user: String,
    /// Whether the process gets a terminal.
    pub tty: bool,
    /// The terminal's size at the start, when `tty`.
    #[serde(default)]
    pub term_size: Option<TermSize>,
    /// Whether the host sends stdin; without it the process's stdin is /dev/null.
    pub stdin: bool,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// One image layer as it travels to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// OCI media type; tells the guest how the tar is compressed (gzip, zstd or none).
    pub media_type: String,
    /// `sha256:…` of the blob, already checked by the host.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The exit code docker gives for this status: the code itself, or 128 + the signal number.
    pub fn docker_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// Why the guest could not start the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The command was not found (docker exit code 127).
    NotFound,
    /// The command exists but cannot be executed (docker exit code 126).
    CannotExecute,
    /// Anything else while preparing the container (docker exit code 125).
    Setup,
}

impl FailureKind {
    /// The exit code docker gives for this failure.
    pub fn docker_code(self) -> i32 {
        match self {
            FailureKind::NotFound => 127,
            FailureKind::CannotExecute => 126,
            FailureKind::Setup => 125,
        }
    }
}
