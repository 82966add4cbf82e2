//! The guest side of a session: greet the host, receive the spec, assemble the container's root
//! from its disks, start the container, relay its stdio and signals, and report how it ended.
//! While the container runs, exec sessions arriving on the exec listener start further
//! processes inside it, and copies arriving on the copy listener read or write its files.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::Signal;
use nix::sys::socket::{accept4, socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use protocol::{
    read_message, write_data, write_message, ExecSpec, Message, RunSpec, Stream, TermSize,
    MAX_CHUNK, VERSION,
};
use tracing::{debug, warn};

use crate::changes::Toucher;
use crate::container::{self, ChildStdio, Process};
use crate::error::{Context, Error, Result};
use crate::reaper::Reaper;
use crate::rootfs;
use crate::stdin::StdinFeed;
use crate::terminal;

/// Pipe buffer asked for the container's pipes (bigger writes, fewer wake-ups).
const PIPE_SIZE: i32 = 1 << 20;
/// How long the end of the container waits for its exec sessions to report their processes,
/// which the kernel kills when the container's init ends.
const EXEC_DRAIN: Duration = Duration::from_secs(2);

/// The exec sessions under way, so that the end of the container waits for them to report.
#[derive(Default)]
struct ExecSessions {
    count: Mutex<usize>,
    idle: Condvar,
}

/// One exec session under way; dropping it ends it.
struct ExecSession(Arc<ExecSessions>);

impl ExecSessions {
    fn enter(self: &Arc<Self>) -> ExecSession {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        ExecSession(self.clone())
    }

    /// Waits until no exec session is under way, at most `timeout`.
    fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    sessions = *count,
                    "exec sessions still under way at the end"
                );
                return;
            }
            count = match self.idle.wait_timeout(count, left) {
                Ok((c, _)) => c,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        self.0.idle.notify_all();
    }
}

/// The write half of the session, shared by the threads that send.
type Writer = Arc<Mutex<File>>;

fn lock(w: &Writer) -> MutexGuard<'_, File> {
    w.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn send(w: &Writer, msg: &Message) -> Result<()> {
    write_message(&mut *lock(w), msg).map_err(Error::from)
}

/// Greets the host on a new connection; returns the reading and writing halves.
fn greet(conn: File) -> Result<(File, Writer)> {
    let writer: Writer = Arc::new(Mutex::new(
        conn.try_clone()
            .ctx(|| "duplicate the session socket".into())?,
    ));
    send(&writer, &Message::Hello { version: VERSION })?;
    Ok((conn, writer))
}

/// Runs one session over `conn` (a connected stream socket): the container's root is assembled
/// at `root` (an empty directory) from parts kept under `scratch`. `exec_listener` (a listening
/// stream socket) is served with exec sessions once the container runs, `copy_listener` with
/// `skiff cp` connections.
///
/// Failures of the container (a disk missing, command not found, …) are reported to the host as
/// `Failed` and end the session normally; an error is returned only when the session itself
/// broke.
///
/// `owns_vm`: guest-init is PID 1 of a VM, so the host's time in the spec becomes the wall
/// clock (the VM has none of its own) and the spec's network is configured.
pub fn serve(
    conn: File,
    root: &Path,
    scratch: &Path,
    exec_listener: Option<OwnedFd>,
    copy_listener: Option<OwnedFd>,
    owns_vm: bool,
) -> Result<()> {
    let (mut reader, writer) = greet(conn)?;
    let spec = match read_message(&mut reader)? {
        Some(Message::Run(spec)) => *spec,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "expected the run spec, got {other:?}"
            )))
        }
        None => {
            return Err(Error::Invalid(
                "the host closed the session before the run spec".into(),
            ))
        }
    };
    if owns_vm && spec.host_time_ns != 0 {
        set_wall_clock(spec.host_time_ns);
    }
    let reaper = Arc::new(Reaper::default());
    let network = || match owns_vm {
        true => crate::network::configure(spec.network.as_ref()),
        false => Ok(()),
    };
    match network().and_then(|()| start(&spec, root, scratch, &reaper)) {
        Ok(container) => {
            send(&writer, &Message::Started)?;
            let sessions = Arc::new(ExecSessions::default());
            if let Some(listener) = exec_listener {
                spawn_exec_listener(listener, container.pid, reaper.clone(), sessions.clone())?;
            }
            if let Some(listener) = copy_listener {
                crate::copy::spawn_listener(listener, container.pid)?;
            }
            let changes = (!spec.shares.is_empty())
                .then(|| Toucher::start(container.pid, spec.shares.clone()))
                .and_then(|t| {
                    t.map_err(|e| warn!(error = %e, "cannot follow host edits"))
                        .ok()
                });
            let ended = relay(container, reader, writer, &reaper, Waiter::Reaper, changes);
            sessions.wait_idle(EXEC_DRAIN);
            ended
        }
        Err(e) => {
            warn!(error = %e, "the container could not be started");
            send(
                &writer,
                &Message::Failed {
                    kind: e.kind(),
                    message: e.to_string(),
                },
            )
        }
    }
}

/// A started process and the session's ends of its stdio.
struct Running {
    pid: Pid,
    ends: HostEnds,
}

/// The session's ends of a process's stdio.
struct HostEnds {
    /// Where the host's stdin goes (`None`: the process has /dev/null, or a terminal nobody
    /// types into).
    stdin: Option<File>,
    /// What is relayed to the host, each as its stream.
    outputs: Vec<(File, Stream)>,
    /// The terminal's master side, for resizes.
    terminal: Option<File>,
}

/// The session's ends of a process's stdio, complete once the process has started.
enum PendingEnds {
    Ready(HostEnds),
    /// The process sends its terminal over `socket` before it executes.
    Terminal {
        socket: OwnedFd,
        stdin: bool,
    },
}

impl PendingEnds {
    fn complete(self) -> Result<HostEnds> {
        match self {
            PendingEnds::Ready(ends) => Ok(ends),
            PendingEnds::Terminal { socket, stdin } => {
                let master = terminal::receive_master(&socket)?;
                let dup = || master.try_clone().ctx(|| "duplicate the terminal".into());
                Ok(HostEnds {
                    stdin: if stdin { Some(dup()?) } else { None },
                    outputs: vec![(dup()?, Stream::Stdout)],
                    terminal: Some(master),
                })
            }
        }
    }
}

/// Builds the stdio of a process: pipes, or one terminal for all three streams.
/// Sets the wall clock to `ns` nanoseconds since the epoch; a failure only costs correct dates.
fn set_wall_clock(ns: u64) {
    const NS: u64 = 1_000_000_000;
    let ts = nix::sys::time::TimeSpec::new((ns / NS) as i64, (ns % NS) as i64);
    if let Err(e) = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
        tracing::warn!("cannot set the clock: {e}");
    }
}

fn stdio(tty: bool, size: Option<TermSize>, stdin: bool) -> Result<(ChildStdio, PendingEnds)> {
    if tty {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ctx(|| "create the terminal socket pair".into())?;
        let child = ChildStdio::Terminal {
            socket: theirs,
            size,
        };
        return Ok((
            child,
            PendingEnds::Terminal {
                socket: ours,
                stdin,
            },
        ));
    }
    let (stdin_child, stdin) = if stdin {
        let (r, w) = pipe()?;
        // Best effort, as for the output pipes below.
        let _ = fcntl(w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        (r, Some(File::from(w)))
    } else {
        let null = File::open("/dev/null").ctx(|| "open /dev/null".into())?;
        (OwnedFd::from(null), None)
    };
    let (stdout, stdout_child) = pipe()?;
    let (stderr, stderr_child) = pipe()?;
    for fd in [&stdout, &stderr] {
        // Best effort: a smaller pipe only costs more wake-ups.
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let child = ChildStdio::Pipes {
        stdin: stdin_child,
        stdout: stdout_child,
        stderr: stderr_child,
    };
    let ends = HostEnds {
        stdin,
        outputs: vec![
            (File::from(stdout), Stream::Stdout),
            (File::from(stderr), Stream::Stderr),
        ],
        terminal: None,
    };
    Ok((child, PendingEnds::Ready(ends)))
}

fn start(spec: &RunSpec, root: &Path, scratch: &Path, reaper: &Reaper) -> Result<Running> {
    let t0 = Instant::now();
    rootfs::assemble(&spec.root, root, scratch)?;
    if let Some(pids) = spec.pids_limit {
        crate::cgroup::create(pids)?;
    }
    let t1 = Instant::now();
    let (child, ends) = stdio(spec.tty, spec.term_size, spec.stdin)?;
    let pid = reaper.spawn(|| container::start(root, spec, child))?;
    let ends = ends.complete()?;
    debug!(
        rootfs_us = (t1 - t0).as_micros() as u64,
        setup_us = t1.elapsed().as_micros() as u64,
        pid = pid.as_raw(),
        "container executed"
    );
    Ok(Running { pid, ends })
}

/// Accepts exec sessions for the container whose first process is `init`, each on its own
/// thread, for as long as guest-init runs.
fn spawn_exec_listener(
    listener: OwnedFd,
    init: Pid,
    reaper: Arc<Reaper>,
    sessions: Arc<ExecSessions>,
) -> Result<()> {
    thread::Builder::new()
        .name("exec-listener".into())
        .spawn(move || loop {
            let conn = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
                Err(e) => {
                    warn!(error = %e, "the exec listener failed; no more exec sessions");
                    return;
                }
            };
            let reaper = reaper.clone();
            let session = sessions.enter();
            let spawned = thread::Builder::new().name("exec".into()).spawn(move || {
                let _session = session;
                if let Err(e) = serve_exec(conn, init, &reaper) {
                    warn!(error = %e, "exec session failed");
                }
            });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start an exec session thread");
            }
        })
        .map(drop)
        .ctx(|| "start the exec listener thread".into())
}

/// One exec session: run the host's `Exec` inside the container, relay it, report its exit.
fn serve_exec(conn: File, init: Pid, reaper: &Arc<Reaper>) -> Result<()> {
    let (mut reader, writer) = greet(conn)?;
    let spec: ExecSpec = match read_message(&mut reader)? {
        Some(Message::Exec(spec)) => spec,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "expected an exec spec, got {other:?}"
            )))
        }
        None => return Ok(()),
    };
    let started = stdio(spec.tty, spec.term_size, spec.stdin).and_then(|(child, ends)| {
        let process = Process::of_exec(&spec);
        let pid = reaper.spawn(|| container::enter(init, &process, child))?;
        Ok(Running {
            pid,
            ends: ends.complete()?,
        })
    });
    match started {
        Ok(process) => {
            debug!(pid = process.pid.as_raw(), argv = ?spec.argv, "exec started");
            send(&writer, &Message::Started)?;
            relay(process, reader, writer, reaper, Waiter::Watcher, None)
        }
        Err(e) => send(
            &writer,
            &Message::Failed {
                kind: e.kind(),
                message: e.to_string(),
            },
        ),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "create a pipe".into())
}

/// How a relay learns its process ended.
enum Waiter {
    /// This thread reaps all children (the container's first process).
    Reaper,
    /// Another thread reaps; this one waits to hear (exec'd processes).
    Watcher,
}

/// Relays stdio, signals and resizes until the process is gone and its output drained, then
/// sends `Exit`.
fn relay(
    c: Running,
    reader: File,
    writer: Writer,
    reaper: &Arc<Reaper>,
    waiter: Waiter,
    changes: Option<Toucher>,
) -> Result<()> {
    let HostEnds {
        stdin,
        outputs,
        terminal,
    } = c.ends;
    let mut pumps = Vec::new();
    for (src, stream) in outputs {
        pumps.push(spawn_output(src, stream, writer.clone())?);
    }
    let stdin = match stdin {
        Some(pipe) => {
            let writer = writer.clone();
            let grant = Box::new(move |n| send(&writer, &Message::StdinCredit(n)));
            Some(StdinFeed::start(pipe, grant)?)
        }
        None => None,
    };
    {
        let reaper = reaper.clone();
        let pid = c.pid;
        thread::Builder::new()
            .name("host-input".into())
            .spawn(move || host_input(reader, stdin, terminal, changes, pid, &reaper))
            .ctx(|| "start the host input thread".into())?;
    }
    let status = match waiter {
        Waiter::Reaper => reaper.reap_until(c.pid)?,
        Waiter::Watcher => reaper.wait(c.pid),
    };
    for t in pumps {
        match t.join() {
            Ok(r) => r?,
            Err(_) => return Err(Error::Invalid("an output relay thread panicked".into())),
        }
    }
    debug!(?status, "process exited");
    send(&writer, &Message::Exit(status))
}

fn spawn_output(
    src: File,
    stream: Stream,
    writer: Writer,
) -> Result<thread::JoinHandle<Result<()>>> {
    thread::Builder::new()
        .name(format!("{stream:?}").to_lowercase())
        .spawn(move || pump_output(src, stream, &writer))
        .ctx(|| format!("start the {stream:?} relay thread"))
}

fn pump_output(mut src: File, stream: Stream, writer: &Writer) -> Result<()> {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A terminal's master reads EIO once every slave end is closed.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => return Err(e).ctx(|| format!("read the container's {stream:?}")),
        };
        write_data(&mut *lock(writer), stream, &buf[..n])?;
    }
    send(writer, &Message::Eof(stream))
}

/// Reads the host's messages after the start: stdin (queued, never written here), signals,
/// resizes. If the host goes away or breaks the protocol the process is killed, so nothing
/// outlives its session.
fn host_input(
    mut reader: File,
    stdin: Option<StdinFeed>,
    terminal: Option<File>,
    changes: Option<Toucher>,
    pid: Pid,
    reaper: &Reaper,
) {
    let end = |why: &str| {
        if let Some(feed) = &stdin {
            feed.finish();
        }
        reaper.signal(pid, Signal::SIGKILL);
        debug!(why, "the session's input ended; the process was killed");
    };
    loop {
        match read_message(&mut reader) {
            Ok(Some(Message::Data {
                stream: Stream::Stdin,
                bytes,
            })) => {
                let taken = match &stdin {
                    Some(feed) => feed.push(bytes),
                    None => Err(Error::Invalid(
                        "the host sent stdin for a process that has none".into(),
                    )),
                };
                if let Err(e) = taken {
                    warn!(error = %e, "the host broke the stdin flow control");
                    return end("protocol error");
                }
            }
            // On a terminal the process sees no end of input: closing this duplicate of the
            // terminal's master changes nothing for it.
            Ok(Some(Message::Eof(Stream::Stdin))) => {
                if let Some(feed) = &stdin {
                    feed.finish();
                }
            }
            Ok(Some(Message::Signal(signo))) => match Signal::try_from(signo) {
                Ok(sig) => reaper.signal(pid, sig),
                Err(_) => warn!(signo, "ignoring an unknown signal number"),
            },
            Ok(Some(Message::Resize { rows, cols })) => {
                if let Some(t) = &terminal {
                    if let Err(e) = terminal::resize(t, rows, cols) {
                        warn!(error = %e, "ignoring a resize");
                    }
                }
            }
            Ok(Some(Message::FilesChanged(files))) => match &changes {
                Some(t) => t.changed(files),
                None => debug!("ignoring file changes for a session without shares"),
            },
            Ok(Some(other)) => warn!(message = ?other, "ignoring an unexpected message"),
            Ok(None) => return end("the host closed the session"),
            Err(e) => {
                warn!(error = %e, "session read failed");
                return end("session read failed");
            }
        }
    }
}
