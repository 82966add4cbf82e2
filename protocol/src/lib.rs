//! The wire protocol between skiff on the host and guest-init in the VM: the only code both sides
//! link.
//!
//! One byte stream (a vsock connection, or a Unix socket when guest-init runs natively) carries
//! length-prefixed frames: `u32` little-endian length of what follows, a one-byte tag, then the
//! payload. Control messages are JSON; stdio data is raw bytes. Every frame is bounded
//! by [`MAX_FRAME`], and decoding bad bytes returns an error, never panics.
//!
//! A session: the guest connects and sends [`Message::Hello`]; the host checks the version and
//! answers [`Message::Run`]; the guest builds the container's root from the disks the spec
//! names (version 5: the image arrives as a read-only EROFS disk, no longer as layer bytes on
//! the session) and answers [`Message::Started`] (or [`Message::Failed`]); then stdio flows as
//! [`Message::Data`] and [`Message::Eof`] per stream, signals as [`Message::Signal`], until the
//! guest sends [`Message::Exit`].
//!
//! Stdin is flow-controlled by credit (version 3), so that signals and resizes never queue behind
//! stdin the container does not read. When the spec asks for stdin, the guest sends
//! [`Message::StdinCredit`] right after `Started` (its window: guest-init grants 2 MiB) and more
//! as it writes the buffered bytes into the process's stdin. The host sends `Data(Stdin)` bytes
//! only against credit granted and not yet used; a host that exceeds it breaks the protocol, and
//! the guest kills the process. `Eof(Stdin)` needs no credit; the guest delivers it after every
//! buffered byte. The guest reads the stream at all times, so `Signal` and `Resize` act at once.
//!
//! With `tty` set there is one output stream: the terminal's bytes come as `Data(Stdout)`, and
//! [`Message::Resize`] changes its size.
//!
//! Exec sessions (version 2): while the container runs, guest-init also listens on vsock port
//! [`EXEC_PORT`]; the host connects there (hybrid vsock: `CONNECT <port>\n` on the VM's socket)
//! once per `skiff exec`. The guest sends `Hello`, the host answers [`Message::Exec`], the guest
//! answers `Started` or `Failed`, then stdio (stdin under credit), signals, resizes and `Exit`
//! flow as above.
//!
//! Published ports (version 4): guest-init also listens on vsock port [`PUBLISH_PORT`]. For each
//! connection to a published host port, the host connects there and sends a 3-byte header: the
//! transport (0 TCP, 1 UDP) and the container port (`u16` big-endian). guest-init answers one
//! byte, 0 when it reached the container's port on `127.0.0.1`, 1 when nothing listens there
//! (the host then closes its client's connection). TCP bytes then flow unchanged both ways; UDP
//! datagrams travel each as a `u16` big-endian length and the payload.
//!
//! Shared directories (version 6): the run spec's [`ShareMount`]s name virtio-fs tags that
//! guest-init mounts in the container. While the container runs the host may send
//! [`Message::FilesChanged`] on the session: files of a share that changed on the host, whose
//! mode guest-init reads afresh and sets again from inside the container, so that the guest
//! kernel tells the container's file watchers (a change on the host alone never reaches them).
//!
//! Copies (`skiff cp`): guest-init also listens on vsock port [`COPY_PORT`] while the container
//! runs. The host sends a [`copy::CopyRequest`] (direction, container path, `-L`, `-a`); the
//! guest resolves the path inside the container's root (in its mount namespace, the thread's
//! root there) and answers; then a tar archive flows as chunks, and the guest ends with
//! [`copy::CopyReply::Done`] or `Failed` (see [`copy`]). The request carries [`VERSION`]; the
//! copy port itself needs no new version: an older guest does not listen there.

pub mod copy;
mod frame;
mod spec;

pub use frame::{read_message, write_data, write_message, Message, ProtocolError, Stream};
pub use spec::{
    ChangedFile, EtcFile, ExecSpec, ExitStatus, FailureKind, ImageRoot, NetworkSpec, RelayHeader,
    Rlimit, RootSpec, RunSpec, Security, ShareMount, TermSize, TmpfsMount, Transport,
    WritableLayer, DEFAULT_CAPABILITIES,
};

/// Protocol version; the host refuses a guest that speaks another one.
/// 2: exec sessions on [`EXEC_PORT`], terminal sizes in the specs.
/// 3: stdin flow control by [`Message::StdinCredit`].
/// 4: the network, `/etc` files and published ports in the run spec; the relay on
/// [`PUBLISH_PORT`].
/// 5: the root filesystem from disks ([`RootSpec`]) instead of layers streamed in the session;
/// tmpfs mounts.
/// 6: shared host directories mounted in the container ([`ShareMount`]); host edits in them
/// told to the guest ([`Message::FilesChanged`]).
pub const VERSION: u32 = 6;

/// Largest frame (tag + payload) either side accepts: a full chunk plus its frame header.
pub const MAX_FRAME: usize = MAX_CHUNK + 64;

/// Largest chunk of stdio bytes a sender puts in one frame. Large chunks mean few
/// frames per gigabyte; guest-init reads the container's output in chunks this size and sends
/// each with a single `write`, so a busy stdout makes 1 MiB vsock writes from the guest.
pub const MAX_CHUNK: usize = 1 << 20;

/// The host-side vsock port guest-init connects to (CID 2) for its session.
pub const SESSION_PORT: u32 = 1024;

/// The guest-side vsock port guest-init listens on for exec sessions while the container runs.
pub const EXEC_PORT: u32 = 1025;

/// The guest-side vsock port guest-init listens on for relayed connections to published ports.
pub const PUBLISH_PORT: u32 = 1026;

/// The guest-side vsock port guest-init listens on for `skiff cp` while the container runs.
pub const COPY_PORT: u32 = 1027;
