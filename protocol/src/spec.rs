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
    /// The container's root filesystem.
    pub root: RootSpec,
    /// tmpfs mounts inside the container (`--tmpfs`), in order.
    #[serde(default)]
    pub tmpfs: Vec<TmpfsMount>,
    /// Host directories shared with the VM (virtio-fs) mounted in the container (`-v`,
    /// `--mount`), in the order to mount them (parents first).
    #[serde(default)]
    pub shares: Vec<ShareMount>,
    /// What the container's processes may do (docker's defaults unless the flags say more).
    #[serde(default)]
    pub security: Security,
    /// Most tasks the container may have at once (`--pids-limit`; `None`: no limit).
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// Resource limits of the container's processes (`--ulimit`), over the guest's defaults.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// `--init`: the container's first process is a minimal init that runs the command as its
    /// child, passes signals on and reaps orphans.
    #[serde(default)]
    pub init: bool,
    /// Run no command: the container's first process only holds its namespaces and filesystem
    /// open until it is killed (`skiff cp` with a stopped container).
    #[serde(default)]
    pub hold: bool,
    /// The host's wall clock when the spec was sent, in nanoseconds since the Unix epoch (0:
    /// unknown). A guest without a clock of its own starts from it.
    #[serde(default)]
    pub host_time_ns: u64,
    /// The guest's network interface, configured before the container starts; `None`: the VM
    /// has no network device and the container only `lo`.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    /// Files the host writes into the container's `/etc` (`hosts`, `resolv.conf`,
    /// `hostname`), over the image's, as docker does.
    #[serde(default)]
    pub etc_files: Vec<EtcFile>,
}

/// The guest's `eth0`: a static address and a default route (no DHCP client in the guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The interface's MAC address.
    pub mac: [u8; 6],
    pub address: std::net::Ipv4Addr,
    /// Prefix length of `address`'s subnet.
    pub prefix_len: u8,
    pub gateway: std::net::Ipv4Addr,
    pub mtu: u32,
}

/// One file of the container's `/etc`, written by guest-init before the container starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcFile {
    /// A plain file name inside `/etc` (no `/`).
    pub name: String,
    pub contents: String,
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// `tcp` or `udp`, as docker writes it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// What the host sends first on a relayed connection to [`crate::PUBLISH_PORT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHeader {
    pub transport: Transport,
    /// The container's port.
    pub port: u16,
}

impl RelayHeader {
    pub const LEN: usize = 3;
    /// guest-init's answer when it reached the container's port.
    pub const REACHED: u8 = 0;
    /// guest-init's answer when nothing listens on the container's port.
    pub const REFUSED: u8 = 1;

    pub fn encode(self) -> [u8; Self::LEN] {
        let [hi, lo] = self.port.to_be_bytes();
        let t = match self.transport {
            Transport::Tcp => 0,
            Transport::Udp => 1,
        };
        [t, hi, lo]
    }

    pub fn decode(b: [u8; Self::LEN]) -> Option<RelayHeader> {
        let transport = match b[0] {
            0 => Transport::Tcp,
            1 => Transport::Udp,
            _ => return None,
        };
        Some(RelayHeader {
            transport,
            port: u16::from_be_bytes([b[1], b[2]]),
        })
    }
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
    /// What the process may do (the container's, unless `exec --privileged`).
    #[serde(default)]
    pub security: Security,
    /// Its resource limits (the container's).
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
}

/// One resource limit (`--ulimit NAME=SOFT[:HARD]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// docker's name of the resource: `nofile`, `nproc`, `core`, `stack`, …
    pub resource: String,
    /// `u64::MAX`: unlimited.
    pub soft: u64,
    pub hard: u64,
}

/// docker's default capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DEFAULT_CAPABILITIES: u64 = 0xa804_25fb;

/// The privileges of a container's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// Capabilities, bit N for capability N: the bounding set, and what a process running as
    /// root has (effective and permitted); other users start with none, as with docker.
    pub capabilities: u64,
    /// `no_new_privs`: setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
    /// `--privileged`: every capability, no seccomp filter, and `/proc` and `/sys` without
    /// docker's masks.
    pub privileged: bool,
    /// docker's default seccomp profile (off with `--security-opt seccomp=unconfined`).
    #[serde(default = "yes")]
    pub seccomp: bool,
}

fn yes() -> bool {
    true
}

impl Default for Security {
    fn default() -> Self {
        Security {
            capabilities: DEFAULT_CAPABILITIES,
            no_new_privileges: false,
            privileged: false,
            seccomp: true,
        }
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// The container's root filesystem (version 5): the image's files, read-only, under an
/// overlay whose upper layer takes the container's writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSpec {
    pub image: ImageRoot,
    pub writable: WritableLayer,
}

/// Where the image's files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageRoot {
    /// An EROFS filesystem on the virtio-blk disk with this serial.
    Disk { serial: String },
    /// A directory on the machine guest-init runs on (native mode, for tests).
    Directory { path: String },
}

/// Where the container's writes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WritableLayer {
    /// An ext4 filesystem on the virtio-blk disk with this serial: the container's changes
    /// outlive the VM (docker's container layer).
    Disk { serial: String },
    /// The guest's memory: the changes end with the VM.
    Memory,
    /// Nowhere: the root is read-only (`--read-only`); `/etc` files are still written first.
    ReadOnly,
}

/// A tmpfs mounted in the container (`--tmpfs PATH[:OPTIONS]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Absolute path inside the container.
    pub path: String,
    /// Mount options as the host checked them (`size=…`, `mode=…`, `nosuid`, …): `size`,
    /// `mode`, `uid`, `gid`, `nr_inodes` go to tmpfs, the flags to the mount.
    pub options: Vec<String>,
}

/// A shared host directory (or one file in it) mounted in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareMount {
    /// The virtio-fs tag of the VM's shared directory.
    pub tag: String,
    /// What of the share to mount: empty for its root, else one name in it (a file bind).
    pub entry: String,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
    /// First copy what the image has at `target` into the share (an empty named volume's
    /// first use, as docker does).
    pub populate: bool,
}

/// A file (or, for one that is gone, its directory) of a shared directory that changed on
/// the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFile {
    /// The share's virtio-fs tag.
    pub tag: String,
    /// The path relative to the shared directory (empty: its root).
    pub path: String,
}

/// How the container's process ended. Decoding accepts only what a process can end with: a
/// code in 0..=255 or a signal in 1..=64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireExitStatus")]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// [`ExitStatus`] as it comes off the wire, before its range is checked.
#[derive(Deserialize)]
enum WireExitStatus {
    Code(i32),
    Signal(i32),
}

impl TryFrom<WireExitStatus> for ExitStatus {
    type Error = String;

    fn try_from(w: WireExitStatus) -> Result<Self, Self::Error> {
        match w {
            WireExitStatus::Code(c @ 0..=255) => Ok(ExitStatus::Code(c)),
            WireExitStatus::Signal(s @ 1..=64) => Ok(ExitStatus::Signal(s)),
            WireExitStatus::Code(c) => Err(format!("exit code {c} is out of range")),
            WireExitStatus::Signal(s) => Err(format!("signal {s} is out of range")),
        }
    }
}

impl ExitStatus {
    /// The exit code docker gives for this status: the code itself, or 128 + the signal number.
    pub fn docker_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128i32.saturating_add(s),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_out_of_range_are_refused() {
        for ok in [
            r#"{"Code":0}"#,
            r#"{"Code":255}"#,
            r#"{"Signal":1}"#,
            r#"{"Signal":64}"#,
        ] {
            let s: ExitStatus = serde_json::from_str(ok).unwrap();
            assert!((0..=255).contains(&s.docker_code()), "{ok}");
        }
        for bad in [
            r#"{"Code":256}"#,
            r#"{"Code":-1}"#,
            r#"{"Signal":0}"#,
            r#"{"Signal":65}"#,
            r#"{"Signal":2147483647}"#,
        ] {
            assert!(serde_json::from_str::<ExitStatus>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relay_headers_round_trip_and_bad_transports_are_refused() {
        for h in [
            RelayHeader {
                transport: Transport::Tcp,
                port: 80,
            },
            RelayHeader {
                transport: Transport::Udp,
                port: 65535,
            },
        ] {
            assert_eq!(RelayHeader::decode(h.encode()), Some(h));
        }
        assert_eq!(RelayHeader::decode([2, 0, 80]), None);
    }
}
